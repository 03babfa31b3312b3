//! The book of hints a node holds: per target how many, how many bytes, the oldest and
//! delivery progress (rebuilt from the store at start, kept in step with every hint
//! stored or removed), the caps a new hint must fit, and what happened to hints since
//! the node started. No I/O of its own besides the start-up count.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use bytes::Bytes;
use kv_storage::{HintUpdate, Storage, StorageError};
use tokio::time::Instant;

use crate::NodeError;

/// Hints read from the store per page (startup count, delivery, expiry sweeps).
pub(super) const HINT_PAGE: usize = 256;

/// What the node knows of the hints it holds for one target.
#[derive(Debug, Default, Clone)]
pub(super) struct TargetBook {
    pub(super) hints: u64,
    pub(super) bytes: u64,
    /// The oldest hint's last update (Unix ms), exact after each full pass over the
    /// target's hints, and kept as a lower bound in between.
    pub(super) oldest_unix_ms: Option<u64>,
    pub(super) delivered: u64,
    pub(super) last_error: String,
    pub(super) last_attempt: Option<Instant>,
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
    pub(super) fn targets(&self) -> MutexGuard<'_, BTreeMap<String, TargetBook>> {
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
    pub(super) fn check_room(
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

    pub(super) fn record_stored(&self, target: &str, update: HintUpdate, now_unix_ms: u64) {
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
    pub(super) fn record_removed(&self, target: &str, freed_bytes: u64, delivered: bool) {
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
    pub(super) fn record_pass(
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

    pub(super) fn count_dropped(&self) {
        self.dropped.fetch_add(1, Ordering::Relaxed);
    }

    /// A write acknowledgement that came from a fallback's hint.
    pub(crate) fn count_sloppy_ack(&self) {
        self.sloppy_acks.fetch_add(1, Ordering::Relaxed);
    }

    /// Targets this node holds hints for.
    pub(super) fn pending_targets(&self) -> Vec<String> {
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
