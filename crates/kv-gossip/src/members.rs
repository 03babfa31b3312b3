//! The member table: the newest incarnation of every other node and its liveness, kept
//! in step with foca's membership list one changed slot at a time.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::NodeIdentity;

/// A member's liveness as this node sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum MemberState {
    /// Answering probes.
    Alive,
    /// Missed a probe; will be declared dead unless it refutes the suspicion in time.
    Suspect,
    /// Declared down by the cluster. Liveness never changes the ring: only an explicit
    /// ring change does.
    Dead,
}

impl From<foca::State> for MemberState {
    fn from(state: foca::State) -> Self {
        match state {
            foca::State::Alive => Self::Alive,
            foca::State::Suspect => Self::Suspect,
            foca::State::Down => Self::Dead,
        }
    }
}

/// What this node knows about one member (the newest incarnation of its node id).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberView {
    /// The member's identity.
    pub identity: NodeIdentity,
    /// Its liveness.
    pub state: MemberState,
    /// Its SWIM incarnation (raised to refute suspicion).
    pub incarnation: u16,
    /// When `state` last changed, on the caller's clock.
    pub since: Duration,
}

/// One entry of foca's membership list, borrowed.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SlotEntry<'a> {
    pub(crate) identity: &'a NodeIdentity,
    pub(crate) state: MemberState,
    pub(crate) incarnation: u16,
}

impl<'a> From<&'a foca::Member<NodeIdentity>> for SlotEntry<'a> {
    fn from(member: &'a foca::Member<NodeIdentity>) -> Self {
        Self {
            identity: member.id(),
            state: member.state().into(),
            incarnation: member.incarnation(),
        }
    }
}

/// What was last seen in one slot of foca's membership list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SeenSlot {
    identity: NodeIdentity,
    state: MemberState,
    incarnation: u16,
}

impl SeenSlot {
    /// Whether `entry` is what was seen in this slot. Without `renamed`, the identity is
    /// compared by gossip address and bump alone, which is exact as long as foca (2.0)
    /// keeps two promises: one slot per gossip address (an update for a known address
    /// lands in that address's slot), and an identity replaced in place always comes
    /// with a `Rename` notification. So a slot holding another member has another
    /// address, and a renamed one is caught by the full comparison the caller asks for
    /// after a rename. This keeps a refresh free of string compares: at 1,000 members
    /// they were most of the simulation's time.
    pub(crate) fn matches(&self, entry: &SlotEntry<'_>, renamed: bool) -> bool {
        let (seen, now) = (&self.identity, entry.identity);
        let same = self.state == entry.state
            && self.incarnation == entry.incarnation
            && seen.bump == now.bump
            && seen.gossip_addr == now.gossip_addr;
        if renamed {
            return same && seen == now;
        }
        debug_assert!(
            !same || seen == now,
            "foca renamed {seen:?} to {now:?} silently"
        );
        same
    }
}

impl From<SlotEntry<'_>> for SeenSlot {
    fn from(entry: SlotEntry<'_>) -> Self {
        Self {
            identity: entry.identity.clone(),
            state: entry.state,
            incarnation: entry.incarnation,
        }
    }
}

/// Every other member, newest incarnation per node id, ordered by node id.
#[derive(Debug, Default)]
pub(crate) struct MemberTable {
    by_node_id: BTreeMap<String, MemberView>,
    /// How many members are SUSPECT, so the periodic scan for stuck suspicions is skipped
    /// when there are none (the common case).
    suspects: usize,
}

impl MemberTable {
    /// Records `entry` (a changed slot) at `now`; whether the member's state or identity
    /// changed (an event for the caller). An older incarnation of a known node id is
    /// ignored.
    pub(crate) fn apply(&mut self, entry: &SlotEntry<'_>, now: Duration) -> bool {
        let identity = entry.identity;
        let Some(view) = self.by_node_id.get_mut(&identity.node_id) else {
            self.suspects += usize::from(entry.state == MemberState::Suspect);
            let view = MemberView {
                identity: identity.clone(),
                state: entry.state,
                incarnation: entry.incarnation,
                since: now,
            };
            self.by_node_id.insert(identity.node_id.clone(), view);
            return true;
        };
        if identity.bump < view.identity.bump {
            return false;
        }
        view.incarnation = entry.incarnation;
        if view.state == entry.state && view.identity == *identity {
            return false;
        }
        self.suspects -= usize::from(view.state == MemberState::Suspect);
        self.suspects += usize::from(entry.state == MemberState::Suspect);
        view.identity = identity.clone();
        view.state = entry.state;
        view.since = now;
        true
    }

    pub(crate) fn len(&self) -> usize {
        self.by_node_id.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.by_node_id.is_empty()
    }

    pub(crate) fn views(&self) -> impl Iterator<Item = &MemberView> + '_ {
        self.by_node_id.values()
    }

    pub(crate) fn suspects(&self) -> usize {
        self.suspects
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity(node_id: &str, bump: u64) -> NodeIdentity {
        NodeIdentity {
            node_id: node_id.to_owned(),
            gossip_addr: "127.0.0.1:7946".parse().unwrap(),
            internal_addr: "127.0.0.1:50151".parse().unwrap(),
            client_addr: "127.0.0.1:50051".parse().unwrap(),
            bump,
        }
    }

    fn entry(identity: &NodeIdentity, state: MemberState) -> SlotEntry<'_> {
        SlotEntry {
            identity,
            state,
            incarnation: 0,
        }
    }

    #[test]
    fn newer_incarnations_win_and_older_ones_are_ignored() {
        let mut table = MemberTable::default();
        let old = identity("n1", 1);
        let new = identity("n1", 2);
        let mut apply =
            |identity, state, secs| table.apply(&entry(identity, state), Duration::from_secs(secs));
        assert!(apply(&old, MemberState::Alive, 1));
        assert!(apply(&new, MemberState::Suspect, 2));
        // The old incarnation going down says nothing about the new one.
        assert!(!apply(&old, MemberState::Dead, 3));
        // An unchanged state is no change and keeps `since`.
        assert!(!apply(&new, MemberState::Suspect, 4));
        assert_eq!(table.suspects(), 1);
        let view = table.views().next().unwrap();
        assert_eq!(
            (view.identity.bump, view.state, view.since),
            (2, MemberState::Suspect, Duration::from_secs(2))
        );
        assert!(table.apply(&entry(&new, MemberState::Alive), Duration::from_secs(5)));
        assert_eq!((table.len(), table.suspects()), (1, 0));
    }
}
