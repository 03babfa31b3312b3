//! The anti-entropy round: every interval, exchange with each peer (in a fixed order, one
//! at a time) the ranges both replicate, skipping peers that are not up; then reap the
//! tombstones every replica has agreed on for longer than the grace period.

use std::sync::Arc;

use kv_aae::HashRange;
use kv_storage::{Siblings, StorageError};
use tokio::sync::watch;
use tokio::time::Instant;

use super::only_tombstones;
use crate::PeerTransport;
use crate::membership::Routing;
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

impl<T: PeerTransport> Node<T> {
    /// Runs one anti-entropy round now: an exchange with every peer that is up (in node
    /// order, one at a time), then tombstone reaping. The background task runs one every
    /// interval; tests and operators may run one at will.
    pub async fn anti_entropy_round(self: &Arc<Self>) {
        let Ok(routing) = self.serving_routing() else {
            return;
        };
        for (peer, ranges) in routing.shared_ranges(&self.config().node_id) {
            if self.peers.is_down(&peer) {
                continue;
            }
            if let Err(error) = self.exchange_once(&peer, ranges).await {
                tracing::debug!(%peer, %error, "anti-entropy exchange did not run");
            }
        }
        if let Err(error) = self.reap_tombstones() {
            tracing::warn!(%error, "tombstone reaping stopped");
        }
    }

    /// Runs one exchange of `ranges` with `peer` (if this node is free), records it for
    /// operators, and reports what it did or why it failed.
    pub(crate) async fn exchange_once(
        self: &Arc<Self>,
        peer: &Arc<str>,
        ranges: Vec<HashRange>,
    ) -> Result<super::ExchangeReport, String> {
        if !self.aae.start_exchange(peer) {
            return Err("this node is busy with another exchange".into());
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
        self.aae.finished(peer, &ranges, started, outcome.clone());
        outcome
    }

    /// Reaps the tombstones past their grace period that every other replica agreed on.
    fn reap_tombstones(&self) -> Result<(), StorageError> {
        let grace = self.config().anti_entropy.tombstone_grace;
        let Some(cutoff) = Instant::now().checked_sub(grace) else {
            return Ok(());
        };
        let Some(routing) = self.routing() else {
            return Ok(());
        };
        if !routing.settled() {
            // While data moves, the set of replicas that must agree is in flux.
            return Ok(());
        }
        let mut reaped = 0;
        for (key, _) in self
            .aae
            .index
            .tombstones_before(cutoff, MAX_REAPS_PER_ROUND)
        {
            if !self.may_reap(&routing, &key) {
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
    pub(crate) fn may_reap(&self, routing: &Routing, key: &[u8]) -> bool {
        let Some(since) = self.aae.index.tombstone_since(key) else {
            return false;
        };
        if since.elapsed() < self.config().anti_entropy.tombstone_grace {
            return false;
        }
        let position = kv_ring::key_hash(key);
        let replicas = routing.all_replicas(position);
        let me = self.config().node_id.as_str();
        replicas.iter().any(|r| &**r == me)
            && replicas
                .iter()
                .filter(|replica| &***replica != me)
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
