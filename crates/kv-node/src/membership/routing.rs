//! `Routing`: the rings of every live ring version, built once per layout change, and the
//! rules that pick where one key's writes and reads go while versions overlap:
//! - a write goes to the union of the key's preference lists in every live version and
//!   waits for W in each (a key moving from n1 to n4 is written to both);
//! - a read goes to the newest version in which every replica of the key has synced
//!   (copied what it gained from the older owners), else to an older one; the oldest live
//!   version is always complete, since every write since it was made reached it.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use kv_aae::{HashRange, arc, coalesce};
use kv_layout::Layout;
use kv_ring::{Ring, RingError};

use crate::placement::Placement;

/// One live version's ring.
#[derive(Debug)]
pub(crate) struct VersionRing {
    pub(crate) number: u64,
    pub(crate) ring: Arc<Ring>,
}

/// A layout with the rings of its live versions.
#[derive(Debug)]
pub struct Routing {
    layout: Layout,
    /// Live versions, oldest first (never empty).
    versions: Vec<VersionRing>,
    /// Each node's synced version, read for every read while versions overlap.
    synced: BTreeMap<String, u64>,
}

impl Routing {
    /// Builds the rings of `layout`'s live versions.
    pub(crate) fn new(layout: Layout) -> Result<Self, RingError> {
        let versions = layout
            .live()
            .map(|version| {
                Ok(VersionRing {
                    number: version.number,
                    ring: Arc::new(version.ring(layout.replicas())?),
                })
            })
            .collect::<Result<Vec<_>, RingError>>()?;
        let synced = layout
            .nodes()
            .into_iter()
            .map(|node| (node.to_owned(), layout.synced(node)))
            .collect();
        debug_assert!(!versions.is_empty(), "a layout always has a live version");
        Ok(Self {
            layout,
            versions,
            synced,
        })
    }

    /// The layout this routing was built from.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// The newest version's ring.
    pub fn newest(&self) -> &Arc<Ring> {
        &self.newest_version().ring
    }

    fn newest_version(&self) -> &VersionRing {
        self.versions.last().expect("never empty")
    }

    /// The newest version's number.
    pub fn newest_number(&self) -> u64 {
        self.newest_version().number
    }

    /// The live versions, oldest first.
    pub(crate) fn versions(&self) -> &[VersionRing] {
        &self.versions
    }

    /// How many versions are live.
    pub fn versions_live(&self) -> usize {
        self.versions.len()
    }

    /// Whether only one version is live (no data is moving).
    pub fn settled(&self) -> bool {
        self.versions.len() == 1
    }

    /// Replicas per key the cluster was founded with (N).
    pub fn replicas(&self) -> usize {
        self.layout.replicas()
    }

    /// How many members the newest version has, when fewer than N: no key can have N
    /// distinct replicas then.
    pub fn under_replicated(&self) -> Option<usize> {
        let members = self.newest().len();
        (members < self.replicas()).then_some(members)
    }

    /// Whether `node` is a member of a live version.
    pub fn is_member(&self, node: &str) -> bool {
        self.versions
            .iter()
            .any(|v| v.ring.members().any(|m| m == node))
    }

    /// Every member of a live version.
    pub fn members(&self) -> BTreeSet<&str> {
        self.layout.nodes()
    }

    /// Where a write of the key at `hash` goes.
    pub(crate) fn write_placement(&self, hash: u64) -> Placement {
        if self.settled() {
            return Placement::list(Arc::clone(self.newest()), hash);
        }
        Placement::union(self.versions.iter().rev().map(|v| &*v.ring), hash)
    }

    /// Where a read of the key at `hash` goes: the newest version whose replicas of the
    /// key all synced it, else the oldest live one.
    pub(crate) fn read_placement(&self, hash: u64) -> Placement {
        let (oldest, newer) = self.versions.split_first().expect("never empty");
        let complete = newer.iter().rev().find(|version| {
            version
                .ring
                .preference_list_for_hash(hash)
                .iter()
                .all(|node| self.synced.get(node).is_some_and(|&s| s >= version.number))
        });
        let ring = complete.map_or(&oldest.ring, |v| &v.ring);
        Placement::list(Arc::clone(ring), hash)
    }

    /// For each other node, the ranges whose keys both it and `me` replicate in some live
    /// version (joined where they touch).
    pub(crate) fn shared_ranges(&self, me: &str) -> BTreeMap<Arc<str>, Vec<HashRange>> {
        let mut shared: BTreeMap<Arc<str>, Vec<HashRange>> = BTreeMap::new();
        for version in &self.versions {
            for (peer, ranges) in shared_in_ring(&version.ring, me) {
                shared.entry(peer).or_default().extend(ranges);
            }
        }
        shared
            .into_iter()
            .map(|(peer, ranges)| (peer, coalesce(ranges)))
            .collect()
    }

    /// The replicas of the key at `hash` in every live version, each once.
    pub(crate) fn all_replicas(&self, hash: u64) -> Vec<Arc<str>> {
        let placement = self.write_placement(hash);
        (0..placement.len()).map(|i| placement.replica(i)).collect()
    }
}

/// For each other member of `ring`, the ranges whose keys both it and `me` replicate.
pub(crate) fn shared_in_ring(ring: &Ring, me: &str) -> BTreeMap<Arc<str>, Vec<HashRange>> {
    let mut shared: BTreeMap<Arc<str>, Vec<HashRange>> = BTreeMap::new();
    let tokens: Vec<u64> = ring.tokens().map(|(token, _)| token).collect();
    let Some(&last) = tokens.last() else {
        return shared;
    };
    let mut previous = last;
    for &token in &tokens {
        let replicas = ring.preference_list_for_hash(token);
        if replicas.contains(me) {
            for peer in replicas.iter_shared().filter(|peer| ***peer != *me) {
                shared
                    .entry(Arc::clone(peer))
                    .or_default()
                    .extend(arc(previous, token));
            }
        }
        previous = token;
    }
    shared
        .into_iter()
        .map(|(peer, ranges)| (peer, coalesce(ranges)))
        .collect()
}

#[cfg(test)]
mod tests {
    use kv_layout::Proposal;
    use kv_ring::Member;

    use super::*;

    #[test]
    fn shared_ranges_cover_exactly_the_keys_both_replicate() {
        let ring = Ring::new((1..=5).map(|i| Member::with_vnodes(format!("n{i}"), 16)), 3).unwrap();
        let ranges = shared_in_ring(&ring, "n1").remove("n2").unwrap();
        for i in 0..5_000u32 {
            let key = format!("key-{i}");
            let position = kv_ring::key_hash(key.as_bytes());
            let replicas = ring.preference_list(key.as_bytes());
            let both = replicas.contains("n1") && replicas.contains("n2");
            let covered = ranges.iter().any(|r| r.contains(position));
            assert_eq!(both, covered, "{key} at {position:#x}");
        }
        let three = Ring::new((1..=3).map(|i| Member::new(format!("n{i}"))), 3).unwrap();
        let all = shared_in_ring(&three, "n1");
        assert_eq!(all.len(), 2);
        assert_eq!(all["n3"], vec![HashRange::FULL]);
    }

    fn three_then_four() -> Layout {
        let mut layout = Layout::found(1, 3, "n1", 16);
        let v2 = layout
            .propose(&Proposal::Join(vec![("n2".into(), 16), ("n3".into(), 16)]))
            .unwrap();
        for node in ["n1", "n2", "n3"] {
            layout.ack(node, v2);
            layout.mark_synced(node, v2);
            layout.mark_read(node, v2);
        }
        let v3 = layout
            .propose(&Proposal::Join(vec![("n4".into(), 16)]))
            .unwrap();
        assert_eq!(v3, 3);
        layout
    }

    #[test]
    fn reads_move_to_the_new_version_key_by_key_as_its_replicas_sync() {
        let mut layout = three_then_four();
        let keys: Vec<u64> = (0..500u32)
            .map(|i| kv_ring::key_hash(format!("k{i}").as_bytes()))
            .collect();
        let routing = Routing::new(layout.clone()).unwrap();
        assert!(!routing.settled());
        for &hash in &keys {
            assert!(
                routing.read_placement(hash).position("n4").is_none(),
                "nobody synced v3: reads stay on v2"
            );
            let write = routing.write_placement(hash);
            let quorum = write.quorum(2).unwrap();
            assert_eq!(quorum.groups().len(), 2);
            assert!(write.len() >= 3 && write.len() <= 4);
        }
        for node in ["n1", "n2", "n3", "n4"] {
            layout.ack(node, 3);
        }
        for node in ["n1", "n2", "n3"] {
            layout.mark_synced(node, 3);
        }
        // v3 lives on until n4 syncs; keys n4 does not replicate read from v3 already.
        let routing = Routing::new(layout.clone()).unwrap();
        assert_eq!(routing.versions().len(), 2);
        let v3 = Arc::clone(&routing.versions()[1].ring);
        for &hash in &keys {
            let n4_holds = v3.preference_list_for_hash(hash).contains("n4");
            let read = routing.read_placement(hash);
            assert!(read.position("n4").is_none());
            if !n4_holds {
                assert_eq!(
                    read.describe(),
                    Placement::list(Arc::clone(&v3), hash).describe()
                );
            }
        }
        layout.mark_synced("n4", 3);
        let routing = Routing::new(layout.clone()).unwrap();
        assert!(
            !routing.settled(),
            "v2 lives until every member read-acked v3"
        );
        for &hash in &keys {
            let read = routing.read_placement(hash);
            assert_eq!(
                read.describe(),
                Placement::list(Arc::clone(&v3), hash).describe()
            );
        }
        for node in ["n1", "n2", "n3", "n4"] {
            layout.mark_read(node, layout.readable());
        }
        let routing = Routing::new(layout).unwrap();
        assert!(
            routing.settled(),
            "v2 retired once every member read-acked v3"
        );
    }
}
