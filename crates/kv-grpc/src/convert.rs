//! Conversions between the public API's messages and the node's types: versions, Get
//! answers, members, health and anti-entropy (the ring's are in `convert_ring.rs`).

use std::time::UNIX_EPOCH;

use kv_clock::{ClockError, Dot, VersionVector};
use kv_node::{AntiEntropyStatus, Health, PeerState, PeerStatus, RangeAgreement};
use kv_proto::kvstore as api;
use kv_storage::Siblings;

/// A version vector as the API spells it.
pub fn version_to_api(version: &VersionVector) -> api::Version {
    api::Version {
        entries: version
            .iter()
            .map(|(actor, counter)| api::VersionEntry {
                node_id: actor.to_string(),
                counter,
            })
            .collect(),
    }
}

/// A version the API carries, validated (counters ≥ 1, no repeated or bad node ids).
pub fn version_from_api(version: Option<&api::Version>) -> Result<VersionVector, ClockError> {
    let entries = version.map_or(&[][..], |v| v.entries.as_slice());
    VersionVector::from_entries(entries.iter().map(|e| (e.node_id.as_str(), e.counter)))
}

/// A version's entries as (node id, counter), moved out of the message unvalidated (the
/// node validates them with the rest of the request).
pub(crate) fn version_entries(version: Option<api::Version>) -> Vec<(String, u64)> {
    version.map_or_else(Vec::new, |v| {
        v.entries
            .into_iter()
            .map(|e| (e.node_id, e.counter))
            .collect()
    })
}

fn dot_to_api(dot: &Dot) -> api::Version {
    api::Version {
        entries: vec![api::VersionEntry {
            node_id: dot.actor.to_string(),
            counter: dot.counter,
        }],
    }
}

/// Builds a Get answer. Tombstones are hidden when live values exist (the context still
/// covers them, so the next write with it clears them); a key whose versions are all
/// tombstones, or that was never written, is NOT_FOUND.
pub fn get_response(merged: Option<&Siblings>) -> api::GetResponse {
    let Some(merged) = merged else {
        return api::GetResponse {
            status: api::Status::NotFound.into(),
            ..api::GetResponse::default()
        };
    };
    let context = merged.join();
    let live: Vec<(Dot, &bytes::Bytes)> = merged
        .siblings()
        .filter_map(|(dot, value)| value.as_ref().map(|v| (dot, v)))
        .collect();
    let mut response = api::GetResponse {
        status: api::Status::Success.into(),
        context: Some(version_to_api(&context)),
        ..api::GetResponse::default()
    };
    match live.as_slice() {
        [] => response.status = api::Status::NotFound.into(),
        [(_, value)] => {
            response.value = Some(api::VersionedValue {
                value: (*value).clone(),
                version: Some(version_to_api(&context)),
                deleted: false,
            });
        }
        siblings => {
            response.conflicts = siblings
                .iter()
                .map(|(dot, value)| api::VersionedValue {
                    value: (*value).clone(),
                    version: Some(dot_to_api(dot)),
                    deleted: false,
                })
                .collect();
        }
    }
    response
}

/// A peer as the Membership service lists it.
pub(crate) fn member(peer: PeerStatus, in_ring: bool) -> api::Member {
    let state = match peer.state {
        PeerState::Alive => api::MemberState::Alive,
        PeerState::Suspect => api::MemberState::Suspect,
        PeerState::Dead => api::MemberState::Dead,
        PeerState::Unknown => api::MemberState::Unknown,
    };
    let since_ms = peer
        .since
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    api::Member {
        node_id: peer.node_id,
        grpc_address: peer
            .client_address
            .map(|a| a.to_string())
            .unwrap_or_default(),
        internal_address: peer.internal_address.to_string(),
        state: state.into(),
        incarnation: peer.incarnation,
        gossip_address: peer
            .gossip_address
            .map(|a| a.to_string())
            .unwrap_or_default(),
        last_change_unix_ms: since_ms,
        in_ring,
    }
}

/// A node's health as the Membership service reports it.
pub(crate) fn health(health: Health) -> api::HealthResponse {
    api::HealthResponse {
        status: if health.serving { "SERVING" } else { "JOINING" }.into(),
        node_id: health.node_id,
        members_alive: health.members_alive as u32,
        members_total: health.members_total as u32,
        replication_factor: health.replication_factor as u32,
        read_quorum: health.read_quorum as u32,
        write_quorum: health.write_quorum as u32,
        storage_keys: health.storage_keys,
        storage_bytes: health.storage_bytes,
        ring_version: health.ring_version,
        ring_members: health.ring_members as u32,
        ring_member: health.ring_member,
        live_versions: health.live_versions as u32,
        cluster_id: cluster_id(health.cluster_id),
    }
}

/// A cluster id as the API shows it: 16 hex digits, empty for none.
pub(crate) fn cluster_id(id: u64) -> String {
    if id == 0 {
        String::new()
    } else {
        format!("{id:016x}")
    }
}

pub(crate) fn millis(duration: std::time::Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// A node's anti-entropy as the Membership service reports it (ranges left empty).
pub(crate) fn anti_entropy(node_id: &str, status: AntiEntropyStatus) -> api::AntiEntropyResponse {
    let (rebuild_keys, rebuild_ms) = status
        .rebuild
        .map_or((0, 0), |(keys, took)| (keys, millis(took)));
    api::AntiEntropyResponse {
        node_id: node_id.to_owned(),
        enabled: status.enabled,
        interval_ms: millis(status.interval),
        tree_items: status.tree_items,
        tree_root: status.tree_root,
        tombstones_pending: status.tombstones_pending,
        tombstones_reaped: status.tombstones_reaped,
        index_rebuild_keys: rebuild_keys,
        index_rebuild_ms: rebuild_ms,
        peers: status
            .peers
            .into_iter()
            .map(|peer| api::PeerExchange {
                node_id: peer.peer,
                exchanges: peer.exchanges,
                in_progress: peer.in_progress,
                keys_repaired: peer.keys_repaired,
                bytes_moved: peer.bytes_moved,
                last_started_ago_ms: peer.last_started_ago.map(millis),
                last_duration_ms: peer.last_duration.map_or(0, millis),
                last_ranges: u32::try_from(peer.last_ranges).unwrap_or(u32::MAX),
                last_ranges_differing: peer.last_stats.map_or(0, |s| s.ranges_differing),
                last_keys_differing: peer.last_stats.map_or(0, |s| s.keys_differing),
                last_keys_repaired: peer.last_keys_repaired,
                last_error: peer.last_error.unwrap_or_default(),
            })
            .collect(),
        ranges: Vec::new(),
    }
}

/// One range's agreement as the Membership service reports it.
pub(crate) fn range_agreement(agreement: RangeAgreement) -> api::RangeAgreement {
    api::RangeAgreement {
        first: agreement.range.first(),
        last: agreement.range.last(),
        replicas: agreement.replicas,
        agreements: agreement
            .agreed_ago
            .into_iter()
            .map(|(node_id, ago)| api::ReplicaAgreement {
                node_id,
                agreed_ago_ms: ago.map(millis),
            })
            .collect(),
    }
}
