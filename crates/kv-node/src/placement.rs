//! `Placement`: where one key lives in one ring snapshot. A request takes the ring once,
//! at its start, and everything it does afterwards (validation against N, fan-out,
//! bookkeeping of replies, read repair) uses that same snapshot, so a membership change
//! in the middle of a request cannot send its parts to different replica sets.

use std::sync::Arc;

use kv_ring::{PreferenceList, Ring};

/// A key's replicas in one ring snapshot, primary first.
#[derive(Debug, Clone)]
pub(crate) struct Placement {
    ring: Arc<Ring>,
    hash: u64,
}

impl Placement {
    /// Where `key` lives in `ring`.
    pub(crate) fn of(ring: Arc<Ring>, key: &[u8]) -> Self {
        Self {
            hash: kv_ring::key_hash(key),
            ring,
        }
    }

    /// The replicas, primary first (a view into the ring: no allocation).
    pub(crate) fn replicas(&self) -> PreferenceList<'_> {
        self.ring.preference_list_for_hash(self.hash)
    }

    /// N for this key: the configured replication factor, capped at the ring's size.
    pub(crate) fn len(&self) -> usize {
        self.ring.replicas()
    }

    /// The replica at `index`, shared so a task can own it without copying the name.
    pub(crate) fn replica(&self, index: usize) -> Arc<str> {
        let replicas = self.replicas();
        debug_assert!(index < replicas.len(), "replica index {index} out of range");
        Arc::clone(
            replicas
                .get(index)
                .expect("replica indices come from this placement"),
        )
    }

    /// The index of `node` among the replicas, if it is one.
    pub(crate) fn position(&self, node: &str) -> Option<usize> {
        self.replicas().position(node)
    }

    /// The replicas, comma-separated, for error messages.
    pub(crate) fn describe(&self) -> String {
        self.replicas().iter().collect::<Vec<_>>().join(", ")
    }
}
