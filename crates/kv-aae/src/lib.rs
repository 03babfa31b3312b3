//! Active anti-entropy for a replicated key-value store, in sans-IO form.
//!
//! Replicas find which of their keys differ without sending their keys:
//!
//! - Every replica keeps a [`DigestTree`] over the whole 64-bit hash space (the same
//!   positions the ring places keys at). A leaf holds the XOR of the [fingerprints] of the
//!   items whose position falls in it, so every local write updates the tree in O(1) (XOR
//!   the old fingerprint out, the new one in) and two replicas holding the same items have
//!   equal trees whatever order their writes came in.
//! - Any range's digest is the XOR of its parts: whole partitions and leaves from the tree,
//!   and at the range's ends a scan of the few items that share a leaf with positions
//!   outside it ([`DigestTree::digest`]).
//! - An [`Exchange`] compares some ranges with a peer level by level: equal digests end a
//!   range; a differing one is split into aligned pieces until it is small enough to list
//!   its keys, and the two key lists name exactly the differing keys ([`diff_keys`]).
//!   What to do about them (fetch both states and merge) is the caller's.
//!
//! No I/O, no clock, no async runtime: the caller feeds answers and sends requests.
//!
//! ```
//! use kv_aae::{Digest, DigestTree, Exchange, ExchangeLimits, HashRange, Step, TreeFormat, fingerprint};
//!
//! // Two replicas; the second misses one write.
//! let items = [(10u64, "a"), (1 << 40, "b"), (u64::MAX - 3, "c")];
//! let mut left = DigestTree::new(TreeFormat::CURRENT);
//! let mut right = DigestTree::new(TreeFormat::CURRENT);
//! for (position, key) in items {
//!     left.insert(position, fingerprint(key.as_bytes(), b"v1"));
//!     if key != "b" {
//!         right.insert(position, fingerprint(key.as_bytes(), b"v1"));
//!     }
//! }
//! assert_ne!(left.root(), right.root());
//!
//! // Both sides answer digests from their trees (these items never share a leaf with a
//! // range's edge, so nothing needs a scan) and key lists from their items.
//! let digest = |tree: &DigestTree, range| tree.digest(range).whole_leaves;
//! let list = |with_b: bool, range: HashRange| -> Vec<(&str, u64)> {
//!     items.iter().filter(|(p, k)| range.contains(*p) && (with_b || *k != "b"))
//!         .map(|(_, k)| (*k, fingerprint(k.as_bytes(), b"v1"))).collect()
//! };
//! let mut exchange = Exchange::new([HashRange::FULL], ExchangeLimits::default());
//! let mut differing = Vec::new();
//! loop {
//!     match exchange.next_step() {
//!         Step::Digests(ranges) => {
//!             let mine: Vec<Digest> = ranges.iter().map(|r| digest(&left, *r)).collect();
//!             let theirs: Vec<Digest> = ranges.iter().map(|r| digest(&right, *r)).collect();
//!             exchange.digests(&mine, &theirs).unwrap();
//!         }
//!         Step::Keys { range, .. } => {
//!             let diff = exchange.keys(list(true, range), true, list(false, range), true).unwrap();
//!             differing.extend(diff.only_local);
//!         }
//!         Step::Done => break,
//!     }
//! }
//! assert_eq!(differing, ["b"]);
//! ```
//!
//! [fingerprints]: fingerprint

#![warn(missing_docs)]

mod codec;
mod exchange;
mod fingerprint;
mod range;
mod tree;

pub use codec::{TreeDecodeError, decode_tree, encode_tree};
pub use exchange::{
    Exchange, ExchangeError, ExchangeLimits, ExchangeStats, KeyDiff, Step, diff_keys, split,
};
pub use fingerprint::{Fingerprinter, fingerprint};
pub use range::{HashRange, arc, coalesce};
pub use tree::{Digest, DigestTree, MAX_LEVEL_BITS, RangeDigest, TreeFormat};
