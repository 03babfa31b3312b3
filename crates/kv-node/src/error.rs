//! Errors a node returns, each mapping to one gRPC status code with an actionable message.

use thiserror::Error;

/// Why a client or replica request failed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum NodeError {
    /// The request is malformed or breaks a limit (INVALID_ARGUMENT).
    #[error("{0}")]
    InvalidArgument(String),
    /// Not enough replicas answered (UNAVAILABLE).
    #[error("{0}")]
    Unavailable(String),
    /// The request's time ran out (DEADLINE_EXCEEDED).
    #[error("{0}")]
    DeadlineExceeded(String),
    /// The write would break a per-key limit until the client resolves siblings
    /// (FAILED_PRECONDITION).
    #[error("{0}")]
    FailedPrecondition(String),
    /// Storage failed or holds damaged data (INTERNAL).
    #[error("{0}")]
    Internal(String),
}

impl From<NodeError> for tonic::Status {
    fn from(error: NodeError) -> Self {
        match error {
            NodeError::InvalidArgument(m) => tonic::Status::invalid_argument(m),
            NodeError::Unavailable(m) => tonic::Status::unavailable(m),
            NodeError::DeadlineExceeded(m) => tonic::Status::deadline_exceeded(m),
            NodeError::FailedPrecondition(m) => tonic::Status::failed_precondition(m),
            NodeError::Internal(m) => tonic::Status::internal(m),
        }
    }
}

impl From<tonic::Status> for NodeError {
    fn from(status: tonic::Status) -> Self {
        let message = status.message().to_owned();
        match status.code() {
            tonic::Code::InvalidArgument => Self::InvalidArgument(message),
            tonic::Code::Unavailable => Self::Unavailable(message),
            tonic::Code::DeadlineExceeded => Self::DeadlineExceeded(message),
            tonic::Code::FailedPrecondition => Self::FailedPrecondition(message),
            code => Self::Internal(format!("{code:?}: {message}")),
        }
    }
}

impl From<kv_storage::StorageError> for NodeError {
    fn from(error: kv_storage::StorageError) -> Self {
        match error {
            e @ kv_storage::StorageError::TooManySiblings { .. } => {
                Self::FailedPrecondition(e.to_string())
            }
            e @ kv_storage::StorageError::KeyTooLong { .. } => Self::InvalidArgument(e.to_string()),
            e => Self::Internal(e.to_string()),
        }
    }
}
