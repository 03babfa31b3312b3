//! `PeerTransport`: how a node calls its peers. The gRPC implementation serves real
//! clusters; the in-process one serves tests and simulation, with faults.

use std::future::Future;

use bytes::Bytes;
use kv_clock::VersionVector;
use kv_storage::Siblings;
use thiserror::Error;

use crate::NodeError;

/// A client write handed to a replica to coordinate.
#[derive(Debug, Clone)]
pub struct WriteCommand {
    /// The key.
    pub key: Bytes,
    /// The new value, or `None` to delete.
    pub value: Option<Bytes>,
    /// What the client had read.
    pub context: VersionVector,
    /// Acknowledgements required (W), already validated against N.
    pub write_quorum: usize,
    /// For tracing.
    pub request_id: String,
}

/// A call to a peer failed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TransportError {
    /// The peer could not be reached: the request was certainly not processed.
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
    /// The peer processed the request and refused or failed it.
    #[error("peer {peer}: {error}")]
    Remote {
        /// The peer.
        peer: String,
        /// Its answer.
        error: NodeError,
    },
}

/// Node-to-node calls. Implementations must be cheap to call concurrently.
pub trait PeerTransport: Send + Sync + 'static {
    /// Learns the current set of peers and their addresses (membership changed).
    fn update_peers(&self, _peers: &[crate::PeerSpec]) {}

    /// Reads `peer`'s versions of `key`.
    fn read(
        &self,
        peer: &str,
        key: Bytes,
    ) -> impl Future<Output = Result<Option<Siblings>, TransportError>> + Send;

    /// Merges `versions` into `peer`'s copy of `key`.
    fn write(
        &self,
        peer: &str,
        key: Bytes,
        versions: Siblings,
    ) -> impl Future<Output = Result<(), TransportError>> + Send;

    /// Asks `peer` (a replica of the key) to coordinate a client write; returns the
    /// causal context after the write.
    fn coordinate_write(
        &self,
        peer: &str,
        command: WriteCommand,
    ) -> impl Future<Output = Result<VersionVector, TransportError>> + Send;
}
