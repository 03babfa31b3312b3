//! A kvstore node: composes the ring, storage, quorum and repair layers into a
//! Dynamo-style replica and coordinator, and serves it over gRPC.
//!
//! - [`Node`] holds the logic: replica operations on local storage, and coordination of
//!   client requests (a write is coordinated by a replica of its key, which mints the
//!   version and waits for W acknowledgements; a read asks all N replicas, answers after
//!   R, and repairs stale replicas afterwards).
//! - [`PeerTransport`] is how nodes call each other: [`GrpcTransport`] in production,
//!   [`sim::SimTransport`] in-process with injectable faults for tests.
//! - [`PublicApi`] and [`InternalApi`] are the gRPC services; [`serve`] runs them.
//!
//! ```
//! use std::sync::Arc;
//! use kv_node::{Node, NodeConfig, sim::SimNetwork};
//! use kv_storage::MemoryStore;
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let network = SimNetwork::new(7);
//! let config = NodeConfig::new("n1", "127.0.0.1:50051".parse().unwrap());
//! let storage = Arc::new(MemoryStore::new(kv_ring::key_hash));
//! let node = Node::new(config, storage, network.transport("n1")).unwrap();
//! network.register(&node);
//! assert_eq!(node.replicas_for(b"any key"), ["n1"]);
//! # });
//! ```

#![warn(missing_docs)]

mod batcher;
mod config;
mod convert;
mod error;
mod membership;
mod node;
mod peers;
mod server;
mod service_internal;
mod service_public;
pub mod sim;
mod transport;
mod transport_grpc;
mod validate;

pub use config::{CLIENT_MESSAGE_LIMIT_BYTES, ConfigError, Limits, NodeConfig, PeerSpec};
pub use error::NodeError;
pub use kv_gossip::GossipConfig;
pub use membership::{Datagrams, GossipSettings, MembershipCommand, run_gossip};
pub use node::{Node, NodeStats};
pub use peers::{PeerState, PeerStatus};
pub use server::serve;
pub use service_internal::InternalApi;
pub use service_public::PublicApi;
pub use transport::{PeerTransport, TransportError, WriteCommand};
pub use transport_grpc::{GrpcTransport, INTERNAL_MESSAGE_LIMIT_BYTES};
