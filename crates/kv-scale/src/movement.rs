//! Data movement figures: what one join or one leave moves, from kv-layout's transfer
//! plan (share of the hash space each gaining node copies) and from a sample of keys
//! (copies whose replica is new after the change), against the ideal (the newcomer's
//! share of copies for a join, the leaver's for a leave), and how many ranges and peers
//! the copy involves.

use std::collections::BTreeSet;

use kv_layout::{Move, plan};
use kv_ring::Ring;

use crate::ring::build;

/// Keys hashed to count moved copies.
const SAMPLE_KEYS: usize = 100_000;

/// What one ring change moves.
#[derive(Debug, Clone, PartialEq)]
pub struct MovementFigures {
    /// Nodes before the change.
    pub nodes: usize,
    /// `join` or `leave`.
    pub change: &'static str,
    /// Share of all key copies the plan moves.
    pub planned_share: f64,
    /// Share of the sampled keys' copies that moved.
    pub sampled_share: f64,
    /// The least any placement could move: 1/(n+1) of the copies for a join, 1/n for a
    /// leave.
    pub ideal_share: f64,
    /// Ranges copied.
    pub ranges: usize,
    /// Nodes that send or receive data.
    pub peers: usize,
}

impl MovementFigures {
    /// Moved over ideal, from the sample.
    pub fn ratio(&self) -> f64 {
        self.sampled_share / self.ideal_share
    }
}

/// One node joins a ring of `n`.
pub fn join(n: usize, vnodes: u32, replicas: usize) -> MovementFigures {
    let (old, new) = (build(n, vnodes, replicas), build(n + 1, vnodes, replicas));
    figures(n, "join", &old, &new, 1.0 / (n as f64 + 1.0))
}

/// One node (the last) leaves a ring of `n`.
pub fn leave(n: usize, vnodes: u32, replicas: usize) -> MovementFigures {
    let (old, new) = (build(n, vnodes, replicas), build(n - 1, vnodes, replicas));
    figures(n, "leave", &old, &new, 1.0 / n as f64)
}

fn figures(n: usize, change: &'static str, old: &Ring, new: &Ring, ideal: f64) -> MovementFigures {
    let moves = plan(old, new);
    let copies = old.replicas() as f64;
    let planned: f64 = moves.iter().map(Move::share).sum::<f64>() / copies;
    let peers: BTreeSet<&str> = moves
        .iter()
        .flat_map(|m| m.from.iter().map(String::as_str).chain([m.to.as_str()]))
        .collect();
    MovementFigures {
        nodes: n,
        change,
        planned_share: planned,
        sampled_share: sampled_moved_share(old, new),
        ideal_share: ideal,
        ranges: moves.iter().map(|m| m.ranges.len()).sum(),
        peers: peers.len(),
    }
}

/// Of `SAMPLE_KEYS` keys' copies in `new`, the share on a node that did not hold the key
/// in `old`.
fn sampled_moved_share(old: &Ring, new: &Ring) -> f64 {
    let mut moved = 0usize;
    let mut copies = 0usize;
    for i in 0..SAMPLE_KEYS {
        let hash = kv_ring::key_hash(format!("key-{i}").as_bytes());
        let before = old.preference_list_for_hash(hash);
        for node in new.preference_list_for_hash(hash).iter() {
            copies += 1;
            moved += usize::from(!before.contains(node));
        }
    }
    moved as f64 / copies as f64
}
