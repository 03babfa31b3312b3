//! Consistent hashing for a replicated store: physical members place virtual-node
//! tokens on a 64-bit ring, and a key's preference list is the first N distinct
//! physical nodes clockwise from the key's position.
//!
//! The ring is a pure function of the member set, so every node that agrees on
//! membership computes the same ring. Positions come from XXH3-64 (see [`key_hash`]),
//! which is stable across versions and platforms. A lookup hashes the key, indexes a
//! bucket table and returns a view of a precomputed list: no allocation, no copying.
//! This crate knows nothing of the network or of storage.
//!
//! ```
//! use kv_ring::{Member, Ring};
//! let ring = Ring::new(vec![Member::new("n1"), Member::new("n2"), Member::new("n3")], 2)?;
//! let list = ring.preference_list(b"user:123");
//! assert_eq!(list.len(), 2);
//! let shares: f64 = ring.ownership().iter().map(|o| o.primary_share).sum();
//! assert!((shares - 1.0).abs() < 1e-9);
//! # Ok::<(), kv_ring::RingError>(())
//! ```

#![warn(missing_docs)]

mod error;
mod hash;
mod ring;

pub use error::RingError;
pub use hash::{key_hash, token_hash};
pub use ring::{
    DEFAULT_VNODES, MAX_MEMBERS, MAX_REPLICAS, MAX_VNODES, Member, Ownership, PreferenceList, Ring,
};
