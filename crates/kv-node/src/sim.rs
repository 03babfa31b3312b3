//! An in-process network of nodes for tests and simulation: calls go straight to the
//! target node's replica methods, through faults the test controls (nodes down, one-way
//! or two-way partitions, seeded random loss of requests and replies, delays with seeded
//! jitter that reorders messages, slow nodes, black holes).
//!
//! The same fault model decides the fate of any other message between nodes (gossip
//! datagrams in a simulation) through [`SimNetwork::fate`], so one partition cuts both.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use bytes::Bytes;
use kv_clock::VersionVector;
use kv_storage::Siblings;

use crate::{Node, NodeError, PeerTransport, TransportError, WriteCommand};

/// How long a call waits for its reply before it reports a timeout, like the gRPC
/// transport's per-call deadline.
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(2);

/// Nodes of one simulated cluster and the faults between them.
#[derive(Debug, Default)]
pub struct SimNetwork {
    state: Mutex<NetState>,
}

#[derive(Debug, Default)]
struct NetState {
    nodes: BTreeMap<String, Weak<Node<SimTransport>>>,
    /// Incarnation of each node's current transport: messages from an older one (a
    /// crashed process's leftover tasks) are refused.
    generations: BTreeMap<String, u64>,
    down: BTreeSet<String>,
    hanging: BTreeSet<String>,
    blocked: BTreeSet<(String, String)>,
    slow: BTreeMap<String, Duration>,
    delay: Duration,
    jitter: Duration,
    drop_per_mille: u32,
    call_timeout: Option<Duration>,
    rng: u64,
}

impl NetState {
    fn next_random(&mut self) -> u64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.rng
    }
}

/// What happens to one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    /// It arrives after this delay.
    Deliver(Duration),
    /// It is lost, for this reason.
    Lost(&'static str),
}

impl SimNetwork {
    /// An empty network whose random drops and jitter follow `seed`.
    pub fn new(seed: u64) -> Arc<Self> {
        let network = Self::default();
        network.with(|s| s.rng = seed | 1);
        Arc::new(network)
    }

    fn with<R>(&self, f: impl FnOnce(&mut NetState) -> R) -> R {
        f(&mut self.state.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// A transport for node `from` to use. Each call starts a new incarnation of `from`:
    /// calls still in flight from an older transport of the same node are refused.
    pub fn transport(self: &Arc<Self>, from: &str) -> SimTransport {
        let generation = self.with(|s| {
            let generation = s.generations.entry(from.to_owned()).or_default();
            *generation += 1;
            *generation
        });
        SimTransport {
            from: from.to_owned(),
            generation,
            network: Arc::clone(self),
        }
    }

    /// Makes `node` reachable under its id (replacing an earlier incarnation).
    pub fn register(&self, node: &Arc<Node<SimTransport>>) {
        let id = node.config().node_id.clone();
        self.with(|s| s.nodes.insert(id, Arc::downgrade(node)));
    }

    /// Marks a node crashed (`true`) or back up (`false`): messages to or from it are lost.
    pub fn set_down(&self, node: &str, down: bool) {
        self.with(|s| toggle(&mut s.down, node.to_owned(), down));
    }

    /// Makes calls to `node` hang (a black hole: no answer, no error) or stop hanging.
    pub fn set_hanging(&self, node: &str, hanging: bool) {
        self.with(|s| toggle(&mut s.hanging, node.to_owned(), hanging));
    }

    /// Slows every message to or from `node` by `extra` (zero makes it normal again).
    pub fn set_slow(&self, node: &str, extra: Duration) {
        self.with(|s| {
            if extra.is_zero() {
                s.slow.remove(node);
            } else {
                s.slow.insert(node.to_owned(), extra);
            }
        });
    }

    /// Blocks messages from `from` to `to` (one way).
    pub fn block(&self, from: &str, to: &str) {
        self.with(|s| s.blocked.insert((from.to_owned(), to.to_owned())));
    }

    /// Splits the nodes into two groups that cannot reach each other.
    pub fn partition(&self, side_a: &[&str], side_b: &[&str]) {
        for a in side_a {
            for b in side_b {
                self.block(a, b);
                self.block(b, a);
            }
        }
    }

    /// Removes every partition and block.
    pub fn heal(&self) {
        self.with(|s| s.blocked.clear());
    }

    /// Delays every message by `delay`.
    pub fn set_delay(&self, delay: Duration) {
        self.with(|s| s.delay = delay);
    }

    /// Adds a seeded random delay in `0..=jitter` to every message, which reorders them.
    pub fn set_jitter(&self, jitter: Duration) {
        self.with(|s| s.jitter = jitter);
    }

    /// Loses this many messages per thousand (requests and replies alike), chosen by the
    /// seeded generator.
    pub fn set_drop_per_mille(&self, per_mille: u32) {
        self.with(|s| s.drop_per_mille = per_mille.min(1000));
    }

    /// How long a call waits for a lost or late reply before it reports a timeout
    /// ([`DEFAULT_CALL_TIMEOUT`] unless set).
    pub fn set_call_timeout(&self, timeout: Duration) {
        self.with(|s| s.call_timeout = Some(timeout));
    }

    /// Decides the fate of one message from `from` to `to` under the current faults.
    pub fn fate(&self, from: &str, to: &str) -> Fate {
        self.with(|s| {
            if s.down.contains(to) || s.down.contains(from) {
                return Fate::Lost("node is down");
            }
            if s.blocked.contains(&(from.to_owned(), to.to_owned())) {
                return Fate::Lost("partitioned");
            }
            if s.drop_per_mille > 0 && s.next_random() % 1000 < u64::from(s.drop_per_mille) {
                return Fate::Lost("message dropped");
            }
            let mut delay = s.delay;
            if !s.jitter.is_zero() {
                let jitter_ms = s.jitter.as_millis() as u64;
                delay += Duration::from_millis(s.next_random() % (jitter_ms + 1));
            }
            for node in [from, to] {
                delay += s.slow.get(node).copied().unwrap_or_default();
            }
            Fate::Deliver(delay)
        })
    }

    fn is_hanging(&self, node: &str) -> bool {
        self.with(|s| s.hanging.contains(node))
    }

    fn is_current(&self, node: &str, generation: u64) -> bool {
        self.with(|s| s.generations.get(node) == Some(&generation))
    }

    fn call_timeout(&self) -> Duration {
        self.with(|s| s.call_timeout.unwrap_or(DEFAULT_CALL_TIMEOUT))
    }

    /// The node a delivered request reaches, if it is up.
    fn receiver(&self, to: &str) -> Option<Arc<Node<SimTransport>>> {
        self.with(|s| {
            if s.down.contains(to) {
                return None;
            }
            s.nodes.get(to).and_then(Weak::upgrade)
        })
    }
}

fn toggle(set: &mut BTreeSet<String>, node: String, on: bool) {
    if on {
        set.insert(node);
    } else {
        set.remove(&node);
    }
}

/// One node's handle on a [`SimNetwork`].
#[derive(Debug, Clone)]
pub struct SimTransport {
    from: String,
    generation: u64,
    network: Arc<SimNetwork>,
}

impl SimTransport {
    /// Sends a request to `peer`, runs `handle` there, and brings the reply back, each
    /// leg subject to the network's faults. A lost request is `Unreachable` (certainly
    /// not processed); a lost or late reply is a `Timeout` (maybe processed).
    async fn call<R, F>(
        &self,
        peer: &str,
        handle: impl FnOnce(Arc<Node<SimTransport>>) -> F,
    ) -> Result<R, TransportError>
    where
        F: Future<Output = Result<R, NodeError>>,
    {
        let timeout = self.network.call_timeout();
        match tokio::time::timeout(timeout, self.round_trip(peer, handle)).await {
            Ok(result) => result,
            Err(_) => Err(TransportError::Timeout {
                peer: peer.to_owned(),
            }),
        }
    }

    async fn round_trip<R, F>(
        &self,
        peer: &str,
        handle: impl FnOnce(Arc<Node<SimTransport>>) -> F,
    ) -> Result<R, TransportError>
    where
        F: Future<Output = Result<R, NodeError>>,
    {
        let unreachable = |reason: &str| TransportError::Unreachable {
            peer: peer.to_owned(),
            reason: reason.to_owned(),
        };
        if !self.network.is_current(&self.from, self.generation) {
            return Err(unreachable("the sending node restarted"));
        }
        if self.network.is_hanging(peer) {
            std::future::pending::<()>().await;
        }
        let request_delay = match self.network.fate(&self.from, peer) {
            Fate::Lost(reason) => return Err(unreachable(reason)),
            Fate::Deliver(delay) => delay,
        };
        sleep_unless_zero(request_delay).await;
        let node = self
            .network
            .receiver(peer)
            .ok_or_else(|| unreachable("node is down"))?;
        let result = handle(node).await.map_err(|error| TransportError::Remote {
            peer: peer.to_owned(),
            error,
        });
        match self.network.fate(peer, &self.from) {
            Fate::Lost(_) => std::future::pending().await,
            Fate::Deliver(delay) => sleep_unless_zero(delay).await,
        }
        result
    }
}

async fn sleep_unless_zero(delay: Duration) {
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
}

impl PeerTransport for SimTransport {
    async fn read(&self, peer: &str, key: Bytes) -> Result<Option<Siblings>, TransportError> {
        self.call(peer, |node| async move { node.replica_read(&key) })
            .await
    }

    async fn write(
        &self,
        peer: &str,
        key: Bytes,
        versions: Siblings,
    ) -> Result<(), TransportError> {
        self.call(peer, |node| async move {
            node.replica_write(key, versions).await
        })
        .await
    }

    async fn coordinate_write(
        &self,
        peer: &str,
        command: WriteCommand,
    ) -> Result<VersionVector, TransportError> {
        self.call(peer, |node| async move {
            Box::pin(node.coordinate_write(command)).await
        })
        .await
    }
}
