//! What the simulated clients did and saw: every request with its simulated start and
//! end time and its outcome, plus a hash over the whole history that a replay of the
//! same seed must reproduce.

use std::fmt::Write as _;
use std::time::Duration;

use bytes::Bytes;
use kv_clock::VersionVector;

/// The kind of a client request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpKind {
    /// Put a value.
    Put,
    /// Delete (write a tombstone).
    Delete,
    /// Read.
    Get,
}

/// How a request ended.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// A put or delete was acknowledged; the context the node returned.
    Written {
        /// Causal context after the write.
        context: VersionVector,
    },
    /// A read succeeded: the live values (none if not found) and the context.
    Read {
        /// Live values, siblings included.
        values: Vec<Bytes>,
        /// Causal context of everything the read saw (tombstones included).
        context: VersionVector,
    },
    /// The request failed.
    Failed {
        /// gRPC status code.
        code: tonic::Code,
        /// Its message.
        message: String,
    },
}

/// One client request.
#[derive(Debug, Clone)]
pub struct Op {
    /// Which simulated client.
    pub client: usize,
    /// Put, delete or get.
    pub kind: OpKind,
    /// The key.
    pub key: Bytes,
    /// The node it was sent to.
    pub node: usize,
    /// The value of a put.
    pub value: Option<Bytes>,
    /// The context sent with a write (`None`: a blind write).
    pub context: Option<VersionVector>,
    /// W for writes, R for reads.
    pub quorum: u32,
    /// A write whose fallback acknowledgements count toward W (sloppy quorum).
    pub sloppy: bool,
    /// Simulated time the request was sent.
    pub start: Duration,
    /// Simulated time the answer arrived.
    pub end: Duration,
    /// The answer.
    pub outcome: Outcome,
}

impl Op {
    /// Whether the request succeeded.
    pub fn succeeded(&self) -> bool {
        !matches!(self.outcome, Outcome::Failed { .. })
    }

    /// Whether this is an acknowledged put or delete.
    pub fn is_acknowledged_write(&self) -> bool {
        self.kind != OpKind::Get && self.succeeded()
    }
}

/// A stable 64-bit digest of a history and anything else a run wants to pin (the fault
/// schedule): the same seed must give the same digest.
#[derive(Debug, Default)]
pub struct TraceHasher {
    text: String,
}

impl TraceHasher {
    /// Adds one event, in its `Debug` form (every field of these types is deterministic).
    pub fn add(&mut self, event: &impl std::fmt::Debug) {
        let _ = writeln!(self.text, "{event:?}");
    }

    /// The digest (XXH3-64, the ring's stable hash).
    pub fn finish(&self) -> u64 {
        kv_ring::key_hash(self.text.as_bytes())
    }
}
