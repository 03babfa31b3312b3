//! Cleanup: dropping the keys this node no longer replicates once a ring change is over.
//!
//! A node that loses ranges in a change keeps their keys while the change runs (the
//! gaining nodes copy from it, reads of the older version may reach it). Once a single
//! version is live, every gaining node synced and every member read past the older
//! versions, so those copies serve nobody. Kept, they would cost disk, and worse: if the
//! node gained the range back later, anti-entropy would offer its stale copy of a key
//! whose tombstone the owners had since reaped, and the deleted value would come back.
//!
//! The pass scans only the ranges the node does not replicate in the settled version,
//! paced by the anti-entropy key budget, and removes a key only if it still holds what
//! was scanned (a write that arrives meanwhile keeps it). Before it drops a key holding
//! dots of its own actor, the node takes a new actor id (`Node::rotate_actor`): should
//! it replicate the key again, it must not mint those dots a second time. A node that is
//! not a member of
//! the settled version (it left, or was removed) keeps its store untouched: an operator
//! wipes it before it joins again. The pass stops when the layout changes and starts
//! over for the next settled version.

use std::sync::Arc;

use bytes::Bytes;
use kv_aae::{HashRange, arc, coalesce};
use kv_ring::Ring;
use tokio::time::Instant;

use super::progress::{CleanupProgress, CleanupState};
use crate::PeerTransport;
use crate::node::Node;

/// Keys scanned per page of a cleanup pass.
const CLEANUP_PAGE: usize = 512;

/// The ranges of `ring` whose keys `me` does not replicate, joined where they touch.
pub(crate) fn foreign_ranges(ring: &Ring, me: &str) -> Vec<HashRange> {
    let tokens: Vec<u64> = ring.tokens().map(|(token, _)| token).collect();
    let Some(&last) = tokens.last() else {
        return vec![HashRange::FULL];
    };
    let mut foreign = Vec::new();
    let mut previous = last;
    for &token in &tokens {
        if !ring.preference_list_for_hash(token).contains(me) {
            foreign.extend(arc(previous, token));
        }
        previous = token;
    }
    coalesce(foreign)
}

impl<T: PeerTransport> Node<T> {
    /// Runs the cleanup pass for the settled version if it has not run yet; returns
    /// early (to start over later) when the layout changes.
    pub(crate) async fn cleanup_step(self: &Arc<Self>) {
        let Ok(routing) = self.serving_routing() else {
            return;
        };
        let version = routing.newest_number();
        let me = self.config().node_id.clone();
        let already = self.cleanup_progress().version == version;
        if !routing.settled() || already || !routing.newest().members().any(|m| m == me) {
            return;
        }
        if !self.settled_for_a_while(version) {
            return;
        }
        self.set_cleanup(CleanupProgress {
            version,
            done: false,
            keys_dropped: 0,
        });
        let mut rotated = false;
        for range in foreign_ranges(routing.newest(), &me) {
            if !self.drop_range(range, version, &mut rotated).await {
                return;
            }
        }
        let dropped = self.cleanup_progress().keys_dropped;
        self.with_cleanup(|c| c.done = true);
        tracing::info!(
            version,
            keys_dropped = dropped,
            "keys no longer replicated here dropped"
        );
    }

    /// Removes every key of `range`; false if the layout changed or the store failed.
    /// Takes a new actor id first (once per pass, `rotated`) if a key holds dots of the
    /// current one.
    async fn drop_range(
        self: &Arc<Self>,
        range: HashRange,
        version: u64,
        rotated: &mut bool,
    ) -> bool {
        let mut after: Option<(u64, Bytes)> = None;
        loop {
            if !self.still_settled_at(version) {
                return false;
            }
            let start = after.as_ref().map(|(hash, key)| (*hash, key.as_ref()));
            let page = match self
                .storage
                .scan(range.first()..=range.last(), start, CLEANUP_PAGE)
            {
                Ok(page) => page,
                Err(error) => {
                    tracing::warn!(%error, "cleanup cannot scan the store");
                    return false;
                }
            };
            let full = page.len() == CLEANUP_PAGE;
            self.aae.pace(page.len() as u32).await;
            if !self.still_settled_at(version) {
                return false;
            }
            if !*rotated && self.minted_any(&page) {
                match self.rotate_actor(version) {
                    Ok(actor) => tracing::info!(%actor, "new actor id before dropping keys"),
                    Err(error) => {
                        tracing::warn!(%error, "cleanup cannot record a new actor id");
                        return false;
                    }
                }
                *rotated = true;
            }
            let mut dropped = 0;
            for item in &page {
                debug_assert!(range.contains(item.hash), "scan stays in its range");
                match self.storage.remove_if_unchanged(&item.key, &item.siblings) {
                    Ok(true) => {
                        self.aae.index.forget(&item.key, &item.siblings);
                        dropped += 1;
                    }
                    Ok(false) => self.cleanup_state().raced = true,
                    Err(error) => {
                        tracing::warn!(%error, "cleanup cannot remove a key");
                        return false;
                    }
                }
            }
            self.with_cleanup(|c| c.keys_dropped += dropped);
            match page.into_iter().last() {
                Some(last) if full => after = Some((last.hash, last.key)),
                _ => return true,
            }
        }
    }

    /// Whether a key of `page` holds dots this node's current actor minted.
    fn minted_any(&self, page: &[kv_storage::ScanItem]) -> bool {
        let actor = self.actor();
        page.iter()
            .any(|item| item.siblings.join().get(actor.as_str()) > 0)
    }

    /// Whether the ring has been settled at `version` here for a request timeout: a
    /// repair that passed its replica check just before it settled has landed by then.
    fn settled_for_a_while(&self, version: u64) -> bool {
        let grace = self.config().request_timeout;
        let mut state = self.cleanup_state();
        match state.settled_at {
            Some((seen, since)) if seen == version => since.elapsed() >= grace,
            _ => {
                state.settled_at = Some((version, Instant::now()));
                false
            }
        }
    }

    fn still_settled_at(&self, version: u64) -> bool {
        self.routing()
            .is_some_and(|r| r.settled() && r.newest_number() == version)
    }

    /// The last cleanup pass's progress.
    pub fn cleanup_progress(&self) -> CleanupProgress {
        self.cleanup_state().progress
    }

    fn set_cleanup(&self, progress: CleanupProgress) {
        self.cleanup_state().progress = progress;
    }

    fn with_cleanup(&self, f: impl FnOnce(&mut CleanupProgress)) {
        f(&mut self.cleanup_state().progress);
    }

    fn cleanup_state(&self) -> std::sync::MutexGuard<'_, CleanupState> {
        self.membership
            .cleanup
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use kv_ring::Member;

    use super::*;

    #[test]
    fn foreign_ranges_hold_exactly_the_keys_a_node_does_not_replicate() {
        let ring = Ring::new((1..=5).map(|i| Member::with_vnodes(format!("n{i}"), 16)), 3).unwrap();
        let foreign = foreign_ranges(&ring, "n1");
        for i in 0..5_000u32 {
            let key = format!("key-{i}");
            let position = kv_ring::key_hash(key.as_bytes());
            let replicated = ring.preference_list(key.as_bytes()).contains("n1");
            let covered = foreign.iter().any(|r| r.contains(position));
            assert_eq!(!replicated, covered, "{key} at {position:#x}");
        }
        let three = Ring::new((1..=3).map(|i| Member::new(format!("n{i}"))), 3).unwrap();
        assert!(
            foreign_ranges(&three, "n1").is_empty(),
            "n1 replicates every key"
        );
    }
}
