//! A kvstore node: the logic of one member of a Dynamo-style cluster, with no RPC
//! framework in it.
//!
//! - [`Node`] is the replica (its own copy of the keys it holds) and the coordinator of
//!   client requests: a write is coordinated by a replica of its key, which mints the
//!   version and waits for W acknowledgements; a read asks all N replicas, answers after
//!   R, and repairs stale replicas afterwards. Client requests arrive as [`ClientWrite`]
//!   and [`ClientRead`] and are validated here, against one ring snapshot per request.
//! - [`PeerTransport`] is how nodes call each other. The gRPC implementation lives in
//!   `kv-grpc`; a simulation plugs in its own network.
//! - The gossip driver runs kv-gossip's SWIM state machine over any [`Datagrams`]
//!   socket (UDP in production) and installs each liveness view into the node.
//! - Who owns which keys is the ring layout (`kv-layout`): numbered ring versions that
//!   explicit changes ([`RingChange`]) make, that nodes persist and exchange, and that
//!   move forward as nodes ack them and copy the ranges they gain ([`Routing`] picks
//!   where each read and write goes while versions overlap).
//! - [`NodeBuilder`] is the only place a node is composed: storage (and the actor-id
//!   rule that follows from it), transport, membership, and the tasks beside the node.
//! - [`NodeError`] says what failed with the facts to act on; [`ErrorKind`] sorts errors
//!   into the classes an RPC layer maps to status codes.

#![warn(missing_docs)]

mod aae;
mod actor;
mod builder;
mod config;
mod error;
mod gossip_driver;
mod gossip_seal;
mod hints;
mod membership;
mod metrics;
mod node;
mod peers;
mod placement;
mod request;
mod transport;

pub use aae::{
    AntiEntropyStatus, ExchangeReport, KeyPage, MAX_DIGEST_RANGES, MAX_KEY_PAGE,
    PeerExchangeStatus, RangeAgreement, fingerprint_of,
};
pub use builder::{BuildError, NodeBuilder, RunningNode, StorageChoice};
pub use config::{
    AntiEntropyConfig, CLIENT_MESSAGE_LIMIT_BYTES, ConfigError, HintConfig, Limits,
    MAX_NODE_ID_BYTES, NodeConfig, PeerSpec,
};
pub use error::{ErrorKind, Failures, NodeError, Operation};
pub use gossip_driver::{Datagrams, GossipSettings};
pub use gossip_seal::KeyringFile;
pub use hints::{HintCounters, HintTargetState, HintsStatus, TargetHints};
pub use kv_gossip::{GossipConfig, GossipConfigError};
pub use kv_layout::{Layout, RingVersion};
pub use membership::{
    ChangePlan, CleanupProgress, MAX_CHANGE_NODES, MAX_LAYOUT_BYTES, PlannedMove, RingChange,
    Routing, SourceProgress, TransferProgress, TransferState,
};
pub use metrics::{GossipMetrics, MembershipEvent, RECENT_EVENTS, RequestMetrics, RequestOp};
pub use node::{Health, KeyPlacement, Node, NodeStats};
pub use peers::{PeerState, PeerStatus};
pub use request::{ClientRead, ClientWrite, InvalidRequest, WriteMode};
pub use transport::{PeerTransport, RemoteError, SharedVersions, TransportError, WriteCommand};
