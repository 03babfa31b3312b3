//! Client request metrics: a count per operation and outcome, and a latency histogram per
//! operation, recorded by the coordinator for every client request whatever transport
//! brought it. They are Prometheus metric families (`prometheus-client`), so an admin
//! listener registers them as they are; values computed at scrape time (store size,
//! members, ring) are the listener's.

use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

use crate::NodeError;

/// Upper bounds of the latency buckets, seconds: 0.5 ms to 10 s.
const LATENCY_BUCKETS_SECONDS: [f64; 14] = [
    0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// A client operation, as a metric label.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types, clippy::enum_variant_names)]
pub enum RequestOp {
    /// A Put with a value.
    put,
    /// A Put without a value (a Delete).
    delete,
    /// A Get.
    get,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    op: RequestOp,
    /// `ok`, or the error class (`invalid_argument`, `unavailable`, ...).
    outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OpLabels {
    op: RequestOp,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QuorumLabels {
    op: RequestOp,
    /// `replicas_failed`, `timeout`, `under_replicated`, `no_coordinator`, ...
    reason: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RefusedLabels {
    /// `client` or `internal`.
    listener: &'static str,
    /// `overloaded`, `peer_overloaded`, `unauthenticated` or `permission_denied`.
    reason: &'static str,
}

/// Upper bounds of the siblings-per-read buckets.
const SIBLING_BUCKETS: [f64; 7] = [1.0, 2.0, 3.0, 5.0, 10.0, 20.0, 64.0];

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS_SECONDS)
}

/// The node's client request metrics.
#[derive(Debug)]
pub struct RequestMetrics {
    requests: Family<OutcomeLabels, Counter>,
    latency: Family<OpLabels, Histogram, fn() -> Histogram>,
    quorum_failures: Family<QuorumLabels, Counter>,
    siblings: Histogram,
    refused: Family<RefusedLabels, Counter>,
}

impl Default for RequestMetrics {
    fn default() -> Self {
        Self {
            requests: Family::default(),
            latency: Family::new_with_constructor(latency_histogram),
            quorum_failures: Family::default(),
            siblings: Histogram::new(SIBLING_BUCKETS),
            refused: Family::default(),
        }
    }
}

impl RequestMetrics {
    /// Records one request's outcome and how long the node took to answer it.
    pub fn record<T>(&self, op: RequestOp, result: &Result<T, NodeError>, took: Duration) {
        let outcome = match result {
            Ok(_) => "ok",
            Err(error) => error.kind().label(),
        };
        if let Some(reason) = result.as_ref().err().and_then(NodeError::quorum_failure) {
            self.quorum_failures
                .get_or_create(&QuorumLabels { op, reason })
                .inc();
        }
        self.requests
            .get_or_create(&OutcomeLabels { op, outcome })
            .inc();
        self.latency
            .get_or_create(&OpLabels { op })
            .observe(took.as_secs_f64());
    }

    /// Records how many values (siblings) a successful read returned.
    pub fn record_siblings(&self, values: usize) {
        self.siblings.observe(values as f64);
    }

    /// Records a call a listener refused before running it: `reason` is `overloaded`,
    /// `peer_overloaded`, `unauthenticated` or `permission_denied`.
    pub fn record_refused(&self, listener: &'static str, reason: &'static str) {
        self.refused
            .get_or_create(&RefusedLabels { listener, reason })
            .inc();
    }

    /// Adds the families to `registry` (sharing their values: later requests show).
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "kvstore_requests",
            "Client requests answered, by operation and outcome",
            self.requests.clone(),
        );
        registry.register_with_unit(
            "kvstore_request_duration",
            "Time to answer a client request, by operation",
            Unit::Seconds,
            self.latency.clone(),
        );
        registry.register(
            "kvstore_quorum_failures",
            "Client requests that missed their quorum, by operation and reason",
            self.quorum_failures.clone(),
        );
        registry.register(
            "kvstore_read_siblings",
            "Values (siblings) each successful read of an existing key returned",
            self.siblings.clone(),
        );
        registry.register(
            "kvstore_calls_refused",
            "Calls a listener refused before running them, by listener and reason",
            self.refused.clone(),
        );
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    /// `alive`, `suspect`, `dead`, or `rejoined` (this node, under a renewed identity).
    state: &'static str,
}

/// What the failure detector saw: member state changes (SUSPECT is a probe that went
/// unanswered) and its datagram counters, copied from the gossip state machine.
#[derive(Debug, Default)]
pub struct GossipMetrics {
    state_changes: Family<StateLabels, Counter>,
    unsealed: Family<DropLabels, Counter>,
    stats: std::sync::Mutex<kv_gossip::GossipStats>,
    recent: std::sync::Mutex<std::collections::VecDeque<MembershipEvent>>,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DropLabels {
    /// `malformed`, `unknown_key`, `forged`, `stale` or `replayed`.
    reason: &'static str,
}

/// Most recent membership events kept for the status page.
pub const RECENT_EVENTS: usize = 20;

/// One membership change this node saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MembershipEvent {
    /// When this node saw it.
    pub at: std::time::SystemTime,
    /// The member.
    pub node_id: String,
    /// `alive`, `suspect`, `dead`, or `rejoined` (this node, under a renewed identity).
    pub state: &'static str,
}

impl GossipMetrics {
    /// Counts one membership event.
    pub(crate) fn record_event(&self, event: &kv_gossip::GossipEvent) {
        let state = match event {
            kv_gossip::GossipEvent::StateChanged { state, .. } => match state {
                kv_gossip::MemberState::Alive => "alive",
                kv_gossip::MemberState::Suspect => "suspect",
                kv_gossip::MemberState::Dead => "dead",
            },
            kv_gossip::GossipEvent::Rejoined { .. } => "rejoined",
        };
        self.state_changes
            .get_or_create(&StateLabels { state })
            .inc();
        let node_id = match event {
            kv_gossip::GossipEvent::StateChanged { identity, .. }
            | kv_gossip::GossipEvent::Rejoined { identity } => identity.node_id.clone(),
        };
        let mut recent = self
            .recent
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if recent.len() == RECENT_EVENTS {
            recent.pop_front();
        }
        recent.push_back(MembershipEvent {
            at: std::time::SystemTime::now(),
            node_id,
            state,
        });
    }

    /// Counts a datagram dropped because it could not be opened under the keyring.
    pub(crate) fn record_unsealed(&self, error: kv_gossip::OpenError) {
        let reason = error.label();
        self.unsealed.get_or_create(&DropLabels { reason }).inc();
    }

    /// The last [`RECENT_EVENTS`] membership events, oldest first.
    pub fn recent_events(&self) -> Vec<MembershipEvent> {
        self.recent
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .cloned()
            .collect()
    }

    /// Keeps the gossip state machine's latest counters.
    pub(crate) fn set_stats(&self, stats: &kv_gossip::GossipStats) {
        let mut kept = self
            .stats
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if *kept != *stats {
            kept.clone_from(stats);
        }
    }

    /// Adds the families to `registry`.
    pub fn register(&self, registry: &mut Registry) {
        use prometheus_client::metrics::counter::ConstCounter;
        registry.register(
            "kvstore_gossip_state_changes",
            "Member state changes this node's failure detector saw, by new state",
            self.state_changes.clone(),
        );
        registry.register(
            "kvstore_gossip_datagrams_unsealed",
            "Gossip datagrams dropped because they failed to open under the keyring \
             (forged, replayed, stale, unknown key, malformed)",
            self.unsealed.clone(),
        );
        let stats = self
            .stats
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        for (name, help, value) in [
            (
                "kvstore_gossip_packets_in",
                "Gossip datagrams handled",
                stats.packets_in,
            ),
            (
                "kvstore_gossip_packets_rejected",
                "Gossip datagrams rejected as malformed, foreign or from this node",
                stats.packets_rejected,
            ),
            (
                "kvstore_gossip_packets_oversized",
                "Gossip datagrams over the size limit, dropped unread",
                stats.packets_oversized,
            ),
            (
                "kvstore_gossip_outgoing_dropped",
                "Gossip datagrams not sent because the queue was full",
                stats.outgoing_dropped,
            ),
            (
                "kvstore_gossip_suspicions_expired",
                "Suspicions that outlived the detector's timers and were turned into DEAD",
                stats.suspicions_expired,
            ),
        ] {
            registry.register(name, help, ConstCounter::new(value));
        }
    }
}
