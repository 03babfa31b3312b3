//! The ring's hash functions. Their output is part of the on-disk and cross-node
//! contract: every node must place keys and tokens identically, forever.
//!
//! Both use XXH3-64 (xxHash 0.8, a fixed, published algorithm with identical output on
//! every platform and endianness), so they never change with a Rust or crate upgrade.

use xxhash_rust::xxh3::xxh3_64;

/// Position of a key on the ring: XXH3-64 of the key bytes with seed 0.
#[inline]
pub fn key_hash(key: &[u8]) -> u64 {
    xxh3_64(key)
}

/// Position of virtual node `vnode` of node `node_id`: XXH3-64 (seed 0) of the id's
/// UTF-8 bytes followed by the vnode index as 4 little-endian bytes.
///
/// The vnode index is hashed as input, not passed as XXH3's seed: for 1–3 byte inputs
/// the seed is XORed into the same bits as the last input byte, so ids such as `n12`
/// and `n13` would share most of their tokens.
pub fn token_hash(node_id: &str, vnode: u32) -> u64 {
    let mut input = Vec::with_capacity(node_id.len() + 4);
    input.extend_from_slice(node_id.as_bytes());
    input.extend_from_slice(&vnode.to_le_bytes());
    xxh3_64(&input)
}
