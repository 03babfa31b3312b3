//! `PeerTransport`: how a node calls its peers. The node only knows this trait; the gRPC
//! implementation lives in kv-grpc, and the simulation plugs in its own network.

use std::future::Future;
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use kv_aae::{Digest, HashRange};
use kv_clock::VersionVector;
use kv_storage::Siblings;
use thiserror::Error;

use crate::ErrorKind;
use crate::aae::KeyPage;

/// A client write handed to a replica to coordinate.
#[derive(Debug, Clone)]
pub struct WriteCommand {
    /// The key.
    pub key: Bytes,
    /// The new value, or `None` to delete.
    pub value: Option<Bytes>,
    /// What the client had read.
    pub context: VersionVector,
    /// Acknowledgements required (W), validated against N by whoever built the command
    /// and again by the coordinator against its own ring.
    pub write_quorum: usize,
    /// For tracing.
    pub request_id: String,
    /// Whether a fallback's hint counts toward W (sloppy quorum).
    pub sloppy: bool,
}

/// What a peer answered when it handled a request and refused or failed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteError {
    /// The class of its error.
    pub kind: ErrorKind,
    /// Its message.
    pub message: String,
}

/// A call to a peer failed.
///
/// The variants say what the caller may conclude: only `Unreachable` proves the peer did
/// not process the request, so only then may a write be retried on another replica.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TransportError {
    /// The request never reached the peer (no connection, refused, not a known peer).
    #[error("peer {peer} unreachable: {reason}")]
    Unreachable {
        /// The peer.
        peer: String,
        /// Why.
        reason: String,
    },
    /// The call timed out: the peer may or may not have processed it.
    #[error("peer {peer} did not answer in time")]
    Timeout {
        /// The peer.
        peer: String,
    },
    /// The connection broke after the request was sent: it may have been processed.
    #[error(
        "peer {peer}: connection lost during the call ({reason}); the request may have been applied"
    )]
    Interrupted {
        /// The peer.
        peer: String,
        /// What broke.
        reason: String,
    },
    /// The peer processed the request and refused or failed it.
    #[error("peer {peer}: {}", error.message)]
    Remote {
        /// The peer.
        peer: String,
        /// Its answer.
        error: RemoteError,
    },
}

impl TransportError {
    /// Whether the peer failed to answer at all (for liveness bookkeeping), as opposed to
    /// answering with an error.
    pub fn is_silence(&self) -> bool {
        !matches!(self, Self::Remote { .. })
    }
}

/// A key's versions on their way to one or more peers: one copy shared by every call of
/// a write, and serialized at most once, by the first call that encodes them (the
/// transport supplies the encoding; this crate knows no wire format).
#[derive(Debug)]
pub struct SharedVersions {
    siblings: Siblings,
    encoded: OnceLock<Bytes>,
}

impl SharedVersions {
    /// Shares `siblings`, not yet encoded.
    pub fn new(siblings: Siblings) -> Arc<Self> {
        Arc::new(Self {
            siblings,
            encoded: OnceLock::new(),
        })
    }

    /// The versions.
    pub fn siblings(&self) -> &Siblings {
        &self.siblings
    }

    /// Their encoding: `encode`d on the first call, the same bytes (shared, not copied)
    /// on every later one. Every caller must pass the same encoding.
    pub fn encoded(&self, encode: impl FnOnce(&Siblings) -> Bytes) -> Bytes {
        self.encoded.get_or_init(|| encode(&self.siblings)).clone()
    }
}

/// Node-to-node calls. Implementations must be cheap to call concurrently.
pub trait PeerTransport: Send + Sync + 'static {
    /// Learns the current set of peers and their addresses (membership changed).
    fn update_peers(&self, _peers: &[crate::PeerSpec]) {}

    /// Adds the transport's own metrics (calls, batches, failures) to `registry`; none by
    /// default.
    fn register_metrics(&self, _registry: &mut prometheus_client::registry::Registry) {}

    /// Reads `peer`'s versions of `key`, for the client request `request_id` (empty for
    /// background work; the peer logs it with the read).
    fn read(
        &self,
        peer: &str,
        key: Bytes,
        request_id: &str,
    ) -> impl Future<Output = Result<Option<Siblings>, TransportError>> + Send;

    /// Merges `versions` into `peer`'s copy of `key`, for the client request `request_id`
    /// (empty for repairs and background work).
    fn write(
        &self,
        peer: &str,
        key: Bytes,
        versions: Arc<SharedVersions>,
        request_id: &str,
    ) -> impl Future<Output = Result<(), TransportError>> + Send;

    /// Asks `peer` (a fallback) to keep `versions` of `key` as a hint for `target`, a
    /// replica that did not answer, until it can deliver them; Ok once the hint is
    /// stored at the peer's durability.
    fn store_hint(
        &self,
        peer: &str,
        target: &str,
        key: Bytes,
        versions: Arc<SharedVersions>,
        request_id: &str,
    ) -> impl Future<Output = Result<(), TransportError>> + Send;

    /// Asks `peer` (a replica of the key) to coordinate a client write; returns the
    /// causal context after the write.
    fn coordinate_write(
        &self,
        peer: &str,
        command: WriteCommand,
    ) -> impl Future<Output = Result<VersionVector, TransportError>> + Send;

    /// Asks `peer` (a member of the newest ring version) to coordinate a client read of
    /// `key` with quorum `read_quorum`; returns the merged versions.
    fn coordinate_read(
        &self,
        peer: &str,
        key: Bytes,
        read_quorum: usize,
        request_id: String,
    ) -> impl Future<Output = Result<Option<Siblings>, TransportError>> + Send;

    /// The digests of `ranges` in `peer`'s anti-entropy index, in the same order, for an
    /// exchange `initiator` runs.
    fn aae_digests(
        &self,
        peer: &str,
        initiator: &str,
        ranges: Vec<HashRange>,
    ) -> impl Future<Output = Result<Vec<Digest>, TransportError>> + Send;

    /// Ends `initiator`'s exchange with `peer`, freeing it; with `completed`, tells it that
    /// every difference on `ranges` was repaired.
    fn aae_end(
        &self,
        peer: &str,
        initiator: &str,
        completed: bool,
        ranges: Vec<HashRange>,
    ) -> impl Future<Output = Result<(), TransportError>> + Send;

    /// Up to `limit` of `peer`'s keys in `range` (after `after`, at a single position),
    /// with their fingerprints, for an exchange `initiator` runs.
    fn aae_keys(
        &self,
        peer: &str,
        initiator: &str,
        range: HashRange,
        after: Option<Bytes>,
        limit: usize,
    ) -> impl Future<Output = Result<KeyPage, TransportError>> + Send;

    /// Sends this node's encoded ring layout to `peer` (empty: this node has none yet)
    /// and returns the peer's, after it merged ours (empty if it has none).
    fn exchange_layout(
        &self,
        peer: &str,
        layout: Bytes,
    ) -> impl Future<Output = Result<Bytes, TransportError>> + Send;
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use bytes::Bytes;
    use kv_storage::Siblings;

    use super::SharedVersions;

    #[test]
    fn shared_versions_are_encoded_once_and_the_bytes_shared() {
        let shared = SharedVersions::new(Siblings::new());
        let encodings = Cell::new(0);
        let encode = |_: &Siblings| {
            encodings.set(encodings.get() + 1);
            Bytes::from(vec![7u8; 64])
        };
        let first = shared.encoded(encode);
        let second = shared.encoded(encode);
        assert_eq!(encodings.get(), 1, "encoded once for every call");
        assert_eq!(
            first.as_ptr(),
            second.as_ptr(),
            "the same bytes, not a copy"
        );
    }
}
