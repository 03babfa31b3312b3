//! `NodeBuilder`: the one place that composes a node from its parts (configuration,
//! storage, transport, membership) and starts what runs beside it (gossip, layout
//! exchanges, ring transfers, anti-entropy). The server binary and the simulation both
//! build their nodes here.

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use kv_clock::{ActorId, ClockError};
use kv_gossip::GossipConfigError;
use kv_layout::Layout;
use kv_ring::RingError;
use kv_storage::{Durability, FjallStore, MemoryStore, Storage, StorageError};
use thiserror::Error;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::aae::run_anti_entropy;
use crate::actor::{ACTOR_META, actor_id, next_actor, take_clean_stop};
use crate::gossip_driver::{Datagrams, GossipSettings, run_gossip};
use crate::hints::run_hint_delivery;
use crate::membership::{
    Origin, RingState, persist_layout, run_layout_gossip, run_transfers, stored_layout,
};
use crate::peers::PeerTable;
use crate::{ConfigError, Node, NodeConfig, NodeError, PeerTransport};

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
    /// `--bootstrap` was given for a store that belongs to a cluster already.
    #[error(
        "this node's store already belongs to cluster {cluster_id:016x}: drop --bootstrap to \
         restart the node in it, or give it an empty --data-dir to found a new cluster"
    )]
    AlreadyFounded {
        /// The cluster the store belongs to.
        cluster_id: u64,
    },
    /// The ring layout in the store cannot be used.
    #[error("cannot use the ring layout in the store: {0}")]
    StoredLayout(NodeError),
    /// A static peer list with fewer members than N.
    #[error(
        "the peer list makes a cluster of {members} member(s) but N={replicas}: add peers, \
         or pass --n {members}"
    )]
    TooFewMembers {
        /// This node and its peers.
        members: usize,
        /// N.
        replicas: usize,
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
/// # use kv_node::{KeyPage, NodeBuilder, NodeConfig, PeerTransport, SharedVersions, StorageChoice, TransportError, WriteCommand};
/// # use kv_storage::Siblings;
/// /// A one-node cluster never calls a peer.
/// struct NoPeers;
/// fn none(peer: &str) -> TransportError {
///     TransportError::Unreachable { peer: peer.into(), reason: "no peers".into() }
/// }
/// impl PeerTransport for NoPeers {
///     async fn read(&self, peer: &str, _: Bytes, _: &str) -> Result<Option<Siblings>, TransportError> {
///         Err(none(peer))
///     }
///     async fn write(&self, peer: &str, _: Bytes, _: Arc<SharedVersions>, _: &str) -> Result<(), TransportError> {
///         Err(none(peer))
///     }
///     async fn store_hint(&self, peer: &str, _: &str, _: Bytes, _: Arc<SharedVersions>, _: &str) -> Result<(), TransportError> {
///         Err(none(peer))
///     }
///     async fn coordinate_write(&self, peer: &str, _: WriteCommand) -> Result<VersionVector, TransportError> {
///         Err(none(peer))
///     }
///     async fn coordinate_read(&self, peer: &str, _: Bytes, _: usize, _: String) -> Result<Option<Siblings>, TransportError> {
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
///     async fn exchange_layout(&self, peer: &str, _: Bytes) -> Result<Bytes, TransportError> {
///         Err(none(peer))
///     }
/// }
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let config = NodeConfig::standalone("n1", "127.0.0.1:50051".parse().unwrap());
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
///
/// A static peer list (here, none) needs at least N members: a node alone has N=1.
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
    /// Anti-entropy, and with gossip, layout exchanges and ring transfers.
    background: Vec<JoinHandle<()>>,
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
    /// this way learns nothing from its peers: use [`NodeBuilder::start`]).
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
        let mut background = vec![
            tokio::spawn(run_anti_entropy(Arc::clone(&node), stop.subscribe())),
            tokio::spawn(run_hint_delivery(Arc::clone(&node), stop.subscribe())),
        ];
        let gossip = match (gossip, socket) {
            (Some(settings), Some(socket)) => {
                background.push(tokio::spawn(run_layout_gossip(
                    Arc::clone(&node),
                    stop.subscribe(),
                )));
                background.push(tokio::spawn(run_transfers(
                    Arc::clone(&node),
                    stop.subscribe(),
                )));
                let driver_node = Arc::clone(&node);
                Some(tokio::spawn(async move {
                    let shutdown = wait_for_stop(stopped);
                    let run = run_gossip(driver_node, socket, settings, start_token, shutdown);
                    if let Err(error) = run.await {
                        tracing::error!(%error, "gossip stopped");
                    }
                }))
            }
            _ => None,
        };
        Ok(RunningNode {
            node,
            gossip,
            background,
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
        let origin = origin(
            &self.config,
            self.gossip.as_ref(),
            storage.as_ref(),
            start_token,
        )?;
        let peers = match &self.gossip {
            Some(_) => PeerTable::gossip_driven(),
            None => PeerTable::fixed(&self.config.peers),
        };
        let (membership, founded) = RingState::new(origin)?;
        if let Some(layout) = founded {
            persist_layout(storage.as_ref(), &layout).map_err(BuildError::StoredLayout)?;
        }
        let node = Node::new(
            self.config,
            actor,
            storage,
            self.transport,
            peers,
            membership,
        );
        node.rebuild_index().map_err(BuildError::Index)?;
        node.rebuild_hint_book().map_err(BuildError::Index)?;
        Ok(Assembled {
            node: Arc::new(node),
            start_token,
            gossip: self.gossip,
        })
    }
}

/// Where the node's layout comes from: its static peer list, the store, a new cluster it
/// founds, or (none yet) the first member it reaches.
fn origin(
    config: &NodeConfig,
    gossip: Option<&GossipSettings>,
    storage: &dyn Storage,
    start_token: u64,
) -> Result<Origin, BuildError> {
    let Some(settings) = gossip else {
        let members = config.peers.len() + 1;
        if members < config.replication_factor {
            return Err(BuildError::TooFewMembers {
                members,
                replicas: config.replication_factor,
            });
        }
        let members = std::iter::once(config.node_id.clone())
            .chain(config.peers.iter().map(|p| p.node_id.clone()))
            .map(|id| (id, config.vnodes));
        return Ok(Origin::Fixed(Layout::fixed(
            config.replication_factor,
            members,
        )));
    };
    let stored = stored_layout(storage).map_err(BuildError::StoredLayout)?;
    if let Some(layout) = stored {
        if settings.bootstrap {
            return Err(BuildError::AlreadyFounded {
                cluster_id: layout.cluster_id(),
            });
        }
        if layout.replicas() != config.replication_factor {
            return Err(BuildError::StoredLayout(NodeError::ReplicasMismatch {
                cluster: layout.replicas(),
                configured: config.replication_factor,
            }));
        }
        return Ok(Origin::Stored(layout));
    }
    let alone = settings
        .seeds
        .iter()
        .all(|seed| *seed == settings.listen || *seed == settings.advertise);
    if settings.bootstrap || alone {
        let cluster_id = kv_ring::key_hash(format!("{}/{start_token}", config.node_id).as_bytes());
        let layout = Layout::found(
            cluster_id,
            config.replication_factor,
            &config.node_id,
            config.vnodes,
        );
        tracing::info!(cluster = %format_args!("{cluster_id:016x}"), "founded a new cluster");
        return Ok(Origin::Founded(layout));
    }
    Ok(Origin::Joining)
}

/// The actor id a node mints under: the one its store recorded if its last node stopped
/// cleanly; a new one after any other stop (see `actor.rs`); for a new store (first start,
/// a wiped disk, memory), `<node id>.<start token in base 36>`. Recorded in the store, so
/// a store's dots are never minted again, by it or by another store.
fn actor_for(
    node_id: &str,
    storage: &dyn Storage,
    start_token: u64,
) -> Result<ActorId, BuildError> {
    let recorded = recorded_actor(node_id, storage)?;
    let clean = take_clean_stop(storage).map_err(BuildError::Index)?;
    let actor = match recorded {
        Some(actor) if clean => return Ok(actor),
        Some(actor) => {
            let next = next_actor(node_id, &actor, start_token);
            tracing::warn!(
                old = %actor, new = %next,
                "the store's last node did not stop cleanly: minting under a new actor id"
            );
            next
        }
        None => actor_id(node_id, start_token)?,
    };
    storage
        .set_meta(ACTOR_META, actor.as_str().as_bytes())
        .map_err(BuildError::Index)?;
    Ok(actor)
}

/// The actor id the store recorded, if any; refused if another node recorded it.
fn recorded_actor(node_id: &str, storage: &dyn Storage) -> Result<Option<ActorId>, BuildError> {
    let Some(raw) = storage.meta(ACTOR_META).map_err(BuildError::Index)? else {
        return Ok(None);
    };
    let actor = String::from_utf8_lossy(&raw).into_owned();
    let owner = actor
        .rsplit_once('.')
        .map_or(actor.as_str(), |(owner, _)| owner);
    if owner != node_id {
        return Err(BuildError::ForeignStore {
            node_id: node_id.to_owned(),
            actor,
        });
    }
    Ok(Some(ActorId::new(&actor)?))
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
    /// node is leaving and ends (waiting at most `grace`). Call it once the servers
    /// drained: the node stops minting and records a clean stop (see
    /// [`Node::stop_minting`]), so the next start keeps its actor id.
    pub async fn shut_down(self, grace: Duration) {
        let _ = self.stop.send(true);
        for task in &self.background {
            task.abort();
        }
        if let Err(error) = self.node.stop_minting() {
            tracing::warn!(%error, "could not record a clean stop: the next start takes a new actor id");
        }
        if let Some(task) = self.gossip
            && tokio::time::timeout(grace, task).await.is_err()
        {
            tracing::warn!("gossip did not finish leaving the cluster in time");
        }
    }

    /// Stops everything at once, without telling anyone (a crash, in a simulation).
    pub fn abort(self) {
        for task in &self.background {
            task.abort();
        }
        if let Some(task) = self.gossip {
            task.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use kv_storage::MemoryStore;

    use crate::actor::record_clean_stop;

    use super::*;

    #[test]
    fn a_store_keeps_the_actor_it_was_given_and_refuses_another_node() {
        let store = MemoryStore::new(kv_ring::key_hash);
        let first = actor_for("n1", &store, 36 * 36).unwrap();
        assert_eq!(first.as_str(), "n1.100");
        record_clean_stop(&store).unwrap();
        let again = actor_for("n1", &store, 99).unwrap();
        assert_eq!(again, first, "a restart after a clean stop keeps its actor");
        let error = actor_for("n2", &store, 99).unwrap_err();
        assert!(
            error.to_string().contains("written by node \"n1.100\""),
            "{error}"
        );
        let dotted = MemoryStore::new(kv_ring::key_hash);
        assert_eq!(actor_for("a.b", &dotted, 1).unwrap().as_str(), "a.b.1");
        record_clean_stop(&dotted).unwrap();
        assert_eq!(actor_for("a.b", &dotted, 2).unwrap().as_str(), "a.b.1");
    }

    #[test]
    fn a_start_after_a_stop_that_was_not_clean_mints_under_a_new_actor() {
        let store = MemoryStore::new(kv_ring::key_hash);
        let first = actor_for("n1", &store, 7).unwrap();
        // No clean stop recorded: a crash. Even with the same start token, a new actor.
        let after_crash = actor_for("n1", &store, 7).unwrap();
        assert_ne!(after_crash, first);
        assert!(after_crash.as_str().starts_with("n1."), "{after_crash}");
        let after_second_crash = actor_for("n1", &store, 7).unwrap();
        assert!(![&first, &after_crash].contains(&&after_second_crash));
        record_clean_stop(&store).unwrap();
        assert_eq!(
            actor_for("n1", &store, 8).unwrap(),
            after_second_crash,
            "a clean stop keeps the actor"
        );
        assert_eq!(
            store.meta(ACTOR_META).unwrap().as_deref(),
            Some(after_second_crash.as_str().as_bytes()),
            "the actor in use is the one recorded"
        );
    }
}
