//! Conversions for the ring's views and changes: ownership of the newest version, change
//! requests and their plans, and the ring's transfers.

use kv_node::{
    ChangePlan, CleanupProgress, NodeError, RingChange, Routing, TransferProgress, TransferState,
};
use kv_proto::kvstore as api;

use crate::convert::{cluster_id, millis};

/// Each node's share of the newest ring version (empty without a layout).
pub(crate) fn ring(routing: Option<&Routing>) -> api::GetRingResponse {
    let Some(routing) = routing else {
        return api::GetRingResponse::default();
    };
    let ring = routing.newest();
    api::GetRingResponse {
        replication_factor: routing.replicas() as u32,
        nodes: ring
            .ownership()
            .into_iter()
            .map(|o| api::NodeOwnership {
                node_id: o.node,
                vnodes: o.vnodes,
                primary_share: o.primary_share,
                replica_share: o.replica_share,
            })
            .collect(),
        version: routing.newest_number(),
        live_versions: routing.versions_live() as u32,
        ..api::GetRingResponse::default()
    }
}

/// A change request as the node takes it.
pub(crate) fn change(request: &api::ChangeRingRequest) -> Result<RingChange, NodeError> {
    use api::RingChangeKind as Kind;
    let nodes = request.nodes.clone();
    match Kind::try_from(request.kind) {
        Ok(Kind::Join) => Ok(RingChange::Join(nodes)),
        Ok(Kind::Leave) => Ok(RingChange::Leave(nodes)),
        Ok(Kind::Remove) => Ok(RingChange::Remove(nodes)),
        Ok(Kind::Replace) => match <[String; 2]>::try_from(nodes) {
            Ok([old, new]) => Ok(RingChange::Replace { old, new }),
            Err(nodes) => Err(NodeError::BadRingChange(format!(
                "replace takes two nodes, the old one then the new one; got {}",
                nodes.len()
            ))),
        },
        Ok(Kind::RingChangeUnspecified) | Err(_) => Err(NodeError::BadRingChange(format!(
            "kind {} is not one of JOIN, LEAVE, REMOVE, REPLACE",
            request.kind
        ))),
    }
}

/// A change's plan as the API reports it.
pub(crate) fn plan(plan: ChangePlan) -> api::ChangeRingResponse {
    api::ChangeRingResponse {
        version: plan.version,
        change: plan.change,
        applied: plan.applied,
        moves: plan
            .moves
            .into_iter()
            .map(|m| api::PlannedMove {
                to: m.to,
                from: m.from,
                ranges: u32::try_from(m.ranges).unwrap_or(u32::MAX),
                share: m.share,
                keys_estimate: m.keys_estimate,
            })
            .collect(),
        members: plan.members,
    }
}

/// The ring's versions and every node's progress as `node` knows them, and its transfers.
pub(crate) fn transfers(
    node: &str,
    routing: Option<&Routing>,
    progress: Vec<TransferProgress>,
    cleanup: CleanupProgress,
) -> api::RingTransfersResponse {
    let mut response = api::RingTransfersResponse {
        node_id: node.to_owned(),
        transfers: progress.into_iter().map(transfer).collect(),
        cleanup: (cleanup.version > 0).then_some(api::Cleanup {
            version: cleanup.version,
            done: cleanup.done,
            keys_dropped: cleanup.keys_dropped,
        }),
        ..api::RingTransfersResponse::default()
    };
    let Some(layout) = routing.map(Routing::layout) else {
        return response;
    };
    response.cluster_id = cluster_id(layout.cluster_id());
    response.replication_factor = layout.replicas() as u32;
    response.versions = layout
        .live()
        .map(|v| api::RingVersionInfo {
            number: v.number,
            change: v.change.to_string(),
            members: v.members.keys().cloned().collect(),
        })
        .collect();
    response.nodes = layout
        .nodes()
        .into_iter()
        .map(|n| api::NodeProgress {
            node_id: n.to_owned(),
            acked: layout.acked(n),
            synced: layout.synced(n),
        })
        .collect();
    response
}

fn transfer(progress: TransferProgress) -> api::Transfer {
    let (state, waiting_for) = match &progress.state {
        TransferState::WaitingForAcks { missing } => ("WAITING_FOR_ACKS", missing.clone()),
        TransferState::Copying => ("COPYING", Vec::new()),
        TransferState::Done => ("DONE", Vec::new()),
    };
    api::Transfer {
        version: progress.version,
        state: state.into(),
        waiting_for,
        elapsed_ms: millis(progress.elapsed),
        eta_ms: progress.eta.map(millis),
        keys_moved: progress.keys_moved(),
        bytes_moved: progress.bytes_moved(),
        sources: progress
            .sources
            .into_iter()
            .map(|s| api::TransferSource {
                node_id: s.peer,
                share_total: s.share_total,
                share_done: s.share_done,
                keys_moved: s.keys_moved,
                bytes_moved: s.bytes_moved,
                skipped: s.skipped,
                last_error: s.last_error.unwrap_or_default(),
            })
            .collect(),
    }
}
