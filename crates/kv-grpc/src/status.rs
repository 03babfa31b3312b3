//! The one place where node errors become gRPC statuses and statuses become transport
//! errors again.
//!
//! Sorting a failed call matters for safety, not just for messages: a write may be
//! retried on another replica only if the first certainly did not process it, so
//! [`classify`] reports `Unreachable` only when tonic failed to connect at all.

use std::error::Error as _;

use kv_node::{ErrorKind, NodeError, RemoteError, TransportError};
use kv_proto::internal as proto;
use tonic::{Code, Status};

use crate::wire::WireError;

/// The status code of an error kind.
pub fn code_of(kind: ErrorKind) -> Code {
    match kind {
        ErrorKind::InvalidArgument => Code::InvalidArgument,
        ErrorKind::Unavailable => Code::Unavailable,
        ErrorKind::DeadlineExceeded => Code::DeadlineExceeded,
        ErrorKind::FailedPrecondition => Code::FailedPrecondition,
        ErrorKind::Internal => Code::Internal,
    }
}

/// The error kind of a status code a peer answered with.
pub fn kind_of(code: Code) -> ErrorKind {
    match code {
        Code::InvalidArgument | Code::OutOfRange => ErrorKind::InvalidArgument,
        Code::Unavailable | Code::ResourceExhausted | Code::Aborted => ErrorKind::Unavailable,
        Code::DeadlineExceeded | Code::Cancelled => ErrorKind::DeadlineExceeded,
        Code::FailedPrecondition => ErrorKind::FailedPrecondition,
        _ => ErrorKind::Internal,
    }
}

/// The status a client (or a peer) receives for a node error.
pub fn status_of(error: &NodeError) -> Status {
    Status::new(code_of(error.kind()), error.to_string())
}

/// The status for a message that breaks the internal protocol.
pub fn wire_status(error: &WireError) -> Status {
    Status::invalid_argument(error.to_string())
}

/// A batch item's error, as its result carries it.
pub fn item_error(status: &Status) -> proto::ItemError {
    proto::ItemError {
        code: status.code() as i32,
        message: status.message().to_owned(),
    }
}

/// The peer's error that a batch item result carries.
pub fn remote_item_error(peer: &str, error: proto::ItemError) -> TransportError {
    TransportError::Remote {
        peer: peer.to_owned(),
        error: RemoteError {
            kind: kind_of(Code::from(error.code)),
            message: error.message,
        },
    }
}

/// A reply that does not follow the protocol: the peer answered, but unusably.
pub fn bad_reply(peer: &str, error: &WireError) -> TransportError {
    TransportError::Remote {
        peer: peer.to_owned(),
        error: RemoteError {
            kind: ErrorKind::Internal,
            message: format!("unreadable reply: {error}"),
        },
    }
}

/// Sorts a failed call: never sent (tonic could not connect), timed out, broken after it
/// was sent, or answered with an error.
///
/// A status tonic produced locally carries the transport error as its source; one the
/// peer sent carries none. Only a connection failure proves the peer never saw the call.
pub fn classify(peer: &str, status: &Status) -> TransportError {
    let peer = peer.to_owned();
    match status.code() {
        Code::DeadlineExceeded | Code::Cancelled => TransportError::Timeout { peer },
        _ if status.source().is_none() => TransportError::Remote {
            peer,
            error: RemoteError {
                kind: kind_of(status.code()),
                message: status.message().to_owned(),
            },
        },
        _ if failed_to_connect(status) => TransportError::Unreachable {
            peer,
            reason: status.message().to_owned(),
        },
        _ => TransportError::Interrupted {
            peer,
            reason: status.message().to_owned(),
        },
    }
}

/// Whether tonic's connection attempt failed (a `ConnectError` in the source chain).
fn failed_to_connect(status: &Status) -> bool {
    let mut source = status.source();
    while let Some(error) = source {
        if error.is::<tonic::ConnectError>() {
            return true;
        }
        source = error.source();
    }
    false
}

/// A status as tonic reports a connection that could not be opened; for in-process
/// transports (a simulation) that must fail the way a real channel does.
pub fn connect_failure(reason: &str) -> Status {
    let mut status = Status::unavailable(reason.to_owned());
    let cause = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, reason.to_owned());
    status.set_source(std::sync::Arc::new(tonic::ConnectError(Box::new(cause))));
    status
}

/// A status as tonic reports a connection that broke after the call was sent.
pub fn broken_connection(reason: &str) -> Status {
    let mut status = Status::unavailable(reason.to_owned());
    let cause = std::io::Error::new(std::io::ErrorKind::ConnectionReset, reason.to_owned());
    status.set_source(std::sync::Arc::new(cause));
    status
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_survives_a_round_trip_through_its_code() {
        for kind in [
            ErrorKind::InvalidArgument,
            ErrorKind::Unavailable,
            ErrorKind::DeadlineExceeded,
            ErrorKind::FailedPrecondition,
            ErrorKind::Internal,
        ] {
            assert_eq!(kind_of(code_of(kind)), kind);
        }
    }

    #[test]
    fn a_remote_unavailable_is_an_answer_not_an_unreachable_peer() {
        // The peer itself failed its quorum: it processed the request. Retrying the write
        // elsewhere would mint a second version.
        let answered = Status::unavailable("write quorum not met");
        assert!(matches!(
            classify("n2", &answered),
            TransportError::Remote {
                error: RemoteError {
                    kind: ErrorKind::Unavailable,
                    ..
                },
                ..
            }
        ));
        assert!(matches!(
            classify("n2", &connect_failure("connection refused")),
            TransportError::Unreachable { .. }
        ));
        assert!(matches!(
            classify("n2", &broken_connection("connection reset")),
            TransportError::Interrupted { .. }
        ));
        assert!(matches!(
            classify("n2", &Status::deadline_exceeded("slow")),
            TransportError::Timeout { .. }
        ));
    }
}
