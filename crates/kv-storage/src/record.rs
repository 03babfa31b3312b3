//! On-disk layout shared by persistent engines: keys ordered by ring position, and
//! records with a format version and a checksum so corruption is detected, not served.
//!
//! Key:    `hash: u64 big-endian || user key`.
//! Record: `format: u8 (=1) || xxh3_64(payload) as u32 little-endian || payload`, where
//!         the payload is the kv-clock encoding of the key's [`Siblings`].

use bytes::Bytes;
use kv_clock::{decode_dvvset, encode_dvvset};
use xxhash_rust::xxh3::xxh3_64;

use crate::{Siblings, StorageError};

const RECORD_FORMAT: u8 = 1;
const HEADER_BYTES: usize = 5;

pub(crate) fn storage_key(hash: u64, key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + key.len());
    out.extend_from_slice(&hash.to_be_bytes());
    out.extend_from_slice(key);
    out
}

/// Splits a storage key into its ring position and user key.
pub(crate) fn split_storage_key(raw: &[u8]) -> Result<(u64, Bytes), StorageError> {
    if raw.len() < 8 {
        return Err(corrupt(
            raw,
            "storage key shorter than its 8-byte hash prefix",
        ));
    }
    let (hash, key) = raw.split_at(8);
    let hash = u64::from_be_bytes(hash.try_into().expect("8 bytes"));
    Ok((hash, Bytes::copy_from_slice(key)))
}

/// Encodes the payload in place after a reserved header, then fills the header in: one
/// buffer, no copy of the payload.
pub(crate) fn encode_record(siblings: &Siblings) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    out.push(RECORD_FORMAT);
    out.extend_from_slice(&[0; HEADER_BYTES - 1]);
    encode_dvvset(siblings, &mut out);
    let checksum = xxh3_64(&out[HEADER_BYTES..]) as u32;
    out[1..HEADER_BYTES].copy_from_slice(&checksum.to_le_bytes());
    out
}

pub(crate) fn decode_record(key: &[u8], raw: &[u8]) -> Result<Siblings, StorageError> {
    if raw.len() < HEADER_BYTES {
        return Err(corrupt(key, "record shorter than its header"));
    }
    if raw[0] != RECORD_FORMAT {
        return Err(corrupt(key, &format!("unknown record format {}", raw[0])));
    }
    let stored_sum = u32::from_le_bytes(raw[1..HEADER_BYTES].try_into().expect("4 bytes"));
    let payload = &raw[HEADER_BYTES..];
    if xxh3_64(payload) as u32 != stored_sum {
        return Err(corrupt(key, "checksum mismatch"));
    }
    decode_dvvset(payload).map_err(|e| corrupt(key, &e.to_string()))
}

pub(crate) fn corrupt(key: &[u8], reason: &str) -> StorageError {
    StorageError::Corrupt {
        key: String::from_utf8_lossy(key).into_owned(),
        reason: reason.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use kv_clock::{ActorId, VersionVector, encode_dvvset};
    use xxhash_rust::xxh3::xxh3_64;

    use super::{decode_record, encode_record};
    use crate::Siblings;

    #[test]
    fn a_record_is_format_then_checksum_then_payload() {
        let mut siblings = Siblings::new();
        let actor = ActorId::new("n1").unwrap();
        siblings.update(
            &VersionVector::new(),
            Some(Bytes::from_static(b"value")),
            &actor,
        );
        let mut payload = Vec::new();
        encode_dvvset(&siblings, &mut payload);
        let mut expected = vec![1u8];
        expected.extend_from_slice(&(xxh3_64(&payload) as u32).to_le_bytes());
        expected.extend_from_slice(&payload);
        let record = encode_record(&siblings);
        assert_eq!(record, expected, "the on-disk layout must not change");
        assert_eq!(decode_record(b"k", &record).unwrap(), siblings);
    }
}
