//! The wire form of node-to-node messages: how versions, contexts and batch items are
//! encoded into `kvstore.internal` messages and decoded from them, and the limits both
//! sides enforce. Versions travel in kv-clock's binary DVVSet encoding, so a replica merges
//! exactly what the coordinator holds. The client side (transport, batcher) and the server
//! side (internal service) both use this module and nothing else to speak the protocol.

use bytes::Bytes;
use kv_clock::{
    DecodeError, VersionVector, decode_dvvset, decode_version_vector, encode_dvvset,
    encode_version_vector,
};
use kv_node::WriteCommand;
use kv_proto::internal as proto;
use kv_storage::Siblings;
use thiserror::Error;

pub use proto::batch_item::Op;
pub use proto::batch_result::Outcome;

/// Most items in one `Replica/Batch` call; the server refuses more.
pub const MAX_BATCH_ITEMS: usize = 256;

/// Largest internal message. Replica traffic is not bound by client limits (repair must
/// converge whatever a key holds); this only stops absurd messages.
pub const INTERNAL_MESSAGE_LIMIT_BYTES: usize = 256 * 1024 * 1024;

/// An internal message that does not follow the protocol.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum WireError {
    /// A DVVSet failed to decode.
    #[error("malformed versions: {0}")]
    MalformedVersions(DecodeError),
    /// A version vector failed to decode.
    #[error("malformed context: {0}")]
    MalformedContext(DecodeError),
    /// A batch item carried no operation.
    #[error("a batch item holds neither a read nor a write")]
    EmptyItem,
    /// A batch held more items than the protocol allows.
    #[error("a batch holds at most {MAX_BATCH_ITEMS} items, not {0}")]
    TooManyItems(usize),
    /// A batch answer did not have one result per item.
    #[error("batch answered {results} results for {items} items")]
    ResultCount {
        /// Results received.
        results: usize,
        /// Items sent.
        items: usize,
    },
    /// A batch result answered another kind of operation than its item.
    #[error("a batch result answers a different operation than its item")]
    MismatchedResult,
    /// A batch result was empty.
    #[error("empty batch result")]
    EmptyResult,
}

/// Encodes a key's versions.
pub fn encode_siblings(versions: &Siblings) -> Bytes {
    let mut out = Vec::new();
    encode_dvvset(versions, &mut out);
    out.into()
}

/// Decodes a key's versions; every invariant is checked.
pub fn decode_siblings(raw: &[u8]) -> Result<Siblings, WireError> {
    decode_dvvset(raw).map_err(WireError::MalformedVersions)
}

/// Encodes a causal context.
pub fn encode_context(context: &VersionVector) -> Bytes {
    let mut out = Vec::new();
    encode_version_vector(context, &mut out);
    out.into()
}

/// Decodes a causal context.
pub fn decode_context(raw: &[u8]) -> Result<VersionVector, WireError> {
    decode_version_vector(raw).map_err(WireError::MalformedContext)
}

/// A batch item reading `key`.
pub fn read_item(key: Bytes) -> proto::BatchItem {
    proto::BatchItem {
        op: Some(Op::Read(proto::ReadRequest { key })),
    }
}

/// A batch item merging `versions` into `key`.
pub fn write_item(key: Bytes, versions: &Siblings) -> proto::BatchItem {
    proto::BatchItem {
        op: Some(Op::Write(proto::WriteRequest {
            key,
            siblings: encode_siblings(versions),
        })),
    }
}

/// A replica's answer to a read: its versions, if it has the key.
pub fn read_response(versions: Option<&Siblings>) -> proto::ReadResponse {
    match versions {
        Some(versions) => proto::ReadResponse {
            found: true,
            siblings: encode_siblings(versions),
        },
        None => proto::ReadResponse::default(),
    }
}

/// The versions a read answer carries.
pub fn decode_read_response(reply: &proto::ReadResponse) -> Result<Option<Siblings>, WireError> {
    if !reply.found {
        return Ok(None);
    }
    decode_siblings(&reply.siblings).map(Some)
}

/// A write handed to a replica to coordinate.
pub fn coordinate_request(command: WriteCommand) -> proto::CoordinateWriteRequest {
    proto::CoordinateWriteRequest {
        key: command.key,
        value: command.value,
        context: encode_context(&command.context),
        write_quorum: u32::try_from(command.write_quorum).unwrap_or(u32::MAX),
        request_id: command.request_id,
    }
}

/// The write a coordinate request carries (the node validates W against its ring).
pub fn decode_coordinate_request(
    request: proto::CoordinateWriteRequest,
) -> Result<WriteCommand, WireError> {
    Ok(WriteCommand {
        context: decode_context(&request.context)?,
        key: request.key,
        value: request.value,
        write_quorum: request.write_quorum as usize,
        request_id: request.request_id,
    })
}

/// Checks a batch's size before any item runs.
pub fn check_batch(request: &proto::BatchRequest) -> Result<(), WireError> {
    if request.items.len() > MAX_BATCH_ITEMS {
        return Err(WireError::TooManyItems(request.items.len()));
    }
    Ok(())
}

/// Pairs a batch answer with the items sent: one result per item, in order.
pub fn check_batch_response(
    response: proto::BatchResponse,
    items: usize,
) -> Result<Vec<proto::BatchResult>, WireError> {
    if response.results.len() != items {
        return Err(WireError::ResultCount {
            results: response.results.len(),
            items,
        });
    }
    Ok(response.results)
}

#[cfg(test)]
mod tests {
    use kv_clock::ActorId;

    use super::*;

    fn versions(value: &str) -> Siblings {
        let mut set = Siblings::new();
        set.update(
            &VersionVector::new(),
            Some(Bytes::from(value.to_owned())),
            &ActorId::new("n1").unwrap(),
        );
        set
    }

    #[test]
    fn versions_contexts_and_commands_round_trip() {
        let set = versions("v");
        assert_eq!(decode_siblings(&encode_siblings(&set)).unwrap(), set);
        let context = set.join();
        assert_eq!(decode_context(&encode_context(&context)).unwrap(), context);
        let command = WriteCommand {
            key: Bytes::from_static(b"k"),
            value: None,
            context,
            write_quorum: 2,
            request_id: "r".into(),
        };
        let decoded = decode_coordinate_request(coordinate_request(command.clone())).unwrap();
        assert_eq!(decoded.key, command.key);
        assert_eq!(decoded.value, None);
        assert_eq!(decoded.context, command.context);
        assert_eq!(decoded.write_quorum, 2);
        let reply = read_response(Some(&set));
        assert_eq!(decode_read_response(&reply).unwrap(), Some(set));
        assert_eq!(decode_read_response(&read_response(None)).unwrap(), None);
    }

    #[test]
    fn malformed_input_is_an_error_not_a_panic() {
        assert!(matches!(
            decode_siblings(b"\xff\x01"),
            Err(WireError::MalformedVersions(_))
        ));
        assert!(matches!(
            decode_context(b"garbage"),
            Err(WireError::MalformedContext(_))
        ));
        let found_but_empty = proto::ReadResponse {
            found: true,
            siblings: Bytes::new(),
        };
        assert!(decode_read_response(&found_but_empty).is_err());
        let items = (0..=MAX_BATCH_ITEMS)
            .map(|_| read_item(Bytes::from_static(b"k")))
            .collect();
        let error = check_batch(&proto::BatchRequest { items }).unwrap_err();
        assert!(error.to_string().contains("at most 256"), "{error}");
        let short = proto::BatchResponse { results: vec![] };
        assert_eq!(
            check_batch_response(short, 2).unwrap_err(),
            WireError::ResultCount {
                results: 0,
                items: 2
            }
        );
    }
}
