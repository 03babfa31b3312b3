//! Hinted handoff: when a replica misses a write, another node keeps the versions as a
//! hint addressed to it (in the store's hints keyspace, so hints survive restarts) and
//! delivers them once gossip sees the replica ALIVE again.
//!
//! This module owns the node's side of it: storing a hint within the caps and the
//! operators' view; `book.rs` counts what is held, `fallback.rs` chooses where a
//! coordinator sends a hint, `delivery.rs` hands hints over, expires and redirects them.

pub(crate) mod book;
mod delivery;
mod fallback;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use kv_storage::Siblings;

pub use book::HintCounters;
pub(crate) use delivery::run_hint_delivery;
pub(crate) use fallback::Ack;

use crate::node::Node;
use crate::{MAX_NODE_ID_BYTES, NodeError, PeerState};

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
