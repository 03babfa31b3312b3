//! `GrpcTransport`: peers over gRPC, one lazily connected, reusable channel per peer and a
//! deadline on every call.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{PoisonError, RwLock};
use std::time::Duration;

use bytes::Bytes;
use kv_clock::VersionVector;
use kv_proto::internal as wire;
use kv_proto::internal::replica_client::ReplicaClient;
use kv_storage::Siblings;
use tonic::transport::{Channel, Endpoint};

use crate::service_internal::{decode_context, decode_siblings, encode_context, encode_siblings};
use crate::{NodeError, PeerSpec, PeerTransport, TransportError, WriteCommand};

/// Replica traffic is not bound by client limits; this only stops absurd messages.
pub const INTERNAL_MESSAGE_LIMIT_BYTES: usize = 256 * 1024 * 1024;
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);

/// Calls peers' `kvstore.internal.Replica` service.
#[derive(Debug)]
pub struct GrpcTransport {
    clients: RwLock<HashMap<String, (SocketAddr, ReplicaClient<Channel>)>>,
    call_timeout: Duration,
}

impl GrpcTransport {
    /// Prepares a channel per peer; connections open on first use and reconnect as needed.
    pub fn new(peers: &[PeerSpec], call_timeout: Duration) -> Self {
        let transport = Self {
            clients: RwLock::new(HashMap::new()),
            call_timeout,
        };
        transport.update_peers(peers);
        transport
    }

    fn connect(&self, address: SocketAddr) -> ReplicaClient<Channel> {
        let channel = Endpoint::from(
            tonic::transport::Uri::try_from(format!("http://{address}"))
                .expect("a socket address is a valid URI authority"),
        )
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(self.call_timeout)
        .tcp_nodelay(true)
        .connect_lazy();
        ReplicaClient::new(channel)
            .max_decoding_message_size(INTERNAL_MESSAGE_LIMIT_BYTES)
            .max_encoding_message_size(INTERNAL_MESSAGE_LIMIT_BYTES)
    }

    fn client(&self, peer: &str) -> Result<ReplicaClient<Channel>, TransportError> {
        let clients = self.clients.read().unwrap_or_else(PoisonError::into_inner);
        clients
            .get(peer)
            .map(|(_, client)| client.clone())
            .ok_or_else(|| TransportError::Unreachable {
                peer: peer.to_owned(),
                reason: "not a known peer".into(),
            })
    }
}

/// Sorts a failed call into: never reached the peer, timed out, or answered with an error.
fn classify(peer: &str, status: &tonic::Status) -> TransportError {
    let peer = peer.to_owned();
    let local_failure = std::error::Error::source(status).is_some();
    match status.code() {
        tonic::Code::Unavailable if local_failure => TransportError::Unreachable {
            peer,
            reason: status.message().to_owned(),
        },
        tonic::Code::DeadlineExceeded | tonic::Code::Cancelled => TransportError::Timeout { peer },
        _ => TransportError::Remote {
            peer,
            error: NodeError::from(status.clone()),
        },
    }
}

fn bad_reply(peer: &str, error: &NodeError) -> TransportError {
    TransportError::Remote {
        peer: peer.to_owned(),
        error: NodeError::Internal(format!("unreadable reply: {error}")),
    }
}

impl PeerTransport for GrpcTransport {
    /// Keeps the channel of every peer whose address is unchanged; opens (lazily) one for
    /// each new or moved peer; forgets peers no longer listed.
    fn update_peers(&self, peers: &[PeerSpec]) {
        let mut clients = self.clients.write().unwrap_or_else(PoisonError::into_inner);
        let mut updated = HashMap::with_capacity(peers.len());
        for peer in peers {
            let entry = match clients.remove(&peer.node_id) {
                Some((address, client)) if address == peer.grpc_address => (address, client),
                _ => (peer.grpc_address, self.connect(peer.grpc_address)),
            };
            updated.insert(peer.node_id.clone(), entry);
        }
        *clients = updated;
    }

    async fn read(&self, peer: &str, key: Bytes) -> Result<Option<Siblings>, TransportError> {
        let mut client = self.client(peer)?;
        let reply = client
            .read(wire::ReadRequest { key })
            .await
            .map_err(|s| classify(peer, &s))?
            .into_inner();
        if !reply.found {
            return Ok(None);
        }
        decode_siblings(&reply.siblings)
            .map(Some)
            .map_err(|e| bad_reply(peer, &e))
    }

    async fn write(
        &self,
        peer: &str,
        key: Bytes,
        versions: Siblings,
    ) -> Result<(), TransportError> {
        let mut client = self.client(peer)?;
        let request = wire::WriteRequest {
            key,
            siblings: encode_siblings(&versions),
        };
        client
            .write(request)
            .await
            .map_err(|s| classify(peer, &s))?;
        Ok(())
    }

    async fn coordinate_write(
        &self,
        peer: &str,
        command: WriteCommand,
    ) -> Result<VersionVector, TransportError> {
        let mut client = self.client(peer)?;
        let request = wire::CoordinateWriteRequest {
            key: command.key,
            value: command.value,
            context: encode_context(&command.context),
            write_quorum: command.write_quorum as u32,
            request_id: command.request_id,
        };
        let reply = client
            .coordinate_write(request)
            .await
            .map_err(|s| classify(peer, &s))?
            .into_inner();
        decode_context(&reply.context).map_err(|e| bad_reply(peer, &e))
    }
}
