//! The ring's commands and views: `join`, `leave`, `remove` and `replace` (with their
//! plan), `ring --transfers`, and the ring lines of `health`.

use std::fmt::Write as _;

use kv_client::{
    ChangeRingResponse, Client, HealthResponse, RingChangeKind, RingTransfersResponse,
};
use serde_json::{Value, json};

use crate::cli::ChangeArgs;

/// Sends a ring change and shows its plan.
pub(crate) async fn change(
    client: &mut Client,
    kind: RingChangeKind,
    args: ChangeArgs,
) -> Result<(String, Value), String> {
    let plan = client
        .change_ring(kind, &args.nodes, args.dry_run)
        .await
        .map_err(|e| e.to_string())?;
    Ok(plan_output(&plan))
}

fn percent(share: f64) -> String {
    format!("{:.1}%", share * 100.0)
}

fn plan_output(plan: &ChangeRingResponse) -> (String, Value) {
    let verb = if plan.applied {
        "made"
    } else {
        "planned (dry run)"
    };
    let mut text = format!(
        "ring version {} {verb}: {}\nmembers: {}\n",
        plan.version,
        plan.change,
        plan.members.join(", ")
    );
    if plan.moves.is_empty() {
        let _ = writeln!(text, "no range moves");
    } else {
        let _ = writeln!(
            text,
            "{:<10} {:<20} {:>7} {:>8} {:>10}",
            "TO", "FROM", "RANGES", "SHARE", "~KEYS"
        );
        for m in &plan.moves {
            let _ = writeln!(
                text,
                "{:<10} {:<20} {:>7} {:>8} {:>10}",
                m.to,
                m.from.join(","),
                m.ranges,
                percent(m.share),
                m.keys_estimate
            );
        }
    }
    if plan.applied {
        let _ = writeln!(text, "follow the transfer with: kvstore ring --transfers");
    }
    let json = json!({
        "version": plan.version, "change": plan.change, "applied": plan.applied,
        "members": plan.members,
        "moves": plan.moves.iter().map(|m| json!({
            "to": m.to, "from": m.from, "ranges": m.ranges, "share": m.share,
            "keys_estimate": m.keys_estimate,
        })).collect::<Vec<_>>(),
    });
    (text, json)
}

fn seconds(ms: u64) -> String {
    format!("{:.1}s", ms as f64 / 1000.0)
}

/// `kvstore ring --transfers`.
pub(crate) fn transfers_output(view: &RingTransfersResponse) -> (String, Value) {
    let mut text = format!(
        "view of {} (cluster {}, N={})\n",
        view.node_id,
        if view.cluster_id.is_empty() {
            "-"
        } else {
            &view.cluster_id
        },
        view.replication_factor
    );
    let _ = writeln!(text, "live versions:");
    for version in &view.versions {
        let _ = writeln!(
            text,
            "  v{:<4} {:<28} {}",
            version.number,
            version.change,
            version.members.join(",")
        );
    }
    let _ = writeln!(text, "{:<10} {:>6} {:>7}", "NODE", "ACKED", "SYNCED");
    for node in &view.nodes {
        let _ = writeln!(
            text,
            "{:<10} {:>6} {:>7}",
            node.node_id, node.acked, node.synced
        );
    }
    if view.transfers.is_empty() {
        let _ = writeln!(text, "no transfers on {}", view.node_id);
    }
    for transfer in &view.transfers {
        transfer_text(&mut text, transfer);
    }
    if let Some(cleanup) = &view.cleanup {
        let _ = writeln!(
            text,
            "cleanup for v{}: {} keys no longer replicated here dropped{}",
            cleanup.version,
            cleanup.keys_dropped,
            if cleanup.done { "" } else { " so far" }
        );
    }
    (text, transfers_json(view))
}

fn transfer_text(text: &mut String, transfer: &kv_client::Transfer) {
    let elapsed_s = transfer.elapsed_ms as f64 / 1000.0;
    let rate = if elapsed_s > 0.0 {
        transfer.keys_moved as f64 / elapsed_s
    } else {
        0.0
    };
    let eta = transfer.eta_ms.map_or_else(|| "-".to_owned(), seconds);
    let _ = writeln!(
        text,
        "transfer for v{}: {}{} | {} keys, {} bytes in {} ({rate:.0} keys/s), ETA {eta}",
        transfer.version,
        transfer.state,
        if transfer.waiting_for.is_empty() {
            String::new()
        } else {
            format!(" (for {})", transfer.waiting_for.join(","))
        },
        transfer.keys_moved,
        transfer.bytes_moved,
        seconds(transfer.elapsed_ms),
    );
    for source in &transfer.sources {
        let status = if source.skipped {
            "skipped (DEAD)".to_owned()
        } else if !source.last_error.is_empty() {
            format!("retrying: {}", source.last_error)
        } else {
            String::new()
        };
        let _ = writeln!(
            text,
            "  from {:<10} {:>7} of {:>7} {:>9} keys {:>12} bytes  {status}",
            source.node_id,
            percent(source.share_done),
            percent(source.share_total),
            source.keys_moved,
            source.bytes_moved
        );
    }
}

fn transfers_json(view: &RingTransfersResponse) -> Value {
    json!({
        "node_id": view.node_id, "cluster_id": view.cluster_id,
        "replication_factor": view.replication_factor,
        "versions": view.versions.iter().map(|v| json!({
            "number": v.number, "change": v.change, "members": v.members,
        })).collect::<Vec<_>>(),
        "nodes": view.nodes.iter().map(|n| json!({
            "node_id": n.node_id, "acked": n.acked, "synced": n.synced,
        })).collect::<Vec<_>>(),
        "transfers": view.transfers.iter().map(|t| json!({
            "version": t.version, "state": t.state, "waiting_for": t.waiting_for,
            "elapsed_ms": t.elapsed_ms, "eta_ms": t.eta_ms,
            "keys_moved": t.keys_moved, "bytes_moved": t.bytes_moved,
            "sources": t.sources.iter().map(|s| json!({
                "node_id": s.node_id, "share_total": s.share_total, "share_done": s.share_done,
                "keys_moved": s.keys_moved, "bytes_moved": s.bytes_moved,
                "skipped": s.skipped, "last_error": s.last_error,
            })).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "cleanup": view.cleanup.as_ref().map(|c| json!({
            "version": c.version, "done": c.done, "keys_dropped": c.keys_dropped,
        })),
    })
}

/// `kvstore health`.
pub(crate) fn health_output(health: &HealthResponse) -> (String, Value) {
    let under = if health.ring_members > 0 && health.ring_members < health.replication_factor {
        " (UNDER-REPLICATED: fewer members than N; requests are refused until nodes join)"
    } else {
        ""
    };
    let moving = if health.live_versions > 1 {
        format!(", {} versions live (data moving)", health.live_versions)
    } else {
        String::new()
    };
    let text = format!(
        "node:     {}\nstatus:   {}\nmembers:  {} alive of {}\nring:     version {}, {} members{moving}{}{under}\nquorum:   N={} R={} W={}\nstorage:  {} keys, {} bytes on disk\n",
        health.node_id,
        health.status,
        health.members_alive,
        health.members_total,
        health.ring_version,
        health.ring_members,
        if health.ring_member {
            ""
        } else {
            ", this node is not one of them"
        },
        health.replication_factor,
        health.read_quorum,
        health.write_quorum,
        health.storage_keys,
        health.storage_bytes
    );
    let json = json!({
        "node_id": health.node_id, "status": health.status,
        "members_alive": health.members_alive, "members_total": health.members_total,
        "n": health.replication_factor, "r": health.read_quorum, "w": health.write_quorum,
        "storage_keys": health.storage_keys, "storage_bytes": health.storage_bytes,
        "ring_version": health.ring_version, "ring_members": health.ring_members,
        "ring_member": health.ring_member, "live_versions": health.live_versions,
        "cluster_id": health.cluster_id,
    });
    (text, json)
}
