//! The anti-entropy round: every interval, exchange with each peer (in a fixed order, one
//! at a time) the ranges both replicate, skipping peers that are not up; then reap the
//! tombstones every replica has agreed on for longer than the grace period.

use std::collections::BTreeMap;
use std::sync::Arc;

use kv_aae::{HashRange, arc, coalesce};
use kv_ring::Ring;
use kv_storage::{Siblings, StorageError};
use tokio::sync::watch;
use tokio::time::Instant;

use super::only_tombstones;
use crate::PeerTransport;
use crate::node::Node;

/// Most tombstones one round reaps.
const MAX_REAPS_PER_ROUND: usize = 10_000;

/// Runs rounds every `interval` until `stop` turns true.
pub(crate) async fn run_anti_entropy<T: PeerTransport>(
    node: Arc<Node<T>>,
    mut stop: watch::Receiver<bool>,
) {
    let interval = node.config().anti_entropy.interval;
    if interval.is_zero() {
        return;
    }
    loop {
        // `biased`: a fixed polling order keeps a seeded simulation reproducible.
        tokio::select! {
            biased;
            _ = stop.wait_for(|stop| *stop) => return,
            () = tokio::time::sleep(interval) => {}
        }
        node.anti_entropy_round().await;
    }
}

/// For each other member of `ring`, the ranges whose keys both it and `me` replicate,
/// joined where they touch (members that share nothing with `me` are absent).
pub(crate) fn shared_ranges(ring: &Ring, me: &str) -> BTreeMap<Arc<str>, Vec<HashRange>> {
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

impl<T: PeerTransport> Node<T> {
    /// Runs one anti-entropy round now: an exchange with every peer that is up (in node
    /// order, one at a time), then tombstone reaping. The background task runs one every
    /// interval; tests and operators may run one at will.
    pub async fn anti_entropy_round(self: &Arc<Self>) {
        if !self.ring_complete() {
            return;
        }
        let ring = self.ring();
        for (peer, ranges) in shared_ranges(&ring, &self.config().node_id) {
            if self.peers.is_down(&peer) {
                continue;
            }
            self.exchange_and_record(&peer, ranges).await;
        }
        if let Err(error) = self.reap_tombstones() {
            tracing::warn!(%error, "tombstone reaping stopped");
        }
    }

    async fn exchange_and_record(self: &Arc<Self>, peer: &Arc<str>, ranges: Vec<HashRange>) {
        if !self.aae.start_exchange(peer) {
            tracing::debug!(%peer, "anti-entropy: this node is busy with another exchange");
            return;
        }
        let started = Instant::now();
        self.aae.started(peer);
        let outcome = self.exchange(peer, ranges.clone()).await;
        // Free the peer at once (best effort: its reservation expires by itself).
        let _ = self
            .transport
            .aae_end(
                peer,
                &self.config().node_id,
                outcome.is_ok(),
                ranges.clone(),
            )
            .await;
        self.aae.end_exchange();
        match &outcome {
            Ok(report) if report.keys_repaired > 0 => tracing::info!(
                %peer,
                keys_repaired = report.keys_repaired,
                bytes_moved = report.bytes_moved,
                ranges_differing = report.stats.ranges_differing,
                took_ms = started.elapsed().as_millis() as u64,
                "anti-entropy repaired keys"
            ),
            Ok(_) => tracing::debug!(%peer, "anti-entropy: in agreement"),
            Err(error) => tracing::warn!(%peer, %error, "anti-entropy exchange failed"),
        }
        let outcome = outcome.map_err(|error| error.to_string());
        self.aae.finished(peer, &ranges, started, outcome);
    }

    /// Reaps the tombstones past their grace period that every other replica agreed on.
    fn reap_tombstones(&self) -> Result<(), StorageError> {
        let grace = self.config().anti_entropy.tombstone_grace;
        let Some(cutoff) = Instant::now().checked_sub(grace) else {
            return Ok(());
        };
        let ring = self.ring();
        let mut reaped = 0;
        for (key, _) in self
            .aae
            .index
            .tombstones_before(cutoff, MAX_REAPS_PER_ROUND)
        {
            if !self.may_reap(&ring, &key) {
                continue;
            }
            if let Some(versions) = self.storage.get(&key)?
                && only_tombstones(&versions)
                && self.reap(&key, &versions)?
            {
                reaped += 1;
            }
        }
        if reaped > 0 {
            tracing::info!(reaped, "tombstones reaped");
        }
        Ok(())
    }

    /// Whether `key`'s tombstone may go: it has held only tombstones here for the grace
    /// period, this node replicates it, and every other replica agreed with this node
    /// after the tombstone arrived.
    pub(crate) fn may_reap(&self, ring: &Ring, key: &[u8]) -> bool {
        let Some(since) = self.aae.index.tombstone_since(key) else {
            return false;
        };
        if since.elapsed() < self.config().anti_entropy.tombstone_grace {
            return false;
        }
        let position = kv_ring::key_hash(key);
        let replicas = ring.preference_list_for_hash(position);
        let me = self.config().node_id.as_str();
        replicas.contains(me)
            && replicas
                .iter()
                .filter(|replica| *replica != me)
                .all(|peer| {
                    self.aae
                        .agreed_at(peer, position)
                        .is_some_and(|at| at > since)
                })
    }

    /// Removes `key` if it still holds `versions`; returns whether it did.
    pub(crate) fn reap(&self, key: &[u8], versions: &Siblings) -> Result<bool, StorageError> {
        if !self.storage.remove_if_unchanged(key, versions)? {
            return Ok(false);
        }
        self.aae.index.forget(key, versions);
        self.aae.count_reaped(1);
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use kv_ring::Member;

    use super::*;

    #[test]
    fn shared_ranges_cover_exactly_the_keys_both_replicate() {
        let ring = Ring::new((1..=5).map(|i| Member::with_vnodes(format!("n{i}"), 16)), 3).unwrap();
        let ranges = shared_ranges(&ring, "n1").remove("n2").unwrap();
        for i in 0..5_000u32 {
            let key = format!("key-{i}");
            let position = kv_ring::key_hash(key.as_bytes());
            let replicas = ring.preference_list(key.as_bytes());
            let both = replicas.contains("n1") && replicas.contains("n2");
            let covered = ranges.iter().any(|r| r.contains(position));
            assert_eq!(both, covered, "{key} at {position:#x}");
        }
        let three = Ring::new((1..=3).map(|i| Member::new(format!("n{i}"))), 3).unwrap();
        let all = shared_ranges(&three, "n1");
        assert_eq!(all.len(), 2);
        assert_eq!(all["n3"], vec![HashRange::FULL]);
    }
}
