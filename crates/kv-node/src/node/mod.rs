//! `Node`: one kvstore node's state (configuration, ring, storage, transport, peers) and
//! the views operators read. What it does with them is split by concern: `replica.rs`
//! (this node's own copy), `coordinator.rs` (client requests), `background.rs` (late
//! replies and read repair).

mod background;
mod coordinator;
mod replica;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, PoisonError, RwLock};

use kv_clock::ActorId;
use kv_ring::{Member, Ring, RingError};
use kv_storage::Storage;
use tokio::sync::{Semaphore, mpsc, oneshot};

use crate::aae::AntiEntropy;
use crate::gossip_driver::{MEMBERSHIP_COMMAND_QUEUE, MembershipCommand};
use crate::peers::{PeerState, PeerStatus, PeerTable};
use crate::request::{self, InvalidRequest};
use crate::{NodeConfig, NodeError, PeerSpec, PeerTransport};

/// Counters of background work, for tests and operators.
#[derive(Debug, Default)]
pub struct NodeStats {
    /// Read repairs sent to stale replicas.
    pub repairs_sent: AtomicU64,
    /// Read repairs skipped because too many were already running.
    pub repairs_skipped: AtomicU64,
}

/// What a node reports about itself (the Health call).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Health {
    /// This node.
    pub node_id: String,
    /// Whether it serves client requests (it knows the whole ring); otherwise it is
    /// joining.
    pub serving: bool,
    /// Members seen ALIVE, this node included.
    pub members_alive: usize,
    /// Members known, this node included.
    pub members_total: usize,
    /// Replicas per key in the current ring (N, capped at the ring's size).
    pub replication_factor: usize,
    /// Default R.
    pub read_quorum: usize,
    /// Default W.
    pub write_quorum: usize,
    /// Keys in this node's store, tombstoned ones included (as its anti-entropy index
    /// counts them: no scan of the store).
    pub storage_keys: u64,
    /// Bytes the store's tables take on disk.
    pub storage_bytes: u64,
}

/// A key's position and replicas, for operators (`kvstore ring --key`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyPlacement {
    /// Its ring position.
    pub hash: u64,
    /// Its replicas, primary first.
    pub replicas: Vec<String>,
}

/// One kvstore node. Built by [`crate::NodeBuilder`].
#[derive(Debug)]
pub struct Node<T> {
    config: NodeConfig,
    actor: ActorId,
    ring: RwLock<Arc<Ring>>,
    pub(crate) storage: Arc<dyn Storage>,
    pub(crate) transport: Arc<T>,
    pub(crate) peers: PeerTable,
    pub(crate) aae: AntiEntropy,
    repair_slots: Arc<Semaphore>,
    stats: NodeStats,
    membership_commands: OnceLock<mpsc::Sender<MembershipCommand>>,
    /// Whether this node knows the whole ring. A gossip-driven node starts without it
    /// and must not coordinate until gossip has it: routing with a partial ring puts
    /// writes and reads on the wrong replicas.
    ring_complete: AtomicBool,
}

impl<T: PeerTransport> Node<T> {
    /// A node whose ring holds itself and `config.peers`; complete at once for a static
    /// membership, and waiting for gossip otherwise.
    pub(crate) fn new(
        config: NodeConfig,
        actor: ActorId,
        storage: Arc<dyn Storage>,
        transport: T,
        peers: PeerTable,
        ring_complete: bool,
    ) -> Result<Self, RingError> {
        let members = std::iter::once(config.node_id.clone())
            .chain(config.peers.iter().map(|p| p.node_id.clone()));
        let ring = build_ring(&config, members)?;
        Ok(Self {
            repair_slots: Arc::new(Semaphore::new(config.max_concurrent_repairs)),
            aae: AntiEntropy::new(config.anti_entropy.max_keys_per_sec),
            config,
            actor,
            ring: RwLock::new(Arc::new(ring)),
            storage,
            transport: Arc::new(transport),
            peers,
            stats: NodeStats::default(),
            membership_commands: OnceLock::new(),
            ring_complete: AtomicBool::new(ring_complete),
        })
    }
}

impl<T> Node<T> {
    /// Rebuilds the anti-entropy index from a scan of the whole store (before the node
    /// takes writes).
    pub(crate) fn rebuild_index(&self) -> Result<(), kv_storage::StorageError> {
        let started = std::time::Instant::now();
        let rebuilt = self
            .aae
            .index
            .rebuild(self.storage.as_ref(), tokio::time::Instant::now())?;
        let took = started.elapsed();
        self.aae.record_rebuild(rebuilt.items, took);
        tracing::info!(
            keys = rebuilt.items,
            tombstones = rebuilt.tombstones,
            took_ms = took.as_millis() as u64,
            "anti-entropy index rebuilt"
        );
        Ok(())
    }

    /// This node's configuration.
    pub fn config(&self) -> &NodeConfig {
        &self.config
    }

    /// The actor id this node mints versions under.
    pub fn actor(&self) -> &ActorId {
        &self.actor
    }

    /// The ring this node routes with right now.
    pub fn ring(&self) -> Arc<Ring> {
        Arc::clone(&self.ring.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// The ring to route one request with, taken once for the whole request; refused
    /// while this node does not know the whole ring.
    pub(crate) fn routing_ring(&self) -> Result<Arc<Ring>, NodeError> {
        if !self.ring_complete() {
            return Err(NodeError::Joining {
                node: self.config.node_id.clone(),
            });
        }
        Ok(self.ring())
    }

    /// Whether this node knows the whole ring and so may coordinate requests.
    pub fn ring_complete(&self) -> bool {
        self.ring_complete.load(Ordering::Acquire)
    }

    /// Records whether this node knows the whole ring (gossip's ring sync finished).
    pub(crate) fn set_ring_complete(&self, complete: bool) {
        self.ring_complete.store(complete, Ordering::Release);
    }

    /// Background-work counters.
    pub fn stats(&self) -> &NodeStats {
        &self.stats
    }

    /// Every peer this node knows of.
    pub fn peer_statuses(&self) -> Vec<PeerStatus> {
        self.peers.all()
    }

    /// What this node knows about `peer`.
    pub fn peer_status(&self, peer: &str) -> Option<PeerStatus> {
        self.peers.status(peer)
    }

    /// The replicas of `key` in the current ring, primary first.
    pub fn replicas_for(&self, key: &[u8]) -> Vec<String> {
        self.ring()
            .preference_list(key)
            .iter()
            .map(str::to_owned)
            .collect()
    }

    /// Where a client-supplied key lives: validated like a request's key.
    pub fn locate(&self, key: String) -> Result<KeyPlacement, InvalidRequest> {
        let key = request::key(key, &self.config.limits)?;
        Ok(KeyPlacement {
            hash: kv_ring::key_hash(&key),
            replicas: self.replicas_for(&key),
        })
    }

    /// This node's health and the defaults it serves with.
    pub fn health(&self) -> Health {
        let peers = self.peers.all();
        let alive = peers.iter().filter(|p| p.state == PeerState::Alive).count();
        Health {
            node_id: self.config.node_id.clone(),
            serving: self.ring_complete(),
            members_alive: alive + 1,
            members_total: peers.len() + 1,
            replication_factor: self.ring().replicas(),
            read_quorum: self.config.read_quorum,
            write_quorum: self.config.write_quorum,
            storage_keys: self.aae.index.items(),
            storage_bytes: self.storage.disk_bytes(),
        }
    }

    /// Whether this node owns part of the current ring.
    pub fn in_ring(&self) -> bool {
        self.ring().members().any(|m| m == self.config.node_id)
    }

    /// Connects this node to a gossip driver; returns the receiver the driver serves.
    /// Only the first call succeeds.
    pub(crate) fn attach_membership(&self) -> Option<mpsc::Receiver<MembershipCommand>> {
        let (sender, receiver) = mpsc::channel(MEMBERSHIP_COMMAND_QUEUE);
        self.membership_commands.set(sender).ok().map(|()| receiver)
    }

    /// Removes `node_id` (this node if empty) from the ring, cluster-wide, through gossip;
    /// answers with the node removed.
    pub async fn leave_ring(&self, node_id: &str) -> Result<String, NodeError> {
        let Some(commands) = self.membership_commands.get() else {
            return Err(NodeError::StaticMembership);
        };
        let (reply, answer) = oneshot::channel();
        let command = MembershipCommand::LeaveRing {
            node_id: node_id.to_owned(),
            reply,
        };
        commands
            .send(command)
            .await
            .map_err(|_| NodeError::GossipStopped)?;
        answer.await.map_err(|_| NodeError::GossipStopped)?
    }
}

impl<T: PeerTransport> Node<T> {
    /// Installs a membership view (the gossip driver calls this after every change): peer
    /// liveness and addresses, and a ring of every member that has not left it (liveness
    /// never removes a node from the ring). A view whose ring cannot be built is refused
    /// and the previous one stays.
    pub fn apply_membership(
        &self,
        peers: Vec<PeerStatus>,
        self_in_ring: bool,
    ) -> Result<(), RingError> {
        let mut members: Vec<String> = peers
            .iter()
            .filter(|p| p.in_ring)
            .map(|p| p.node_id.clone())
            .collect();
        if self_in_ring {
            members.push(self.config.node_id.clone());
        }
        members.sort_unstable();
        // Most views change only liveness: keep the ring when its members are the same.
        let current = self.ring();
        let ring = if current.members().eq(members.iter().map(String::as_str)) {
            current
        } else {
            Arc::new(build_ring(&self.config, members)?)
        };
        let specs: Vec<PeerSpec> = peers
            .iter()
            .map(|p| PeerSpec {
                node_id: p.node_id.clone(),
                grpc_address: p.grpc_address,
            })
            .collect();
        self.transport.update_peers(&specs);
        self.peers.replace(peers);
        *self.ring.write().unwrap_or_else(PoisonError::into_inner) = ring;
        Ok(())
    }
}

/// A ring of `members` with the configured N and vnodes.
fn build_ring(
    config: &NodeConfig,
    members: impl IntoIterator<Item = String>,
) -> Result<Ring, RingError> {
    let members = members
        .into_iter()
        .map(|id| Member::with_vnodes(id, config.vnodes));
    Ring::new(members, config.replication_factor)
}
