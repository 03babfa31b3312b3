//! Hinted handoff: when a replica misses a write, another node keeps the versions as a
//! hint addressed to it (in the store's hints keyspace, so hints survive restarts) and
//! delivers them once gossip sees the replica ALIVE again.
//!
//! This module owns the node's side of it: the book of hints held (per target: how many,
//! how many bytes, delivery progress; rebuilt from the store at start), the caps a new
//! hint must fit, and the operators' view. `fallback.rs` chooses where a coordinator
//! sends a hint; `delivery.rs` hands hints over, expires and redirects them.

mod delivery;
mod fallback;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use kv_storage::{HintUpdate, Siblings, Storage, StorageError};
use tokio::time::Instant;

pub(crate) use delivery::run_hint_delivery;
pub(crate) use fallback::Ack;

use crate::node::Node;
use crate::{MAX_NODE_ID_BYTES, NodeError, PeerState};

/// Hints read from the store per page (startup count, delivery, expiry sweeps).
const HINT_PAGE: usize = 256;

/// What the node knows of the hints it holds for one target.
#[derive(Debug, Default, Clone)]
struct TargetBook {
    hints: u64,
    bytes: u64,
    /// The oldest hint's last update (Unix ms), exact after each full pass over the
    /// target's hints, and kept as a lower bound in between.
    oldest_unix_ms: Option<u64>,
    delivered: u64,
    last_error: String,
    last_attempt: Option<Instant>,
}

/// The hints this node holds, per target, and what happened to hints since it started.
#[derive(Debug, Default)]
pub(crate) struct HintBook {
    targets: Mutex<BTreeMap<String, TargetBook>>,
    stored: AtomicU64,
    delivered: AtomicU64,
    expired: AtomicU64,
    dropped: AtomicU64,
    sloppy_acks: AtomicU64,
}

impl HintBook {
    fn targets(&self) -> MutexGuard<'_, BTreeMap<String, TargetBook>> {
        self.targets.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Counts every hint in `storage` (a node starting up).
    pub(crate) fn rebuild(&self, storage: &dyn Storage) -> Result<u64, StorageError> {
        let mut targets: BTreeMap<String, TargetBook> = BTreeMap::new();
        let mut after: Option<(String, Bytes)> = None;
        let mut total = 0;
        loop {
            let page = storage.all_hints(
                after.as_ref().map(|(t, k)| (t.as_str(), k.as_ref())),
                HINT_PAGE,
            )?;
            for hint in &page {
                let book = targets.entry(hint.target.clone()).or_default();
                book.hints += 1;
                book.bytes += hint.size_bytes;
                book.oldest_unix_ms = Some(
                    book.oldest_unix_ms
                        .map_or(hint.updated_unix_ms, |o| o.min(hint.updated_unix_ms)),
                );
                total += 1;
            }
            match page.last() {
                Some(last) if page.len() == HINT_PAGE => {
                    after = Some((last.target.clone(), last.key.clone()));
                }
                _ => break,
            }
        }
        *self.targets() = targets;
        Ok(total)
    }

    /// Refuses a hint of about `size_bytes` for `target` that would pass a cap.
    fn check_room(
        &self,
        node: &str,
        target: &str,
        size_bytes: u64,
        config: &crate::HintConfig,
    ) -> Result<(), NodeError> {
        let targets = self.targets();
        let total: u64 = targets.values().map(|b| b.bytes).sum();
        let held = targets.get(target).map_or(0, |b| b.bytes);
        let full = |scope: String, held_bytes, max_bytes, flag| NodeError::HintsFull {
            node: node.to_owned(),
            scope,
            held_bytes,
            max_bytes,
            flag,
        };
        if total + size_bytes > config.max_bytes {
            return Err(full("in total".into(), total, config.max_bytes, "bytes"));
        }
        if held + size_bytes > config.max_target_bytes {
            return Err(full(
                format!("for {target}"),
                held,
                config.max_target_bytes,
                "target-bytes",
            ));
        }
        Ok(())
    }

    fn record_stored(&self, target: &str, update: HintUpdate, now_unix_ms: u64) {
        let mut targets = self.targets();
        let book = targets.entry(target.to_owned()).or_default();
        if update.before_bytes.is_none() {
            book.hints += 1;
        }
        book.bytes =
            (book.bytes + update.after_bytes).saturating_sub(update.before_bytes.unwrap_or(0));
        book.oldest_unix_ms.get_or_insert(now_unix_ms);
        self.stored.fetch_add(1, Ordering::Relaxed);
    }

    /// A hint for `target` that took `freed_bytes` left the store, `delivered` or not.
    fn record_removed(&self, target: &str, freed_bytes: u64, delivered: bool) {
        let mut targets = self.targets();
        let book = targets.entry(target.to_owned()).or_default();
        debug_assert!(book.hints > 0, "removed a hint the book did not count");
        book.hints = book.hints.saturating_sub(1);
        book.bytes = book.bytes.saturating_sub(freed_bytes);
        if book.hints == 0 {
            book.oldest_unix_ms = None;
        }
        if delivered {
            book.delivered += 1;
            self.delivered.fetch_add(1, Ordering::Relaxed);
        } else {
            self.expired.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// After a pass over `target`'s hints: the oldest one left (exact if the pass went
    /// through them all) and why it stopped early, if it did.
    fn record_pass(
        &self,
        target: &str,
        oldest_unix_ms: Option<u64>,
        completed: bool,
        error: Option<String>,
    ) {
        let mut targets = self.targets();
        let book = targets.entry(target.to_owned()).or_default();
        if completed {
            book.oldest_unix_ms = oldest_unix_ms.filter(|_| book.hints > 0);
        }
        book.last_error = error.unwrap_or_default();
        book.last_attempt = Some(Instant::now());
    }

    fn count_dropped(&self) {
        self.dropped.fetch_add(1, Ordering::Relaxed);
    }

    /// A write acknowledgement that came from a fallback's hint.
    pub(crate) fn count_sloppy_ack(&self) {
        self.sloppy_acks.fetch_add(1, Ordering::Relaxed);
    }

    /// Targets this node holds hints for.
    fn pending_targets(&self) -> Vec<String> {
        self.targets()
            .iter()
            .filter(|(_, book)| book.hints > 0)
            .map(|(target, _)| target.clone())
            .collect()
    }

    /// Hints stored, delivered, expired and dropped since the node started, and sloppy
    /// acknowledgements.
    pub(crate) fn counters(&self) -> HintCounters {
        HintCounters {
            stored: self.stored.load(Ordering::Relaxed),
            delivered: self.delivered.load(Ordering::Relaxed),
            expired: self.expired.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
            sloppy_acks: self.sloppy_acks.load(Ordering::Relaxed),
        }
    }
}

/// What happened to hints since the node started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HintCounters {
    /// Hints stored (a coalesced one counts each time).
    pub stored: u64,
    /// Hints delivered to their target (or, for a target that no longer replicates the
    /// key, to the key's current replicas).
    pub delivered: u64,
    /// Hints dropped undelivered after the age limit.
    pub expired: u64,
    /// Hints refused because a cap was reached.
    pub dropped: u64,
    /// Write acknowledgements that came from a fallback's hint.
    pub sloppy_acks: u64,
}

/// How a hint target looks to the node that holds its hints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HintTargetState {
    /// Gossip sees it (or a static peer answers): hints are delivered.
    Alive,
    /// Not answering lately: hints wait.
    Suspect,
    /// Declared down: hints wait.
    Dead,
    /// Never heard from.
    Unknown,
    /// In no live ring version: its hints go to the key's current replicas.
    NotAMember,
}

impl HintTargetState {
    /// As `kvstore hints` prints it.
    pub fn label(self) -> &'static str {
        match self {
            Self::Alive => "ALIVE",
            Self::Suspect => "SUSPECT",
            Self::Dead => "DEAD",
            Self::Unknown => "UNKNOWN",
            Self::NotAMember => "NOT_A_MEMBER",
        }
    }
}

/// The hints held for one target, for operators.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetHints {
    /// The replica they are for.
    pub target: String,
    /// Hints held.
    pub hints: u64,
    /// Their size in the store.
    pub bytes: u64,
    /// Age of the oldest (since its last update).
    pub oldest_age: Option<Duration>,
    /// The target as this node sees it.
    pub state: HintTargetState,
    /// Hints delivered to it since this node started.
    pub delivered: u64,
    /// Why the last pass stopped early; empty if it went through.
    pub last_error: String,
    /// When the last pass over its hints ran.
    pub last_attempt_ago: Option<Duration>,
}

/// This node's hints and settings (`kvstore hints`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HintsStatus {
    /// The settings the node runs with.
    pub config: crate::HintConfig,
    /// Per target, those with hints held or delivered.
    pub targets: Vec<TargetHints>,
    /// Counters since start.
    pub counters: HintCounters,
}

/// Wall-clock milliseconds since the Unix epoch: hint ages must survive restarts.
pub(crate) fn now_unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl<T> Node<T> {
    /// Stores `versions` of `key` as a hint for `target` (a coordinator asked this node,
    /// a fallback, or this node keeps its own hint), within the node's caps.
    pub async fn store_hint(
        &self,
        target: &str,
        key: Bytes,
        versions: Siblings,
    ) -> Result<(), NodeError> {
        let node_id = self.config().node_id.as_str();
        let config = &self.config().hints;
        if !config.enabled() {
            return Err(NodeError::HintsDisabled {
                node: node_id.to_owned(),
            });
        }
        if target.is_empty() || target.len() > MAX_NODE_ID_BYTES || target == node_id {
            return Err(NodeError::BadHint(format!(
                "target {target:?} must be another node's id (1..={MAX_NODE_ID_BYTES} bytes)"
            )));
        }
        let size_bytes = hint_size_estimate(target, &key, &versions);
        if let Err(full) = self.hints.check_room(node_id, target, size_bytes, config) {
            self.hints.count_dropped();
            return Err(full);
        }
        let now = now_unix_ms();
        let owned_target = target.to_owned();
        let update = self
            .on_storage(move |storage| storage.store_hint(&owned_target, &key, &versions, now))
            .await?;
        self.hints.record_stored(target, update, now);
        Ok(())
    }

    /// The hints this node holds and how their delivery goes.
    pub fn hints_status(&self) -> HintsStatus {
        let routing = self.routing();
        let now_ms = now_unix_ms();
        let targets = self
            .hints
            .targets()
            .iter()
            .filter(|(_, book)| book.hints > 0 || book.delivered > 0)
            .map(|(target, book)| TargetHints {
                target: target.clone(),
                hints: book.hints,
                bytes: book.bytes,
                oldest_age: book
                    .oldest_unix_ms
                    .map(|at| Duration::from_millis(now_ms.saturating_sub(at))),
                state: self.hint_target_state(routing.as_deref(), target),
                delivered: book.delivered,
                last_error: book.last_error.clone(),
                last_attempt_ago: book.last_attempt.map(|at| at.elapsed()),
            })
            .collect();
        HintsStatus {
            config: self.config().hints.clone(),
            targets,
            counters: self.hints.counters(),
        }
    }

    /// How `target` looks for delivery: a member of a live ring version in some
    /// liveness state, or not a member any more.
    fn hint_target_state(&self, routing: Option<&crate::Routing>, target: &str) -> HintTargetState {
        if routing.is_some_and(|r| !r.is_member(target)) {
            return HintTargetState::NotAMember;
        }
        match self.peers.status(target).map(|s| s.state) {
            Some(PeerState::Alive) => HintTargetState::Alive,
            Some(PeerState::Suspect) => HintTargetState::Suspect,
            Some(PeerState::Dead) => HintTargetState::Dead,
            Some(PeerState::Unknown) | None => HintTargetState::Unknown,
        }
    }
}

/// About the bytes a hint takes in the store (checked against the caps before storing;
/// the book then counts the exact size).
fn hint_size_estimate(target: &str, key: &[u8], versions: &Siblings) -> u64 {
    const RECORD_OVERHEAD_BYTES: usize = 1 + 5 + 8;
    let mut encoded = Vec::new();
    kv_clock::encode_dvvset(versions, &mut encoded);
    (RECORD_OVERHEAD_BYTES + target.len() + key.len() + encoded.len()) as u64
}
