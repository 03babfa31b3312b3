//! What this node knows about each peer: its addresses, whether it is in the ring, and its
//! liveness. With gossip, liveness comes from the failure detector; with a static peer
//! list, from the outcome of the last call to the peer.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Mutex, PoisonError};
use std::time::SystemTime;

use crate::PeerSpec;

/// A peer's liveness as this node sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerState {
    /// Never heard from yet.
    Unknown,
    /// Answering.
    Alive,
    /// Missed a probe (gossip) or the last call failed (static membership).
    Suspect,
    /// Declared down by the failure detector: coordinators do not wait for it.
    Dead,
}

/// Everything known about one peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerStatus {
    /// The peer's node id.
    pub node_id: String,
    /// Its internal (node-to-node) gRPC address.
    pub internal_address: SocketAddr,
    /// Its client API address, when known (gossip carries it; a static peer list does
    /// not).
    pub client_address: Option<SocketAddr>,
    /// Its gossip address, when gossip is on.
    pub gossip_address: Option<SocketAddr>,
    /// Liveness.
    pub state: PeerState,
    /// SWIM incarnation (0 without gossip).
    pub incarnation: u64,
    /// When `state` last changed.
    pub since: SystemTime,
}

/// Per-peer state, shared by the coordinator and the membership views.
#[derive(Debug)]
pub(crate) struct PeerTable {
    peers: Mutex<BTreeMap<String, PeerStatus>>,
    gossip_driven: bool,
}

impl PeerTable {
    /// A table for a static peer list, every peer in the ring with unknown liveness.
    pub(crate) fn fixed(peers: &[PeerSpec]) -> Self {
        let now = SystemTime::now();
        let peers = peers
            .iter()
            .map(|peer| {
                let node_id = peer.node_id.clone();
                let status = PeerStatus {
                    node_id: node_id.clone(),
                    internal_address: peer.internal_address,
                    client_address: None,
                    gossip_address: None,
                    state: PeerState::Unknown,
                    incarnation: 0,
                    since: now,
                };
                (node_id, status)
            })
            .collect();
        Self {
            peers: Mutex::new(peers),
            gossip_driven: false,
        }
    }

    /// An empty table that gossip fills.
    pub(crate) fn gossip_driven() -> Self {
        Self {
            peers: Mutex::new(BTreeMap::new()),
            gossip_driven: true,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, PeerStatus>> {
        self.peers.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records a call's outcome; ignored when gossip owns liveness.
    pub(crate) fn observe(&self, peer: &str, reachable: bool) {
        if self.gossip_driven {
            return;
        }
        let state = if reachable {
            PeerState::Alive
        } else {
            PeerState::Suspect
        };
        if let Some(status) = self.lock().get_mut(peer)
            && status.state != state
        {
            status.state = state;
            status.since = SystemTime::now();
        }
    }

    /// Replaces the table with gossip's view; returns whether a peer became ALIVE.
    pub(crate) fn replace(&self, statuses: Vec<PeerStatus>) -> bool {
        let table: BTreeMap<String, PeerStatus> = statuses
            .into_iter()
            .map(|s| (s.node_id.clone(), s))
            .collect();
        let mut current = self.lock();
        let newly_alive = table.values().any(|status| {
            status.state == PeerState::Alive
                && current
                    .get(&status.node_id)
                    .is_none_or(|before| before.state != PeerState::Alive)
        });
        *current = table;
        newly_alive
    }

    pub(crate) fn status(&self, peer: &str) -> Option<PeerStatus> {
        self.lock().get(peer).cloned()
    }

    /// Whether background work (anti-entropy) should leave `peer` alone for now: gossip
    /// declared it DEAD or SUSPECT. Under a static membership, where SUSPECT only means a
    /// call failed, only the attempt itself can tell, so nothing is skipped.
    pub(crate) fn is_down(&self, peer: &str) -> bool {
        self.gossip_driven
            && self
                .lock()
                .get(peer)
                .is_some_and(|s| matches!(s.state, PeerState::Suspect | PeerState::Dead))
    }

    pub(crate) fn is_dead(&self, peer: &str) -> bool {
        self.lock()
            .get(peer)
            .is_some_and(|s| s.state == PeerState::Dead)
    }

    pub(crate) fn all(&self) -> Vec<PeerStatus> {
        self.lock().values().cloned().collect()
    }
}
