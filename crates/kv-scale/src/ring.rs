//! Ring figures: how evenly a ring of `n` nodes with `vnodes` tokens each spreads the
//! hash space (share of primary ranges and of replica ranges, max/mean and standard
//! deviation), what the ring costs in memory, and how long a preference-list lookup takes
//! beside the bare key hash it starts with.

use std::hint::black_box;
use std::time::Instant;

use kv_ring::{Member, Ring};

/// One ring's balance and cost.
#[derive(Debug, Clone, PartialEq)]
pub struct RingFigures {
    /// Nodes.
    pub nodes: usize,
    /// Tokens per node.
    pub vnodes: u32,
    /// Largest replica share over the mean (1.0 is perfect).
    pub replica_max_over_mean: f64,
    /// Standard deviation of the replica shares over their mean.
    pub replica_cv: f64,
    /// Largest primary share over the mean.
    pub primary_max_over_mean: f64,
    /// Bytes the ring's tables take (tokens, owners, preference table, buckets, names).
    pub memory_bytes: usize,
    /// Median nanoseconds of a preference-list lookup (hash included).
    pub lookup_ns: f64,
    /// Median nanoseconds of the bare key hash, measured beside it.
    pub hash_ns: f64,
}

/// A ring of `n` nodes (`n1`..) with `vnodes` each and N = `replicas`.
pub fn build(n: usize, vnodes: u32, replicas: usize) -> Ring {
    Ring::new(
        crate::node_ids(n).map(|id| Member::with_vnodes(id, vnodes)),
        replicas,
    )
    .expect("node counts here stay within the ring's limits")
}

/// Balance, memory and lookup cost of an `n`-node ring.
pub fn measure(n: usize, vnodes: u32, replicas: usize) -> RingFigures {
    let ring = build(n, vnodes, replicas);
    let ownership = ring.ownership();
    let replica: Vec<f64> = ownership.iter().map(|o| o.replica_share).collect();
    let primary: Vec<f64> = ownership.iter().map(|o| o.primary_share).collect();
    let (lookup_ns, hash_ns) = lookup_cost(&ring);
    RingFigures {
        nodes: n,
        vnodes,
        replica_max_over_mean: max_over_mean(&replica),
        replica_cv: std_dev(&replica) / mean(&replica),
        primary_max_over_mean: max_over_mean(&primary),
        memory_bytes: ring.table_bytes(),
        lookup_ns,
        hash_ns,
    }
}

fn mean(values: &[f64]) -> f64 {
    values.iter().sum::<f64>() / values.len() as f64
}

fn max_over_mean(values: &[f64]) -> f64 {
    values.iter().copied().fold(0.0, f64::max) / mean(values)
}

fn std_dev(values: &[f64]) -> f64 {
    let m = mean(values);
    (values.iter().map(|v| (v - m).powi(2)).sum::<f64>() / values.len() as f64).sqrt()
}

/// Median of 9 runs of 200,000 lookups (and of the bare hash), in ns per call.
fn lookup_cost(ring: &Ring) -> (f64, f64) {
    const CALLS: u64 = 200_000;
    const RUNS: usize = 9;
    let keys: Vec<Vec<u8>> = (0..1024u32)
        .map(|i| format!("user:{i}").into_bytes())
        .collect();
    let time = |f: &dyn Fn(&[u8]) -> usize| {
        let mut runs: Vec<f64> = (0..RUNS)
            .map(|_| {
                let started = Instant::now();
                let mut sink = 0usize;
                for i in 0..CALLS {
                    sink = sink.wrapping_add(f(&keys[(i % 1024) as usize]));
                }
                black_box(sink);
                started.elapsed().as_nanos() as f64 / CALLS as f64
            })
            .collect();
        runs.sort_by(f64::total_cmp);
        runs[RUNS / 2]
    };
    let lookup = time(&|key| ring.preference_list(key).len());
    let hash = time(&|key| kv_ring::key_hash(key) as usize);
    (lookup, hash)
}
