//! What operators see of this node's transfers, and the bookkeeping behind it: per ring
//! version, the sources to copy from, the chunks still pending, keys and bytes moved; and
//! where its cleanup after a change stands.

use std::collections::BTreeMap;
use std::time::Duration;

use kv_aae::HashRange;
use tokio::time::Instant;

/// Where one version's transfer at this node stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransferState {
    /// Waiting until every node that coordinates writes acked the version.
    WaitingForAcks {
        /// The nodes that have not acked yet.
        missing: Vec<String>,
    },
    /// Copying from the sources.
    Copying,
    /// Every source copied; the version is marked synced here.
    Done,
}

/// Progress of copying from one source.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceProgress {
    /// The node copied from.
    pub peer: String,
    /// The share of the hash space to copy from it.
    pub share_total: f64,
    /// The share copied so far.
    pub share_done: f64,
    /// Keys repaired (copied here, or the rare key the source lacked).
    pub keys_moved: u64,
    /// Bytes moved either way.
    pub bytes_moved: u64,
    /// Declared DEAD: skipped, its keys come from the other sources.
    pub skipped: bool,
    /// The last failure, if the last attempt failed.
    pub last_error: Option<String>,
}

/// One version's transfer at this node, as operators see it.
#[derive(Debug, Clone, PartialEq)]
pub struct TransferProgress {
    /// The version.
    pub version: u64,
    /// Where it stands.
    pub state: TransferState,
    /// Per source.
    pub sources: Vec<SourceProgress>,
    /// How long copying has run (or ran).
    pub elapsed: Duration,
    /// Estimated time left, once something was copied.
    pub eta: Option<Duration>,
}

impl TransferProgress {
    /// Keys moved over all sources.
    pub fn keys_moved(&self) -> u64 {
        self.sources.iter().map(|s| s.keys_moved).sum()
    }

    /// Bytes moved over all sources.
    pub fn bytes_moved(&self) -> u64 {
        self.sources.iter().map(|s| s.bytes_moved).sum()
    }
}

#[derive(Debug)]
pub(super) struct Source {
    pub(super) progress: SourceProgress,
    pub(super) pending: Vec<HashRange>,
}

#[derive(Debug)]
pub(super) struct VersionTransfer {
    /// The content hash of the version planned for (a version replaced by a concurrent
    /// change is planned again).
    pub(super) hash: u64,
    pub(super) state: TransferState,
    pub(super) sources: BTreeMap<String, Source>,
    pub(super) started: Option<Instant>,
    pub(super) finished: Option<Instant>,
}

/// Every transfer this node ran or runs, by version.
#[derive(Debug, Default)]
pub(crate) struct TransferLog {
    pub(super) versions: BTreeMap<u64, VersionTransfer>,
}

/// Most finished transfers kept for operators.
const KEPT_TRANSFERS: usize = 16;

impl TransferLog {
    pub(super) fn progress(&self) -> Vec<TransferProgress> {
        self.versions
            .iter()
            .map(|(version, transfer)| {
                let elapsed = transfer.started.map_or(Duration::ZERO, |started| {
                    transfer.finished.unwrap_or_else(Instant::now) - started
                });
                let sources: Vec<SourceProgress> = transfer
                    .sources
                    .values()
                    .map(|s| s.progress.clone())
                    .collect();
                TransferProgress {
                    version: *version,
                    state: transfer.state.clone(),
                    eta: eta(&sources, elapsed, &transfer.state),
                    sources,
                    elapsed,
                }
            })
            .collect()
    }

    pub(super) fn trim(&mut self) {
        while self.versions.len() > KEPT_TRANSFERS {
            self.versions.pop_first();
        }
    }
}

/// Time left at the rate so far (share of the work done per elapsed time).
fn eta(sources: &[SourceProgress], elapsed: Duration, state: &TransferState) -> Option<Duration> {
    if *state != TransferState::Copying {
        return None;
    }
    let total: f64 = sources
        .iter()
        .filter(|s| !s.skipped)
        .map(|s| s.share_total)
        .sum();
    let done: f64 = sources
        .iter()
        .filter(|s| !s.skipped)
        .map(|s| s.share_done)
        .sum();
    if done <= 0.0 || total <= 0.0 {
        return None;
    }
    Some(elapsed.mul_f64(((total - done) / done).max(0.0)))
}

/// Cleanup's bookkeeping: the last pass, and when this node first saw the ring settled.
#[derive(Debug, Default)]
pub(crate) struct CleanupState {
    pub(super) progress: CleanupProgress,
    pub(super) settled_at: Option<(u64, Instant)>,
    /// A key changed between its scan and its removal: the pass runs again.
    pub(super) raced: bool,
}

/// Where this node's cleanup stands, for operators.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CleanupProgress {
    /// The settled version the last pass ran for (0: none yet).
    pub version: u64,
    /// Whether that pass went through every foreign range.
    pub done: bool,
    /// Keys removed by that pass.
    pub keys_dropped: u64,
}
