//! `Placement`: where one key lives for one request. A request takes the routing once, at
//! its start, and everything it does afterwards (fan-out, bookkeeping of replies, read
//! repair) uses that same placement, so a ring change in the middle of a request cannot
//! send its parts to different replica sets.
//!
//! A placement is either one preference list (a read, or a write while the ring is
//! settled: a view into the ring, no allocation) or, for a write while several ring
//! versions are live, the union of every live version's list with one quorum group per
//! version.

use std::sync::Arc;

use kv_quorum::{GroupQuorum, QuorumError};
use kv_ring::Ring;

/// A key's replicas for one request, in the order they are tried (primary first; for a
/// union, the newest version's list first).
#[derive(Debug, Clone)]
pub(crate) struct Placement {
    hash: u64,
    replicas: Replicas,
}

#[derive(Debug, Clone)]
enum Replicas {
    /// One version's preference list.
    List(Arc<Ring>),
    /// Several versions' lists: every replica once, and per version the indices of its
    /// replicas.
    Union {
        nodes: Vec<Arc<str>>,
        groups: Vec<Vec<usize>>,
    },
}

impl Placement {
    /// The preference list of the key at `hash` in `ring`.
    pub(crate) fn list(ring: Arc<Ring>, hash: u64) -> Self {
        Self {
            hash,
            replicas: Replicas::List(ring),
        }
    }

    /// The union of the key's preference lists in `rings` (newest first).
    pub(crate) fn union<'a>(rings: impl Iterator<Item = &'a Ring>, hash: u64) -> Self {
        let mut nodes: Vec<Arc<str>> = Vec::new();
        let mut groups = Vec::new();
        for ring in rings {
            let group = ring
                .preference_list_for_hash(hash)
                .iter_shared()
                .map(|node| {
                    nodes.iter().position(|n| n == node).unwrap_or_else(|| {
                        nodes.push(Arc::clone(node));
                        nodes.len() - 1
                    })
                })
                .collect();
            groups.push(group);
        }
        debug_assert!(!groups.is_empty(), "a union of no ring");
        Self {
            hash,
            replicas: Replicas::Union { nodes, groups },
        }
    }

    /// The key's ring position.
    pub(crate) fn hash(&self) -> u64 {
        self.hash
    }

    /// How many replicas the request goes to.
    pub(crate) fn len(&self) -> usize {
        match &self.replicas {
            Replicas::List(ring) => ring.preference_list_for_hash(self.hash).len(),
            Replicas::Union { nodes, .. } => nodes.len(),
        }
    }

    /// How many of the replicas, from the first, are the newest version's list.
    pub(crate) fn newest_len(&self) -> usize {
        match &self.replicas {
            Replicas::List(_) => self.len(),
            Replicas::Union { groups, .. } => groups.first().map_or(0, Vec::len),
        }
    }

    /// The replica at `index`, shared so a task can own it without copying the name.
    pub(crate) fn replica(&self, index: usize) -> Arc<str> {
        debug_assert!(index < self.len(), "replica index {index} out of range");
        match &self.replicas {
            Replicas::List(ring) => Arc::clone(
                ring.preference_list_for_hash(self.hash)
                    .get(index)
                    .expect("replica indices come from this placement"),
            ),
            Replicas::Union { nodes, .. } => Arc::clone(&nodes[index]),
        }
    }

    /// The index of `node` among the replicas, if it is one.
    pub(crate) fn position(&self, node: &str) -> Option<usize> {
        match &self.replicas {
            Replicas::List(ring) => ring.preference_list_for_hash(self.hash).position(node),
            Replicas::Union { nodes, .. } => nodes.iter().position(|n| &**n == node),
        }
    }

    /// The quorum a request needing `needed` successes waits for: `needed` among the
    /// replicas, or, for a union, `needed` in every version's list (capped at the list's
    /// length, for versions from before the ring held N members).
    pub(crate) fn quorum(&self, needed: usize) -> Result<GroupQuorum, QuorumError> {
        match &self.replicas {
            Replicas::List(_) => GroupQuorum::single(needed, self.len()),
            Replicas::Union { nodes, groups } => {
                let groups = groups
                    .iter()
                    .map(|group| (group.clone(), needed.min(group.len())))
                    .collect();
                GroupQuorum::new(groups, nodes.len())
            }
        }
    }

    /// The replicas, comma-separated, for error messages.
    pub(crate) fn describe(&self) -> String {
        (0..self.len())
            .map(|index| self.replica(index).to_string())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

#[cfg(test)]
mod tests {
    use kv_ring::Member;

    use super::*;

    fn ring(members: &[&str]) -> Ring {
        Ring::new(members.iter().map(|m| Member::with_vnodes(*m, 16)), 3).unwrap()
    }

    #[test]
    fn a_union_holds_each_replica_once_and_a_group_per_version() {
        let old = ring(&["n1", "n2", "n3"]);
        let new = ring(&["n1", "n2", "n3", "n4"]);
        for i in 0..200u32 {
            let hash = kv_ring::key_hash(format!("k{i}").as_bytes());
            let union = Placement::union([&new, &old].into_iter(), hash);
            let expected: std::collections::BTreeSet<&str> = old
                .preference_list_for_hash(hash)
                .iter()
                .chain(new.preference_list_for_hash(hash).iter())
                .collect();
            assert_eq!(union.len(), expected.len());
            assert_eq!(
                union.replica(0).as_ref(),
                new.preference_list_for_hash(hash).iter().next().unwrap()
            );
            let quorum = union.quorum(2).unwrap();
            assert_eq!(quorum.groups().len(), 2);
        }
        let hash = 42;
        let single = Placement::list(Arc::new(old), hash);
        assert_eq!(single.len(), 3);
        assert_eq!(single.quorum(2).unwrap().groups().len(), 1);
    }
}
