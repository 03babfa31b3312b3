//! The wire form of node-to-node messages: how versions, contexts and batch items are
//! encoded into `kvstore.internal` messages and decoded from them, and the limits both
//! sides enforce. Versions travel in kv-clock's binary DVVSet encoding, so a replica merges
//! exactly what the coordinator holds. The client side (transport, batcher) and the server
//! side (internal service) both use this module and nothing else to speak the protocol.

use bytes::Bytes;
use kv_aae::{Digest, HashRange, TreeFormat};
use kv_clock::{
    DecodeError, VersionVector, decode_dvvset, decode_version_vector, encode_dvvset,
    encode_version_vector,
};
use kv_node::{KeyPage, MAX_DIGEST_RANGES, MAX_KEY_PAGE, WriteCommand};
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
    /// An anti-entropy request names no tree format.
    #[error("anti-entropy request without a tree format")]
    NoFormat,
    /// A tree format field is out of range.
    #[error("tree format field {0} is out of range")]
    BadFormat(&'static str),
    /// A hash range is missing or runs backwards.
    #[error("hash range missing or its first position is after its last")]
    BadRange,
    /// Too many ranges in one digest request.
    #[error("a digest request holds at most {MAX_DIGEST_RANGES} ranges, not {0}")]
    TooManyRanges(usize),
    /// A key-list limit outside what the protocol allows.
    #[error("a key list holds 1..={MAX_KEY_PAGE} keys, not {0}")]
    BadKeyLimit(u32),
    /// An answer holds a different number of digests than ranges asked for.
    #[error("{got} digests answered {asked} ranges")]
    DigestCount {
        /// Ranges asked for.
        asked: usize,
        /// Digests received.
        got: usize,
    },
    /// A key list holds more keys than asked for.
    #[error("a key list of {got} keys answered a request for {asked}")]
    KeyCount {
        /// Keys asked for.
        asked: usize,
        /// Keys received.
        got: usize,
    },
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
pub fn read_item(key: Bytes, request_id: &str) -> proto::BatchItem {
    proto::BatchItem {
        op: Some(Op::Read(proto::ReadRequest {
            key,
            request_id: request_id.to_owned(),
        })),
    }
}

/// A batch item merging `versions` into `key`.
pub fn write_item(key: Bytes, versions: &Siblings, request_id: &str) -> proto::BatchItem {
    write_item_encoded(key, encode_siblings(versions), request_id)
}

/// A batch item merging versions already encoded (see [`encode_siblings`]) into `key`.
pub fn write_item_encoded(key: Bytes, siblings: Bytes, request_id: &str) -> proto::BatchItem {
    proto::BatchItem {
        op: Some(Op::Write(proto::WriteRequest {
            key,
            siblings,
            request_id: request_id.to_owned(),
        })),
    }
}

/// A batch item asking a fallback to hold `versions` of `key` for `target`.
pub fn hint_item(
    target: &str,
    key: Bytes,
    versions: &Siblings,
    request_id: &str,
) -> proto::BatchItem {
    hint_item_encoded(target, key, encode_siblings(versions), request_id)
}

/// A hint item with versions already encoded (see [`encode_siblings`]).
pub fn hint_item_encoded(
    target: &str,
    key: Bytes,
    siblings: Bytes,
    request_id: &str,
) -> proto::BatchItem {
    proto::BatchItem {
        op: Some(Op::Hint(proto::HintRequest {
            target: target.to_owned(),
            key,
            siblings,
            request_id: request_id.to_owned(),
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
        sloppy: command.sloppy,
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
        sloppy: request.sloppy,
    })
}

/// A tree format as the protocol carries it.
pub fn tree_format(format: TreeFormat) -> proto::TreeFormat {
    proto::TreeFormat {
        version: u32::from(format.version),
        partition_bits: u32::from(format.partition_bits),
        leaf_bits: u32::from(format.leaf_bits),
    }
}

/// The tree format a request names (the node checks it matches its own).
pub fn decode_tree_format(format: Option<&proto::TreeFormat>) -> Result<TreeFormat, WireError> {
    let format = format.ok_or(WireError::NoFormat)?;
    let field = |value: u32, name| u8::try_from(value).map_err(|_| WireError::BadFormat(name));
    Ok(TreeFormat {
        version: field(format.version, "version")?,
        partition_bits: field(format.partition_bits, "partition_bits")?,
        leaf_bits: field(format.leaf_bits, "leaf_bits")?,
    })
}

fn hash_range(range: HashRange) -> proto::HashRange {
    proto::HashRange {
        first: range.first(),
        last: range.last(),
    }
}

fn decode_hash_range(range: Option<&proto::HashRange>) -> Result<HashRange, WireError> {
    range
        .and_then(|r| HashRange::new(r.first, r.last))
        .ok_or(WireError::BadRange)
}

/// A request for the digests of `ranges`, for an exchange `initiator` runs.
pub fn digests_request(initiator: &str, ranges: &[HashRange]) -> proto::DigestsRequest {
    proto::DigestsRequest {
        format: Some(tree_format(TreeFormat::CURRENT)),
        ranges: ranges.iter().copied().map(hash_range).collect(),
        initiator: initiator.to_owned(),
        end: false,
        completed: false,
    }
}

/// The request that ends `initiator`'s exchange (`completed`: every difference on
/// `ranges` was repaired).
pub fn end_request(
    initiator: &str,
    completed: bool,
    ranges: &[HashRange],
) -> proto::DigestsRequest {
    proto::DigestsRequest {
        end: true,
        completed,
        ..digests_request(initiator, ranges)
    }
}

/// The format and ranges a digest request asks about, checked against the limits.
pub fn decode_digests_request(
    request: &proto::DigestsRequest,
) -> Result<(TreeFormat, Vec<HashRange>), WireError> {
    if request.ranges.len() > MAX_DIGEST_RANGES {
        return Err(WireError::TooManyRanges(request.ranges.len()));
    }
    let format = decode_tree_format(request.format.as_ref())?;
    let ranges = request
        .ranges
        .iter()
        .map(|r| decode_hash_range(Some(r)))
        .collect::<Result<_, _>>()?;
    Ok((format, ranges))
}

/// Digests as an answer carries them.
pub fn digests_response(digests: &[Digest]) -> proto::DigestsResponse {
    proto::DigestsResponse {
        digests: digests
            .iter()
            .map(|d| proto::RangeDigest {
                hash: d.hash,
                count: d.count,
            })
            .collect(),
    }
}

/// The digests an answer carries, one per range asked for.
pub fn decode_digests_response(
    response: &proto::DigestsResponse,
    asked: usize,
) -> Result<Vec<Digest>, WireError> {
    if response.digests.len() != asked {
        return Err(WireError::DigestCount {
            asked,
            got: response.digests.len(),
        });
    }
    Ok(response
        .digests
        .iter()
        .map(|d| Digest {
            hash: d.hash,
            count: d.count,
        })
        .collect())
}

/// A request for a page of `range`'s keys, for an exchange `initiator` runs.
pub fn key_list_request(
    initiator: &str,
    range: HashRange,
    after: Option<Bytes>,
    limit: usize,
) -> proto::KeyListRequest {
    proto::KeyListRequest {
        format: Some(tree_format(TreeFormat::CURRENT)),
        range: Some(hash_range(range)),
        after,
        limit: u32::try_from(limit).unwrap_or(u32::MAX),
        initiator: initiator.to_owned(),
    }
}

/// What a key-list request asks for, checked against the limits.
pub fn decode_key_list_request(
    request: &proto::KeyListRequest,
) -> Result<(TreeFormat, HashRange, usize), WireError> {
    let limit = request.limit as usize;
    if !(1..=MAX_KEY_PAGE).contains(&limit) {
        return Err(WireError::BadKeyLimit(request.limit));
    }
    let format = decode_tree_format(request.format.as_ref())?;
    Ok((format, decode_hash_range(request.range.as_ref())?, limit))
}

/// A page of keys as an answer carries it.
pub fn key_list_response(page: KeyPage) -> proto::KeyListResponse {
    proto::KeyListResponse {
        keys: page
            .keys
            .into_iter()
            .map(|(key, fingerprint)| proto::KeyFingerprint { key, fingerprint })
            .collect(),
        complete: page.complete,
    }
}

/// The page an answer carries; at most `asked` keys.
pub fn decode_key_list_response(
    response: proto::KeyListResponse,
    asked: usize,
) -> Result<KeyPage, WireError> {
    if response.keys.len() > asked {
        return Err(WireError::KeyCount {
            asked,
            got: response.keys.len(),
        });
    }
    Ok(KeyPage {
        keys: response
            .keys
            .into_iter()
            .map(|k| (k.key, k.fingerprint))
            .collect(),
        complete: response.complete,
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
            sloppy: true,
        };
        let decoded = decode_coordinate_request(coordinate_request(command.clone())).unwrap();
        assert!(decoded.sloppy);
        assert_eq!(decoded.key, command.key);
        assert_eq!(decoded.value, None);
        assert_eq!(decoded.context, command.context);
        assert_eq!(decoded.write_quorum, 2);
        let reply = read_response(Some(&set));
        assert_eq!(decode_read_response(&reply).unwrap(), Some(set));
        assert_eq!(decode_read_response(&read_response(None)).unwrap(), None);
    }

    #[test]
    fn anti_entropy_messages_round_trip_and_are_bounded() {
        let ranges = [HashRange::FULL, HashRange::new(5, 9).unwrap()];
        let (format, decoded) = decode_digests_request(&digests_request("n1", &ranges)).unwrap();
        assert_eq!(
            (format, decoded.as_slice()),
            (TreeFormat::CURRENT, &ranges[..])
        );
        let digests = [Digest { hash: 7, count: 2 }, Digest::EMPTY];
        assert_eq!(
            decode_digests_response(&digests_response(&digests), 2).unwrap(),
            digests
        );
        assert!(decode_digests_response(&digests_response(&digests), 3).is_err());
        let backwards = proto::DigestsRequest {
            format: Some(tree_format(TreeFormat::CURRENT)),
            ranges: vec![proto::HashRange { first: 9, last: 5 }],
            initiator: "n1".into(),
            end: false,
            completed: false,
        };
        assert_eq!(decode_digests_request(&backwards), Err(WireError::BadRange));
        let too_many = digests_request("n1", &vec![HashRange::FULL; MAX_DIGEST_RANGES + 1]);
        assert!(matches!(
            decode_digests_request(&too_many),
            Err(WireError::TooManyRanges(_))
        ));
        let no_format = proto::DigestsRequest::default();
        assert_eq!(decode_digests_request(&no_format), Err(WireError::NoFormat));
        let request = key_list_request("n1", HashRange::FULL, Some(Bytes::from_static(b"k")), 10);
        let (_, range, limit) = decode_key_list_request(&request).unwrap();
        assert_eq!((range, limit), (HashRange::FULL, 10));
        let unbounded = proto::KeyListRequest {
            limit: 0,
            ..request.clone()
        };
        assert_eq!(
            decode_key_list_request(&unbounded),
            Err(WireError::BadKeyLimit(0))
        );
        let page = KeyPage {
            keys: vec![(Bytes::from_static(b"a"), 1), (Bytes::from_static(b"b"), 2)],
            complete: false,
        };
        let response = key_list_response(page.clone());
        assert_eq!(decode_key_list_response(response.clone(), 2).unwrap(), page);
        assert!(decode_key_list_response(response, 1).is_err());
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
            .map(|_| read_item(Bytes::from_static(b"k"), ""))
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
