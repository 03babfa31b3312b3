//! A tree's serialized form: `KVAE`, the format (version, partition bits, leaf bits),
//! then every leaf's hash and count, little-endian. Decoding checks every field and never
//! sizes an allocation from untrusted input beyond the format's own leaf count.

use thiserror::Error;

use crate::tree::{Digest, DigestTree, TreeFormat};

const MAGIC: &[u8; 4] = b"KVAE";
const HEADER_BYTES: usize = 7;
const LEAF_BYTES: usize = 16;

/// Bytes that are not a serialized tree this crate can read.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TreeDecodeError {
    /// The input does not start with the tree header.
    #[error("not a serialized digest tree")]
    NotATree,
    /// The tree was built with another format.
    #[error("digest tree format {found} is not supported (this build reads {supported})")]
    Format {
        /// The format found.
        found: TreeFormat,
        /// The format this build reads.
        supported: TreeFormat,
    },
    /// The input's length does not match its format.
    #[error("serialized tree is {found} bytes; its format needs {expected}")]
    Length {
        /// Bytes found.
        found: usize,
        /// Bytes expected.
        expected: usize,
    },
}

/// Serializes `tree`.
pub fn encode_tree(tree: &DigestTree) -> Vec<u8> {
    let format = tree.format();
    let mut out = Vec::with_capacity(HEADER_BYTES + LEAF_BYTES * tree.format().leaf_count());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[format.version, format.partition_bits, format.leaf_bits]);
    for leaf in tree.leaves() {
        out.extend_from_slice(&leaf.hash.to_le_bytes());
        out.extend_from_slice(&leaf.count.to_le_bytes());
    }
    out
}

/// Reads a serialized tree.
pub fn decode_tree(input: &[u8]) -> Result<DigestTree, TreeDecodeError> {
    if input.len() < HEADER_BYTES || &input[..4] != MAGIC {
        return Err(TreeDecodeError::NotATree);
    }
    let format = TreeFormat {
        version: input[4],
        partition_bits: input[5],
        leaf_bits: input[6],
    };
    if !format.is_valid() {
        return Err(TreeDecodeError::Format {
            found: format,
            supported: TreeFormat::CURRENT,
        });
    }
    let expected = HEADER_BYTES + LEAF_BYTES * format.leaf_count();
    if input.len() != expected {
        return Err(TreeDecodeError::Length {
            found: input.len(),
            expected,
        });
    }
    let leaves: Vec<Digest> = input[HEADER_BYTES..]
        .chunks_exact(LEAF_BYTES)
        .map(|leaf| Digest {
            hash: u64::from_le_bytes(leaf[..8].try_into().expect("8 bytes")),
            count: u64::from_le_bytes(leaf[8..].try_into().expect("8 bytes")),
        })
        .collect();
    Ok(DigestTree::from_leaves(format, &leaves).expect("the length was checked"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn level_bits_that_overflow_a_byte_are_refused() {
        // Found while writing the aae_tree fuzz target: 250 + 10 overflowed the u8 sum.
        let mut input = b"KVAE".to_vec();
        input.extend_from_slice(&[1, 250, 10]);
        input.extend_from_slice(&[0; 16 * 16]);
        assert!(matches!(
            super::decode_tree(&input),
            Err(super::TreeDecodeError::Format { .. })
        ));
    }

    use super::*;

    #[test]
    fn trees_round_trip_and_bad_input_is_refused() {
        let mut tree = DigestTree::new(TreeFormat::CURRENT);
        tree.insert(17, 99);
        tree.insert(u64::MAX, 3);
        let bytes = encode_tree(&tree);
        assert_eq!(decode_tree(&bytes).unwrap(), tree);
        assert_eq!(decode_tree(b"nope"), Err(TreeDecodeError::NotATree));
        let mut other = bytes.clone();
        other[4] = 9;
        assert!(matches!(
            decode_tree(&other),
            Err(TreeDecodeError::Format { .. })
        ));
        assert!(matches!(
            decode_tree(&bytes[..bytes.len() - 1]),
            Err(TreeDecodeError::Length { .. })
        ));
    }
}
