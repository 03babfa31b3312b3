//! Compact, versioned binary encoding of clocks for storage and the wire.
//!
//! Layout (format 1): one version byte, then LEB128 varints. A version vector is
//! `count, (actor_len, actor_utf8, counter)*`; a DVVSet is
//! `count, (actor_len, actor_utf8, counter, value_count, value*)*` with values newest
//! first, each encoded by its [`ValueCodec`]. Decoding checks every invariant and never
//! trusts a length beyond the bytes actually present.

use bytes::Bytes;

use crate::dvvset::Entry;
use crate::{ActorId, DecodeError, DvvSet, VersionVector};

/// The encoding version written by this crate.
pub const FORMAT_VERSION: u8 = 1;

/// How a value type is written inside an encoded [`DvvSet`].
pub trait ValueCodec: Sized {
    /// Appends the encoding of `self` to `out`.
    fn encode(&self, out: &mut Vec<u8>);
    /// Reads one value from the front of `input`, advancing it.
    fn decode(input: &mut &[u8]) -> Result<Self, DecodeError>;
}

impl ValueCodec for Bytes {
    fn encode(&self, out: &mut Vec<u8>) {
        put_varint(out, self.len() as u64);
        out.extend_from_slice(self);
    }
    fn decode(input: &mut &[u8]) -> Result<Self, DecodeError> {
        take_bytes(input).map(Bytes::copy_from_slice)
    }
}

impl ValueCodec for Vec<u8> {
    fn encode(&self, out: &mut Vec<u8>) {
        put_varint(out, self.len() as u64);
        out.extend_from_slice(self);
    }
    fn decode(input: &mut &[u8]) -> Result<Self, DecodeError> {
        take_bytes(input).map(<[u8]>::to_vec)
    }
}

impl ValueCodec for String {
    fn encode(&self, out: &mut Vec<u8>) {
        put_varint(out, self.len() as u64);
        out.extend_from_slice(self.as_bytes());
    }
    fn decode(input: &mut &[u8]) -> Result<Self, DecodeError> {
        let raw = take_bytes(input)?;
        String::from_utf8(raw.to_vec()).map_err(|_| DecodeError::BadValue("string is not UTF-8"))
    }
}

impl ValueCodec for u64 {
    fn encode(&self, out: &mut Vec<u8>) {
        put_varint(out, *self);
    }
    fn decode(input: &mut &[u8]) -> Result<Self, DecodeError> {
        take_varint(input)
    }
}

/// `None` encodes as tag 0, `Some(v)` as tag 1 followed by `v`: a tombstone is `None`.
impl<T: ValueCodec> ValueCodec for Option<T> {
    fn encode(&self, out: &mut Vec<u8>) {
        match self {
            None => out.push(0),
            Some(value) => {
                out.push(1);
                value.encode(out);
            }
        }
    }
    fn decode(input: &mut &[u8]) -> Result<Self, DecodeError> {
        match take_u8(input)? {
            0 => Ok(None),
            1 => T::decode(input).map(Some),
            _ => Err(DecodeError::BadValue("option tag is neither 0 nor 1")),
        }
    }
}

/// Appends the encoding of a version vector to `out`.
pub fn encode_version_vector(vv: &VersionVector, out: &mut Vec<u8>) {
    out.push(FORMAT_VERSION);
    put_varint(out, vv.len() as u64);
    for (actor, counter) in vv.iter() {
        put_actor(out, actor);
        put_varint(out, counter);
    }
}

/// Decodes a whole buffer as a version vector.
pub fn decode_version_vector(mut input: &[u8]) -> Result<VersionVector, DecodeError> {
    take_version(&mut input)?;
    let count = take_count(&mut input, 2)?;
    let mut entries: Vec<(ActorId, u64)> = Vec::with_capacity(count);
    for _ in 0..count {
        let actor = take_actor(&mut input)?;
        let counter = take_counter(&mut input)?;
        if entries.last().is_some_and(|(prev, _)| *prev >= actor) {
            return Err(DecodeError::Unsorted);
        }
        entries.push((actor, counter));
    }
    finish(input)?;
    Ok(VersionVector::from_sorted_unchecked(entries))
}

/// Appends the encoding of a DVVSet to `out`.
///
/// ```
/// use kv_clock::{ActorId, DvvSet, VersionVector, decode_dvvset, encode_dvvset};
/// let mut set: DvvSet<Vec<u8>> = DvvSet::new();
/// set.update(&VersionVector::new(), b"hello".to_vec(), &ActorId::new("n1").unwrap());
/// let mut buf = Vec::new();
/// encode_dvvset(&set, &mut buf);
/// assert_eq!(decode_dvvset::<Vec<u8>>(&buf).unwrap(), set);
/// assert!(decode_dvvset::<Vec<u8>>(&buf[..buf.len() - 1]).is_err());
/// ```
pub fn encode_dvvset<V: ValueCodec>(set: &DvvSet<V>, out: &mut Vec<u8>) {
    out.push(FORMAT_VERSION);
    put_varint(out, set.entries.len() as u64);
    for entry in &set.entries {
        put_actor(out, &entry.actor);
        put_varint(out, entry.counter);
        put_varint(out, entry.values.len() as u64);
        for value in &entry.values {
            value.encode(out);
        }
    }
}

/// Decodes a whole buffer as a DVVSet, checking every invariant.
pub fn decode_dvvset<V: ValueCodec>(mut input: &[u8]) -> Result<DvvSet<V>, DecodeError> {
    take_version(&mut input)?;
    let count = take_count(&mut input, 3)?;
    let mut entries: Vec<Entry<V>> = Vec::with_capacity(count);
    for _ in 0..count {
        let actor = take_actor(&mut input)?;
        if entries.last().is_some_and(|prev| prev.actor >= actor) {
            return Err(DecodeError::Unsorted);
        }
        let counter = take_counter(&mut input)?;
        let value_count = take_varint(&mut input)?;
        if value_count > counter {
            return Err(DecodeError::TooManyValues {
                values: value_count,
                counter,
            });
        }
        let value_count = bounded_count(value_count, input.len(), 1)?;
        let mut values = Vec::with_capacity(value_count);
        for _ in 0..value_count {
            values.push(V::decode(&mut input)?);
        }
        entries.push(Entry {
            actor,
            counter,
            values,
        });
    }
    finish(input)?;
    let set = DvvSet { entries };
    debug_assert!(set.is_well_formed());
    Ok(set)
}

fn put_actor(out: &mut Vec<u8>, actor: &ActorId) {
    put_varint(out, actor.as_str().len() as u64);
    out.extend_from_slice(actor.as_str().as_bytes());
}

fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn take_u8(input: &mut &[u8]) -> Result<u8, DecodeError> {
    let (&first, rest) = input.split_first().ok_or(DecodeError::Truncated)?;
    *input = rest;
    Ok(first)
}

fn take_varint(input: &mut &[u8]) -> Result<u64, DecodeError> {
    let mut value: u64 = 0;
    for shift in (0..64).step_by(7) {
        let byte = take_u8(input)?;
        let bits = u64::from(byte & 0x7f);
        if shift == 63 && bits > 1 {
            return Err(DecodeError::BadVarint);
        }
        value |= bits << shift;
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err(DecodeError::BadVarint)
}

fn take_bytes<'a>(input: &mut &'a [u8]) -> Result<&'a [u8], DecodeError> {
    let len = take_varint(input)?;
    let len = usize::try_from(len).map_err(|_| DecodeError::Truncated)?;
    if len > input.len() {
        return Err(DecodeError::Truncated);
    }
    let (head, rest) = input.split_at(len);
    *input = rest;
    Ok(head)
}

fn take_version(input: &mut &[u8]) -> Result<(), DecodeError> {
    match take_u8(input)? {
        FORMAT_VERSION => Ok(()),
        other => Err(DecodeError::UnsupportedVersion(other)),
    }
}

/// Reads an element count and rejects it if the remaining input cannot possibly hold
/// that many elements of at least `min_bytes_each`: no allocation is sized by a lie.
fn take_count(input: &mut &[u8], min_bytes_each: usize) -> Result<usize, DecodeError> {
    let count = take_varint(input)?;
    bounded_count(count, input.len(), min_bytes_each)
}

fn bounded_count(
    count: u64,
    remaining: usize,
    min_bytes_each: usize,
) -> Result<usize, DecodeError> {
    match usize::try_from(count) {
        Ok(count) if count.saturating_mul(min_bytes_each) <= remaining => Ok(count),
        _ => Err(DecodeError::Truncated),
    }
}

fn take_actor(input: &mut &[u8]) -> Result<ActorId, DecodeError> {
    let raw = take_bytes(input)?;
    let text = std::str::from_utf8(raw).map_err(|_| DecodeError::BadActor("not UTF-8".into()))?;
    ActorId::new(text).map_err(|e| DecodeError::BadActor(e.to_string()))
}

fn take_counter(input: &mut &[u8]) -> Result<u64, DecodeError> {
    match take_varint(input)? {
        0 => Err(DecodeError::ZeroCounter),
        counter => Ok(counter),
    }
}

fn finish(input: &[u8]) -> Result<(), DecodeError> {
    if input.is_empty() {
        Ok(())
    } else {
        Err(DecodeError::TrailingBytes(input.len()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varint_round_trips_edges() {
        for value in [0, 1, 127, 128, 300, u64::from(u32::MAX), u64::MAX] {
            let mut buf = Vec::new();
            put_varint(&mut buf, value);
            let mut input = &buf[..];
            assert_eq!(take_varint(&mut input).unwrap(), value);
            assert!(input.is_empty());
        }
    }

    #[test]
    fn overlong_varint_is_rejected() {
        let mut input: &[u8] = &[0xff; 11];
        assert_eq!(take_varint(&mut input), Err(DecodeError::BadVarint));
        let mut overflow: &[u8] = &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02];
        assert_eq!(take_varint(&mut overflow), Err(DecodeError::BadVarint));
    }

    #[test]
    fn huge_counts_do_not_allocate() {
        let mut buf = vec![FORMAT_VERSION];
        put_varint(&mut buf, u64::MAX);
        assert_eq!(decode_version_vector(&buf), Err(DecodeError::Truncated));
        assert_eq!(decode_dvvset::<Bytes>(&buf), Err(DecodeError::Truncated));
    }
}
