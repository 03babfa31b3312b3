//! `GrpcTransport`: peers over gRPC, one lazily connected, reusable channel per peer and a
//! deadline on every call. Replica reads and writes go through a per-peer batcher.

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

use crate::batcher::PeerBatcher;
use crate::service_internal::{decode_context, decode_siblings, encode_context, encode_siblings};
use crate::{NodeError, PeerSpec, PeerTransport, TransportError, WriteCommand};

/// Replica traffic is not bound by client limits; this only stops absurd messages.
pub const INTERNAL_MESSAGE_LIMIT_BYTES: usize = 256 * 1024 * 1024;
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);

/// Calls peers' `kvstore.internal.Replica` service.
#[derive(Debug)]
pub struct GrpcTransport {
    clients: RwLock<HashMap<String, PeerLink>>,
    call_timeout: Duration,
}

/// One peer: its address, its channel, and the batcher in front of it (started on first
/// use, inside the runtime).
#[derive(Debug)]
struct PeerLink {
    address: SocketAddr,
    client: ReplicaClient<Channel>,
    batcher: std::sync::OnceLock<PeerBatcher>,
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

    fn with_link<R>(
        &self,
        peer: &str,
        f: impl FnOnce(&PeerLink) -> R,
    ) -> Result<R, TransportError> {
        let clients = self.clients.read().unwrap_or_else(PoisonError::into_inner);
        clients
            .get(peer)
            .map(f)
            .ok_or_else(|| TransportError::Unreachable {
                peer: peer.to_owned(),
                reason: "not a known peer".into(),
            })
    }

    fn client(&self, peer: &str) -> Result<ReplicaClient<Channel>, TransportError> {
        self.with_link(peer, |link| link.client.clone())
    }

    fn batcher(&self, peer: &str) -> Result<PeerBatcher, TransportError> {
        self.with_link(peer, |link| {
            link.batcher
                .get_or_init(|| {
                    PeerBatcher::start(peer.to_owned(), link.client.clone(), self.call_timeout)
                })
                .clone()
        })
    }

    /// Sends one item through `peer`'s batcher; an item-level error is the peer's answer.
    async fn batched(
        &self,
        peer: &str,
        op: wire::batch_item::Op,
    ) -> Result<wire::batch_result::Outcome, TransportError> {
        let item = wire::BatchItem { op: Some(op) };
        let result = self.batcher(peer)?.call(peer, item).await?;
        match result.outcome {
            Some(wire::batch_result::Outcome::Error(error)) => Err(TransportError::Remote {
                peer: peer.to_owned(),
                error: NodeError::from(tonic::Status::new(
                    tonic::Code::from(error.code),
                    error.message,
                )),
            }),
            Some(outcome) => Ok(outcome),
            None => Err(bad_reply(
                peer,
                &NodeError::Internal("empty batch result".into()),
            )),
        }
    }
}

/// Sorts a failed call into: never reached the peer, timed out, or answered with an error.
pub(crate) fn classify(peer: &str, status: &tonic::Status) -> TransportError {
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

fn mismatched(peer: &str) -> TransportError {
    bad_reply(
        peer,
        &NodeError::Internal("a batch result answers a different operation".into()),
    )
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
                Some(link) if link.address == peer.grpc_address => link,
                _ => PeerLink {
                    address: peer.grpc_address,
                    client: self.connect(peer.grpc_address),
                    batcher: std::sync::OnceLock::new(),
                },
            };
            updated.insert(peer.node_id.clone(), entry);
        }
        *clients = updated;
    }

    async fn read(&self, peer: &str, key: Bytes) -> Result<Option<Siblings>, TransportError> {
        let op = wire::batch_item::Op::Read(wire::ReadRequest { key });
        let wire::batch_result::Outcome::Read(reply) = self.batched(peer, op).await? else {
            return Err(mismatched(peer));
        };
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
        let op = wire::batch_item::Op::Write(wire::WriteRequest {
            key,
            siblings: encode_siblings(&versions),
        });
        match self.batched(peer, op).await? {
            wire::batch_result::Outcome::Write(_) => Ok(()),
            _ => Err(mismatched(peer)),
        }
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
