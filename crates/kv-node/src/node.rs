//! `Node`: the replica operations on local storage and the coordinator logic for client
//! requests (forwarding, quorum fan-out, reconciliation, read repair).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, PoisonError, RwLock};
use std::time::Duration;

use bytes::Bytes;
use kv_clock::{ActorId, VersionVector};
use kv_quorum::{Fanout, Outcome, Reply};
use kv_repair::reconcile;
use kv_ring::{Member, Ring};
use kv_storage::{Siblings, Storage, Write};
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio::time::Instant;

use crate::membership::{MEMBERSHIP_COMMAND_QUEUE, MembershipCommand};
use crate::peers::{PeerStatus, PeerTable};
use crate::{NodeConfig, NodeError, PeerSpec, PeerTransport, TransportError, WriteCommand};

/// How long after a client's answer late replica replies are still awaited.
const LATE_REPLY_GRACE: Duration = Duration::from_secs(2);

/// Counters of background work, for tests and operators.
#[derive(Debug, Default)]
pub struct NodeStats {
    /// Read repairs sent to stale replicas.
    pub repairs_sent: AtomicU64,
    /// Read repairs skipped because too many were already running.
    pub repairs_skipped: AtomicU64,
}

/// One kvstore node: storage, ring, transport and configuration.
#[derive(Debug)]
pub struct Node<T> {
    config: NodeConfig,
    actor: ActorId,
    ring: RwLock<Arc<Ring>>,
    storage: Arc<dyn Storage>,
    transport: Arc<T>,
    peers: PeerTable,
    repair_slots: Arc<Semaphore>,
    stats: Arc<NodeStats>,
    membership_commands: OnceLock<mpsc::Sender<MembershipCommand>>,
    /// Whether this node knows the whole ring. A gossip-driven node starts without it
    /// and must not coordinate until gossip has it: routing with a partial ring puts
    /// writes and reads on the wrong replicas.
    ring_complete: AtomicBool,
}

impl<T: PeerTransport> Node<T> {
    /// Builds a node with a static membership: the ring holds this node and its
    /// configured peers, for good.
    pub fn new(
        config: NodeConfig,
        storage: Arc<dyn Storage>,
        transport: T,
    ) -> Result<Arc<Self>, String> {
        let peers = PeerTable::fixed(
            config
                .peers
                .iter()
                .map(|p| (p.node_id.clone(), p.grpc_address)),
        );
        Self::build(config, storage, transport, peers, true)
    }

    /// Builds a node whose membership gossip maintains (see [`Node::apply_membership`]):
    /// the ring starts with this node alone.
    pub fn with_gossip(
        config: NodeConfig,
        storage: Arc<dyn Storage>,
        transport: T,
    ) -> Result<Arc<Self>, String> {
        if !config.peers.is_empty() {
            return Err("a gossip-driven node takes seeds, not a static peer list".into());
        }
        Self::build(
            config,
            storage,
            transport,
            PeerTable::gossip_driven(),
            false,
        )
    }

    fn build(
        config: NodeConfig,
        storage: Arc<dyn Storage>,
        transport: T,
        peers: PeerTable,
        ring_complete: bool,
    ) -> Result<Arc<Self>, String> {
        config.validate().map_err(|e| e.to_string())?;
        let actor = ActorId::new(&config.actor_id).map_err(|e| e.to_string())?;
        let members = std::iter::once(config.node_id.clone())
            .chain(config.peers.iter().map(|p| p.node_id.clone()));
        let ring = build_ring(&config, members)?;
        Ok(Arc::new(Self {
            repair_slots: Arc::new(Semaphore::new(config.max_concurrent_repairs)),
            config,
            actor,
            ring: RwLock::new(Arc::new(ring)),
            storage,
            transport: Arc::new(transport),
            peers,
            stats: Arc::new(NodeStats::default()),
            membership_commands: OnceLock::new(),
            ring_complete: AtomicBool::new(ring_complete),
        }))
    }

    /// This node's configuration.
    pub fn config(&self) -> &NodeConfig {
        &self.config
    }

    /// The ring this node routes with right now.
    pub fn ring(&self) -> Arc<Ring> {
        Arc::clone(&self.ring.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// Installs gossip's view: peer liveness and addresses, and a ring of every member
    /// that has not left it (liveness never removes a node from the ring).
    pub fn apply_membership(
        &self,
        peers: Vec<PeerStatus>,
        self_in_ring: bool,
    ) -> Result<(), String> {
        let mut members: Vec<String> = peers
            .iter()
            .filter(|p| p.in_ring)
            .map(|p| p.node_id.clone())
            .collect();
        if self_in_ring {
            members.push(self.config.node_id.clone());
        }
        let ring = build_ring(&self.config, members)?;
        let specs: Vec<PeerSpec> = peers
            .iter()
            .map(|p| PeerSpec {
                node_id: p.node_id.clone(),
                grpc_address: p.grpc_address,
            })
            .collect();
        self.transport.update_peers(&specs);
        self.peers.replace(peers);
        *self.ring.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(ring);
        Ok(())
    }

    /// Records whether this node knows the whole ring (gossip's ring sync finished).
    pub fn set_ring_complete(&self, complete: bool) {
        self.ring_complete.store(complete, Ordering::Release);
    }

    /// Whether this node knows the whole ring and so may coordinate requests.
    pub fn ring_complete(&self) -> bool {
        self.ring_complete.load(Ordering::Acquire)
    }

    pub(crate) fn ensure_ring_complete(&self) -> Result<(), NodeError> {
        if self.ring_complete() {
            return Ok(());
        }
        Err(NodeError::Unavailable(format!(
            "node {} is joining the cluster and does not know the whole ring yet; retry \
             shortly or send the request to another node",
            self.config.node_id
        )))
    }

    /// Connects this node to a gossip driver; returns the receiver the driver serves.
    /// Only the first call succeeds.
    pub fn attach_membership(&self) -> Option<mpsc::Receiver<MembershipCommand>> {
        let (sender, receiver) = mpsc::channel(MEMBERSHIP_COMMAND_QUEUE);
        self.membership_commands.set(sender).ok().map(|()| receiver)
    }

    /// Removes `node_id` (this node if empty) from the ring, cluster-wide, through gossip.
    pub async fn leave_ring(&self, node_id: &str) -> Result<String, NodeError> {
        let Some(commands) = self.membership_commands.get() else {
            return Err(NodeError::FailedPrecondition(
                "this node has a static peer list; change --peers on every node instead".into(),
            ));
        };
        let (reply, answer) = oneshot::channel();
        let command = MembershipCommand::LeaveRing {
            node_id: node_id.to_owned(),
            reply,
        };
        commands
            .send(command)
            .await
            .map_err(|_| NodeError::Unavailable("gossip is not running".into()))?;
        answer
            .await
            .map_err(|_| NodeError::Unavailable("gossip stopped".into()))?
            .map_err(NodeError::InvalidArgument)
    }

    /// Every peer this node knows of.
    pub fn peer_statuses(&self) -> Vec<PeerStatus> {
        self.peers.all()
    }

    /// Background-work counters.
    pub fn stats(&self) -> &NodeStats {
        &self.stats
    }

    /// What this node knows about `peer`.
    pub fn peer_status(&self, peer: &str) -> Option<PeerStatus> {
        self.peers.status(peer)
    }

    /// The replicas of `key`, primary first.
    pub fn replicas_for(&self, key: &[u8]) -> Vec<String> {
        self.ring()
            .preference_list(key)
            .iter()
            .map(str::to_owned)
            .collect()
    }

    // ----- replica side: this node's own copy -----

    /// Whether a write to this node's storage may block for long (an fsync).
    pub fn storage_writes_block(&self) -> bool {
        self.storage.writes_block()
    }

    /// This replica's versions of `key`.
    pub fn replica_read(&self, key: &[u8]) -> Result<Option<Siblings>, NodeError> {
        Ok(self.storage.get(key)?)
    }

    /// Merges versions from another replica. Never size-limited: repair must converge.
    pub async fn replica_write(&self, key: Bytes, versions: Siblings) -> Result<(), NodeError> {
        self.write_storage(move |storage| storage.merge(&key, &versions))
            .await?;
        Ok(())
    }

    /// Runs a storage write inline when it is quick (memory, page cache), or on the
    /// blocking pool when it may wait on the disk: a thread hand-off costs more than a
    /// buffered write, but an fsync must not stall the event loop.
    async fn write_storage<R: Send + 'static>(
        &self,
        write: impl FnOnce(&dyn Storage) -> Result<R, kv_storage::StorageError> + Send + 'static,
    ) -> Result<R, NodeError> {
        if !self.storage.writes_block() {
            return Ok(write(self.storage.as_ref())?);
        }
        let storage = Arc::clone(&self.storage);
        tokio::task::spawn_blocking(move || write(storage.as_ref()))
            .await
            .map_err(|e| NodeError::Internal(format!("storage task failed: {e}")))?
            .map_err(NodeError::from)
    }

    /// Coordinates a client write for a key this node replicates: mints the new version
    /// locally, then replicates it and waits for W acknowledgements (this one included).
    pub async fn coordinate_write(
        self: &Arc<Self>,
        command: WriteCommand,
    ) -> Result<VersionVector, NodeError> {
        self.ensure_ring_complete()?;
        let replicas = self.replicas_for(&command.key);
        let Some(own_index) = replicas.iter().position(|r| *r == self.config.node_id) else {
            return Err(NodeError::Unavailable(format!(
                "node {} is not a replica of this key (replicas: {})",
                self.config.node_id,
                replicas.join(", ")
            )));
        };
        let deadline = Instant::now() + self.config.request_timeout;
        let stored = self.store_locally(&command).await?;
        let calls = replicas
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != own_index)
            .map(|(i, peer)| {
                let (transport, peer) = (Arc::clone(&self.transport), peer.clone());
                let (key, versions) = (command.key.clone(), stored.clone());
                let dead = self.peers.is_dead(&peer);
                (i, async move {
                    if dead {
                        return Err(declared_dead(peer));
                    }
                    transport.write(&peer, key, versions).await
                })
            });
        let mut fanout = Fanout::start(calls, command.write_quorum, replicas.len())
            .map_err(|e| NodeError::InvalidArgument(e.to_string()))?;
        fanout.record(Reply {
            replica: own_index,
            result: Ok(()),
        });
        let outcome = fanout.wait(deadline).await;
        self.observe_replies(&replicas, fanout.replies());
        let acks = fanout.tracker().successes();
        let failures = failure_list(fanout.replies());
        self.finish_in_background(fanout, replicas.clone());
        let (n, w) = (replicas.len(), command.write_quorum);
        match outcome {
            Outcome::Reached => Ok(stored.join()),
            Outcome::Impossible => Err(NodeError::Unavailable(format!(
                "write quorum not met: W={w} of {n} replicas required, {acks} acknowledged, \
                 failed: {failures}; replicas that acknowledged keep the write"
            ))),
            Outcome::DeadlineExceeded => Err(NodeError::DeadlineExceeded(format!(
                "write timed out after {:?}: {acks} of {n} replicas acknowledged, W={w} required",
                self.config.request_timeout
            ))),
        }
    }

    async fn store_locally(&self, command: &WriteCommand) -> Result<Siblings, NodeError> {
        let (key, value, context) = (
            command.key.clone(),
            command.value.clone(),
            command.context.clone(),
        );
        let (actor, max_siblings) = (self.actor.clone(), self.config.limits.max_siblings);
        self.write_storage(move |storage| {
            let write = Write {
                context: &context,
                value,
                actor: &actor,
                max_siblings,
            };
            storage.put(&key, &write)
        })
        .await
    }

    /// Lets the slower replicas of a write finish without delaying the client.
    fn finish_in_background(
        self: &Arc<Self>,
        fanout: Fanout<(), TransportError>,
        replicas: Vec<String>,
    ) {
        let node = Arc::clone(self);
        tokio::spawn(async move {
            let replies = fanout.finish(Instant::now() + LATE_REPLY_GRACE).await;
            node.observe_replies(&replicas, &replies);
        });
    }

    // ----- coordinator side: client requests -----

    /// A client write (or delete, with `value: None`) through this node. If this node is
    /// not a replica of the key, the first reachable replica coordinates it.
    pub async fn put(self: &Arc<Self>, command: WriteCommand) -> Result<VersionVector, NodeError> {
        self.ensure_ring_complete()?;
        let replicas = self.replicas_for(&command.key);
        if replicas.contains(&self.config.node_id) {
            return self.coordinate_write(command).await;
        }
        let deadline = Instant::now() + self.config.request_timeout;
        let mut unreachable = Vec::new();
        for replica in &replicas {
            if self.peers.is_dead(replica) {
                unreachable.push(format!("{replica} (declared DEAD)"));
                continue;
            }
            let call = self.transport.coordinate_write(replica, command.clone());
            match tokio::time::timeout_at(deadline, call).await {
                Ok(Ok(context)) => {
                    self.peers.observe(replica, true);
                    return Ok(context);
                }
                Ok(Err(TransportError::Unreachable { reason, .. })) => {
                    self.peers.observe(replica, false);
                    unreachable.push(format!("{replica} ({reason})"));
                }
                Ok(Err(TransportError::Remote { error, .. })) => {
                    self.peers.observe(replica, true);
                    return Err(error);
                }
                Ok(Err(TransportError::Timeout { .. })) | Err(_) => {
                    return Err(NodeError::DeadlineExceeded(format!(
                        "replica {replica} did not finish coordinating the write in time; \
                         it may still be applied"
                    )));
                }
            }
        }
        Err(NodeError::Unavailable(format!(
            "no replica of this key could coordinate the write: {}",
            unreachable.join(", ")
        )))
    }

    /// A client read through this node: asks all N replicas, answers once R replied, and
    /// repairs stale replicas in the background afterwards.
    pub async fn get(
        self: &Arc<Self>,
        key: Bytes,
        read_quorum: usize,
    ) -> Result<Option<Siblings>, NodeError> {
        self.ensure_ring_complete()?;
        let replicas = self.replicas_for(&key);
        let deadline = Instant::now() + self.config.request_timeout;
        let own_index = replicas.iter().position(|r| *r == self.config.node_id);
        let calls = replicas
            .iter()
            .enumerate()
            .filter(|(i, _)| Some(*i) != own_index)
            .map(|(i, peer)| {
                let (transport, peer, key) =
                    (Arc::clone(&self.transport), peer.clone(), key.clone());
                let dead = self.peers.is_dead(&peer);
                (i, async move {
                    if dead {
                        return Err(declared_dead(peer));
                    }
                    transport.read(&peer, key).await
                })
            });
        let mut fanout = Fanout::start(calls, read_quorum, replicas.len())
            .map_err(|e| NodeError::InvalidArgument(e.to_string()))?;
        if let Some(index) = own_index {
            let local = self
                .replica_read(&key)
                .map_err(|error| TransportError::Remote {
                    peer: self.config.node_id.clone(),
                    error,
                });
            fanout.record(Reply {
                replica: index,
                result: local,
            });
        }
        let outcome = fanout.wait(deadline).await;
        self.observe_replies(&replicas, fanout.replies());
        let (answered, n) = (fanout.tracker().successes(), replicas.len());
        match outcome {
            Outcome::Reached => {
                let merged = reconcile(&answers(&replicas, fanout.replies())).merged;
                self.repair_in_background(key, fanout, replicas);
                Ok(merged)
            }
            Outcome::Impossible => Err(NodeError::Unavailable(format!(
                "read quorum not met: R={read_quorum} of {n} replicas required, {answered} \
                 answered, failed: {}",
                failure_list(fanout.replies())
            ))),
            Outcome::DeadlineExceeded => Err(NodeError::DeadlineExceeded(format!(
                "read timed out after {:?}: {answered} of {n} replicas answered, R={read_quorum} required",
                self.config.request_timeout
            ))),
        }
    }

    /// After the client has its answer: wait for late replies, then send the merged
    /// versions to every replica that answered with less. Bounded by `repair_slots`.
    fn repair_in_background(
        self: &Arc<Self>,
        key: Bytes,
        fanout: Fanout<Option<Siblings>, TransportError>,
        replicas: Vec<String>,
    ) {
        let node = Arc::clone(self);
        tokio::spawn(async move {
            let replies = fanout.finish(Instant::now() + LATE_REPLY_GRACE).await;
            node.observe_replies(&replicas, &replies);
            for repair in reconcile(&answers(&replicas, &replies)).repairs {
                let Ok(slot) = Arc::clone(&node.repair_slots).try_acquire_owned() else {
                    node.stats.repairs_skipped.fetch_add(1, Ordering::Relaxed);
                    continue;
                };
                let (node, key) = (Arc::clone(&node), key.clone());
                tokio::spawn(async move {
                    let _slot = slot;
                    let result = if repair.replica == node.config.node_id {
                        node.replica_write(key, repair.versions)
                            .await
                            .map_err(|error| TransportError::Remote {
                                peer: repair.replica.clone(),
                                error,
                            })
                    } else {
                        node.transport
                            .write(&repair.replica, key, repair.versions)
                            .await
                    };
                    match result {
                        Ok(()) => {
                            node.stats.repairs_sent.fetch_add(1, Ordering::Relaxed);
                            tracing::debug!(replica = %repair.replica, "read repair applied");
                        }
                        Err(error) => tracing::warn!(%error, "read repair failed"),
                    }
                });
            }
        });
    }

    fn observe_replies<V>(&self, replicas: &[String], replies: &[Reply<V, TransportError>]) {
        for reply in replies {
            let peer = &replicas[reply.replica];
            if *peer == self.config.node_id {
                continue;
            }
            let reachable = !matches!(
                reply.result,
                Err(TransportError::Unreachable { .. } | TransportError::Timeout { .. })
            );
            self.peers.observe(peer, reachable);
        }
    }
}

/// The failure a coordinator records, without calling, for a peer gossip declared dead.
fn declared_dead(peer: String) -> TransportError {
    TransportError::Unreachable {
        peer,
        reason: "declared DEAD by the failure detector".into(),
    }
}

/// A ring of `members` with the configured N and vnodes.
fn build_ring(
    config: &NodeConfig,
    members: impl IntoIterator<Item = String>,
) -> Result<Ring, String> {
    let members = members
        .into_iter()
        .map(|id| Member::with_vnodes(id, config.vnodes));
    Ring::new(members, config.replication_factor).map_err(|e| format!("cannot build the ring: {e}"))
}

/// The failed replies, for error messages: "peer n3 unreachable: connection refused, ...".
fn failure_list<V>(replies: &[Reply<V, TransportError>]) -> String {
    let failures: Vec<String> = replies
        .iter()
        .filter_map(|reply| reply.result.as_ref().err().map(ToString::to_string))
        .collect();
    failures.join("; ")
}

/// The successful read replies as (replica, versions) pairs for reconciliation.
fn answers(
    replicas: &[String],
    replies: &[Reply<Option<Siblings>, TransportError>],
) -> Vec<(String, Option<Siblings>)> {
    replies
        .iter()
        .filter_map(|reply| match &reply.result {
            Ok(versions) => Some((replicas[reply.replica].clone(), versions.clone())),
            Err(_) => None,
        })
        .collect()
}
