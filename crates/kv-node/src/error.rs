//! Why a node refused or failed a request. Every variant carries the facts a person needs
//! to act (which quorum, how many answered, which replica failed and why); [`ErrorKind`]
//! sorts them into the few classes a client reacts to differently, and the RPC layer maps
//! each kind to one status code.

use std::fmt;

use kv_storage::StorageError;
use thiserror::Error;

use crate::request::InvalidRequest;
use crate::transport::TransportError;

/// The classes of failure a client handles differently.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The request is malformed or breaks a limit: fix it, do not retry it.
    InvalidArgument,
    /// Not enough replicas could be reached now: retry later or elsewhere.
    Unavailable,
    /// The request ran out of time; it may or may not have been applied.
    DeadlineExceeded,
    /// The request is valid but the key's or node's state refuses it (resolve siblings,
    /// change the membership mode).
    FailedPrecondition,
    /// The node failed (storage error, damaged data).
    Internal,
}

impl ErrorKind {
    /// The class as a metric label.
    pub fn label(self) -> &'static str {
        match self {
            Self::InvalidArgument => "invalid_argument",
            Self::Unavailable => "unavailable",
            Self::DeadlineExceeded => "deadline_exceeded",
            Self::FailedPrecondition => "failed_precondition",
            Self::Internal => "internal",
        }
    }
}

/// A read or a write, for error messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// A Get.
    Read,
    /// A Put or Delete.
    Write,
}

impl Operation {
    fn quorum_name(self) -> &'static str {
        match self {
            Self::Read => "R",
            Self::Write => "W",
        }
    }

    fn acked(self) -> &'static str {
        match self {
            Self::Read => "answered",
            Self::Write => "acknowledged",
        }
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Read => "read",
            Self::Write => "write",
        })
    }
}

/// The replicas that failed a request, each with its reason, for error messages.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Failures(pub Vec<TransportError>);

impl fmt::Display for Failures {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("none");
        }
        for (i, failure) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{failure}")?;
        }
        Ok(())
    }
}

/// A request a node could not complete.
#[derive(Debug, Error)]
pub enum NodeError {
    /// A field of the request is malformed or over a limit.
    #[error(transparent)]
    InvalidRequest(#[from] InvalidRequest),
    /// This node has no ring layout it can trust yet (it is new and no member sent it
    /// the layout, or it restarted and no member confirmed its layout).
    #[error(
        "node {node} is joining the cluster and has no confirmed ring layout yet; retry \
         shortly or send the request to another node"
    )]
    Joining {
        /// This node.
        node: String,
    },
    /// This node is shutting down and takes no new writes to coordinate.
    #[error("node {node} is shutting down; send the write to another node")]
    Stopping {
        /// This node.
        node: String,
    },
    /// The newest ring version has fewer members than N: no key can have N distinct
    /// replicas, so nothing is stored or read until more nodes join.
    #[error(
        "the ring has {members} member(s) but N={replicas}: no key can have {replicas} \
         distinct replicas; join more nodes (kvstore join) before reading or writing"
    )]
    UnderReplicated {
        /// Members of the newest ring version.
        members: usize,
        /// N.
        replicas: usize,
    },
    /// A peer asked this node to coordinate a key it does not replicate (the two rings
    /// disagree, e.g. during a membership change).
    #[error("node {node} is not a replica of this key (replicas: {replicas})")]
    NotReplica {
        /// This node.
        node: String,
        /// The key's replicas in this node's ring, comma-separated.
        replicas: String,
    },
    /// Too many replicas failed for the quorum to be reached.
    #[error(
        "{op} quorum not met: {quorum}={needed} of {replicas} replicas required, {acked} {verb}, \
         failed: {failures}{note}",
        quorum = op.quorum_name(),
        verb = op.acked(),
        note = if *op == Operation::Write { "; replicas that acknowledged keep the write" } else { "" }
    )]
    QuorumNotMet {
        /// Read or write.
        op: Operation,
        /// R or W.
        needed: usize,
        /// Replicas that succeeded.
        acked: usize,
        /// Replicas asked (N).
        replicas: usize,
        /// Each failed replica and why.
        failures: Failures,
    },
    /// The request's deadline passed before the quorum was decided.
    #[error(
        "{op} timed out after {timeout_ms} ms: {acked} of {replicas} replicas {verb}, \
         {quorum}={needed} required",
        quorum = op.quorum_name(),
        verb = op.acked()
    )]
    Timeout {
        /// Read or write.
        op: Operation,
        /// The request deadline.
        timeout_ms: u64,
        /// Replicas that succeeded in time.
        acked: usize,
        /// R or W.
        needed: usize,
        /// Replicas asked (N).
        replicas: usize,
    },
    /// The replica this node forwarded a write to did not confirm it: the write may or
    /// may not have been applied, so it is not retried elsewhere (a second coordinator
    /// would mint a second version of it).
    #[error(
        "replica {replica} did not confirm the forwarded write ({cause}); it may still be applied"
    )]
    ForwardedWriteUncertain {
        /// The replica that was coordinating.
        replica: String,
        /// What went wrong: a timeout or a connection lost mid-call.
        cause: TransportError,
    },
    /// No replica of the key could be reached to coordinate a write.
    #[error("no replica of this key could coordinate the write: {tried}")]
    NoCoordinator {
        /// Each replica tried and why it failed.
        tried: Failures,
    },
    /// A peer handled a forwarded request and refused it.
    #[error("{message} (coordinated by {peer})")]
    Remote {
        /// The peer.
        peer: String,
        /// Its error's class.
        kind: ErrorKind,
        /// Its error's message.
        message: String,
    },
    /// The local store refused or failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// A ring change was asked of a node whose peers are a static list.
    #[error("this node has a static peer list; change --peers on every node instead")]
    StaticMembership,
    /// Versions of a key were sent to a node that replicates it in no live ring version
    /// (the sender routes with a ring that has since retired).
    #[error(
        "{node} does not replicate this key in ring version {version} (the only live one); \
         the sender's ring is out of date"
    )]
    NotAReplica {
        /// This node.
        node: String,
        /// The settled version.
        version: u64,
    },
    /// A ring change was sent to a node outside the newest ring version.
    #[error(
        "{node} is not a member of the ring; send ring changes to a member ({})",
        members.join(", ")
    )]
    NotAMember {
        /// This node.
        node: String,
        /// The members of the newest version.
        members: Vec<String>,
    },
    /// A ring change request is malformed (no node, a bad or repeated node id).
    #[error("invalid ring change: {0}")]
    BadRingChange(String),
    /// A ring change is not possible as asked.
    #[error("ring change refused: {0}")]
    ChangeRefused(String),
    /// A ring change or a layout merge was refused by the layout's own rules.
    #[error(transparent)]
    Layout(#[from] kv_layout::LayoutError),
    /// A layout could not be read (from a peer or the store).
    #[error("unreadable ring layout: {0}")]
    BadLayout(String),
    /// The cluster's layout has another N than this node was configured with.
    #[error(
        "the cluster replicates each key {cluster} times but this node was started with \
         --n {configured}; start it with --n {cluster}"
    )]
    ReplicasMismatch {
        /// The cluster's N.
        cluster: usize,
        /// This node's configured N.
        configured: usize,
    },
    /// A peer compares anti-entropy trees of another format.
    #[error(
        "anti-entropy tree format {theirs} does not match this node's {ours}; upgrade the \
         older node so both build the same trees"
    )]
    TreeFormat {
        /// The peer's format.
        theirs: kv_aae::TreeFormat,
        /// This node's.
        ours: kv_aae::TreeFormat,
    },
    /// This node takes part in another anti-entropy exchange; the initiator tries again
    /// in a later round.
    #[error("busy with an anti-entropy exchange with {partner}")]
    ExchangeBusy {
        /// The node it exchanges with.
        partner: String,
    },
    /// An anti-entropy request breaks the exchange protocol's limits.
    #[error("invalid anti-entropy request: {0}")]
    BadExchangeRequest(String),
    /// A hint was sent to a node that stores none (`--hint-max-bytes 0`).
    #[error("{node} stores no hints (started with --hint-max-bytes 0)")]
    HintsDisabled {
        /// This node.
        node: String,
    },
    /// Storing a hint would pass one of the node's hint caps; anti-entropy will repair
    /// the target instead.
    #[error(
        "{node} holds {held_bytes} bytes of hints {scope}; the cap is {max_bytes}          (--hint-max-{flag}); the target will be repaired by anti-entropy instead"
    )]
    HintsFull {
        /// This node.
        node: String,
        /// `for n3` or `in total`.
        scope: String,
        /// Bytes held in that scope.
        held_bytes: u64,
        /// The cap.
        max_bytes: u64,
        /// The flag that sets it (`bytes`, `target-bytes`).
        flag: &'static str,
    },
    /// A hint named a target that is not a node id.
    #[error("invalid hint: {0}")]
    BadHint(String),
    /// A membership command named a node gossip does not know.
    #[error(
        "no node {node:?} is known to this node: start it with --seeds pointing at a member, \
         and wait until `kvstore membership` lists it ALIVE"
    )]
    UnknownMember {
        /// The name given.
        node: String,
    },
}

impl NodeError {
    /// The class of this error, for clients and for the RPC status code.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::InvalidRequest(_)
            | Self::UnknownMember { .. }
            | Self::BadExchangeRequest(_)
            | Self::BadHint(_)
            | Self::BadLayout(_)
            | Self::BadRingChange(_) => ErrorKind::InvalidArgument,
            Self::Joining { .. }
            | Self::Stopping { .. }
            | Self::UnderReplicated { .. }
            | Self::NotReplica { .. }
            | Self::QuorumNotMet { .. }
            | Self::NoCoordinator { .. }
            | Self::HintsDisabled { .. }
            | Self::HintsFull { .. }
            | Self::ExchangeBusy { .. } => ErrorKind::Unavailable,
            Self::NotAMember { .. }
            | Self::NotAReplica { .. }
            | Self::ChangeRefused(_)
            | Self::ReplicasMismatch { .. }
            | Self::StaticMembership
            | Self::TreeFormat { .. } => ErrorKind::FailedPrecondition,
            Self::Layout(error) => layout_kind(error),
            Self::Timeout { .. } => ErrorKind::DeadlineExceeded,
            Self::ForwardedWriteUncertain { cause, .. } => match cause {
                TransportError::Timeout { .. } => ErrorKind::DeadlineExceeded,
                _ => ErrorKind::Unavailable,
            },
            Self::Remote { kind, .. } => *kind,
            Self::Storage(error) => storage_kind(error),
        }
    }
}

impl NodeError {
    /// Why a request missed its quorum, as a metric label; `None` for errors that are
    /// not a missed quorum (bad input, storage, ...).
    pub fn quorum_failure(&self) -> Option<&'static str> {
        match self {
            Self::QuorumNotMet { .. } => Some("replicas_failed"),
            Self::Timeout { .. } => Some("timeout"),
            Self::UnderReplicated { .. } => Some("under_replicated"),
            Self::NoCoordinator { .. } | Self::NotReplica { .. } => Some("no_coordinator"),
            Self::ForwardedWriteUncertain { .. } => Some("forward_uncertain"),
            Self::Joining { .. } => Some("joining"),
            _ => None,
        }
    }
}

fn layout_kind(error: &kv_layout::LayoutError) -> ErrorKind {
    use kv_layout::LayoutError;
    match error {
        LayoutError::AlreadyMember(_)
        | LayoutError::NotMember(_)
        | LayoutError::Empty
        | LayoutError::NothingToDo => ErrorKind::InvalidArgument,
        LayoutError::TooManyLive(_) => ErrorKind::Unavailable,
        LayoutError::ForeignCluster { .. } | LayoutError::Replicas { .. } | LayoutError::Fixed => {
            ErrorKind::FailedPrecondition
        }
    }
}

fn storage_kind(error: &StorageError) -> ErrorKind {
    match error {
        StorageError::TooManySiblings { .. } => ErrorKind::FailedPrecondition,
        StorageError::KeyTooLong { .. } | StorageError::BadHintTarget { .. } => {
            ErrorKind::InvalidArgument
        }
        StorageError::Corrupt { .. } | StorageError::Engine { .. } => ErrorKind::Internal,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quorum_messages_name_the_quorum_the_counts_and_the_failures() {
        let error = NodeError::QuorumNotMet {
            op: Operation::Write,
            needed: 3,
            acked: 2,
            replicas: 3,
            failures: Failures(vec![TransportError::Unreachable {
                peer: "n3".into(),
                reason: "connection refused".into(),
            }]),
        };
        let message = error.to_string();
        assert!(
            message.contains("W=3 of 3 replicas required, 2 acknowledged"),
            "{message}"
        );
        assert!(
            message.contains("peer n3 unreachable: connection refused"),
            "{message}"
        );
        assert!(message.contains("keep the write"), "{message}");
        assert_eq!(error.kind(), ErrorKind::Unavailable);

        let read = NodeError::Timeout {
            op: Operation::Read,
            timeout_ms: 5000,
            acked: 1,
            needed: 2,
            replicas: 3,
        };
        assert_eq!(
            read.to_string(),
            "read timed out after 5000 ms: 1 of 3 replicas answered, R=2 required"
        );
        assert_eq!(read.kind(), ErrorKind::DeadlineExceeded);
    }

    #[test]
    fn storage_errors_keep_their_source_and_class() {
        let error = NodeError::from(StorageError::TooManySiblings {
            siblings: 4,
            max: 3,
        });
        assert_eq!(error.kind(), ErrorKind::FailedPrecondition);
        assert!(error.to_string().contains("limit of 3"));
        let engine = NodeError::from(StorageError::Engine {
            action: "writing",
            source: Box::new(std::io::Error::other("disk full")),
        });
        assert_eq!(engine.kind(), ErrorKind::Internal);
        let source = std::error::Error::source(&engine).expect("the engine error is kept");
        assert!(source.to_string().contains("disk full"), "{source}");
    }
}
