//! Scale figures for kvstore's sans-IO parts, at sizes one machine cannot run as real
//! processes:
//!
//! - [`gossip`]: kv-gossip's SWIM (foca) with 100 to 1,000 members on a simulated network
//!   (latency, loss, crashes; no sockets, no clock): how long a join takes to reach every
//!   member, how long a crash takes to be SUSPECT and DEAD everywhere, false suspicions
//!   under packet loss, and bytes sent per member per second;
//! - [`ring`]: kv-ring's ownership balance, memory and lookup cost at 10 to 1,000 nodes;
//! - [`movement`]: what one join or one leave moves (kv-layout's transfer plan and a
//!   sample of keys) against the ideal, and how many ranges and peers take part;
//! - [`metadata`]: the size of the encoded ring layout (what nodes persist and exchange).
//!
//! Everything but the lookup timings comes from a seed and replays exactly.
//! `cargo xtask scale` prints the tables of SCALING.md; `--quick` checks the bounds CI
//! holds us to.

#![warn(missing_docs)]

pub mod gossip;
pub mod metadata;
pub mod movement;
pub mod ring;

/// Node ids of an `n`-node cluster: `n1`..`nN`.
pub fn node_ids(n: usize) -> impl Iterator<Item = String> {
    (1..=n).map(|i| format!("n{i}"))
}
