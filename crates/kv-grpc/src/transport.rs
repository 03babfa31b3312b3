//! `GrpcTransport`: kv-node's [`PeerTransport`] over `kvstore.internal`. One channel per
//! peer (kept while the peer's address is unchanged); replica reads and writes go through
//! the peer's batcher, forwarded writes go straight to the channel.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock, PoisonError, RwLock};
use std::time::Duration;

use bytes::Bytes;
use kv_aae::{Digest, HashRange};
use kv_clock::VersionVector;
use kv_node::{KeyPage, PeerSpec, PeerTransport, SharedVersions, TransportError, WriteCommand};
use kv_proto::internal as proto;
use kv_storage::Siblings;

use crate::batcher::PeerBatcher;
use crate::channel::{Connector, ReplicaChannel, TonicConnector};
use crate::peer_metrics::PeerMetrics;
use crate::status::{bad_reply, classify, remote_item_error};
use crate::wire::{self, Outcome, WireError};

/// Calls peers' `kvstore.internal.Replica` service through channels from `C`.
#[derive(Debug)]
pub struct GrpcTransport<C: Connector = TonicConnector> {
    connector: C,
    links: RwLock<HashMap<String, PeerLink<C::Channel>>>,
    call_timeout: Duration,
    metrics: PeerMetrics,
}

/// One peer: its address, its channel, and the batcher in front of it (started on first
/// use, inside the runtime).
#[derive(Debug)]
struct PeerLink<Ch> {
    address: SocketAddr,
    channel: Ch,
    batcher: OnceLock<PeerBatcher>,
}

impl GrpcTransport<TonicConnector> {
    /// Tonic channels to `peers`, opened on first use, each call bounded by `call_timeout`.
    pub fn new(peers: &[PeerSpec], call_timeout: Duration) -> Self {
        Self::with_connector(TonicConnector::new(call_timeout), peers, call_timeout)
    }

    /// Like [`GrpcTransport::new`], dialling peers over mutual TLS.
    pub fn with_tls(peers: &[PeerSpec], call_timeout: Duration, tls: Arc<crate::NodeTls>) -> Self {
        let connector = TonicConnector::new(call_timeout).with_tls(tls);
        Self::with_connector(connector, peers, call_timeout)
    }
}

impl<C: Connector> GrpcTransport<C> {
    /// Channels from `connector` to `peers`; every call is bounded by `call_timeout`,
    /// queueing in the batcher included.
    pub fn with_connector(connector: C, peers: &[PeerSpec], call_timeout: Duration) -> Self {
        let transport = Self {
            connector,
            links: RwLock::new(HashMap::new()),
            call_timeout,
            metrics: PeerMetrics::default(),
        };
        transport.update_peers(peers);
        transport
    }

    fn with_link<R>(
        &self,
        peer: &str,
        f: impl FnOnce(&PeerLink<C::Channel>) -> R,
    ) -> Result<R, TransportError> {
        let links = self.links.read().unwrap_or_else(PoisonError::into_inner);
        links
            .get(peer)
            .map(f)
            .ok_or_else(|| TransportError::Unreachable {
                peer: peer.to_owned(),
                reason: "not a known peer".into(),
            })
    }

    fn channel(&self, peer: &str) -> Result<C::Channel, TransportError> {
        self.with_link(peer, |link| link.channel.clone())
    }

    fn batcher(&self, peer: &str) -> Result<PeerBatcher, TransportError> {
        self.with_link(peer, |link| {
            link.batcher
                .get_or_init(|| {
                    PeerBatcher::start(
                        peer.to_owned(),
                        link.channel.clone(),
                        self.call_timeout,
                        self.metrics.clone(),
                    )
                })
                .clone()
        })
    }

    /// Sends one item through `peer`'s batcher; an item-level error is the peer's answer.
    async fn batched(&self, peer: &str, item: proto::BatchItem) -> Result<Outcome, TransportError> {
        let result = self.batcher(peer)?.call(peer, item).await?;
        match result.outcome {
            Some(Outcome::Error(error)) => Err(remote_item_error(peer, error)),
            Some(outcome) => Ok(outcome),
            None => Err(bad_reply(peer, &WireError::EmptyResult)),
        }
    }
}

impl<C: Connector> PeerTransport for GrpcTransport<C> {
    fn register_metrics(&self, registry: &mut prometheus_client::registry::Registry) {
        self.metrics.register(registry);
    }

    /// Keeps the channel of every peer whose address is unchanged; opens one for each new
    /// or moved peer; forgets peers no longer listed.
    fn update_peers(&self, peers: &[PeerSpec]) {
        let mut links = self.links.write().unwrap_or_else(PoisonError::into_inner);
        let mut updated = HashMap::with_capacity(peers.len());
        for peer in peers {
            let link = match links.remove(&peer.node_id) {
                Some(link) if link.address == peer.internal_address => link,
                _ => PeerLink {
                    address: peer.internal_address,
                    channel: self.connector.connect(&peer.node_id, peer.internal_address),
                    batcher: OnceLock::new(),
                },
            };
            updated.insert(peer.node_id.clone(), link);
        }
        *links = updated;
    }

    async fn read(
        &self,
        peer: &str,
        key: Bytes,
        request_id: &str,
    ) -> Result<Option<Siblings>, TransportError> {
        let item = wire::read_item(key, request_id);
        let Outcome::Read(reply) = self.batched(peer, item).await? else {
            return Err(bad_reply(peer, &WireError::MismatchedResult));
        };
        wire::decode_read_response(&reply).map_err(|e| bad_reply(peer, &e))
    }

    async fn write(
        &self,
        peer: &str,
        key: Bytes,
        versions: Arc<SharedVersions>,
        request_id: &str,
    ) -> Result<(), TransportError> {
        let siblings = versions.encoded(wire::encode_siblings);
        match self
            .batched(peer, wire::write_item_encoded(key, siblings, request_id))
            .await?
        {
            Outcome::Write(_) => Ok(()),
            _ => Err(bad_reply(peer, &WireError::MismatchedResult)),
        }
    }

    async fn store_hint(
        &self,
        peer: &str,
        target: &str,
        key: Bytes,
        versions: Arc<SharedVersions>,
        request_id: &str,
    ) -> Result<(), TransportError> {
        let siblings = versions.encoded(wire::encode_siblings);
        match self
            .batched(
                peer,
                wire::hint_item_encoded(target, key, siblings, request_id),
            )
            .await?
        {
            Outcome::Hint(_) => Ok(()),
            _ => Err(bad_reply(peer, &WireError::MismatchedResult)),
        }
    }

    async fn coordinate_write(
        &self,
        peer: &str,
        command: WriteCommand,
    ) -> Result<VersionVector, TransportError> {
        let reply = self
            .channel(peer)?
            .coordinate_write(wire::coordinate_request(command))
            .await
            .map_err(|status| classify(peer, &status))?;
        wire::decode_context(&reply.context).map_err(|e| bad_reply(peer, &e))
    }

    async fn coordinate_read(
        &self,
        peer: &str,
        key: Bytes,
        read_quorum: usize,
        request_id: String,
    ) -> Result<Option<Siblings>, TransportError> {
        let request = proto::CoordinateReadRequest {
            key,
            read_quorum: u32::try_from(read_quorum).unwrap_or(u32::MAX),
            request_id,
        };
        let reply = self
            .channel(peer)?
            .coordinate_read(request)
            .await
            .map_err(|status| classify(peer, &status))?;
        wire::decode_read_response(&reply).map_err(|e| bad_reply(peer, &e))
    }

    async fn aae_digests(
        &self,
        peer: &str,
        initiator: &str,
        ranges: Vec<HashRange>,
    ) -> Result<Vec<Digest>, TransportError> {
        let reply = self
            .channel(peer)?
            .digests(wire::digests_request(initiator, &ranges))
            .await
            .map_err(|status| classify(peer, &status))?;
        wire::decode_digests_response(&reply, ranges.len()).map_err(|e| bad_reply(peer, &e))
    }

    async fn aae_end(
        &self,
        peer: &str,
        initiator: &str,
        completed: bool,
        ranges: Vec<HashRange>,
    ) -> Result<(), TransportError> {
        self.channel(peer)?
            .digests(wire::end_request(initiator, completed, &ranges))
            .await
            .map_err(|status| classify(peer, &status))?;
        Ok(())
    }

    async fn aae_keys(
        &self,
        peer: &str,
        initiator: &str,
        range: HashRange,
        after: Option<Bytes>,
        limit: usize,
    ) -> Result<KeyPage, TransportError> {
        let reply = self
            .channel(peer)?
            .key_list(wire::key_list_request(initiator, range, after, limit))
            .await
            .map_err(|status| classify(peer, &status))?;
        wire::decode_key_list_response(reply, limit).map_err(|e| bad_reply(peer, &e))
    }

    async fn exchange_layout(&self, peer: &str, layout: Bytes) -> Result<Bytes, TransportError> {
        let reply = self
            .channel(peer)?
            .exchange_layout(proto::LayoutMessage { layout })
            .await
            .map_err(|status| classify(peer, &status))?;
        Ok(reply.layout)
    }
}
