//! What this node has observed about each peer: the outcome of its last call to it.
//! Static membership reports these; gossip will replace them.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::SystemTime;

/// A peer's observed state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerState {
    /// Never contacted yet.
    Unknown,
    /// The last call succeeded.
    Alive,
    /// The last call failed to reach it or timed out.
    Suspect,
}

/// The observed state of one peer and when it last changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerStatus {
    /// Current state.
    pub state: PeerState,
    /// When `state` last changed.
    pub since: SystemTime,
}

/// Per-peer state, updated after every call.
#[derive(Debug)]
pub(crate) struct PeerTable {
    statuses: Mutex<HashMap<String, PeerStatus>>,
}

impl PeerTable {
    pub(crate) fn new(peers: impl IntoIterator<Item = String>) -> Self {
        let now = SystemTime::now();
        let statuses = peers
            .into_iter()
            .map(|p| {
                let status = PeerStatus {
                    state: PeerState::Unknown,
                    since: now,
                };
                (p, status)
            })
            .collect();
        Self {
            statuses: Mutex::new(statuses),
        }
    }

    pub(crate) fn observe(&self, peer: &str, reachable: bool) {
        let state = if reachable {
            PeerState::Alive
        } else {
            PeerState::Suspect
        };
        let mut statuses = self.statuses.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(status) = statuses.get_mut(peer)
            && status.state != state
        {
            *status = PeerStatus {
                state,
                since: SystemTime::now(),
            };
        }
    }

    pub(crate) fn status(&self, peer: &str) -> Option<PeerStatus> {
        let statuses = self.statuses.lock().unwrap_or_else(PoisonError::into_inner);
        statuses.get(peer).copied()
    }
}
