//! An in-process network of nodes for tests and simulation: calls go straight to the
//! target node's replica methods, through faults the test controls (nodes down, one-way
//! or two-way partitions, seeded random drops, delays).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use bytes::Bytes;
use kv_clock::VersionVector;
use kv_storage::Siblings;

use crate::{Node, PeerTransport, TransportError, WriteCommand};

/// Nodes of one simulated cluster and the faults between them.
#[derive(Debug, Default)]
pub struct SimNetwork {
    state: Mutex<NetState>,
}

#[derive(Debug, Default)]
struct NetState {
    nodes: HashMap<String, Weak<Node<SimTransport>>>,
    down: HashSet<String>,
    hanging: HashSet<String>,
    blocked: HashSet<(String, String)>,
    delay: Duration,
    drop_per_mille: u32,
    rng: u64,
}

impl SimNetwork {
    /// An empty network whose random drops follow `seed`.
    pub fn new(seed: u64) -> Arc<Self> {
        let network = Self::default();
        network.with(|s| s.rng = seed | 1);
        Arc::new(network)
    }

    fn with<R>(&self, f: impl FnOnce(&mut NetState) -> R) -> R {
        f(&mut self.state.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// A transport for node `from` to use.
    pub fn transport(self: &Arc<Self>, from: &str) -> SimTransport {
        SimTransport {
            from: from.to_owned(),
            network: Arc::clone(self),
        }
    }

    /// Makes `node` reachable under its id.
    pub fn register(&self, node: &Arc<Node<SimTransport>>) {
        let id = node.config().node_id.clone();
        self.with(|s| s.nodes.insert(id, Arc::downgrade(node)));
    }

    /// Marks a node crashed (`true`) or back up (`false`): calls to it fail as unreachable.
    pub fn set_down(&self, node: &str, down: bool) {
        self.with(|s| {
            if down {
                s.down.insert(node.to_owned());
            } else {
                s.down.remove(node);
            }
        });
    }

    /// Makes calls to `node` hang (a black hole: no answer, no error) or stop hanging.
    pub fn set_hanging(&self, node: &str, hanging: bool) {
        self.with(|s| {
            if hanging {
                s.hanging.insert(node.to_owned());
            } else {
                s.hanging.remove(node);
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

    /// Delays every call by `delay`.
    pub fn set_delay(&self, delay: Duration) {
        self.with(|s| s.delay = delay);
    }

    /// Drops this many calls per thousand, chosen by the seeded generator.
    pub fn set_drop_per_mille(&self, per_mille: u32) {
        self.with(|s| s.drop_per_mille = per_mille.min(1000));
    }

    fn is_hanging(&self, node: &str) -> bool {
        self.with(|s| s.hanging.contains(node))
    }

    fn route(
        &self,
        from: &str,
        to: &str,
    ) -> Result<(Arc<Node<SimTransport>>, Duration), TransportError> {
        let unreachable = |reason: &str| TransportError::Unreachable {
            peer: to.to_owned(),
            reason: reason.to_owned(),
        };
        self.with(|s| {
            if s.down.contains(to) || s.down.contains(from) {
                return Err(unreachable("node is down"));
            }
            if s.blocked.contains(&(from.to_owned(), to.to_owned())) {
                return Err(unreachable("partitioned"));
            }
            if s.drop_per_mille > 0 {
                s.rng ^= s.rng << 13;
                s.rng ^= s.rng >> 7;
                s.rng ^= s.rng << 17;
                if (s.rng % 1000) < u64::from(s.drop_per_mille) {
                    return Err(unreachable("message dropped"));
                }
            }
            let node = s.nodes.get(to).and_then(Weak::upgrade);
            node.map(|n| (n, s.delay))
                .ok_or_else(|| unreachable("no such node"))
        })
    }
}

/// One node's handle on a [`SimNetwork`].
#[derive(Debug, Clone)]
pub struct SimTransport {
    from: String,
    network: Arc<SimNetwork>,
}

impl SimTransport {
    async fn target(&self, peer: &str) -> Result<Arc<Node<SimTransport>>, TransportError> {
        if self.network.is_hanging(peer) {
            std::future::pending::<()>().await;
        }
        let (node, delay) = self.network.route(&self.from, peer)?;
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        Ok(node)
    }
}

fn remote(peer: &str) -> impl FnOnce(crate::NodeError) -> TransportError + '_ {
    move |error| TransportError::Remote {
        peer: peer.to_owned(),
        error,
    }
}

impl PeerTransport for SimTransport {
    async fn read(&self, peer: &str, key: Bytes) -> Result<Option<Siblings>, TransportError> {
        let node = self.target(peer).await?;
        node.replica_read(&key).map_err(remote(peer))
    }

    async fn write(
        &self,
        peer: &str,
        key: Bytes,
        versions: Siblings,
    ) -> Result<(), TransportError> {
        let node = self.target(peer).await?;
        node.replica_write(key, versions)
            .await
            .map_err(remote(peer))
    }

    async fn coordinate_write(
        &self,
        peer: &str,
        command: WriteCommand,
    ) -> Result<VersionVector, TransportError> {
        let node = self.target(peer).await?;
        Box::pin(node.coordinate_write(command))
            .await
            .map_err(remote(peer))
    }
}
