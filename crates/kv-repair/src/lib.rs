//! Reconciliation of replica replies and read-repair planning.
//!
//! A coordinator reads a key from several replicas. [`reconcile`] merges every answer
//! with DVVSet sync (so no write any replica holds is lost, and nothing a later write
//! superseded comes back) and lists the replicas that lack part of the merged result,
//! each with what to send it. Sending the merged set is always safe: a replica merges it
//! with sync, which is idempotent. The plan is pure data; the caller runs the repairs
//! after answering the client, with bounded concurrency.
//!
//! ```
//! use kv_clock::{ActorId, DvvSet, VersionVector};
//! use kv_repair::reconcile;
//! let n1 = ActorId::new("n1").unwrap();
//! let mut fresh = DvvSet::new();
//! fresh.update(&VersionVector::new(), "v2", &n1);
//! let replies = vec![("a", Some(fresh.clone())), ("b", None)];
//! let plan = reconcile(&replies);
//! assert_eq!(plan.merged.as_ref(), Some(&fresh));
//! assert_eq!(plan.repairs.len(), 1);
//! assert_eq!(plan.repairs[0].replica, "b");
//! ```

#![warn(missing_docs)]

use kv_clock::DvvSet;

/// A replica that must be sent `versions` to catch up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Repair<R, V> {
    /// Which replica.
    pub replica: R,
    /// What to merge into it (the reconciled versions).
    pub versions: DvvSet<V>,
}

/// The result of reconciling replica replies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reconciliation<R, V> {
    /// Every reply synced together; `None` when no replica had the key.
    pub merged: Option<DvvSet<V>>,
    /// Replicas whose answer differs from `merged`, in reply order.
    pub repairs: Vec<Repair<R, V>>,
}

/// Merges `replies` (a replica and what it holds, `None` for nothing) and plans repairs.
pub fn reconcile<R: Clone, V: Clone + PartialEq>(
    replies: &[(R, Option<DvvSet<V>>)],
) -> Reconciliation<R, V> {
    let merged = merge_all(replies.iter().filter_map(|(_, state)| state.as_ref()));
    let repairs = match &merged {
        None => Vec::new(),
        Some(merged) => replies
            .iter()
            .filter(|(_, state)| state.as_ref() != Some(merged))
            .map(|(replica, _)| Repair {
                replica: replica.clone(),
                versions: merged.clone(),
            })
            .collect(),
    };
    Reconciliation { merged, repairs }
}

/// Syncs a sequence of replica states into one; `None` for an empty sequence.
pub fn merge_all<'a, V: Clone + 'a>(
    states: impl IntoIterator<Item = &'a DvvSet<V>>,
) -> Option<DvvSet<V>> {
    let mut states = states.into_iter();
    let mut merged = states.next()?.clone();
    for state in states {
        merged.sync(state);
    }
    Some(merged)
}

#[cfg(test)]
mod tests {
    use kv_clock::{ActorId, VersionVector};

    use super::*;

    type Set = DvvSet<&'static str>;

    fn write(base: &Set, context: &VersionVector, value: &'static str, actor: &str) -> Set {
        let mut next = base.clone();
        next.update(context, value, &ActorId::new(actor).unwrap());
        next
    }

    fn values(set: &Set) -> Vec<&'static str> {
        let mut v: Vec<_> = set.values().copied().collect();
        v.sort_unstable();
        v
    }

    fn repaired(plan: &Reconciliation<&'static str, &'static str>) -> Vec<&'static str> {
        plan.repairs.iter().map(|r| r.replica).collect()
    }

    /// Replica states used below: `old` (v1), `new` (v2 written over v1), and `other`
    /// (v3 written concurrently with v1 at another coordinator).
    fn states() -> (Set, Set, Set) {
        let blind = VersionVector::new();
        let old = write(&Set::new(), &blind, "v1", "n1");
        let new = write(&old, &old.join(), "v2", "n1");
        let other = write(&Set::new(), &blind, "v3", "n2");
        (old, new, other)
    }

    #[test]
    fn no_replica_has_the_key() {
        let plan = reconcile::<_, &str>(&[("a", None), ("b", None)]);
        assert_eq!(plan.merged, None);
        assert!(plan.repairs.is_empty());
    }

    #[test]
    fn all_replicas_agree() {
        let (_, new, _) = states();
        let plan = reconcile(&[
            ("a", Some(new.clone())),
            ("b", Some(new.clone())),
            ("c", Some(new.clone())),
        ]);
        assert_eq!(plan.merged, Some(new));
        assert!(plan.repairs.is_empty());
    }

    #[test]
    fn stale_replica_gets_the_newer_version() {
        let (old, new, _) = states();
        let plan = reconcile(&[("a", Some(new.clone())), ("b", Some(old))]);
        assert_eq!(values(plan.merged.as_ref().unwrap()), ["v2"]);
        assert_eq!(repaired(&plan), ["b"]);
        assert_eq!(plan.repairs[0].versions, new);
    }

    #[test]
    fn missing_replica_gets_the_value() {
        let (_, new, _) = states();
        let plan = reconcile(&[("a", None), ("b", Some(new.clone())), ("c", None)]);
        assert_eq!(plan.merged, Some(new));
        assert_eq!(repaired(&plan), ["a", "c"]);
    }

    #[test]
    fn concurrent_replicas_both_get_the_siblings() {
        let (old, _, other) = states();
        let plan = reconcile(&[("a", Some(old)), ("b", Some(other))]);
        assert_eq!(values(plan.merged.as_ref().unwrap()), ["v1", "v3"]);
        assert_eq!(repaired(&plan), ["a", "b"]);
    }

    #[test]
    fn stale_missing_and_concurrent_together() {
        let (old, new, other) = states();
        let plan = reconcile(&[
            ("a", Some(old)),
            ("b", Some(new)),
            ("c", Some(other)),
            ("d", None),
        ]);
        assert_eq!(values(plan.merged.as_ref().unwrap()), ["v2", "v3"]);
        assert_eq!(repaired(&plan), ["a", "b", "c", "d"]);
    }

    #[test]
    fn a_replica_already_holding_the_merge_is_left_alone() {
        let (_, new, other) = states();
        let mut both = new.clone();
        both.sync(&other);
        let plan = reconcile(&[
            ("a", Some(both.clone())),
            ("b", Some(new)),
            ("c", Some(other)),
        ]);
        assert_eq!(plan.merged, Some(both));
        assert_eq!(repaired(&plan), ["b", "c"]);
    }

    #[test]
    fn reply_order_does_not_change_the_merge() {
        let (old, new, other) = states();
        let forward = reconcile(&[
            ("a", Some(old.clone())),
            ("b", Some(new.clone())),
            ("c", Some(other.clone())),
        ]);
        let backward = reconcile(&[("c", Some(other)), ("b", Some(new)), ("a", Some(old))]);
        assert_eq!(forward.merged, backward.merged);
    }

    #[test]
    fn tombstones_reconcile_like_values() {
        let blind = VersionVector::new();
        let n1 = ActorId::new("n1").unwrap();
        let mut live: DvvSet<Option<&str>> = DvvSet::new();
        live.update(&blind, Some("v1"), &n1);
        let mut deleted = live.clone();
        deleted.update(&live.join(), None, &n1);
        let plan = reconcile(&[("a", Some(live)), ("b", Some(deleted.clone()))]);
        assert_eq!(plan.merged, Some(deleted));
        assert_eq!(
            plan.repairs.iter().map(|r| r.replica).collect::<Vec<_>>(),
            ["a"]
        );
    }
}
