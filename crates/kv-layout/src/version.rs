//! One ring version: its number, its members (with their vnode counts), and the change
//! that made it. A version is a whole member set, not a delta, so any node can build its
//! ring from it alone.

use std::collections::BTreeMap;
use std::fmt;

use kv_ring::{Member, Ring, RingError};
use serde::{Deserialize, Serialize};
use xxhash_rust::xxh3::xxh3_64;

/// What made a version.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Change {
    /// The first version of a new cluster.
    Founded,
    /// A static member list (no changes ever).
    Fixed,
    /// These nodes joined.
    Joined(Vec<String>),
    /// These nodes left (they handed their data off first).
    Left(Vec<String>),
    /// These nodes were removed without handing anything off (they are dead).
    Removed(Vec<String>),
    /// `new` took `old`'s place (and vnodes).
    Replaced {
        /// The node replaced.
        old: String,
        /// Its replacement.
        new: String,
    },
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Founded => f.write_str("founded"),
            Self::Fixed => f.write_str("static member list"),
            Self::Joined(nodes) => write!(f, "join {}", nodes.join(", ")),
            Self::Left(nodes) => write!(f, "leave {}", nodes.join(", ")),
            Self::Removed(nodes) => write!(f, "remove {}", nodes.join(", ")),
            Self::Replaced { old, new } => write!(f, "replace {old} with {new}"),
        }
    }
}

/// One version of the ring.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RingVersion {
    /// Its number: one more than the version it was made from.
    pub number: u64,
    /// Its members and their vnode counts.
    pub members: BTreeMap<String, u32>,
    /// What made it.
    pub change: Change,
}

impl RingVersion {
    /// A hash of the whole version: two versions with the same number but different
    /// contents (made concurrently at two nodes) are told apart, and the larger hash wins.
    pub fn hash(&self) -> u64 {
        xxh3_64(&postcard::to_allocvec(self).expect("a version always serialises"))
    }

    /// Whether `node` is a member.
    pub fn has(&self, node: &str) -> bool {
        self.members.contains_key(node)
    }

    /// The ring of this version with `replicas` replicas per key.
    pub fn ring(&self, replicas: usize) -> Result<Ring, RingError> {
        Ring::new(
            self.members
                .iter()
                .map(|(id, vnodes)| Member::with_vnodes(id.clone(), *vnodes)),
            replicas,
        )
    }
}
