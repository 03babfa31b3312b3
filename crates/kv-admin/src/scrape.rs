//! One scrape of `/metrics`: a registry built for the scrape from the node's recorded
//! request metrics and the values read from the node right now.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode as encode_text;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::registry::{Registry, Unit};

use kv_node::{Node, PeerState, PeerTransport};

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TargetLabels {
    target: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    request: &'static str,
}

fn state_label(state: PeerState) -> &'static str {
    match state {
        PeerState::Unknown => "unknown",
        PeerState::Alive => "alive",
        PeerState::Suspect => "suspect",
        PeerState::Dead => "dead",
    }
}

fn gauge(value: u64) -> ConstGauge {
    ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX))
}

/// The node's metrics in the text format.
pub(crate) fn encode<T: PeerTransport>(node: &Node<T>) -> Result<String, std::fmt::Error> {
    let mut registry = Registry::default();
    node.stats().requests.register(&mut registry);
    node.register_transport_metrics(&mut registry);
    node.stats().gossip.register(&mut registry);
    register_node(&mut registry, node);
    register_background(&mut registry, node);
    register_hints(&mut registry, node);
    let mut text = String::new();
    encode_text(&mut text, &registry)?;
    Ok(text)
}

/// Store, members and ring.
fn register_node<T: PeerTransport>(registry: &mut Registry, node: &Node<T>) {
    let health = node.health();
    registry.register(
        "kvstore_serving",
        "1 when the node serves client requests, 0 while it joins",
        gauge(u64::from(health.serving)),
    );
    registry.register(
        "kvstore_storage_keys",
        "Keys in the node's store, tombstoned ones included",
        gauge(health.storage_keys),
    );
    registry.register_with_unit(
        "kvstore_storage",
        "Bytes the store takes on disk",
        Unit::Bytes,
        gauge(health.storage_bytes),
    );
    let members = Family::<StateLabels, Gauge>::default();
    for state in [PeerState::Alive, PeerState::Suspect, PeerState::Dead] {
        members
            .get_or_create(&StateLabels {
                state: state_label(state),
            })
            .set(0);
    }
    members.get_or_create(&StateLabels { state: "alive" }).inc();
    for peer in node.peer_statuses() {
        members
            .get_or_create(&StateLabels {
                state: state_label(peer.state),
            })
            .inc();
    }
    registry.register(
        "kvstore_members",
        "Members this node knows, itself included, by liveness",
        members,
    );
    registry.register(
        "kvstore_ring_version",
        "The newest ring version this node knows",
        gauge(health.ring_version),
    );
    registry.register(
        "kvstore_ring_members",
        "Members of the newest ring version",
        gauge(health.ring_members as u64),
    );
    registry.register(
        "kvstore_ring_live_versions",
        "Ring versions live (more than one while data moves)",
        gauge(health.live_versions as u64),
    );
}

/// Read repair, anti-entropy, transfers and cleanup.
fn register_background<T: PeerTransport>(registry: &mut Registry, node: &Node<T>) {
    let stats = node.stats();
    let load =
        |counter: &std::sync::atomic::AtomicU64| counter.load(std::sync::atomic::Ordering::Relaxed);
    registry.register(
        "kvstore_read_repairs",
        "Read repairs sent to stale replicas",
        ConstCounter::new(load(&stats.repairs_sent)),
    );
    registry.register(
        "kvstore_read_repairs_skipped",
        "Read repairs skipped because the repair budget was in use",
        ConstCounter::new(load(&stats.repairs_skipped)),
    );
    let shed = Family::<RequestLabels, Counter>::default();
    for (request, counter) in [
        ("write", &stats.write_follow_ups_shed),
        ("read", &stats.read_follow_ups_shed),
    ] {
        shed.get_or_create(&RequestLabels { request })
            .inc_by(load(counter));
    }
    registry.register(
        "kvstore_follow_ups_shed",
        "Requests whose follow-up (late replies, then hints or read repair) was skipped \
         because --max-follow-ups were already waiting",
        shed,
    );
    let aae = node.anti_entropy_status();
    registry.register(
        "kvstore_aae_keys_repaired",
        "Keys anti-entropy exchanges repaired, either way",
        ConstCounter::new(aae.peers.iter().map(|p| p.keys_repaired).sum::<u64>()),
    );
    registry.register(
        "kvstore_aae_exchanges",
        "Anti-entropy exchanges run",
        ConstCounter::new(aae.peers.iter().map(|p| p.exchanges).sum::<u64>()),
    );
    registry.register(
        "kvstore_tombstones_pending",
        "Tombstones waiting to be reaped",
        gauge(aae.tombstones_pending),
    );
    registry.register(
        "kvstore_tombstones_reaped",
        "Tombstones reaped",
        ConstCounter::new(aae.tombstones_reaped),
    );
    let transfers = node.transfers();
    // A gauge, not a counter: the node keeps only its last transfers on record.
    registry.register(
        "kvstore_transfer_keys_moved",
        "Keys copied by the ring transfers this node keeps on record (its last 16)",
        gauge(
            transfers
                .iter()
                .map(kv_node::TransferProgress::keys_moved)
                .sum::<u64>(),
        ),
    );
    registry.register(
        "kvstore_cleanup_keys_dropped",
        "Keys the last cleanup pass dropped (no longer replicated here)",
        gauge(node.cleanup_progress().keys_dropped),
    );
}

/// Hinted handoff: hints held per target and what happened to hints since start.
fn register_hints<T: PeerTransport>(registry: &mut Registry, node: &Node<T>) {
    let status = node.hints_status();
    let pending = Family::<TargetLabels, Gauge>::default();
    let pending_bytes = Family::<TargetLabels, Gauge>::default();
    for target in &status.targets {
        let labels = TargetLabels {
            target: target.target.clone(),
        };
        pending
            .get_or_create(&labels)
            .set(i64::try_from(target.hints).unwrap_or(i64::MAX));
        pending_bytes
            .get_or_create(&labels)
            .set(i64::try_from(target.bytes).unwrap_or(i64::MAX));
    }
    registry.register(
        "kvstore_hints_pending",
        "Hints this node holds for a replica that missed writes, per target",
        pending,
    );
    registry.register_with_unit(
        "kvstore_hints_pending",
        "Bytes of hints this node holds, per target",
        Unit::Bytes,
        pending_bytes,
    );
    let counters = status.counters;
    for (name, help, value) in [
        (
            "kvstore_hints_stored",
            "Hints stored (a coalesced one counts each time)",
            counters.stored,
        ),
        (
            "kvstore_hints_delivered",
            "Hints delivered to their target or the key's current replicas",
            counters.delivered,
        ),
        (
            "kvstore_hints_expired",
            "Hints dropped undelivered after --hint-max-age",
            counters.expired,
        ),
        (
            "kvstore_hints_dropped",
            "Hints refused because a hint cap was reached",
            counters.dropped,
        ),
        (
            "kvstore_sloppy_acks",
            "Write acknowledgements that came from a fallback's hint",
            counters.sloppy_acks,
        ),
    ] {
        registry.register(name, help, ConstCounter::new(value));
    }
}
