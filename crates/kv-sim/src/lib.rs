//! Deterministic simulation of a kvstore cluster.
//!
//! One seed drives everything: a cluster of real [`kv_node::Node`]s (coordinator, replica
//! service, the public and internal gRPC handlers, the gRPC transport with its batcher and
//! wire codec, and the foca gossip driver) runs in one thread on tokio's paused clock,
//! wired through [`net::SimNetwork`] instead of sockets. A fault
//! schedule generated from the seed crashes and restarts nodes (with or without their
//! memory), partitions the network (both ways or one way), loses, delays and reorders
//! messages, slows nodes down, and changes the ring as an operator would (a spare joins, a
//! member leaves, a crashed member is removed, a spare replaces a member), while simulated
//! clients put, get and delete. When the faults stop, the run heals the cluster, waits for
//! the ring to settle, reads every key with R=N to repair it, and [`checker`] judges the
//! recorded history against the replicas' final state.
//!
//! ```
//! let report = kv_sim::run_seed(3, &kv_sim::SimConfig::default());
//! assert!(report.violations.is_empty(), "{:?}", report.violations);
//! // The same seed replays the same run.
//! assert_eq!(report.trace_hash, kv_sim::run_seed(3, &kv_sim::SimConfig::default()).trace_hash);
//! ```

#![warn(missing_docs)]

pub mod checker;
pub mod cluster;
pub mod datagrams;
pub mod faults;
pub mod history;
pub mod net;
mod report;
mod ring_changes;
pub mod rng;
mod run;
pub mod store;
pub mod workload;

pub use report::{Availability, SeedReport, Summary, WriteAvailability};
pub use run::{SimConfig, replay_command, run_seed};
pub use workload::QuorumMode;
