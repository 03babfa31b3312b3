//! Metadata figures: the encoded ring layout (what every node persists and sends in each
//! layout exchange) at a given size, settled and while a change runs, and how long a node
//! takes to build the rings of its live versions from it.

use std::time::Instant;

use kv_layout::{Layout, Proposal, encode_layout};

/// Sizes of one cluster's layout.
#[derive(Debug, Clone, PartialEq)]
pub struct MetadataFigures {
    /// Members.
    pub nodes: usize,
    /// Encoded bytes with one live version.
    pub settled_bytes: usize,
    /// Encoded bytes while one more node joins (two live versions).
    pub changing_bytes: usize,
    /// Milliseconds to build the rings of the changing layout's live versions.
    pub ring_build_ms: f64,
}

/// The layout of an `n`-node cluster founded by n1, the others joined at once.
fn settled(n: usize, vnodes: u32, replicas: usize) -> Layout {
    let mut layout = Layout::found(1, replicas, "n1", vnodes);
    let others: Vec<(String, u32)> = crate::node_ids(n).skip(1).map(|id| (id, vnodes)).collect();
    if others.is_empty() {
        return layout;
    }
    let version = layout
        .propose(&Proposal::Join(others))
        .expect("a join of new nodes is valid");
    for node in crate::node_ids(n) {
        layout.ack(&node, version);
        layout.mark_synced(&node, version);
        layout.mark_read(&node, version);
    }
    debug_assert_eq!(layout.live().count(), 1);
    layout
}

/// Encoded sizes of an `n`-node layout, settled and with a join under way.
pub fn measure(n: usize, vnodes: u32, replicas: usize) -> MetadataFigures {
    let mut layout = settled(n, vnodes, replicas);
    let settled_bytes = encode_layout(&layout).len();
    layout
        .propose(&Proposal::Join(vec![(format!("n{}", n + 1), vnodes)]))
        .expect("a join of a new node is valid");
    let changing_bytes = encode_layout(&layout).len();
    let started = Instant::now();
    for version in layout.live() {
        let ring = version
            .ring(replicas)
            .expect("members within the ring's limits");
        std::hint::black_box(ring.len());
    }
    MetadataFigures {
        nodes: n,
        settled_bytes,
        changing_bytes,
        ring_build_ms: started.elapsed().as_secs_f64() * 1000.0,
    }
}
