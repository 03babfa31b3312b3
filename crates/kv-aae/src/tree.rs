//! `DigestTree`: a two-level tictac tree over the whole 64-bit hash space.
//!
//! The space is cut into `2^partition_bits` partitions of `2^leaf_bits` leaves each; a
//! leaf holds the XOR of the fingerprints of the items whose position falls in it, and
//! how many there are. XOR makes every update incremental (XOR the old fingerprint out,
//! the new one in) and order-independent, and makes a range's digest the XOR of its
//! parts, so a digest can be assembled from whole partitions, whole leaves and, at the
//! range's ends, a scan of the few items that share a leaf with positions outside it.

use crate::range::HashRange;

/// Largest supported `partition_bits + leaf_bits` (16 M leaves).
pub const MAX_LEVEL_BITS: u8 = 24;

/// The XOR of some items' fingerprints, and how many items there are.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Digest {
    /// XOR of the fingerprints.
    pub hash: u64,
    /// Number of items.
    pub count: u64,
}

impl Digest {
    /// No items.
    pub const EMPTY: Self = Self { hash: 0, count: 0 };

    /// Adds one item.
    pub fn add(&mut self, fingerprint: u64) {
        self.hash ^= fingerprint;
        self.count = self.count.wrapping_add(1);
    }

    /// Removes one item that was added.
    pub fn remove(&mut self, fingerprint: u64) {
        debug_assert!(self.count > 0, "removing from an empty digest");
        self.hash ^= fingerprint;
        self.count = self.count.wrapping_sub(1);
    }

    /// The digest of both sets of items (which must not overlap). Counts add modulo
    /// 2^64, as `remove` subtracts: a digest is compared, never trusted as a size, and
    /// the counts of a peer's tree come off the wire (a sum of them overflowed before the
    /// aae_tree fuzz target found it).
    #[must_use]
    pub fn combine(self, other: Self) -> Self {
        Self {
            hash: self.hash ^ other.hash,
            count: self.count.wrapping_add(other.count),
        }
    }
}

/// The tree's geometry and fingerprint algorithm: two nodes can compare trees only if
/// their formats are equal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TreeFormat {
    /// Version of the fingerprint algorithm and encoding.
    pub version: u8,
    /// log2 of the number of partitions.
    pub partition_bits: u8,
    /// log2 of the number of leaves per partition.
    pub leaf_bits: u8,
}

impl TreeFormat {
    /// The format this crate builds: version 1, 256 partitions of 256 leaves (65,536
    /// leaves, 768 KiB per tree; about 15 items per leaf at a million items).
    pub const CURRENT: Self = Self {
        version: 1,
        partition_bits: 8,
        leaf_bits: 8,
    };

    /// Whether the geometry is supported.
    pub fn is_valid(self) -> bool {
        self.version == Self::CURRENT.version
            // Summed wide: the fields come off the wire, and two large ones overflow a u8.
            && u32::from(self.partition_bits) + u32::from(self.leaf_bits)
                <= u32::from(MAX_LEVEL_BITS)
    }

    /// Number of leaves in the whole tree.
    pub fn leaf_count(self) -> usize {
        1 << (self.partition_bits + self.leaf_bits)
    }

    /// Positions per leaf.
    pub fn leaf_width(self) -> u128 {
        1u128 << (64 - u32::from(self.partition_bits + self.leaf_bits))
    }

    fn leaf_shift(self) -> u32 {
        64 - u32::from(self.partition_bits + self.leaf_bits)
    }
}

impl std::fmt::Display for TreeFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "v{} ({} partitions x {} leaves)",
            self.version,
            1u32 << self.partition_bits,
            1u32 << self.leaf_bits
        )
    }
}

/// A digest tree over the whole hash space. A partition's leaves are allocated when its
/// first item arrives, so a small store costs kilobytes, not the whole tree.
#[derive(Clone)]
pub struct DigestTree {
    format: TreeFormat,
    /// Per partition, its leaves (absent while it never held an item).
    leaves: Vec<Option<Box<[Digest]>>>,
    partitions: Vec<Digest>,
    root: Digest,
}

impl PartialEq for DigestTree {
    fn eq(&self, other: &Self) -> bool {
        self.format == other.format
            && self.root == other.root
            && self.partitions == other.partitions
            && (0..self.format.leaf_count()).all(|leaf| self.leaf(leaf) == other.leaf(leaf))
    }
}

impl Eq for DigestTree {}

impl std::fmt::Debug for DigestTree {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DigestTree")
            .field("format", &self.format)
            .field("root", &self.root)
            .finish_non_exhaustive()
    }
}

/// How a range's digest is made: the part the tree knows (whole leaves) and the pieces at
/// the range's ends that share a leaf with positions outside it, which the caller digests
/// from its items.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RangeDigest {
    /// XOR and count of every whole leaf inside the range.
    pub whole_leaves: Digest,
    /// Pieces of the range (at most two) that cover only part of a leaf.
    pub partial: Vec<HashRange>,
}

impl DigestTree {
    /// An empty tree. Panics if the format is not valid (a programming error: formats
    /// come from [`TreeFormat::CURRENT`] or a decoder that checks them).
    pub fn new(format: TreeFormat) -> Self {
        assert!(format.is_valid(), "unsupported tree format {format}");
        let partitions = 1 << format.partition_bits;
        Self {
            format,
            leaves: vec![None; partitions],
            partitions: vec![Digest::EMPTY; partitions],
            root: Digest::EMPTY,
        }
    }

    /// One leaf's digest.
    fn leaf(&self, leaf: usize) -> Digest {
        let (partition, within) = self.split_leaf(leaf);
        self.leaves[partition]
            .as_ref()
            .map_or(Digest::EMPTY, |leaves| leaves[within])
    }

    fn split_leaf(&self, leaf: usize) -> (usize, usize) {
        let bits = self.format.leaf_bits;
        (leaf >> bits, leaf & ((1 << bits) - 1))
    }

    /// The leaf's digest, for changing it (its partition's leaves allocated on first use).
    fn leaf_mut(&mut self, leaf: usize) -> &mut Digest {
        let (partition, within) = self.split_leaf(leaf);
        let per_partition = 1usize << self.format.leaf_bits;
        let leaves = self.leaves[partition]
            .get_or_insert_with(|| vec![Digest::EMPTY; per_partition].into_boxed_slice());
        &mut leaves[within]
    }

    /// The tree's format.
    pub fn format(&self) -> TreeFormat {
        self.format
    }

    /// Digest of every item.
    pub fn root(&self) -> Digest {
        self.root
    }

    /// The leaf holding `position`.
    pub fn leaf_of(&self, position: u64) -> usize {
        (position >> self.format.leaf_shift()) as usize
    }

    /// Adds an item at `position` with `fingerprint`.
    pub fn insert(&mut self, position: u64, fingerprint: u64) {
        let leaf = self.leaf_of(position);
        let partition = leaf >> self.format.leaf_bits;
        self.leaf_mut(leaf).add(fingerprint);
        self.partitions[partition].add(fingerprint);
        self.root.add(fingerprint);
    }

    /// Removes an item that was inserted with the same position and fingerprint.
    pub fn remove(&mut self, position: u64, fingerprint: u64) {
        let leaf = self.leaf_of(position);
        let partition = leaf >> self.format.leaf_bits;
        self.leaf_mut(leaf).remove(fingerprint);
        self.partitions[partition].remove(fingerprint);
        self.root.remove(fingerprint);
    }

    /// Replaces an item's old fingerprint (if it existed) with its new one (if it still
    /// exists).
    pub fn replace(&mut self, position: u64, old: Option<u64>, new: Option<u64>) {
        if old == new {
            return;
        }
        if let Some(old) = old {
            self.remove(position, old);
        }
        if let Some(new) = new {
            self.insert(position, new);
        }
    }

    /// What the tree knows of `range`'s digest, and what the caller must digest itself.
    pub fn digest(&self, range: HashRange) -> RangeDigest {
        let width = self.format.leaf_width();
        let first = u128::from(range.first());
        let end = u128::from(range.last()) + 1; // exclusive
        let first_whole = first.div_ceil(width);
        let end_whole = end / width; // exclusive leaf index
        if first_whole >= end_whole {
            return RangeDigest {
                whole_leaves: Digest::EMPTY,
                partial: vec![range],
            };
        }
        let mut partial = Vec::with_capacity(2);
        if first < first_whole * width {
            partial.push(position_range(first, first_whole * width));
        }
        if end_whole * width < end {
            partial.push(position_range(end_whole * width, end));
        }
        RangeDigest {
            whole_leaves: self.leaves_digest(first_whole as usize, end_whole as usize),
            partial,
        }
    }

    /// XOR of leaves `from..to`, using whole partitions where it can and skipping
    /// partitions that never held an item.
    fn leaves_digest(&self, from: usize, to: usize) -> Digest {
        let per_partition = 1usize << self.format.leaf_bits;
        let mut digest = Digest::EMPTY;
        let mut leaf = from;
        while leaf < to {
            let partition = leaf / per_partition;
            let partition_end = (partition + 1) * per_partition;
            let end = partition_end.min(to);
            if leaf == partition * per_partition && end == partition_end {
                digest = digest.combine(self.partitions[partition]);
            } else if let Some(leaves) = &self.leaves[partition] {
                let within = leaf - partition * per_partition..end - partition * per_partition;
                digest = leaves[within]
                    .iter()
                    .fold(digest, |d, leaf| d.combine(*leaf));
            }
            leaf = end;
        }
        digest
    }

    /// Every leaf's digest, in position order (for serialization).
    pub fn leaves(&self) -> impl ExactSizeIterator<Item = Digest> + '_ {
        (0..self.format.leaf_count()).map(|leaf| self.leaf(leaf))
    }

    /// A tree of `format` with these leaves; `None` if their number does not fit it.
    pub fn from_leaves(format: TreeFormat, leaves: &[Digest]) -> Option<Self> {
        if !format.is_valid() || leaves.len() != format.leaf_count() {
            return None;
        }
        let per_partition = 1usize << format.leaf_bits;
        let mut tree = Self::new(format);
        for (partition, chunk) in leaves.chunks(per_partition).enumerate() {
            let digest = chunk.iter().fold(Digest::EMPTY, |d, l| d.combine(*l));
            if digest != Digest::EMPTY || chunk.iter().any(|l| *l != Digest::EMPTY) {
                tree.leaves[partition] = Some(chunk.to_vec().into_boxed_slice());
            }
            tree.partitions[partition] = digest;
            tree.root = tree.root.combine(digest);
        }
        Some(tree)
    }
}

/// Positions `start..end` (exclusive end, as u128 so the top of the space fits).
fn position_range(start: u128, end: u128) -> HashRange {
    debug_assert!(start < end && end <= 1u128 << 64);
    HashRange::new(start as u64, (end - 1) as u64).expect("start < end")
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMALL: TreeFormat = TreeFormat {
        version: 1,
        partition_bits: 2,
        leaf_bits: 2,
    };

    #[test]
    fn a_range_digest_is_whole_leaves_plus_the_partial_ends() {
        let mut tree = DigestTree::new(SMALL);
        let width = SMALL.leaf_width() as u64; // 2^60
        tree.insert(5, 1);
        tree.insert(width + 5, 2);
        tree.insert(3 * width, 4);
        let range = HashRange::new(3, 3 * width + 10).unwrap();
        let digest = tree.digest(range);
        assert_eq!(digest.whole_leaves, Digest { hash: 2, count: 1 });
        assert_eq!(
            digest.partial,
            vec![
                HashRange::new(3, width - 1).unwrap(),
                HashRange::new(3 * width, 3 * width + 10).unwrap()
            ]
        );
        let everything = tree.digest(HashRange::FULL);
        assert!(everything.partial.is_empty());
        assert_eq!(everything.whole_leaves, tree.root());
        assert_eq!(tree.root(), Digest { hash: 7, count: 3 });
    }

    #[test]
    fn replacing_and_removing_restores_the_empty_tree() {
        let mut tree = DigestTree::new(SMALL);
        tree.replace(42, None, Some(9));
        tree.replace(42, Some(9), Some(11));
        tree.replace(42, Some(11), None);
        assert_eq!(tree, DigestTree::new(SMALL));
        let rebuilt = DigestTree::from_leaves(SMALL, &tree.leaves().collect::<Vec<_>>()).unwrap();
        assert_eq!(rebuilt, tree);
        assert!(DigestTree::from_leaves(SMALL, &[Digest::EMPTY; 3]).is_none());
    }
}
