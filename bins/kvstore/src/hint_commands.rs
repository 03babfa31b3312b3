//! `kvstore hints`: the hints one node (or every member) holds for replicas that missed
//! writes, per target, and how their delivery goes.

use std::fmt::Write as _;

use kv_client::{Client, HintsResponse, MemberState};
use serde_json::{Value, json};

use crate::cli::ClientArgs;

/// Asks the node behind `client`, or with `all` every member it lists, for its hints.
pub(crate) async fn hints(
    client: &mut Client,
    args: &ClientArgs,
    all: bool,
) -> Result<(String, Value), String> {
    let mut views = vec![client.hints().await.map_err(|e| e.to_string())?];
    if all {
        let members = client.membership().await.map_err(|e| e.to_string())?;
        for member in members.members {
            if member.node_id == views[0].node_id {
                continue;
            }
            if member.state != MemberState::Alive as i32 {
                views.push(unreachable_view(&member.node_id));
                continue;
            }
            match member_hints(args, &member.grpc_address).await {
                Ok(view) => views.push(view),
                Err(_) => views.push(unreachable_view(&member.node_id)),
            }
        }
    }
    Ok((text(&views), json(&views)))
}

async fn member_hints(args: &ClientArgs, address: &str) -> Result<HintsResponse, String> {
    let mut client = args.connect(address).await?;
    client.hints().await.map_err(|e| e.to_string())
}

/// A member that could not be asked: printed with no hints and `enabled` off.
fn unreachable_view(node_id: &str) -> HintsResponse {
    HintsResponse {
        node_id: format!("{node_id} (not reachable)"),
        ..HintsResponse::default()
    }
}

fn text(views: &[HintsResponse]) -> String {
    let mut out = String::new();
    for view in views {
        let held: u64 = view.targets.iter().map(|t| t.hints).sum();
        let _ = writeln!(
            out,
            "{}: {} hints held; stored {}, delivered {}, expired {}, dropped {}, sloppy acks {}{}",
            view.node_id,
            held,
            view.stored_total,
            view.delivered_total,
            view.expired_total,
            view.dropped_total,
            view.sloppy_acks_total,
            if view.sloppy_quorum {
                " (sloppy quorum by default)"
            } else {
                ""
            }
        );
        if !view.targets.is_empty() {
            let _ = writeln!(
                out,
                "  {:<12} {:>8} {:>10} {:>10} {:<13} {:>9}  LAST ERROR",
                "TARGET", "HINTS", "BYTES", "OLDEST", "STATE", "DELIVERED"
            );
        }
        for target in &view.targets {
            let _ = writeln!(
                out,
                "  {:<12} {:>8} {:>10} {:>9.1}s {:<13} {:>9}  {}",
                target.target,
                target.hints,
                target.bytes,
                target.oldest_age_ms as f64 / 1000.0,
                target.target_state,
                target.delivered,
                target.last_error
            );
        }
    }
    out
}

fn json(views: &[HintsResponse]) -> Value {
    let nodes: Vec<Value> = views
        .iter()
        .map(|view| {
            let targets: Vec<Value> = view
                .targets
                .iter()
                .map(|t| {
                    json!({
                        "target": t.target,
                        "hints": t.hints,
                        "bytes": t.bytes,
                        "oldest_age_ms": t.oldest_age_ms,
                        "target_state": t.target_state,
                        "delivered": t.delivered,
                        "last_error": t.last_error,
                        "last_attempt_ago_ms": t.last_attempt_ago_ms,
                    })
                })
                .collect();
            json!({
                "node_id": view.node_id,
                "enabled": view.enabled,
                "sloppy_quorum": view.sloppy_quorum,
                "max_age_ms": view.max_age_ms,
                "max_bytes": view.max_bytes,
                "max_target_bytes": view.max_target_bytes,
                "delivery_keys_per_sec": view.delivery_keys_per_sec,
                "stored": view.stored_total,
                "delivered": view.delivered_total,
                "expired": view.expired_total,
                "dropped": view.dropped_total,
                "sloppy_acks": view.sloppy_acks_total,
                "targets": targets,
            })
        })
        .collect();
    json!({ "nodes": nodes })
}
