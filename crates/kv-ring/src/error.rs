//! Errors for building a ring from a member list.

use thiserror::Error;

/// The member list or replication factor cannot form a ring.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RingError {
    /// A member had an empty id.
    #[error("ring member id must not be empty")]
    EmptyNodeId,
    /// Two members shared an id.
    #[error("ring member {0:?} is listed twice")]
    DuplicateNode(String),
    /// A member's vnode count was outside `1..=MAX_VNODES`.
    #[error("ring member {node:?} has {vnodes} vnodes; allowed is 1..={max}")]
    BadVnodeCount {
        /// The member.
        node: String,
        /// Its requested vnode count.
        vnodes: u32,
        /// The limit.
        max: u32,
    },
    /// More members than the ring supports.
    #[error("ring has {count} members; at most {max} are supported")]
    TooManyMembers {
        /// Members given.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// The replication factor was outside `1..=MAX_REPLICAS`.
    #[error("replication factor {replicas} is outside 1..={max}")]
    BadReplicationFactor {
        /// Requested N.
        replicas: usize,
        /// The limit.
        max: usize,
    },
}
