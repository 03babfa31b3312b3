//! Transfers: copying, for each ring version this node is a member of, every range it
//! gains from that range's owners in the older live versions, with the anti-entropy
//! exchange (so a copy is a comparison that finds every key missing here). Copying starts
//! only once every node that may coordinate writes acked the version; the node marks the
//! version synced when every source was copied from (a source declared DEAD is skipped:
//! its keys come from the other old owners). Ranges are copied in chunks, so progress and
//! an ETA can be shown and a failed source resumes where it stopped.

use std::collections::BTreeMap;
use std::sync::Arc;

use kv_aae::{HashRange, coalesce};
use kv_layout::{Layout, plan, share};
use tokio::sync::watch;
use tokio::time::Instant;

use super::progress::{
    Source, SourceProgress, TransferLog, TransferProgress, TransferState, VersionTransfer,
};
use crate::PeerTransport;
use crate::node::Node;

/// Longest chunk copied in one exchange: 1/256 of the hash space.
const CHUNK_SPAN: u64 = 1 << 56;

/// Splits `ranges` into chunks of at most [`CHUNK_SPAN`] positions.
fn chunks(ranges: Vec<HashRange>) -> Vec<HashRange> {
    let mut out = Vec::new();
    for range in coalesce(ranges) {
        let mut first = range.first();
        loop {
            let last = first.saturating_add(CHUNK_SPAN - 1).min(range.last());
            out.push(HashRange::new(first, last).expect("first <= last"));
            if last == range.last() {
                break;
            }
            first = last + 1;
        }
    }
    out
}

/// The ranges `me` gains in version `number`, by the old owner to copy them from.
fn sources_for(layout: &Layout, number: u64, me: &str) -> BTreeMap<String, Vec<HashRange>> {
    let mut sources: BTreeMap<String, Vec<HashRange>> = BTreeMap::new();
    let replicas = layout.replicas();
    let Some(Ok(target)) = layout.version(number).map(|v| v.ring(replicas)) else {
        return sources;
    };
    for older in layout.live().take_while(|v| v.number < number) {
        let Ok(ring) = older.ring(replicas) else {
            continue;
        };
        for gained in plan(&ring, &target).into_iter().filter(|m| m.to == me) {
            for from in gained.from.iter().filter(|f| *f != me) {
                sources
                    .entry(from.clone())
                    .or_default()
                    .extend(gained.ranges.iter().copied());
            }
        }
    }
    sources
}

/// Checks this node's transfers, and its cleanup once a change is over, every so often
/// until `stop` turns true.
pub(crate) async fn run_transfers<T: PeerTransport>(
    node: Arc<Node<T>>,
    mut stop: watch::Receiver<bool>,
) {
    let interval = node.config().layout_interval;
    loop {
        tokio::select! {
            biased;
            _ = stop.wait_for(|stop| *stop) => return,
            () = tokio::time::sleep(interval) => {}
        }
        node.transfer_step().await;
        node.cleanup_step().await;
    }
}

impl<T: PeerTransport> Node<T> {
    /// Moves this node's next unsynced version forward: waits for acks, copies from the
    /// sources (as far as they answer), and marks the version synced when all are done.
    pub async fn transfer_step(self: &Arc<Self>) {
        let Ok(routing) = self.serving_routing() else {
            return;
        };
        let layout = routing.layout();
        let me = self.config().node_id.clone();
        let synced = layout.synced(&me);
        let Some(target) = layout.live().find(|v| v.number > synced && v.has(&me)) else {
            return;
        };
        let (number, hash) = (target.number, target.hash());
        let excused =
            |node: &str| node != me && self.peers.is_dead(node) && !layout.newest().has(node);
        if !layout.acked_by_all(number, excused) {
            let missing = layout
                .nodes()
                .into_iter()
                .filter(|n| layout.acked(n) < number && !excused(n))
                .map(str::to_owned)
                .collect();
            self.record_waiting(number, hash, missing);
            return;
        }
        self.plan_transfer(layout, number, hash, &me);
        if self.copy_pending(number).await {
            self.finish_transfer(number);
        }
    }

    fn record_waiting(&self, number: u64, hash: u64, missing: Vec<String>) {
        let mut log = self.transfer_log();
        let transfer = log
            .versions
            .entry(number)
            .or_insert_with(|| VersionTransfer {
                hash,
                state: TransferState::Copying,
                sources: BTreeMap::new(),
                started: None,
                finished: None,
            });
        transfer.state = TransferState::WaitingForAcks { missing };
    }

    /// Plans the copy of version `number` unless it is planned for the same content.
    fn plan_transfer(&self, layout: &Layout, number: u64, hash: u64, me: &str) {
        let mut log = self.transfer_log();
        let planned = log
            .versions
            .get(&number)
            .is_some_and(|t| t.hash == hash && t.started.is_some());
        if planned {
            if let Some(t) = log.versions.get_mut(&number) {
                t.state = TransferState::Copying;
            }
            return;
        }
        let sources = sources_for(layout, number, me)
            .into_iter()
            .map(|(peer, ranges)| {
                let pending = chunks(ranges);
                let progress = SourceProgress {
                    peer: peer.clone(),
                    share_total: share(&pending),
                    share_done: 0.0,
                    keys_moved: 0,
                    bytes_moved: 0,
                    skipped: false,
                    last_error: None,
                };
                (peer, Source { progress, pending })
            })
            .collect();
        log.versions.insert(
            number,
            VersionTransfer {
                hash,
                state: TransferState::Copying,
                sources,
                started: Some(Instant::now()),
                finished: None,
            },
        );
        log.trim();
        tracing::info!(version = number, "ring transfer started");
    }

    /// Copies what is pending from every source that is up; true when nothing is left.
    async fn copy_pending(self: &Arc<Self>, number: u64) -> bool {
        let peers: Vec<String> = match self.transfer_log().versions.get(&number) {
            Some(t) => t.sources.keys().cloned().collect(),
            None => return false,
        };
        for peer in peers {
            if self.peers.is_dead(&peer) {
                self.with_source(number, &peer, |s| {
                    s.progress.skipped = true;
                    s.pending.clear();
                });
                continue;
            }
            if self.peers.is_down(&peer) {
                continue;
            }
            self.copy_from(number, &peer).await;
        }
        let log = self.transfer_log();
        log.versions
            .get(&number)
            .is_some_and(|t| t.sources.values().all(|s| s.pending.is_empty()))
    }

    /// Copies `peer`'s pending chunks one exchange at a time until one fails.
    async fn copy_from(self: &Arc<Self>, number: u64, peer: &str) {
        let peer: Arc<str> = Arc::from(peer);
        loop {
            let next = self.with_source(number, &peer, |s| s.pending.first().copied());
            let Some(Some(chunk)) = next else { return };
            match self.exchange_once(&peer, vec![chunk]).await {
                Ok(report) => {
                    self.with_source(number, &peer, |s| {
                        s.pending.retain(|c| *c != chunk);
                        s.progress.share_done += share(&[chunk]);
                        s.progress.keys_moved += report.keys_repaired;
                        s.progress.bytes_moved += report.bytes_moved;
                        s.progress.last_error = None;
                    });
                }
                Err(error) => {
                    self.with_source(number, &peer, |s| s.progress.last_error = Some(error));
                    return;
                }
            }
        }
    }

    fn with_source<R>(
        &self,
        number: u64,
        peer: &str,
        f: impl FnOnce(&mut Source) -> R,
    ) -> Option<R> {
        let mut log = self.transfer_log();
        log.versions
            .get_mut(&number)
            .and_then(|t| t.sources.get_mut(peer))
            .map(f)
    }

    /// Marks version `number` synced here (every range gained in it was copied).
    fn finish_transfer(&self, number: u64) {
        let me = self.config().node_id.clone();
        let marked = self.update_layout(|layout| {
            Ok(layout.as_mut().is_some_and(|l| l.mark_synced(&me, number)))
        });
        match marked {
            Ok(_) => {
                let mut log = self.transfer_log();
                if let Some(t) = log.versions.get_mut(&number) {
                    t.state = TransferState::Done;
                    t.finished.get_or_insert_with(Instant::now);
                    let moved: u64 = t.sources.values().map(|s| s.progress.keys_moved).sum();
                    tracing::info!(version = number, keys_moved = moved, "ring version synced");
                }
            }
            Err(error) => tracing::warn!(%error, "cannot mark the ring version synced"),
        }
    }

    fn transfer_log(&self) -> std::sync::MutexGuard<'_, TransferLog> {
        self.membership
            .transfers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// This node's transfers, newest last.
    pub fn transfers(&self) -> Vec<TransferProgress> {
        self.transfer_log().progress()
    }
}

#[cfg(test)]
mod tests {
    use kv_layout::Proposal;

    use super::*;

    #[test]
    fn chunks_cover_the_ranges_exactly() {
        let ranges = vec![HashRange::FULL];
        let pieces = chunks(ranges);
        assert_eq!(pieces.len(), 256);
        assert!((share(&pieces) - 1.0).abs() < 1e-9);
        let small = chunks(vec![HashRange::new(10, 20).unwrap()]);
        assert_eq!(small, vec![HashRange::new(10, 20).unwrap()]);
    }

    #[test]
    fn a_newcomer_copies_what_it_gains_from_every_old_owner() {
        let mut layout = Layout::found(1, 3, "n1", 16);
        let v2 = layout
            .propose(&Proposal::Join(vec![("n2".into(), 16), ("n3".into(), 16)]))
            .unwrap();
        for n in ["n1", "n2", "n3"] {
            layout.ack(n, v2);
            layout.mark_synced(n, v2);
            layout.mark_read(n, v2);
        }
        let v3 = layout
            .propose(&Proposal::Join(vec![("n4".into(), 16)]))
            .unwrap();
        let sources = sources_for(&layout, v3, "n4");
        assert_eq!(sources.keys().collect::<Vec<_>>(), ["n1", "n2", "n3"]);
        assert!(
            sources_for(&layout, v3, "n1").is_empty(),
            "n1 gains nothing"
        );
        let n4_share: f64 = share(&coalesce(sources["n1"].clone()));
        assert!(n4_share > 0.3 && n4_share <= 1.0, "{n4_share}");
    }
}
