//! Metrics of the calls to peers: how many items each `Replica/Batch` carried, how long
//! each took per peer, and how many failed. Registered by the node's admin listener
//! through `PeerTransport::register_metrics`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

use crate::wire::MAX_BATCH_ITEMS;

/// Upper bounds of the batch call latency buckets, seconds: 0.25 ms to 5 s.
const BATCH_SECONDS_BUCKETS: [f64; 12] = [
    0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0, 5.0,
];

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PeerLabels {
    peer: String,
}

fn batch_seconds() -> Histogram {
    Histogram::new(BATCH_SECONDS_BUCKETS)
}

/// The transport's metrics (cheap to clone: the values are shared).
#[derive(Debug, Clone)]
pub(crate) struct PeerMetrics {
    batch_items: Histogram,
    batch_seconds: Family<PeerLabels, Histogram, fn() -> Histogram>,
    batch_failures: Family<PeerLabels, Counter>,
}

impl Default for PeerMetrics {
    fn default() -> Self {
        let mut bounds = Vec::new();
        let mut bound = 1.0;
        while bound < MAX_BATCH_ITEMS as f64 {
            bounds.push(bound);
            bound *= 4.0;
        }
        bounds.push(MAX_BATCH_ITEMS as f64);
        Self {
            batch_items: Histogram::new(bounds),
            batch_seconds: Family::new_with_constructor(batch_seconds),
            batch_failures: Family::default(),
        }
    }
}

impl PeerMetrics {
    /// Records one batch call to `peer`: its item count, duration and whether it failed.
    pub(crate) fn record_batch(&self, peer: &str, items: usize, seconds: f64, failed: bool) {
        let labels = PeerLabels {
            peer: peer.to_owned(),
        };
        self.batch_items.observe(items as f64);
        self.batch_seconds.get_or_create(&labels).observe(seconds);
        if failed {
            self.batch_failures.get_or_create(&labels).inc();
        }
    }

    pub(crate) fn register(&self, registry: &mut Registry) {
        registry.register(
            "kvstore_peer_batch_items",
            "Replica reads and writes carried by each Replica/Batch call",
            self.batch_items.clone(),
        );
        registry.register_with_unit(
            "kvstore_peer_batch_duration",
            "Time of each Replica/Batch call, by peer",
            Unit::Seconds,
            self.batch_seconds.clone(),
        );
        registry.register(
            "kvstore_peer_batch_failures",
            "Replica/Batch calls that failed (unreachable, timeout, bad reply), by peer",
            self.batch_failures.clone(),
        );
    }
}
