//! Hints: versions of a key a node holds for another replica that missed them (hinted
//! handoff). They live apart from the node's own keys (their own keyspace), so the
//! anti-entropy index, scans and cleanup never see them, and they survive restarts like
//! the keys do.
//!
//! Hint key:    `target_len: u8 || target || user key` (hints grouped per target).
//! Hint record: `format: u8 (=1) || xxh3_64(payload) as u32 LE || payload`, where the
//!              payload is `updated_unix_ms: u64 LE || kv-clock encoding of the versions`.

use std::ops::Bound;

use bytes::Bytes;
use kv_clock::{decode_dvvset, encode_dvvset};
use xxhash_rust::xxh3::xxh3_64;

use crate::record::corrupt;
use crate::{Siblings, StorageError};

const HINT_FORMAT: u8 = 1;
const HEADER_BYTES: usize = 5;
const TIME_BYTES: usize = 8;
/// Longest hint target (a node id) the key layout can hold.
pub const MAX_HINT_TARGET_BYTES: usize = u8::MAX as usize;

/// Versions of one key held for one target replica.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hint {
    /// The replica the versions are for.
    pub target: String,
    /// The key.
    pub key: Bytes,
    /// Everything hinted for the key so far, merged (DVVSet sync).
    pub versions: Siblings,
    /// Wall-clock time of the last write that added to the hint (Unix ms).
    pub updated_unix_ms: u64,
    /// Bytes the hint takes in the store (key and record).
    pub size_bytes: u64,
}

/// What storing a hint did: the hint's size before (`None`: it is new) and after.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HintUpdate {
    /// Size of the hint before, if there was one.
    pub before_bytes: Option<u64>,
    /// Size after.
    pub after_bytes: u64,
}

fn check_target(target: &str) -> Result<(), StorageError> {
    if target.is_empty() || target.len() > MAX_HINT_TARGET_BYTES {
        return Err(StorageError::BadHintTarget {
            len_bytes: target.len(),
        });
    }
    Ok(())
}

/// The raw key of `target`'s hint for `key`, refused for a target no node id can be.
pub(crate) fn hint_key(target: &str, key: &[u8]) -> Result<Vec<u8>, StorageError> {
    check_target(target)?;
    Ok(raw_hint_key(target, key))
}

fn raw_hint_key(target: &str, key: &[u8]) -> Vec<u8> {
    debug_assert!(target.len() <= MAX_HINT_TARGET_BYTES);
    let mut out = Vec::with_capacity(1 + target.len() + key.len());
    out.push(target.len() as u8);
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(key);
    out
}

/// Raw-key bounds of a scan, as both engines take them.
pub(crate) type RawBounds = (Bound<Vec<u8>>, Bound<Vec<u8>>);

/// The raw keys of `target`'s hints after key `after` (all of them without it).
pub(crate) fn target_scan(target: &str, after: Option<&[u8]>) -> Result<RawBounds, StorageError> {
    check_target(target)?;
    let (first, end) = target_bounds(target);
    let start = after.map_or(Bound::Included(first), |key| {
        Bound::Excluded(raw_hint_key(target, key))
    });
    Ok((start, Bound::Excluded(end)))
}

/// The raw keys of every target's hints after `(target, key)`.
pub(crate) fn all_scan(after: Option<(&str, &[u8])>) -> RawBounds {
    let start = after.map_or(Bound::Unbounded, |(target, key)| {
        Bound::Excluded(raw_hint_key(target, key))
    });
    (start, Bound::Unbounded)
}

/// The record a hint holds once `versions` are added to what `stored` (its raw record,
/// if any) held, and what that does to its size.
pub(crate) fn grown_record(
    raw_key: &[u8],
    key: &[u8],
    stored: Option<&[u8]>,
    versions: &Siblings,
    now_unix_ms: u64,
) -> Result<(Vec<u8>, HintUpdate), StorageError> {
    let held = stored.map(|raw| decode_hint(key, raw)).transpose()?;
    let record = encode_hint(
        &coalesce(held.as_ref().map(|h| &h.0), versions),
        now_unix_ms,
    );
    let update = HintUpdate {
        before_bytes: stored.map(|raw| (raw_key.len() + raw.len()) as u64),
        after_bytes: (raw_key.len() + record.len()) as u64,
    };
    Ok((record, update))
}

/// The bytes a stored hint frees if it still holds exactly `expected`.
pub(crate) fn removable(
    raw_key: &[u8],
    key: &[u8],
    stored: &[u8],
    expected: &Siblings,
) -> Result<Option<u64>, StorageError> {
    let unchanged = decode_hint(key, stored)?.0 == *expected;
    Ok(unchanged.then_some((raw_key.len() + stored.len()) as u64))
}

/// The first raw key of `target`'s hints and the first raw key past them.
fn target_bounds(target: &str) -> (Vec<u8>, Vec<u8>) {
    let start = raw_hint_key(target, b"");
    let mut end = start.clone();
    // Keys of this target all start with `start`; the next prefix in byte order ends them.
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            break;
        }
    }
    (start, end)
}

pub(crate) fn split_hint_key(raw: &[u8]) -> Result<(String, Bytes), StorageError> {
    let Some((&len, rest)) = raw.split_first() else {
        return Err(corrupt(raw, "empty hint key"));
    };
    let len = usize::from(len);
    if rest.len() < len {
        return Err(corrupt(raw, "hint key shorter than its target"));
    }
    let (target, key) = rest.split_at(len);
    let target = std::str::from_utf8(target)
        .map_err(|_| corrupt(raw, "hint target is not UTF-8"))?
        .to_owned();
    Ok((target, Bytes::copy_from_slice(key)))
}

pub(crate) fn encode_hint(versions: &Siblings, updated_unix_ms: u64) -> Vec<u8> {
    let mut payload = updated_unix_ms.to_le_bytes().to_vec();
    encode_dvvset(versions, &mut payload);
    let mut out = Vec::with_capacity(HEADER_BYTES + payload.len());
    out.push(HINT_FORMAT);
    out.extend_from_slice(&(xxh3_64(&payload) as u32).to_le_bytes());
    out.extend_from_slice(&payload);
    out
}

/// Decodes a hint record into (versions, updated_unix_ms).
fn decode_hint(key: &[u8], raw: &[u8]) -> Result<(Siblings, u64), StorageError> {
    if raw.len() < HEADER_BYTES + TIME_BYTES {
        return Err(corrupt(key, "hint record shorter than its header"));
    }
    if raw[0] != HINT_FORMAT {
        return Err(corrupt(key, &format!("unknown hint format {}", raw[0])));
    }
    let stored_sum = u32::from_le_bytes(raw[1..HEADER_BYTES].try_into().expect("4 bytes"));
    let payload = &raw[HEADER_BYTES..];
    if xxh3_64(payload) as u32 != stored_sum {
        return Err(corrupt(key, "hint checksum mismatch"));
    }
    let (time, versions) = payload.split_at(TIME_BYTES);
    let updated = u64::from_le_bytes(time.try_into().expect("8 bytes"));
    let versions = decode_dvvset(versions).map_err(|e| corrupt(key, &e.to_string()))?;
    Ok((versions, updated))
}

/// The versions a hint holds after `incoming` is added to what it held.
fn coalesce(stored: Option<&Siblings>, incoming: &Siblings) -> Siblings {
    match stored {
        None => incoming.clone(),
        Some(held) => {
            let mut merged = held.clone();
            merged.sync(incoming);
            merged
        }
    }
}

/// A decoded hint from its raw key and record.
pub(crate) fn hint_from_raw(raw_key: &[u8], raw_value: &[u8]) -> Result<Hint, StorageError> {
    let (target, key) = split_hint_key(raw_key)?;
    let (versions, updated_unix_ms) = decode_hint(&key, raw_value)?;
    Ok(Hint {
        target,
        key,
        versions,
        updated_unix_ms,
        size_bytes: (raw_key.len() + raw_value.len()) as u64,
    })
}

#[cfg(test)]
mod tests {
    use kv_clock::{ActorId, VersionVector};

    use super::*;

    #[test]
    fn a_hint_round_trips_and_damage_is_detected() {
        let actor = ActorId::new("n1").unwrap();
        let mut versions = Siblings::default();
        versions.update(&VersionVector::new(), Some(Bytes::from("v")), &actor);
        let raw_key = hint_key("n3", b"user:1").unwrap();
        let raw = encode_hint(&versions, 42);
        let hint = hint_from_raw(&raw_key, &raw).unwrap();
        assert_eq!(hint.target, "n3");
        assert_eq!(&hint.key[..], b"user:1");
        assert_eq!(hint.versions, versions);
        assert_eq!(hint.updated_unix_ms, 42);
        let mut damaged = raw.clone();
        *damaged.last_mut().unwrap() ^= 1;
        assert!(hint_from_raw(&raw_key, &damaged).is_err());
        assert!(hint_from_raw(&[9, b'n'], &raw).is_err());
    }

    #[test]
    fn target_bounds_hold_exactly_that_targets_hints() {
        let (start, end) = target_bounds("n1");
        for (target, inside) in [("n1", true), ("n10", false), ("n0", false), ("n2", false)] {
            let key = hint_key(target, b"k").unwrap();
            assert_eq!(key >= start && key < end, inside, "{target}");
        }
    }
}
