//! Work a request leaves behind once the client has its answer: letting slower replicas
//! of a write finish (and hinting the ones that never acknowledged), collecting late read
//! replies, and repairing the replicas whose answer was stale. Each has a bound: late
//! replies a grace period, the requests waiting for them a bound (`max_follow_ups`; a
//! request over it skips its follow-up, counted), repairs a budget of concurrent tasks
//! (a repair over budget is skipped and counted).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use kv_quorum::{Fanout, Reply};
use kv_repair::reconcile;
use kv_storage::Siblings;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;

use super::Node;
use crate::hints::Ack;
use crate::membership::Routing;
use crate::placement::Placement;
use crate::{PeerTransport, SharedVersions, TransportError};

/// A coordinated write, for the work after its answer: where it went and what it wrote.
pub(crate) struct Written {
    pub(crate) routing: Arc<Routing>,
    pub(crate) placement: Placement,
    pub(crate) key: Bytes,
    pub(crate) versions: Arc<SharedVersions>,
}

/// Whether a reply came from the replica it was asked of (a hint on a fallback did not).
pub(crate) trait FromReplica {
    fn answered_by_replica(&self) -> bool;
}

impl FromReplica for Ack {
    fn answered_by_replica(&self) -> bool {
        *self == Ack::Replica
    }
}

impl FromReplica for Option<Siblings> {
    fn answered_by_replica(&self) -> bool {
        true
    }
}

/// A read repair: the index of a replica in the read's placement, and what it lacks.
pub(crate) type ReadRepair = kv_repair::Repair<usize, Option<Bytes>>;

/// How long after a client's answer late replica replies are still awaited.
const LATE_REPLY_GRACE: Duration = Duration::from_secs(2);

impl<T: PeerTransport> Node<T> {
    /// Lets the slower replicas of a write finish without delaying the client, then
    /// leaves hints for the replicas that never acknowledged it (silent, not refusing).
    /// A write whose calls have all answered needs no task; one beyond the follow-up
    /// bound is shed (its calls are dropped: the write already has its quorum, and
    /// anti-entropy brings a replica that missed it level).
    pub(super) fn finish_in_background(
        self: &Arc<Self>,
        fanout: Fanout<Ack, TransportError>,
        written: Written,
    ) {
        // The caller observed the replies so far; only late ones are news.
        if fanout.pending() == 0
            && silent_replicas(written.placement.len(), fanout.replies()).is_empty()
        {
            return;
        }
        let Some(slot) = self.follow_up_slot(&self.stats.write_follow_ups_shed) else {
            return;
        };
        let node = Arc::clone(self);
        tokio::spawn(async move {
            let _slot = slot;
            let replies = fanout.finish(Instant::now() + LATE_REPLY_GRACE).await;
            let Written {
                routing,
                placement,
                key,
                versions,
            } = written;
            node.observe_replies(&placement, &replies);
            let missed = silent_replicas(placement.len(), &replies);
            node.hint_missed(&routing, &placement, &missed, &key, &versions)
                .await;
        });
    }

    /// After the client has its answer: wait for late replies, then send the merged
    /// versions to every replica that answered with less. When every replica has
    /// answered, `early_repairs` (planned from those answers) are all there is and no
    /// waiting task is needed; a wait beyond the follow-up bound is shed.
    pub(super) fn repair_in_background(
        self: &Arc<Self>,
        key: Bytes,
        fanout: Fanout<Option<Siblings>, TransportError>,
        placement: Placement,
        early_repairs: Vec<ReadRepair>,
    ) {
        if fanout.pending() == 0 {
            self.start_repairs(&key, &placement, early_repairs);
            return;
        }
        let Some(slot) = self.follow_up_slot(&self.stats.read_follow_ups_shed) else {
            return;
        };
        let node = Arc::clone(self);
        tokio::spawn(async move {
            let _slot = slot;
            let replies = fanout.finish(Instant::now() + LATE_REPLY_GRACE).await;
            node.observe_replies(&placement, &replies);
            let repairs = reconcile(&answers(&replies)).repairs;
            node.start_repairs(&key, &placement, repairs);
        });
    }

    /// A slot for one request's follow-up, or `None` (counted in `shed`) when
    /// `max_follow_ups` are already waiting.
    fn follow_up_slot(&self, shed: &AtomicU64) -> Option<OwnedSemaphorePermit> {
        let slot = Arc::clone(&self.follow_up_slots).try_acquire_owned().ok();
        if slot.is_none() {
            shed.fetch_add(1, Ordering::Relaxed);
        }
        slot
    }

    /// Sends the merged versions to every replica whose reply was stale, each repair in
    /// its own task within the repair budget (a repair over budget is skipped, counted).
    fn start_repairs(
        self: &Arc<Self>,
        key: &Bytes,
        placement: &Placement,
        repairs: Vec<ReadRepair>,
    ) {
        for repair in repairs {
            let Ok(slot) = Arc::clone(&self.repair_slots).try_acquire_owned() else {
                self.stats.repairs_skipped.fetch_add(1, Ordering::Relaxed);
                continue;
            };
            let replica = placement.replica(repair.replica);
            let (node, key) = (Arc::clone(self), key.clone());
            tokio::spawn(async move {
                let _slot = slot;
                node.repair_one(&replica, key, repair.versions).await;
            });
        }
    }

    async fn repair_one(&self, replica: &str, key: Bytes, versions: Siblings) {
        let result = if replica == self.config.node_id {
            self.replica_write(key, versions)
                .await
                .map_err(|error| error.to_string())
        } else {
            self.transport
                .write(replica, key, SharedVersions::new(versions), "")
                .await
                .map_err(|error| error.to_string())
        };
        match result {
            Ok(()) => {
                self.stats.repairs_sent.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(%replica, "read repair applied");
            }
            Err(error) => tracing::warn!(%replica, %error, "read repair failed"),
        }
    }

    /// Records which peers answered (liveness under a static membership).
    pub(super) fn observe_replies<V: FromReplica>(
        &self,
        placement: &Placement,
        replies: &[Reply<V, TransportError>],
    ) {
        for reply in replies {
            if reply.replica >= placement.len() {
                continue;
            }
            let peer = placement.replica(reply.replica);
            if *peer == *self.config.node_id {
                continue;
            }
            let answered = reply
                .result
                .as_ref()
                .map_or_else(|e| !e.is_silence(), FromReplica::answered_by_replica);
            self.peers.observe(&peer, answered);
        }
    }
}

/// The replicas (indices below `replicas`) that neither acknowledged nor refused: no
/// reply at all, or a silent failure (unreachable, timed out, declared dead).
fn silent_replicas(replicas: usize, replies: &[Reply<Ack, TransportError>]) -> Vec<usize> {
    (0..replicas)
        .filter(|&index| {
            let reply = replies.iter().find(|r| r.replica == index);
            reply.is_none_or(|r| r.result.as_ref().is_err_and(TransportError::is_silence))
        })
        .collect()
}

/// The successful read replies as (replica index, versions) pairs for reconciliation.
pub(super) fn answers(
    replies: &[Reply<Option<Siblings>, TransportError>],
) -> Vec<(usize, Option<Siblings>)> {
    replies
        .iter()
        .filter_map(|reply| match &reply.result {
            Ok(versions) => Some((reply.replica, versions.clone())),
            Err(_) => None,
        })
        .collect()
}
