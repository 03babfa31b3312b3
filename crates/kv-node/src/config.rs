//! Node configuration: identity, peers, replication parameters, limits and timeouts.

use std::net::SocketAddr;
use std::time::Duration;

use kv_ring::{MAX_REPLICAS, MAX_VNODES};
use thiserror::Error;

/// Another node of the cluster, as configured statically.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerSpec {
    /// The peer's node id.
    pub node_id: String,
    /// Where its internal (node-to-node) gRPC service listens: what this node dials.
    pub internal_address: SocketAddr,
}

/// Request size and shape limits. They apply to client requests only, never to replica
/// traffic (repair must always be able to converge).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Longest key accepted, in bytes.
    pub max_key_bytes: usize,
    /// Largest value accepted, in bytes.
    pub max_value_bytes: usize,
    /// Most sibling values a client write may leave on a key.
    pub max_siblings: usize,
    /// Most entries in a client-supplied version.
    pub max_version_entries: usize,
    /// Longest `client_id` / `request_id` accepted, in bytes.
    pub max_id_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_key_bytes: 1024,
            max_value_bytes: 1024 * 1024,
            max_siblings: 64,
            max_version_entries: 256,
            max_id_bytes: 256,
        }
    }
}

/// Longest node id: an actor id (at most `kv_clock::MAX_ACTOR_ID_BYTES`) is the node id
/// plus, for a node whose storage is not durable, `.` and a start token of up to 20 digits.
pub const MAX_NODE_ID_BYTES: usize = 96;

/// Background anti-entropy: how often replicas compare their data, how fast they repair
/// it, and how long a tombstone stays once every replica holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AntiEntropyConfig {
    /// Time between two rounds of exchanges with every peer; zero turns exchanges (and
    /// with them tombstone reaping) off.
    pub interval: Duration,
    /// Most keys this node's exchanges repair per second (both directions counted).
    pub max_keys_per_sec: u32,
    /// How long a tombstone is kept after every replica of its key was seen holding it.
    /// It must outlast any older copy still travelling (late replies, read repairs,
    /// hints), or such a copy could bring the deleted value back.
    pub tombstone_grace: Duration,
}

impl Default for AntiEntropyConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(30),
            max_keys_per_sec: 10_000,
            tombstone_grace: Duration::from_secs(3600),
        }
    }
}

impl AntiEntropyConfig {
    /// Whether exchanges run.
    pub fn enabled(&self) -> bool {
        !self.interval.is_zero()
    }
}

/// Hinted handoff: the hints a node holds for replicas that missed writes, their limits,
/// how fast they are delivered, and whether fallback acknowledgements count toward W.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HintConfig {
    /// Most bytes of hints this node holds, all targets together; 0 turns hints off
    /// (a write a replica missed then waits for anti-entropy).
    pub max_bytes: u64,
    /// Most bytes of hints held for one target.
    pub max_target_bytes: u64,
    /// A hint not updated for this long is dropped undelivered (anti-entropy repairs the
    /// replica instead), as Cassandra's `max_hint_window`.
    pub max_age: Duration,
    /// Most hints delivered per second, all targets together.
    pub delivery_keys_per_sec: u32,
    /// How often the node looks for targets to deliver to.
    pub delivery_interval: Duration,
    /// Whether writes that do not choose count fallback acknowledgements toward W.
    pub sloppy_quorum: bool,
}

impl Default for HintConfig {
    fn default() -> Self {
        Self {
            max_bytes: 256 * 1024 * 1024,
            max_target_bytes: 64 * 1024 * 1024,
            max_age: Duration::from_secs(3 * 3600),
            delivery_keys_per_sec: 10_000,
            delivery_interval: Duration::from_secs(1),
            sloppy_quorum: false,
        }
    }
}

impl HintConfig {
    /// Whether this node stores hints.
    pub fn enabled(&self) -> bool {
        self.max_bytes > 0
    }
}

/// The largest gRPC message a client may send: values are capped well below it.
pub const CLIENT_MESSAGE_LIMIT_BYTES: usize = 4 * 1024 * 1024;

/// Everything a node needs to run, besides its storage and transport.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// This node's id (also the actor id of the versions it mints, when its storage is
    /// durable; see [`crate::NodeBuilder`]).
    pub node_id: String,
    /// This node's internal (node-to-node) gRPC address, as peers reach it.
    pub internal_address: SocketAddr,
    /// This node's client API address, as clients and operators reach it (shown in the
    /// membership; nothing dials it). [`NodeConfig::new`] sets it to the internal address.
    pub client_address: SocketAddr,
    /// The other members of the cluster.
    pub peers: Vec<PeerSpec>,
    /// Replicas per key (N).
    pub replication_factor: usize,
    /// Default read quorum (R).
    pub read_quorum: usize,
    /// Default write quorum (W).
    pub write_quorum: usize,
    /// Virtual nodes per member.
    pub vnodes: u32,
    /// Client request limits.
    pub limits: Limits,
    /// How long a client request may take before DEADLINE_EXCEEDED.
    pub request_timeout: Duration,
    /// How long a single call to a peer may take.
    pub peer_timeout: Duration,
    /// Read repairs running at once; further repairs are skipped and counted.
    pub max_concurrent_repairs: usize,
    /// Requests whose follow-up (awaiting late replica replies, then hinting a write's
    /// silent replicas or repairing a read's stale ones) may wait at once; a request
    /// beyond it skips its follow-up, counted, and leaves its replicas to anti-entropy.
    pub max_follow_ups: usize,
    /// Background anti-entropy.
    pub anti_entropy: AntiEntropyConfig,
    /// How often a gossip-driven node exchanges its ring layout with a peer (and checks
    /// its acks and transfers). A change made here is pushed to every peer at once.
    pub layout_interval: Duration,
    /// Hinted handoff and sloppy quorum.
    pub hints: HintConfig,
}

impl NodeConfig {
    /// A configuration with the defaults (N=3, R=2, W=2, 256 vnodes) and no peers.
    pub fn new(node_id: impl Into<String>, internal_address: SocketAddr) -> Self {
        Self {
            node_id: node_id.into(),
            internal_address,
            client_address: internal_address,
            peers: Vec::new(),
            replication_factor: 3,
            read_quorum: 2,
            write_quorum: 2,
            vnodes: kv_ring::DEFAULT_VNODES,
            limits: Limits::default(),
            request_timeout: Duration::from_secs(5),
            peer_timeout: Duration::from_secs(2),
            max_concurrent_repairs: 64,
            max_follow_ups: 8192,
            anti_entropy: AntiEntropyConfig::default(),
            layout_interval: Duration::from_secs(1),
            hints: HintConfig::default(),
        }
    }

    /// A node without peers: a cluster of one, so N=R=W=1 (a static peer list needs at
    /// least N members).
    pub fn standalone(node_id: impl Into<String>, internal_address: SocketAddr) -> Self {
        Self {
            replication_factor: 1,
            read_quorum: 1,
            write_quorum: 1,
            ..Self::new(node_id, internal_address)
        }
    }

    /// Checks the configuration for contradictions before a node starts.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.node_id.is_empty() || self.node_id.len() > MAX_NODE_ID_BYTES {
            return Err(ConfigError::BadNodeId(self.node_id.clone()));
        }
        if !(1..=MAX_REPLICAS).contains(&self.replication_factor) {
            return Err(ConfigError::BadReplicationFactor(self.replication_factor));
        }
        for (name, quorum) in [("R", self.read_quorum), ("W", self.write_quorum)] {
            if !(1..=self.replication_factor).contains(&quorum) {
                return Err(ConfigError::BadQuorum {
                    name,
                    quorum,
                    n: self.replication_factor,
                });
            }
        }
        if !(1..=MAX_VNODES).contains(&self.vnodes) {
            return Err(ConfigError::BadVnodes(self.vnodes));
        }
        if self.limits.max_value_bytes + self.limits.max_key_bytes + 64 * 1024
            > CLIENT_MESSAGE_LIMIT_BYTES
        {
            return Err(ConfigError::LimitsTooLarge);
        }
        if self.anti_entropy.enabled() && self.anti_entropy.max_keys_per_sec == 0 {
            return Err(ConfigError::AntiEntropyRate);
        }
        if self.layout_interval.is_zero() {
            return Err(ConfigError::LayoutInterval);
        }
        let hints = &self.hints;
        if hints.enabled()
            && (hints.max_target_bytes == 0
                || hints.delivery_keys_per_sec == 0
                || hints.delivery_interval.is_zero()
                || hints.max_age.is_zero())
        {
            return Err(ConfigError::HintLimits);
        }
        if hints.sloppy_quorum && !hints.enabled() {
            return Err(ConfigError::SloppyWithoutHints);
        }
        if let Some(peer) = self.peers.iter().find(|p| p.node_id == self.node_id) {
            return Err(ConfigError::PeerIsSelf(peer.node_id.clone()));
        }
        Ok(())
    }
}

/// A configuration that cannot run.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ConfigError {
    /// The node id is empty or too long (it must leave room for the actor suffix a
    /// non-durable node adds).
    #[error("node id {0:?} must be 1..=96 bytes")]
    BadNodeId(String),
    /// N is out of range.
    #[error("replication factor {0} is outside 1..=16")]
    BadReplicationFactor(usize),
    /// R or W is out of range.
    #[error("{name}={quorum} must be within 1..=N (N={n})")]
    BadQuorum {
        /// "R" or "W".
        name: &'static str,
        /// The bad value.
        quorum: usize,
        /// The replication factor.
        n: usize,
    },
    /// vnodes out of range.
    #[error("vnodes={0} is outside 1..=4096")]
    BadVnodes(u32),
    /// Limits exceed the gRPC message cap.
    #[error("max key + value size must leave room under the 4 MiB gRPC message limit")]
    LimitsTooLarge,
    /// Anti-entropy is on but may repair nothing.
    #[error(
        "anti-entropy max keys per second must be at least 1 (or set the interval to 0 to turn it off)"
    )]
    AntiEntropyRate,
    /// Layouts would be exchanged in a busy loop.
    #[error("the layout exchange interval must be above zero")]
    LayoutInterval,
    /// Hints are on but one of their limits leaves them no room or time.
    #[error(
        "with hints on (max bytes above 0), the per-target cap, delivery rate, delivery interval and max age must be above zero"
    )]
    HintLimits,
    /// Sloppy quorum needs fallbacks that store hints.
    #[error("--sloppy-quorum needs hints: set --hint-max-bytes above 0")]
    SloppyWithoutHints,
    /// The peer list contains this node.
    #[error("peer list contains this node's own id {0:?}")]
    PeerIsSelf(String),
}
