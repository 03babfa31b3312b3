//! Delivery of the hints a node holds: every interval, for each target with hints, hand
//! them over unless gossip sees the target SUSPECT or DEAD (under a static peer list the
//! attempt itself is the probe), paced by one token bucket for all targets;
//! send them to the key's current replicas if the target left the ring or no longer
//! replicates the key, and drop the ones past the age limit. A hint leaves the store only
//! once its receiver acknowledged it (durably, at the receiver's durability), and only if
//! no newer write was added to it meanwhile; an interrupted pass resumes from the store.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kv_storage::{Hint, Siblings};
use tokio::sync::watch;
use tokio::time::Instant;

use super::book::HINT_PAGE;
use super::now_unix_ms;
use crate::aae::RateLimiter;
use crate::membership::Routing;
use crate::node::Node;
use crate::{ErrorKind, PeerTransport, SharedVersions, TransportError};

/// Hints handed over at once to one target.
const DELIVERY_BATCH: usize = 32;
/// Passes that only expire hints (for targets that cannot take them) run at most this
/// often, and at least every tenth of the age limit.
const MAX_SWEEP_PERIOD: Duration = Duration::from_secs(60);

/// Runs hint delivery until `stop` (hints off: returns at once).
pub(crate) async fn run_hint_delivery<T: PeerTransport>(
    node: Arc<Node<T>>,
    mut stop: watch::Receiver<bool>,
) {
    let config = node.config().hints.clone();
    if !config.enabled() {
        return;
    }
    let mut limiter = RateLimiter::new(config.delivery_keys_per_sec);
    let sweep_period = (config.max_age / 10).clamp(config.delivery_interval, MAX_SWEEP_PERIOD);
    let mut last_sweep = Instant::now();
    loop {
        // `biased`: a fixed polling order keeps a seeded simulation reproducible.
        tokio::select! {
            biased;
            _ = stop.wait_for(|stop| *stop) => return,
            () = tokio::time::sleep(config.delivery_interval) => {}
        }
        let sweep = last_sweep.elapsed() >= sweep_period;
        if sweep {
            last_sweep = Instant::now();
        }
        node.deliver_hints(&mut limiter, sweep).await;
    }
}

/// Where a target's hints go in this round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Receivers {
    /// The target itself.
    Target,
    /// The target left the ring: each key's replicas in the live versions.
    CurrentReplicas,
    /// The target is down: nowhere (the pass only drops expired hints).
    NoneNow,
}

/// How one pass over a target's hints ended.
struct Pass {
    oldest_unix_ms: Option<u64>,
    completed: bool,
    error: Option<String>,
}

impl<T: PeerTransport> Node<T> {
    /// One delivery round over every target this node holds hints for; with `sweep`,
    /// targets that cannot take hints now still get their expired hints dropped.
    pub(crate) async fn deliver_hints(self: &Arc<Self>, limiter: &mut RateLimiter, sweep: bool) {
        let Some(routing) = self.routing() else {
            return;
        };
        for target in self.hints.pending_targets() {
            let receivers = if !routing.is_member(&target) {
                Receivers::CurrentReplicas
            } else if self.peers.is_down(&target) {
                Receivers::NoneNow
            } else {
                Receivers::Target
            };
            if receivers == Receivers::NoneNow && !sweep {
                continue;
            }
            let pass = self.hint_pass(&routing, &target, receivers, limiter).await;
            if pass.completed || pass.error.is_some() {
                self.hints
                    .record_pass(&target, pass.oldest_unix_ms, pass.completed, pass.error);
            }
        }
    }

    /// Goes through `target`'s hints in key order: expired ones are dropped; the others
    /// are handed over when `state` allows it. Stops at the first delivery failure.
    async fn hint_pass(
        self: &Arc<Self>,
        routing: &Routing,
        target: &str,
        receivers: Receivers,
        limiter: &mut RateLimiter,
    ) -> Pass {
        let max_age_ms = self.config().hints.max_age.as_millis() as u64;
        let mut after: Option<Bytes> = None;
        let mut oldest: Option<u64> = None;
        loop {
            let page = match self.storage.hints(target, after.as_deref(), HINT_PAGE) {
                Ok(page) => page,
                Err(error) => return stopped(oldest, format!("reading hints: {error}")),
            };
            let Some(last) = page.last() else {
                return Pass {
                    oldest_unix_ms: oldest,
                    completed: true,
                    error: None,
                };
            };
            after = Some(last.key.clone());
            let full_page = page.len() == HINT_PAGE;
            let now_ms = now_unix_ms();
            let (expired, live): (Vec<Hint>, Vec<Hint>) = page
                .into_iter()
                .partition(|hint| hint.updated_unix_ms.saturating_add(max_age_ms) < now_ms);
            for hint in &expired {
                self.remove_hint(hint, false).await;
            }
            for batch in live.chunks(DELIVERY_BATCH) {
                if receivers == Receivers::NoneNow {
                    oldest = oldest_of(oldest, batch);
                    continue;
                }
                tokio::time::sleep(limiter.take(batch.len() as u32)).await;
                if let Err(error) = self.hand_over(routing, target, receivers, batch).await {
                    return stopped(oldest_of(oldest, batch), error);
                }
            }
            if !full_page {
                return Pass {
                    oldest_unix_ms: oldest,
                    completed: true,
                    error: None,
                };
            }
        }
    }

    /// Hands a batch of hints to their receivers side by side; each delivered hint leaves
    /// the store. Returns the first failure (the rest stay for a later pass).
    async fn hand_over(
        self: &Arc<Self>,
        routing: &Routing,
        target: &str,
        receivers: Receivers,
        batch: &[Hint],
    ) -> Result<(), String> {
        let mut sends = tokio::task::JoinSet::new();
        for (index, hint) in batch.iter().enumerate() {
            let node = Arc::clone(self);
            let (key, versions) = (hint.key.clone(), hint.versions.clone());
            let receivers = match receivers {
                Receivers::CurrentReplicas => routing.all_replicas(kv_ring::key_hash(&key)),
                _ => vec![Arc::from(target)],
            };
            sends.spawn(async move {
                let sent = node.send_hint(&receivers, key, versions, true).await;
                (index, sent)
            });
        }
        let mut first_error = None;
        while let Some(joined) = sends.join_next().await {
            let Ok((index, result)) = joined else {
                continue;
            };
            match result {
                Ok(()) => self.remove_hint(&batch[index], true).await,
                Err(error) => {
                    first_error.get_or_insert(error);
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Merges a hint's versions into every receiver. With `may_redirect`, a receiver that
    /// answers it does not replicate the key any more (the ring changed since the hint
    /// was stored) is replaced by the key's current replicas.
    async fn send_hint(
        self: &Arc<Self>,
        receivers: &[Arc<str>],
        key: Bytes,
        versions: Siblings,
        may_redirect: bool,
    ) -> Result<(), String> {
        for receiver in receivers {
            match self
                .merge_into(receiver, key.clone(), versions.clone())
                .await
            {
                Ok(()) => {}
                Err(TransportError::Remote { error, .. })
                    if may_redirect && error.kind == ErrorKind::FailedPrecondition =>
                {
                    let Some(routing) = self.routing() else {
                        return Err(error.message);
                    };
                    let current = routing.all_replicas(kv_ring::key_hash(&key));
                    return Box::pin(self.send_hint(&current, key, versions, false)).await;
                }
                Err(error) => return Err(error.to_string()),
            }
        }
        Ok(())
    }

    /// A replica merge on `receiver`, this node included.
    async fn merge_into(
        &self,
        receiver: &str,
        key: Bytes,
        versions: Siblings,
    ) -> Result<(), TransportError> {
        if receiver == self.config().node_id {
            return self
                .replica_write(key, versions)
                .await
                .map_err(|error| self.local_failure(&error));
        }
        self.transport
            .write(receiver, key, SharedVersions::new(versions), "")
            .await
    }

    /// Drops a hint that was delivered (or expired), unless a write added to it since.
    async fn remove_hint(&self, hint: &Hint, delivered: bool) {
        let (target, key, versions) =
            (hint.target.clone(), hint.key.clone(), hint.versions.clone());
        let removed = self
            .on_storage(move |storage| storage.remove_hint_if_unchanged(&target, &key, &versions))
            .await;
        match removed {
            Ok(Some(freed)) => self.hints.record_removed(&hint.target, freed, delivered),
            Ok(None) => {}
            Err(error) => {
                tracing::warn!(hint_target = %hint.target, %error, "removing a hint failed")
            }
        }
    }
}

fn stopped(oldest_unix_ms: Option<u64>, error: String) -> Pass {
    Pass {
        oldest_unix_ms,
        completed: false,
        error: Some(error),
    }
}

fn oldest_of(oldest: Option<u64>, hints: &[Hint]) -> Option<u64> {
    hints
        .iter()
        .map(|hint| hint.updated_unix_ms)
        .chain(oldest)
        .min()
}
