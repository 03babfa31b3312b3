//! A simulated cluster: real `kv_node::Node`s with their gossip drivers, wired through
//! the in-process transport and datagram network, and the operations a fault schedule
//! needs (crash, restart with or without memory, partitions, loss, delay, slow nodes).
//! Forming the ring and changing it are in `ring_changes.rs`.

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use kv_grpc::PublicApi;
use kv_node::{GossipConfig, GossipSettings, NodeBuilder, NodeConfig, PeerState, RunningNode};
use kv_storage::{Siblings, Storage};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::datagrams::DatagramNet;
use crate::faults::{Fault, FaultKind};
use crate::net::{SimNetwork, SimNode, SimTransport};
use crate::rng::SimRng;
use crate::store::{MintLog, RecordingStore};

/// How often convergence is polled.
const CONVERGENCE_POLL: Duration = Duration::from_millis(50);
/// Simulated nodes compare their replicas this often (production defaults to 30 s; a
/// shorter interval lets a 20 s workload see several rounds).
const ANTI_ENTROPY_INTERVAL: Duration = Duration::from_secs(5);

/// What a client needs to call a running node: its API and a signal that fires if the
/// node crashes while the call is in flight.
pub(crate) type Endpoint = (PublicApi<SimTransport>, watch::Receiver<bool>);

/// One simulated cluster.
#[derive(Debug)]
pub struct SimCluster {
    network: Arc<SimNetwork>,
    datagrams: Arc<DatagramNet>,
    mints: Arc<MintLog>,
    nodes: Mutex<Vec<Slot>>,
    rng: Mutex<SimRng>,
    origin: Instant,
    /// Nodes kept down until the end of the run (crashed to be removed from the ring).
    pub(crate) held_down: Mutex<BTreeSet<usize>>,
    /// Nodes that were members and left the ring (never joined again in a run).
    pub(crate) retired: Mutex<BTreeSet<String>>,
    /// What each ring change did, in order.
    pub(crate) change_log: Mutex<Vec<String>>,
}

#[derive(Debug)]
pub(crate) struct Slot {
    pub(crate) id: String,
    gossip_addr: SocketAddr,
    grpc_addr: SocketAddr,
    storage: Arc<RecordingStore>,
    incarnation: u64,
    lose_memory_on_restart: bool,
    pub(crate) running: Option<Running>,
}

#[derive(Debug)]
pub(crate) struct Running {
    pub(crate) node: RunningNode<SimTransport>,
    crashed: watch::Sender<bool>,
}

impl SimCluster {
    /// Starts `size` nodes, all seeded with the first two, and their gossip. The first
    /// founds a cluster whose ring holds it alone: [`SimCluster::form`] joins the others.
    pub fn start(seed: u64, size: usize) -> Arc<Self> {
        let origin = Instant::now();
        let network = SimNetwork::new(SimRng::fork(seed, 1).next_u64());
        let mints = MintLog::new(origin);
        let nodes = (0..size)
            .map(|i| Slot {
                id: format!("n{}", i + 1),
                gossip_addr: address(7946 + i),
                grpc_addr: address(50051 + i),
                storage: Arc::new(RecordingStore::new(Arc::clone(&mints))),
                incarnation: 0,
                lose_memory_on_restart: false,
                running: None,
            })
            .collect();
        let cluster = Arc::new(Self {
            datagrams: DatagramNet::new(Arc::clone(&network)),
            network,
            mints,
            nodes: Mutex::new(nodes),
            rng: Mutex::new(SimRng::fork(seed, 2)),
            origin,
            held_down: Mutex::new(BTreeSet::new()),
            retired: Mutex::new(BTreeSet::new()),
            change_log: Mutex::new(Vec::new()),
        });
        for index in 0..size {
            cluster.boot(index);
        }
        cluster
    }

    pub(crate) fn nodes(&self) -> MutexGuard<'_, Vec<Slot>> {
        self.nodes.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Simulated time since the cluster started.
    pub fn now(&self) -> Duration {
        self.origin.elapsed()
    }

    /// The instant the cluster started.
    pub fn origin(&self) -> Instant {
        self.origin
    }

    /// Every version minted so far.
    pub fn mints(&self) -> &MintLog {
        &self.mints
    }

    /// Replicas per key (N): every simulated node uses `NodeConfig`'s default.
    pub fn replication_factor(&self) -> usize {
        NodeConfig::new("n", address(0)).replication_factor
    }

    /// How often each node runs an anti-entropy round.
    pub fn anti_entropy_interval(&self) -> Duration {
        ANTI_ENTROPY_INTERVAL
    }

    /// Number of nodes (running or not).
    pub fn size(&self) -> usize {
        self.nodes().len()
    }

    /// Starts (or restarts) node `index` as a new process incarnation.
    fn boot(&self, index: usize) {
        let bump_low = self
            .rng
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .next_u64();
        let mut nodes = self.nodes();
        let seeds: Vec<SocketAddr> = nodes
            .iter()
            .take(2)
            .filter(|n| n.id != nodes[index].id)
            .map(|n| n.gossip_addr)
            .collect();
        // The operator's rule: `--bootstrap` on one node, once, when the cluster is
        // created. Every later start comes back with the ring its store holds (or, after
        // losing its disk, learns it from a peer).
        let bootstrap = index == 0 && nodes[index].incarnation == 0;
        let slot = &mut nodes[index];
        debug_assert!(slot.running.is_none(), "{} is already running", slot.id);
        slot.incarnation += 1;
        if slot.lose_memory_on_restart {
            // The disk is gone: the node comes back on an empty store, which has no actor
            // id yet, so the builder gives it a new one.
            slot.storage = Arc::new(RecordingStore::new(Arc::clone(&self.mints)));
            slot.lose_memory_on_restart = false;
        }
        let mut config = NodeConfig::new(slot.id.clone(), slot.grpc_addr);
        config.anti_entropy.interval = ANTI_ENTROPY_INTERVAL;
        let storage: Arc<dyn Storage> = Arc::clone(&slot.storage) as Arc<dyn Storage>;
        let transport = self.network.transport(&slot.id, &[], config.peer_timeout);
        let socket = self.datagrams.bind(&slot.id, slot.gossip_addr);
        let settings = GossipSettings {
            listen: slot.gossip_addr,
            advertise: slot.gossip_addr,
            seeds,
            config: GossipConfig::lan(),
            bootstrap,
            keyring: None,
        };
        let running = NodeBuilder::new(config, transport)
            .storage(storage)
            .start_token((slot.incarnation << 40) | (bump_low >> 24))
            .gossip(settings)
            .start_on(Some(socket))
            .expect("a valid simulated node");
        self.network.register(running.node());
        self.network.set_down(&slot.id, false);
        let (crashed, _) = watch::channel(false);
        slot.running = Some(Running {
            node: running,
            crashed,
        });
    }

    /// Kills node `index`'s process: in-flight requests to it fail, its gossip stops,
    /// messages to and from it are lost. Its storage is kept for a restart unless
    /// `lose_memory`.
    pub fn crash(&self, index: usize, lose_memory: bool) {
        let mut nodes = self.nodes();
        let slot = &mut nodes[index];
        slot.lose_memory_on_restart |= lose_memory;
        let Some(running) = slot.running.take() else {
            return;
        };
        let _ = running.crashed.send(true);
        running.node.abort();
        self.network.set_down(&slot.id, true);
        self.datagrams.unbind(slot.gossip_addr);
    }

    /// Restarts node `index` if it is down (and not held down for a removal).
    pub fn restart(&self, index: usize) {
        let held = self
            .held_down
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(&index);
        if !held && self.nodes()[index].running.is_none() {
            self.boot(index);
        }
    }

    /// Restarts every node that is down, held down or not (the end of the run).
    pub fn restart_all(&self) {
        self.held_down
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
        for index in 0..self.size() {
            self.restart(index);
        }
    }

    /// The API of node `index` and its crash signal, if it runs.
    pub(crate) fn endpoint(&self, index: usize) -> Option<Endpoint> {
        self.nodes()[index].running.as_ref().map(|r| {
            (
                PublicApi::new(Arc::clone(r.node.node())),
                r.crashed.subscribe(),
            )
        })
    }

    /// The running node `index`.
    pub fn node(&self, index: usize) -> Option<Arc<SimNode>> {
        self.nodes()[index]
            .running
            .as_ref()
            .map(|r| Arc::clone(r.node.node()))
    }

    /// Node `id`'s stored versions of `key` (whether it runs or not).
    pub fn stored(&self, id: &str, key: &[u8]) -> Option<Siblings> {
        let nodes = self.nodes();
        let slot = nodes.iter().find(|n| n.id == id)?;
        slot.storage.get(key).expect("memory storage does not fail")
    }

    /// Installs the network faults among `active` (crashes are applied separately).
    pub fn apply_network_faults(&self, active: &[&Fault]) {
        let ids: Vec<String> = self.nodes().iter().map(|n| n.id.clone()).collect();
        let network = &self.network;
        network.heal();
        let (mut loss, mut jitter_ms) = (0, 0);
        let mut slow_ms = vec![0; ids.len()];
        for fault in active {
            match &fault.kind {
                FaultKind::Partition { side } => {
                    let rest: Vec<usize> = (0..ids.len()).filter(|n| !side.contains(n)).collect();
                    block_all(network, &ids, side, &rest);
                    block_all(network, &ids, &rest, side);
                }
                FaultKind::OneWay { from, to } => block_all(network, &ids, from, to),
                FaultKind::Loss { per_mille } => loss = loss.max(*per_mille),
                FaultKind::Reorder { jitter_ms: j } => jitter_ms = jitter_ms.max(*j),
                FaultKind::Slow { node, extra_ms } => {
                    slow_ms[*node] = slow_ms[*node].max(*extra_ms);
                }
                FaultKind::Crash { .. } | FaultKind::RingChange { .. } => {}
            }
        }
        network.set_drop_per_mille(loss);
        network.set_jitter(Duration::from_millis(jitter_ms));
        for (id, extra_ms) in ids.iter().zip(slow_ms) {
            network.set_slow(id, Duration::from_millis(extra_ms));
        }
    }

    /// Whether every running node serves with the same settled ring (one live version:
    /// no data moving) and sees every other running node ALIVE.
    pub fn converged(&self) -> bool {
        let nodes = self.nodes();
        let running: Vec<&SimNode> = nodes
            .iter()
            .filter_map(|n| n.running.as_ref().map(|r| &**r.node.node()))
            .collect();
        let newest = running
            .first()
            .and_then(|node| node.routing())
            .map(|r| r.newest_number());
        running.iter().all(|node| {
            let settled = node
                .routing()
                .is_some_and(|r| r.settled() && Some(r.newest_number()) == newest);
            node.serving()
                && settled
                && nodes.iter().filter(|n| n.running.is_some()).all(|other| {
                    other.id == node.config().node_id
                        || node
                            .peer_status(&other.id)
                            .is_some_and(|p| p.state == PeerState::Alive)
                })
        })
    }

    /// Waits until [`SimCluster::converged`], at most `limit` of simulated time.
    pub async fn wait_converged(&self, limit: Duration) -> Result<Duration, String> {
        self.wait_until(limit, "membership did not converge", Self::converged)
            .await
    }

    /// Waits until every running member of the settled ring finished its cleanup pass
    /// for that version, at most `limit` of simulated time.
    pub async fn wait_cleaned(&self, limit: Duration) -> Result<(), String> {
        self.wait_until(limit, "cleanup did not finish", Self::cleaned)
            .await
            .map(|_| ())
    }

    /// Polls `done` until it holds, at most `limit` of simulated time; the error says
    /// `what` failed and how every node saw the cluster.
    async fn wait_until(
        &self,
        limit: Duration,
        what: &str,
        done: impl Fn(&Self) -> bool,
    ) -> Result<Duration, String> {
        let started = Instant::now();
        while !done(self) {
            if started.elapsed() > limit {
                return Err(format!(
                    "{what} within {limit:?} (at {:.1}s): {}",
                    self.now().as_secs_f64(),
                    self.describe_views()
                ));
            }
            tokio::time::sleep(CONVERGENCE_POLL).await;
        }
        Ok(started.elapsed())
    }

    /// Waits until no running node holds a hint (every hint delivered), at most `limit`
    /// of simulated time.
    pub async fn wait_hints_drained(&self, limit: Duration) -> Result<(), String> {
        self.wait_until(limit, "hints were not all delivered", Self::hints_drained)
            .await
            .map(|_| ())
    }

    fn hints_drained(&self) -> bool {
        (0..self.size())
            .filter_map(|i| self.node(i))
            .all(|node| node.hints_status().targets.iter().all(|t| t.hints == 0))
    }

    /// The hints each running node still holds, for a report.
    pub fn pending_hints(&self) -> Vec<String> {
        (0..self.size())
            .filter_map(|i| self.node(i))
            .flat_map(|node| {
                let holder = node.config().node_id.clone();
                node.hints_status()
                    .targets
                    .into_iter()
                    .filter(|t| t.hints > 0)
                    .map(move |t| {
                        format!(
                            "{holder} holds {} for {} ({}; {})",
                            t.hints,
                            t.target,
                            t.state.label(),
                            t.last_error
                        )
                    })
            })
            .collect()
    }

    fn cleaned(&self) -> bool {
        self.running_members().iter().all(|node| {
            let cleanup = node.cleanup_progress();
            node.routing()
                .is_some_and(|r| cleanup.done && cleanup.version == r.newest_number())
        })
    }

    /// The running nodes that are members of the newest version they route with.
    fn running_members(&self) -> Vec<Arc<SimNode>> {
        (0..self.size())
            .filter_map(|i| self.node(i))
            .filter(|node| {
                let me = node.config().node_id.as_str();
                node.routing()
                    .is_some_and(|r| r.newest().members().any(|m| m == me))
            })
            .collect()
    }

    /// Running members that store `key` without replicating it in their newest version.
    pub fn holders_outside_replicas(&self, key: &[u8]) -> Vec<String> {
        self.running_members()
            .into_iter()
            .filter_map(|node| {
                let me = node.config().node_id.clone();
                let routing = node.routing()?;
                let replica = routing.newest().preference_list(key).contains(&me);
                (!replica && self.stored(&me, key).is_some()).then_some(me)
            })
            .collect()
    }

    /// Each running node's view: ring versions, whether it serves, peers' states.
    pub fn describe_views(&self) -> String {
        let nodes = self.nodes();
        let views: Vec<String> = nodes
            .iter()
            .filter_map(|n| n.running.as_ref().map(|r| (n, r.node.node())))
            .map(|(n, node)| {
                let peers: Vec<String> = node
                    .peer_statuses()
                    .iter()
                    .map(|p| format!("{}={:?}@{}", p.node_id, p.state, p.incarnation))
                    .collect();
                let ring = node.routing().map_or_else(
                    || "no layout".to_owned(),
                    |r| {
                        let layout = r.layout();
                        let marks: Vec<String> = layout
                            .nodes()
                            .into_iter()
                            .map(|m| format!("{m}:{}/{}", layout.acked(m), layout.synced(m)))
                            .collect();
                        format!(
                            "v{}..v{} members {:?} acked/synced [{}]",
                            layout.oldest_live(),
                            r.newest_number(),
                            layout.newest().members.keys().collect::<Vec<_>>(),
                            marks.join(" ")
                        )
                    },
                );
                format!(
                    "{} ({ring}, serving {}) sees [{}]",
                    n.id,
                    node.serving(),
                    peers.join(" ")
                )
            })
            .collect();
        views.join("; ")
    }

    /// Stops every node (end of the run): aborts gossip so the runtime can shut down.
    pub fn shut_down(&self) {
        for slot in self.nodes().iter_mut() {
            if let Some(running) = slot.running.take() {
                running.node.abort();
            }
        }
    }
}

fn block_all(network: &SimNetwork, ids: &[String], from: &[usize], to: &[usize]) {
    for a in from {
        for b in to {
            network.block(&ids[*a], &ids[*b]);
        }
    }
}

fn address(port: usize) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, port as u16))
}
