//! `Layout`: a cluster's ring history and the two trackers that move it forward.
//!
//! - **Versions.** An explicit change (join, leave, remove, replace) makes version
//!   `newest + 1`, a whole member set. Every live version (from the oldest not yet
//!   retired to the newest) takes writes: a write waits for W in each one's preference
//!   list, so a key moving from n1 to n4 is written to both.
//! - **Acks.** A node acks a version once it routes writes with it. Moving data for a
//!   version may start only when every node that coordinates writes acked it: before
//!   that, some node may still write to the old owners only, after the new owner copied
//!   their data.
//! - **Syncs.** A node marks a version synced once it copied, from the owners in older
//!   live versions, every range it owns in that version. A version is complete for a key
//!   when all its replicas of that key synced it: reads use the newest such version.
//! - **Read acks.** A node read-acks a version once it saw every member of that version
//!   synced it: from then on it reads every key from that version or a newer one.
//!   Versions older than what every member of the newest version read-acked retire (and
//!   stop taking writes): before that, some member may still read them, so writes must
//!   still reach them. This is Garage's third tracker (`sync_ack`); without it a member
//!   that learns of a sync late reads an older version that writers no longer write to.
//!
//! Layouts merge like a CRDT (per version number the content with the larger hash, per
//! node the larger mark, the higher retirement floor), so nodes that exchange layouts in
//! any order converge. Two changes made at once at different nodes get the same number;
//! one of them wins everywhere and the other is dropped (the operator sees it missing and
//! makes it again). A node proposes a change only while it is a member of the newest
//! version, and acks it at once: as it never acks the other content, the losing version's
//! data can never start moving (that needs every node's ack of that content), let alone
//! retire the version before it.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::version::{Change, RingVersion};

/// Most versions live at once: a change is refused while this many are still moving data.
pub const MAX_LIVE_VERSIONS: usize = 8;

/// A node's progress: a version number and the hash of the content it saw under it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Mark {
    /// The version.
    pub version: u64,
    /// Its content's hash, as the node knew it.
    pub hash: u64,
}

/// A membership change an operator asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Proposal {
    /// Add these nodes, each with its vnode count.
    Join(Vec<(String, u32)>),
    /// Take these nodes out after they hand their data off.
    Leave(Vec<String>),
    /// Take these (dead) nodes out; their ranges are copied from the other replicas.
    Remove(Vec<String>),
    /// Put `new` in `old`'s place, with its vnodes.
    Replace {
        /// The node replaced.
        old: String,
        /// Its replacement.
        new: String,
    },
}

/// Why a change or a merge was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum LayoutError {
    /// The layout belongs to another cluster.
    #[error("layout of cluster {theirs:016x} cannot merge into cluster {ours:016x}")]
    ForeignCluster {
        /// The other layout's cluster.
        theirs: u64,
        /// This one's.
        ours: u64,
    },
    /// The layouts disagree on N.
    #[error("layout with N={theirs} cannot merge into a cluster with N={ours}")]
    Replicas {
        /// The other layout's N.
        theirs: usize,
        /// This one's.
        ours: usize,
    },
    /// The node is already a member.
    #[error("{0} is already a member of the ring")]
    AlreadyMember(String),
    /// The node is not a member.
    #[error("{0} is not a member of the ring")]
    NotMember(String),
    /// The change would empty the ring.
    #[error("the ring cannot lose its last member")]
    Empty,
    /// The change names no node.
    #[error("the change names no node")]
    NothingToDo,
    /// Too many versions are still moving data.
    #[error(
        "{0} ring versions are still moving data; wait for them to finish (kvstore ring \
         --transfers) before another change"
    )]
    TooManyLive(usize),
    /// A static layout never changes.
    #[error("this cluster has a static member list; change --peers on every node instead")]
    Fixed,
}

/// A cluster's ring history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Layout {
    cluster_id: u64,
    replicas: usize,
    /// The live versions, oldest first (never empty).
    versions: BTreeMap<u64, RingVersion>,
    acked: BTreeMap<String, Mark>,
    synced: BTreeMap<String, Mark>,
    read_acked: BTreeMap<String, Mark>,
}

impl Layout {
    /// A new cluster `cluster_id` of `replicas` replicas per key, founded by one node.
    pub fn found(cluster_id: u64, replicas: usize, founder: &str, vnodes: u32) -> Self {
        let version = RingVersion {
            number: 1,
            members: BTreeMap::from([(founder.to_owned(), vnodes)]),
            change: Change::Founded,
        };
        Self::first(cluster_id, replicas, version)
    }

    /// A cluster whose members never change (a static peer list): one version, synced.
    pub fn fixed(replicas: usize, members: impl IntoIterator<Item = (String, u32)>) -> Self {
        let version = RingVersion {
            number: 1,
            members: members.into_iter().collect(),
            change: Change::Fixed,
        };
        Self::first(0, replicas, version)
    }

    /// Checks what a decoded layout must hold: at least one version, numbers that match
    /// their keys and run without gaps, a valid N, and no empty version.
    pub(crate) fn check(&self) -> Result<(), &'static str> {
        if self.versions.is_empty() {
            return Err("no version");
        }
        if !(1..=kv_ring::MAX_REPLICAS).contains(&self.replicas) {
            return Err("replication factor out of range");
        }
        let oldest = self.oldest_live();
        for (offset, (number, version)) in (0_u64..).zip(&self.versions) {
            // Checked: the numbers come off the wire, and a run that starts near u64::MAX
            // must be refused, not overflow (found by the layout_frame fuzz target).
            let expected = oldest.checked_add(offset);
            if *number != version.number || Some(*number) != expected {
                return Err("version numbers do not run without gaps");
            }
            if version.members.is_empty() {
                return Err("a version without members");
            }
        }
        Ok(())
    }

    fn first(cluster_id: u64, replicas: usize, version: RingVersion) -> Self {
        let mark = Mark {
            version: 1,
            hash: version.hash(),
        };
        let everyone: BTreeMap<String, Mark> =
            version.members.keys().map(|m| (m.clone(), mark)).collect();
        Self {
            cluster_id,
            replicas,
            versions: BTreeMap::from([(1, version)]),
            acked: everyone.clone(),
            synced: everyone.clone(),
            read_acked: everyone,
        }
    }

    /// The cluster's id.
    pub fn cluster_id(&self) -> u64 {
        self.cluster_id
    }

    /// Replicas per key (N).
    pub fn replicas(&self) -> usize {
        self.replicas
    }

    /// The newest version.
    pub fn newest(&self) -> &RingVersion {
        self.versions
            .values()
            .next_back()
            .expect("a layout always has a version")
    }

    /// The live versions, oldest first.
    pub fn live(&self) -> impl DoubleEndedIterator<Item = &RingVersion> + ExactSizeIterator {
        self.versions.values()
    }

    /// The oldest live version's number.
    pub fn oldest_live(&self) -> u64 {
        *self
            .versions
            .keys()
            .next()
            .expect("a layout always has a version")
    }

    /// Version `number`, if it is live.
    pub fn version(&self, number: u64) -> Option<&RingVersion> {
        self.versions.get(&number)
    }

    /// Whether the members never change.
    pub fn is_fixed(&self) -> bool {
        self.newest().change == Change::Fixed
    }

    /// Every node that is a member of a live version.
    pub fn nodes(&self) -> BTreeSet<&str> {
        self.versions
            .values()
            .flat_map(|v| v.members.keys().map(String::as_str))
            .collect()
    }

    /// Makes the version `proposal` asks for; returns its number.
    pub fn propose(&mut self, proposal: &Proposal) -> Result<u64, LayoutError> {
        if self.is_fixed() {
            return Err(LayoutError::Fixed);
        }
        if self.versions.len() >= MAX_LIVE_VERSIONS {
            return Err(LayoutError::TooManyLive(self.versions.len()));
        }
        let newest = self.newest();
        let mut members = newest.members.clone();
        let change = match proposal {
            Proposal::Join(nodes) => {
                for (node, vnodes) in nodes {
                    if members.insert(node.clone(), *vnodes).is_some() {
                        return Err(LayoutError::AlreadyMember(node.clone()));
                    }
                }
                Change::Joined(nodes.iter().map(|(n, _)| n.clone()).collect())
            }
            Proposal::Leave(nodes) | Proposal::Remove(nodes) => {
                for node in nodes {
                    members
                        .remove(node)
                        .ok_or_else(|| LayoutError::NotMember(node.clone()))?;
                }
                if matches!(proposal, Proposal::Leave(_)) {
                    Change::Left(nodes.clone())
                } else {
                    Change::Removed(nodes.clone())
                }
            }
            Proposal::Replace { old, new } => {
                let vnodes = members
                    .remove(old)
                    .ok_or_else(|| LayoutError::NotMember(old.clone()))?;
                if members.insert(new.clone(), vnodes).is_some() {
                    return Err(LayoutError::AlreadyMember(new.clone()));
                }
                Change::Replaced {
                    old: old.clone(),
                    new: new.clone(),
                }
            }
        };
        if members == newest.members {
            return Err(LayoutError::NothingToDo);
        }
        if members.is_empty() {
            return Err(LayoutError::Empty);
        }
        let number = newest.number + 1;
        self.versions.insert(
            number,
            RingVersion {
                number,
                members,
                change,
            },
        );
        self.retire();
        Ok(number)
    }

    /// Merges another node's layout into this one; returns whether anything changed.
    pub fn merge(&mut self, other: &Layout) -> Result<bool, LayoutError> {
        if other.cluster_id != self.cluster_id {
            return Err(LayoutError::ForeignCluster {
                theirs: other.cluster_id,
                ours: self.cluster_id,
            });
        }
        if other.replicas != self.replicas {
            return Err(LayoutError::Replicas {
                theirs: other.replicas,
                ours: self.replicas,
            });
        }
        let before = self.clone();
        let floor = self.oldest_live().max(other.oldest_live());
        for (number, version) in &other.versions {
            let keep = self
                .versions
                .get(number)
                .is_none_or(|mine| version.hash() > mine.hash());
            if keep {
                self.versions.insert(*number, version.clone());
            }
        }
        merge_marks(&mut self.acked, &other.acked);
        merge_marks(&mut self.synced, &other.synced);
        merge_marks(&mut self.read_acked, &other.read_acked);
        self.versions.retain(|number, _| *number >= floor);
        self.retire();
        Ok(*self != before)
    }

    /// Records that `node` routes writes with version `number` (and every older one).
    pub fn ack(&mut self, node: &str, number: u64) -> bool {
        let mark = self.mark(number);
        raise(&mut self.acked, node, mark)
    }

    /// Records that `node` copied every range it owns in version `number` from the owners
    /// in older live versions.
    pub fn mark_synced(&mut self, node: &str, number: u64) -> bool {
        let mark = self.mark(number);
        raise(&mut self.synced, node, mark)
    }

    /// Records that `node` reads every key from version `number` or newer (it saw every
    /// member of that version synced it).
    pub fn mark_read(&mut self, node: &str, number: u64) -> bool {
        let mark = self.mark(number);
        let raised = raise(&mut self.read_acked, node, mark);
        if raised {
            self.retire();
        }
        raised
    }

    fn mark(&self, number: u64) -> Mark {
        Mark {
            version: number,
            hash: self.versions.get(&number).map_or(0, RingVersion::hash),
        }
    }

    /// The newest version `node` acked, as this layout knows the versions.
    pub fn acked(&self, node: &str) -> u64 {
        self.reached(self.acked.get(node))
    }

    /// The newest version `node` synced, as this layout knows the versions.
    pub fn synced(&self, node: &str) -> u64 {
        self.reached(self.synced.get(node))
    }

    /// The newest version `node` read-acked, as this layout knows the versions.
    pub fn read_acked(&self, node: &str) -> u64 {
        self.reached(self.read_acked.get(node))
    }

    /// The newest version every one of its members synced, if newer than the oldest live
    /// one: the version a node may read-ack.
    pub fn readable(&self) -> u64 {
        self.versions
            .values()
            .rev()
            .find(|v| v.members.keys().all(|m| self.synced(m) >= v.number))
            .map_or(self.oldest_live(), |v| v.number)
    }

    /// A mark counts for its version if it saw that version's content (or the version
    /// retired, so its content no longer matters); a mark of content that lost to a
    /// concurrent change counts for the version before.
    fn reached(&self, mark: Option<&Mark>) -> u64 {
        let Some(mark) = mark else {
            return 0;
        };
        match self.versions.get(&mark.version) {
            Some(version) if version.hash() != mark.hash => mark.version - 1,
            _ => mark.version,
        }
    }

    /// Whether copying data for version `number` may start: every node that may
    /// coordinate writes (a member of a live version) acked it, but those `excused`
    /// (dead nodes the newest version no longer holds: they sync the layout before they
    /// serve again).
    pub fn acked_by_all(&self, number: u64, excused: impl Fn(&str) -> bool) -> bool {
        self.nodes()
            .into_iter()
            .all(|node| self.acked(node) >= number || excused(node))
    }

    /// Whether every node in `replicas` synced version `number` (so reads may use it).
    pub fn synced_by_all<'a>(
        &self,
        number: u64,
        replicas: impl IntoIterator<Item = &'a str>,
    ) -> bool {
        replicas.into_iter().all(|node| self.synced(node) >= number)
    }

    /// Retires every version older than what all members of the newest version
    /// read-acked.
    fn retire(&mut self) {
        let newest = self.newest();
        let floor = newest
            .members
            .keys()
            .map(|member| self.read_acked(member))
            .min()
            .unwrap_or(0)
            .min(newest.number);
        if floor > self.oldest_live() {
            self.versions.retain(|number, _| *number >= floor);
        }
    }
}

/// Raises `node`'s mark to `mark` if it is higher; returns whether it rose.
fn raise(marks: &mut BTreeMap<String, Mark>, node: &str, mark: Mark) -> bool {
    match marks.get(node) {
        Some(current) if *current >= mark => false,
        _ => {
            marks.insert(node.to_owned(), mark);
            true
        }
    }
}

fn merge_marks(mine: &mut BTreeMap<String, Mark>, theirs: &BTreeMap<String, Mark>) {
    for (node, mark) in theirs {
        raise(mine, node, *mark);
    }
}
