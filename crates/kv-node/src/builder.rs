//! `NodeBuilder`: the one place that composes a node from its parts (configuration,
//! storage, transport, membership) and starts what runs beside it (the gossip driver).
//! The server binary and the simulation both build their nodes here.

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use kv_clock::{ActorId, ClockError};
use kv_gossip::GossipConfigError;
use kv_ring::RingError;
use kv_storage::{Durability, FjallStore, MemoryStore, Storage, StorageError};
use thiserror::Error;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::aae::run_anti_entropy;
use crate::gossip_driver::{Datagrams, GossipSettings, run_gossip};
use crate::peers::PeerTable;
use crate::{ConfigError, Node, NodeConfig, PeerTransport};

/// Which store a node keeps its data in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StorageChoice {
    /// In memory: forgotten when the process stops.
    Memory,
    /// The persistent fjall store in `data_dir`, acknowledging writes at `durability`.
    Fjall {
        /// Its directory (created if missing).
        data_dir: PathBuf,
        /// How far a write must get before it is acknowledged.
        durability: Durability,
    },
}

impl StorageChoice {
    /// Opens the store (creating its directory if needed).
    pub fn open(&self) -> Result<Arc<dyn Storage>, BuildError> {
        match self {
            Self::Memory => Ok(Arc::new(MemoryStore::new(kv_ring::key_hash))),
            Self::Fjall {
                data_dir,
                durability,
            } => {
                std::fs::create_dir_all(data_dir).map_err(|source| BuildError::DataDir {
                    data_dir: data_dir.clone(),
                    source,
                })?;
                let store = FjallStore::open(data_dir, kv_ring::key_hash, *durability).map_err(
                    |source| BuildError::OpenStorage {
                        data_dir: data_dir.clone(),
                        source,
                    },
                )?;
                Ok(Arc::new(store))
            }
        }
    }
}

/// Why a node could not be built or started.
#[derive(Debug, Error)]
pub enum BuildError {
    /// The node configuration contradicts itself.
    #[error("invalid node configuration: {0}")]
    Config(#[from] ConfigError),
    /// The gossip settings cannot work.
    #[error("invalid gossip settings: {0}")]
    Gossip(#[from] GossipConfigError),
    /// The initial ring cannot be built from the configured members.
    #[error("cannot build the ring: {0}")]
    Ring(#[from] RingError),
    /// The actor id derived from the node id is invalid.
    #[error("invalid actor id: {0}")]
    Actor(#[from] ClockError),
    /// Both a static peer list and gossip were configured.
    #[error("a gossip-driven node takes seeds, not a static peer list; use one or the other")]
    PeersWithGossip,
    /// No storage was given.
    #[error("no storage given to the node builder")]
    NoStorage,
    /// The data directory cannot be created.
    #[error("cannot create data dir {}: {source}", data_dir.display())]
    DataDir {
        /// The directory.
        data_dir: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The store cannot be opened.
    #[error("cannot open the store in {}: {source}", data_dir.display())]
    OpenStorage {
        /// The directory.
        data_dir: PathBuf,
        /// Why.
        source: StorageError,
    },
    /// The store cannot be read (its actor id, or its keys for the anti-entropy index).
    #[error("cannot read the store: {0}")]
    Index(StorageError),
    /// The store was written by another node.
    #[error(
        "the store was written by node {actor:?}, not by {node_id:?}: give this node its own \
         data dir, or start it with the node id the data belongs to"
    )]
    ForeignStore {
        /// The node id asked for.
        node_id: String,
        /// The actor id the store recorded.
        actor: String,
    },
    /// The gossip socket cannot be bound.
    #[error("cannot bind the gossip socket {address}: {source}")]
    BindGossip {
        /// The address.
        address: SocketAddr,
        /// Why.
        source: io::Error,
    },
}

/// Composes a [`Node`]: configuration, storage, transport, and optionally gossip.
///
/// ```
/// # use std::sync::Arc;
/// # use bytes::Bytes;
/// # use kv_aae::{Digest, HashRange};
/// # use kv_clock::VersionVector;
/// # use kv_node::{KeyPage, NodeBuilder, NodeConfig, PeerTransport, StorageChoice, TransportError, WriteCommand};
/// # use kv_storage::Siblings;
/// /// A one-node cluster never calls a peer.
/// struct NoPeers;
/// fn none(peer: &str) -> TransportError {
///     TransportError::Unreachable { peer: peer.into(), reason: "no peers".into() }
/// }
/// impl PeerTransport for NoPeers {
///     async fn read(&self, peer: &str, _: Bytes) -> Result<Option<Siblings>, TransportError> {
///         Err(none(peer))
///     }
///     async fn write(&self, peer: &str, _: Bytes, _: Siblings) -> Result<(), TransportError> {
///         Err(none(peer))
///     }
///     async fn coordinate_write(&self, peer: &str, _: WriteCommand) -> Result<VersionVector, TransportError> {
///         Err(none(peer))
///     }
///     async fn aae_digests(&self, peer: &str, _: &str, _: Vec<HashRange>) -> Result<Vec<Digest>, TransportError> {
///         Err(none(peer))
///     }
///     async fn aae_end(&self, peer: &str, _: &str, _: bool, _: Vec<HashRange>) -> Result<(), TransportError> {
///         Err(none(peer))
///     }
///     async fn aae_keys(&self, peer: &str, _: &str, _: HashRange, _: Option<Bytes>, _: usize) -> Result<KeyPage, TransportError> {
///         Err(none(peer))
///     }
/// }
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let config = NodeConfig::new("n1", "127.0.0.1:50051".parse().unwrap());
/// let node = NodeBuilder::new(config, NoPeers)
///     .storage(StorageChoice::Memory.open().unwrap())
///     .start_token(7)
///     .build()
///     .unwrap();
/// // A new store gets a new actor id: `<node id>.<start token in base 36>`.
/// assert_eq!(node.actor().as_str(), "n1.7");
/// let write = kv_node::ClientWrite { key: "k".into(), value: Some(Bytes::from("v")), ..Default::default() };
/// node.client_put(write).await.unwrap();
/// # });
/// ```
#[derive(Debug)]
pub struct NodeBuilder<T> {
    config: NodeConfig,
    transport: T,
    storage: Option<Arc<dyn Storage>>,
    start_token: Option<u64>,
    gossip: Option<GossipSettings>,
}

/// A node built, before anything beside it runs.
struct Assembled<T> {
    node: Arc<Node<T>>,
    start_token: u64,
    gossip: Option<GossipSettings>,
}

/// A built node and what runs beside it.
#[derive(Debug)]
pub struct RunningNode<T> {
    node: Arc<Node<T>>,
    gossip: Option<JoinHandle<()>>,
    anti_entropy: JoinHandle<()>,
    stop: watch::Sender<bool>,
}

impl<T: PeerTransport> NodeBuilder<T> {
    /// A builder for a node with `config`, calling its peers through `transport`.
    pub fn new(config: NodeConfig, transport: T) -> Self {
        Self {
            config,
            transport,
            storage: None,
            start_token: None,
            gossip: None,
        }
    }

    /// The store the node keeps its data in.
    #[must_use]
    pub fn storage(mut self, storage: Arc<dyn Storage>) -> Self {
        self.storage = Some(storage);
        self
    }

    /// A number that grows from one start of this node to the next: it renews the node's
    /// gossip identity and names the actor id of a new store. Defaults to the
    /// wall clock in milliseconds; a simulation passes its own so a seed replays exactly.
    #[must_use]
    pub fn start_token(mut self, token: u64) -> Self {
        self.start_token = Some(token);
        self
    }

    /// Learns membership through gossip instead of `config.peers`.
    #[must_use]
    pub fn gossip(mut self, settings: GossipSettings) -> Self {
        self.gossip = Some(settings);
        self
    }

    /// Builds the node without starting anything beside it (a gossip-driven node built
    /// this way stays JOINING: use [`NodeBuilder::start`] to run its gossip).
    pub fn build(self) -> Result<Arc<Node<T>>, BuildError> {
        self.assemble().map(|assembled| assembled.node)
    }

    /// Builds the node and, with gossip, binds its UDP socket and starts the driver.
    pub async fn start(self) -> Result<RunningNode<T>, BuildError> {
        let Some(settings) = &self.gossip else {
            return self.start_on::<tokio::net::UdpSocket>(None);
        };
        let address = settings.listen;
        let socket = tokio::net::UdpSocket::bind(address)
            .await
            .map_err(|source| BuildError::BindGossip { address, source })?;
        self.start_on(Some(socket))
    }

    /// Builds the node and, with gossip, starts the driver on `socket` (any [`Datagrams`]:
    /// a simulation passes its in-memory network).
    pub fn start_on<D: Datagrams>(self, socket: Option<D>) -> Result<RunningNode<T>, BuildError> {
        let Assembled {
            node,
            start_token,
            gossip,
        } = self.assemble()?;
        let (stop, stopped) = watch::channel(false);
        let gossip = match (gossip, socket) {
            (Some(settings), Some(socket)) => {
                let commands = node
                    .attach_membership()
                    .expect("a new node has no gossip driver yet");
                let driver_node = Arc::clone(&node);
                Some(tokio::spawn(async move {
                    let shutdown = wait_for_stop(stopped);
                    let run = run_gossip(
                        driver_node,
                        socket,
                        settings,
                        start_token,
                        commands,
                        shutdown,
                    );
                    if let Err(error) = run.await {
                        tracing::error!(%error, "gossip stopped");
                    }
                }))
            }
            _ => None,
        };
        let anti_entropy = tokio::spawn(run_anti_entropy(Arc::clone(&node), stop.subscribe()));
        Ok(RunningNode {
            node,
            gossip,
            anti_entropy,
            stop,
        })
    }

    fn assemble(self) -> Result<Assembled<T>, BuildError> {
        self.config.validate()?;
        if self.gossip.is_some() && !self.config.peers.is_empty() {
            return Err(BuildError::PeersWithGossip);
        }
        if let Some(settings) = &self.gossip {
            settings.config.validate()?;
        }
        let storage = self.storage.ok_or(BuildError::NoStorage)?;
        let start_token = self.start_token.unwrap_or_else(wall_clock_ms);
        let actor = actor_for(&self.config.node_id, storage.as_ref(), start_token)?;
        let (peers, ring_complete) = match &self.gossip {
            Some(_) => (PeerTable::gossip_driven(), false),
            None => (PeerTable::fixed(&self.config.peers), true),
        };
        let node = Node::new(
            self.config,
            actor,
            storage,
            self.transport,
            peers,
            ring_complete,
        )?;
        node.rebuild_index().map_err(BuildError::Index)?;
        Ok(Assembled {
            node: Arc::new(node),
            start_token,
            gossip: self.gossip,
        })
    }
}

/// The store metadata holding the node's actor id.
const ACTOR_META: &str = "actor";

/// The actor id a node mints under: the one its store recorded, or, for a new store
/// (first start, a wiped disk, memory), `<node id>.<start token in base 36>`, recorded in
/// the store. A store's dots are thus never minted again by another store.
fn actor_for(
    node_id: &str,
    storage: &dyn Storage,
    start_token: u64,
) -> Result<ActorId, BuildError> {
    let recorded = storage.meta(ACTOR_META).map_err(BuildError::Index)?;
    if let Some(actor) = recorded {
        let actor = String::from_utf8_lossy(&actor).into_owned();
        let owner = actor
            .rsplit_once('.')
            .map_or(actor.as_str(), |(owner, _)| owner);
        if owner != node_id {
            return Err(BuildError::ForeignStore {
                node_id: node_id.to_owned(),
                actor,
            });
        }
        return Ok(ActorId::new(&actor)?);
    }
    let actor = ActorId::new(&format!("{node_id}.{}", base36(start_token)))?;
    storage
        .set_meta(ACTOR_META, actor.as_str().as_bytes())
        .map_err(BuildError::Index)?;
    Ok(actor)
}

/// `value` in base 36 (digits, then lowercase letters): a start token in a few characters.
fn base36(mut value: u64) -> String {
    const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut text = Vec::new();
    loop {
        text.push(DIGITS[(value % 36) as usize]);
        value /= 36;
        if value == 0 {
            break;
        }
    }
    text.reverse();
    String::from_utf8(text).expect("ASCII digits")
}

fn wall_clock_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(1, |d| d.as_millis() as u64)
}

async fn wait_for_stop(mut stopped: watch::Receiver<bool>) {
    let _ = stopped.wait_for(|stop| *stop).await;
}

impl<T> RunningNode<T> {
    /// The node.
    pub fn node(&self) -> &Arc<Node<T>> {
        &self.node
    }

    /// Stops what runs beside the node: anti-entropy ends, and gossip tells its peers this
    /// node is leaving and ends (waiting at most `grace`).
    pub async fn shut_down(self, grace: Duration) {
        let _ = self.stop.send(true);
        self.anti_entropy.abort();
        if let Some(task) = self.gossip
            && tokio::time::timeout(grace, task).await.is_err()
        {
            tracing::warn!("gossip did not finish leaving the cluster in time");
        }
    }

    /// Stops everything at once, without telling anyone (a crash, in a simulation).
    pub fn abort(self) {
        self.anti_entropy.abort();
        if let Some(task) = self.gossip {
            task.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use kv_storage::MemoryStore;

    use super::*;

    #[test]
    fn a_store_keeps_the_actor_it_was_given_and_refuses_another_node() {
        let store = MemoryStore::new(kv_ring::key_hash);
        let first = actor_for("n1", &store, 36 * 36).unwrap();
        assert_eq!(first.as_str(), "n1.100");
        let again = actor_for("n1", &store, 99).unwrap();
        assert_eq!(
            again, first,
            "a restart with the same store keeps its actor"
        );
        let error = actor_for("n2", &store, 99).unwrap_err();
        assert!(
            error.to_string().contains("written by node \"n1.100\""),
            "{error}"
        );
        let dotted = MemoryStore::new(kv_ring::key_hash);
        assert_eq!(actor_for("a.b", &dotted, 1).unwrap().as_str(), "a.b.1");
        assert_eq!(actor_for("a.b", &dotted, 2).unwrap().as_str(), "a.b.1");
        assert_eq!(base36(u64::MAX), "3w5e11264sgsf");
    }
}
