//! `Node`: one kvstore node's state (configuration, ring layout, storage, transport,
//! peers) and the views operators read. What it does with them is split by concern:
//! `replica.rs` (this node's own copy), `coordinator.rs` (client requests),
//! `background.rs` (late replies and read repair); the layout lives in `membership/`.

mod background;
mod coordinator;
mod replica;

pub(crate) use coordinator::declared_dead;

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use kv_clock::ActorId;
use kv_ring::Ring;
use kv_storage::Storage;
use tokio::sync::Semaphore;

use crate::aae::AntiEntropy;
use crate::membership::state::RingState;
use crate::peers::{PeerState, PeerStatus, PeerTable};
use crate::request::{self, InvalidRequest};
use crate::{NodeConfig, PeerTransport};

/// Counters of background work, for tests and operators.
#[derive(Debug, Default)]
pub struct NodeStats {
    /// Read repairs sent to stale replicas.
    pub repairs_sent: AtomicU64,
    /// Read repairs skipped because too many were already running.
    pub repairs_skipped: AtomicU64,
    /// Writes whose follow-up (late replies, hints) was shed: `max_follow_ups` were
    /// already waiting.
    pub write_follow_ups_shed: AtomicU64,
    /// Reads whose follow-up (late replies, read repair) was shed.
    pub read_follow_ups_shed: AtomicU64,
    /// Client requests by operation and outcome, and their latency.
    pub requests: crate::metrics::RequestMetrics,
    /// The failure detector's state changes and datagram counters.
    pub gossip: crate::metrics::GossipMetrics,
}

/// What a node reports about itself (the Health call).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Health {
    /// This node.
    pub node_id: String,
    /// Whether it serves client requests (it has a layout it can trust); otherwise it is
    /// joining.
    pub serving: bool,
    /// Members seen ALIVE, this node included.
    pub members_alive: usize,
    /// Members known, this node included.
    pub members_total: usize,
    /// Replicas per key (N) the cluster was founded with.
    pub replication_factor: usize,
    /// Members of the newest ring version (0 without a layout). Fewer than N: the
    /// cluster is under-replicated and refuses requests.
    pub ring_members: usize,
    /// The newest ring version's number (0 without a layout).
    pub ring_version: u64,
    /// Ring versions live (more than one while data moves after a change).
    pub live_versions: usize,
    /// Whether this node is a member of the newest version.
    pub ring_member: bool,
    /// The cluster's id (0 without a layout or with a static peer list).
    pub cluster_id: u64,
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

/// Who mints this node's versions, and whether it still may.
#[derive(Debug)]
pub(crate) struct Minting {
    pub(crate) actor: ActorId,
    pub(crate) stopped: bool,
}

/// One kvstore node. Built by [`crate::NodeBuilder`].
#[derive(Debug)]
pub struct Node<T> {
    config: NodeConfig,
    /// The actor id writes are minted under (changes only when cleanup drops keys, see
    /// `rotate_actor`), and whether minting stopped for a clean stop. A mint holds the
    /// read lock while it writes, so neither changes under it.
    minting: std::sync::RwLock<Minting>,
    pub(crate) membership: RingState,
    pub(crate) storage: Arc<dyn Storage>,
    pub(crate) transport: Arc<T>,
    pub(crate) peers: PeerTable,
    pub(crate) aae: AntiEntropy,
    pub(crate) hints: crate::hints::book::HintBook,
    repair_slots: Arc<Semaphore>,
    follow_up_slots: Arc<Semaphore>,
    stats: NodeStats,
}

impl<T: PeerTransport> Node<T> {
    /// A node routing with `membership`'s layout.
    pub(crate) fn new(
        config: NodeConfig,
        actor: ActorId,
        storage: Arc<dyn Storage>,
        transport: T,
        peers: PeerTable,
        membership: RingState,
    ) -> Self {
        Self {
            repair_slots: Arc::new(Semaphore::new(config.max_concurrent_repairs)),
            follow_up_slots: Arc::new(Semaphore::new(config.max_follow_ups)),
            aae: AntiEntropy::new(config.anti_entropy.max_keys_per_sec),
            hints: crate::hints::book::HintBook::default(),
            config,
            minting: std::sync::RwLock::new(Minting {
                actor,
                stopped: false,
            }),
            membership,
            storage,
            transport: Arc::new(transport),
            peers,
            stats: NodeStats::default(),
        }
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

    /// Counts the hints the store holds (before the node takes writes).
    pub(crate) fn rebuild_hint_book(&self) -> Result<(), kv_storage::StorageError> {
        let hints = self.hints.rebuild(self.storage.as_ref())?;
        if hints > 0 {
            tracing::info!(hints, "hints held for other replicas");
        }
        Ok(())
    }

    /// This node's configuration.
    pub fn config(&self) -> &NodeConfig {
        &self.config
    }

    /// The actor id this node mints versions under.
    pub fn actor(&self) -> ActorId {
        self.minting().actor.clone()
    }

    /// The minting state, for a mint (held while it writes).
    pub(crate) fn minting(&self) -> std::sync::RwLockReadGuard<'_, Minting> {
        self.minting
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Ends minting and records a clean stop in the store, synced with every write made
    /// before it, so the next start keeps this actor id (see `actor.rs`). Writes that
    /// reach this node afterwards are refused as `Stopping`; replica traffic is not.
    pub fn stop_minting(&self) -> Result<(), kv_storage::StorageError> {
        let mut minting = self
            .minting
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        minting.stopped = true;
        crate::actor::record_clean_stop(self.storage.as_ref())
    }

    /// Takes a new actor id, recorded in the store before it is used.
    ///
    /// A coordinator mints a key's next dot from its own stored copy of that key, so a
    /// node that drops keys (cleanup after a ring change) and later replicates them again
    /// would mint dots it already minted: two different values with one dot, one of them
    /// lost on merge. A new actor's dots start afresh. `salt` (the ring version the
    /// cleanup ran for) makes the new id differ from every earlier one.
    pub(crate) fn rotate_actor(&self, salt: u64) -> Result<ActorId, kv_storage::StorageError> {
        let mut minting = self
            .minting
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let next = crate::actor::next_actor(&self.config.node_id, &minting.actor, salt);
        self.storage
            .set_meta(crate::actor::ACTOR_META, next.as_str().as_bytes())?;
        minting.actor = next.clone();
        Ok(next)
    }

    /// The newest ring version's ring, if this node has a layout.
    pub fn ring(&self) -> Option<Arc<Ring>> {
        self.routing().map(|r| Arc::clone(r.newest()))
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

    /// The replicas of `key` in the newest ring version, primary first (none without a
    /// layout).
    pub fn replicas_for(&self, key: &[u8]) -> Vec<String> {
        self.ring().map_or_else(Vec::new, |ring| {
            ring.preference_list(key)
                .iter()
                .map(str::to_owned)
                .collect()
        })
    }

    /// Where a client-supplied key lives: validated like a request's key.
    pub fn locate(&self, key: String) -> Result<KeyPlacement, InvalidRequest> {
        let key = request::key(key, &self.config.limits)?;
        Ok(KeyPlacement {
            hash: kv_ring::key_hash(&key),
            replicas: self.replicas_for(&key),
        })
    }

    /// Adds the transport's metrics to `registry` (for an admin listener).
    pub fn register_transport_metrics(&self, registry: &mut prometheus_client::registry::Registry)
    where
        T: PeerTransport,
    {
        self.transport.register_metrics(registry);
    }

    /// This node's health and the defaults it serves with.
    pub fn health(&self) -> Health {
        let peers = self.peers.all();
        let alive = peers.iter().filter(|p| p.state == PeerState::Alive).count();
        let routing = self.routing();
        let layout = routing.as_ref().map(|r| r.layout());
        Health {
            node_id: self.config.node_id.clone(),
            serving: self.serving(),
            members_alive: alive + 1,
            members_total: peers.len() + 1,
            replication_factor: layout
                .map_or(self.config.replication_factor, kv_layout::Layout::replicas),
            ring_members: layout.map_or(0, |l| l.newest().members.len()),
            ring_version: layout.map_or(0, |l| l.newest().number),
            live_versions: layout.map_or(0, |l| l.live().len()),
            ring_member: layout.is_some_and(|l| l.newest().has(&self.config.node_id)),
            cluster_id: layout.map_or(0, kv_layout::Layout::cluster_id),
            read_quorum: self.config.read_quorum,
            write_quorum: self.config.write_quorum,
            storage_keys: self.aae.index.items(),
            storage_bytes: self.storage.disk_bytes(),
        }
    }
}
