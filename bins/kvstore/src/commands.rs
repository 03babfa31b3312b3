//! Client commands: call a node through kv-client and print the answer as text or JSON.

use std::fmt::Write as _;
use std::time::{Duration, UNIX_EPOCH};

use bytes::Bytes;
use kv_client::{Context, MemberState, ReadResult, RingChangeKind as Kind, WriteOptions};
use serde_json::{Value, json};

use crate::cli::{AaeCommand, ClientArgs, ClientCommand};
use crate::{hint_commands, ring_commands};

pub(crate) async fn run(command: ClientCommand, args: &ClientArgs) -> Result<(), String> {
    let mut client = args.connect(&args.addr).await?;
    let (text, json) = match command {
        ClientCommand::Put {
            key,
            value,
            w,
            context,
            mode,
        } => {
            let options = write_options(w, context.as_deref(), mode.mode())?;
            let written = client
                .put(&key, value, &options)
                .await
                .map_err(|e| e.to_string())?;
            (
                format!("OK\ncontext: {written}\n"),
                json!({"status": "SUCCESS", "context": written.to_string()}),
            )
        }
        ClientCommand::Delete {
            key,
            w,
            context,
            mode,
        } => {
            let options = write_options(w, context.as_deref(), mode.mode())?;
            let written = client
                .delete(&key, &options)
                .await
                .map_err(|e| e.to_string())?;
            (
                format!("OK (deleted)\ncontext: {written}\n"),
                json!({"status": "SUCCESS", "context": written.to_string()}),
            )
        }
        ClientCommand::Get { key, r } => {
            let read = client.get(&key, r).await.map_err(|e| e.to_string())?;
            (read_text(&key, &read), read_json(&read))
        }
        ClientCommand::Membership => {
            let view = client.membership().await.map_err(|e| e.to_string())?;
            membership_output(&view)
        }
        ClientCommand::Ring {
            transfers: true, ..
        } => {
            let view = client.ring_transfers().await.map_err(|e| e.to_string())?;
            ring_commands::transfers_output(&view)
        }
        ClientCommand::Ring { key, .. } => {
            let ring = client
                .ring(key.as_deref())
                .await
                .map_err(|e| e.to_string())?;
            ring_output(&ring)
        }
        ClientCommand::Join(change) => {
            ring_commands::change(&mut client, Kind::Join, change).await?
        }
        ClientCommand::Leave(change) => {
            ring_commands::change(&mut client, Kind::Leave, change).await?
        }
        ClientCommand::Remove(change) => {
            ring_commands::change(&mut client, Kind::Remove, change).await?
        }
        ClientCommand::Replace { old, new, dry_run } => {
            let change = crate::cli::ChangeArgs {
                nodes: vec![old, new],
                dry_run,
            };
            ring_commands::change(&mut client, Kind::Replace, change).await?
        }
        ClientCommand::Aae {
            command: AaeCommand::Status { ranges },
        } => {
            let status = client
                .anti_entropy(ranges)
                .await
                .map_err(|e| e.to_string())?;
            anti_entropy_output(&status)
        }
        ClientCommand::Hints { all } => hint_commands::hints(&mut client, args, all).await?,
        ClientCommand::Health => {
            let health = client.health().await.map_err(|e| e.to_string())?;
            ring_commands::health_output(&health)
        }
    };
    if args.json {
        crate::print_out(&format!("{json}\n"));
    } else {
        crate::print_out(&text);
    }
    Ok(())
}

fn write_options(
    w: Option<u32>,
    context: Option<&str>,
    mode: kv_client::WriteMode,
) -> Result<WriteOptions, String> {
    let context = context
        .map(str::parse::<Context>)
        .transpose()
        .map_err(|e| e.to_string())?;
    Ok(WriteOptions { w, context, mode })
}

/// Values print as text when they are UTF-8, otherwise as hex.
fn show(value: &Bytes) -> String {
    match std::str::from_utf8(value) {
        Ok(text) => text.to_owned(),
        Err(_) => value.iter().fold(String::from("0x"), |mut out, b| {
            let _ = write!(out, "{b:02x}");
            out
        }),
    }
}

fn read_text(key: &str, read: &ReadResult) -> String {
    match read {
        ReadResult::NotFound { context: None } => "NOT FOUND\n".to_owned(),
        ReadResult::NotFound {
            context: Some(context),
        } => {
            format!("NOT FOUND (deleted)\ncontext: {context}\n")
        }
        ReadResult::Value { value, context } => format!("{}\ncontext: {context}\n", show(value)),
        ReadResult::Siblings { siblings, context } => {
            let mut out = format!("{} siblings (concurrent writes):\n", siblings.len());
            for (i, sibling) in siblings.iter().enumerate() {
                let (node, counter) = &sibling.dot;
                let _ = writeln!(
                    out,
                    "  [{}] {}   (written via {node}:{counter})",
                    i + 1,
                    show(&sibling.value)
                );
            }
            let _ = writeln!(out, "context: {context}");
            let _ = writeln!(
                out,
                "resolve with: kvstore put {key} <value> --context {context}"
            );
            out
        }
    }
}

fn read_json(read: &ReadResult) -> Value {
    let context = read.context().map(ToString::to_string);
    match read {
        ReadResult::NotFound { .. } => json!({"status": "NOT_FOUND", "context": context}),
        ReadResult::Value { value, .. } => {
            json!({"status": "SUCCESS", "value": show(value), "context": context})
        }
        ReadResult::Siblings { siblings, .. } => json!({
            "status": "SUCCESS",
            "conflicts": siblings.iter().map(|s| json!({
                "value": show(&s.value), "node_id": s.dot.0, "counter": s.dot.1,
            })).collect::<Vec<_>>(),
            "context": context,
        }),
    }
}

fn state_name(state: i32) -> &'static str {
    match MemberState::try_from(state) {
        Ok(MemberState::Alive) => "ALIVE",
        Ok(MemberState::Suspect) => "SUSPECT",
        Ok(MemberState::Dead) => "DEAD",
        _ => "UNKNOWN",
    }
}

fn membership_output(view: &kv_client::GetMembershipResponse) -> (String, Value) {
    let mut text = format!(
        "view of {}\n{:<10} {:<8} {:<5} {:>5} {:<22} {:<22} {:<22} SINCE\n",
        view.node_id,
        "NODE",
        "STATE",
        "RING",
        "INC",
        "CLIENT ADDRESS",
        "INTERNAL ADDRESS",
        "GOSSIP ADDRESS"
    );
    for member in &view.members {
        let since = if member.last_change_unix_ms == 0 {
            "-".to_owned()
        } else {
            let at = UNIX_EPOCH + Duration::from_millis(member.last_change_unix_ms);
            let ago = at.elapsed().map_or(0, |d| d.as_secs());
            format!("{ago}s ago")
        };
        let ring = if member.in_ring { "yes" } else { "no" };
        let or_dash = |address: &'_ str| if address.is_empty() { "-" } else { address }.to_owned();
        let _ = writeln!(
            text,
            "{:<10} {:<8} {ring:<5} {:>5} {:<22} {:<22} {:<22} {since}",
            member.node_id,
            state_name(member.state),
            member.incarnation,
            or_dash(&member.grpc_address),
            or_dash(&member.internal_address),
            or_dash(&member.gossip_address),
        );
    }
    let json = json!({
        "node_id": view.node_id,
        "members": view.members.iter().map(|m| json!({
            "node_id": m.node_id, "state": state_name(m.state), "grpc_address": m.grpc_address,
            "internal_address": m.internal_address,
            "incarnation": m.incarnation, "last_change_unix_ms": m.last_change_unix_ms,
            "gossip_address": m.gossip_address, "in_ring": m.in_ring,
        })).collect::<Vec<_>>(),
    });
    (text, json)
}

fn ring_output(ring: &kv_client::GetRingResponse) -> (String, Value) {
    let moving = if ring.live_versions > 1 {
        format!(
            " ({} versions live: data is moving, see kvstore ring --transfers)",
            ring.live_versions
        )
    } else {
        String::new()
    };
    let mut text = format!(
        "ring version {}{moving}, N={}\n{:<10} {:>6} {:>9} {:>9}\n",
        ring.version, ring.replication_factor, "NODE", "VNODES", "PRIMARY", "STORED"
    );
    for node in &ring.nodes {
        let _ = writeln!(
            text,
            "{:<10} {:>6} {:>8.1}% {:>8.1}%",
            node.node_id,
            node.vnodes,
            node.primary_share * 100.0,
            node.replica_share * 100.0
        );
    }
    if !ring.preference_list.is_empty() {
        let _ = writeln!(
            text,
            "key hash: {:#018x}\nreplicas: {}",
            ring.key_hash,
            ring.preference_list.join(", ")
        );
    }
    let json = json!({
        "version": ring.version, "live_versions": ring.live_versions,
        "replication_factor": ring.replication_factor,
        "nodes": ring.nodes.iter().map(|n| json!({
            "node_id": n.node_id, "vnodes": n.vnodes,
            "primary_share": n.primary_share, "replica_share": n.replica_share,
        })).collect::<Vec<_>>(),
        "key_hash": ring.key_hash,
        "preference_list": ring.preference_list,
    });
    (text, json)
}

fn ago(ms: Option<u64>) -> String {
    ms.map_or_else(
        || "never".to_owned(),
        |ms| format!("{:.1}s ago", ms as f64 / 1000.0),
    )
}

fn anti_entropy_output(status: &kv_client::AntiEntropyResponse) -> (String, Value) {
    let mut text = if status.enabled {
        format!(
            "anti-entropy on {}: a round every {:.1}s\n",
            status.node_id,
            status.interval_ms as f64 / 1000.0
        )
    } else {
        format!(
            "anti-entropy on {}: off (--aae-interval-ms 0)\n",
            status.node_id
        )
    };
    let _ = writeln!(
        text,
        "index:      {} keys, root {:#018x} (rebuilt at start from {} keys in {} ms)\ntombstones: {} waiting, {} reaped\n",
        status.tree_items,
        status.tree_root,
        status.index_rebuild_keys,
        status.index_rebuild_ms,
        status.tombstones_pending,
        status.tombstones_reaped
    );
    let _ = writeln!(
        text,
        "{:<8} {:>9} {:>10} {:>8} {:>6} {:>9} {:>12} {:>10}  STATUS",
        "PEER", "EXCHANGES", "LAST", "TOOK", "RANGES", "DIFFERING", "REPAIRED", "MOVED"
    );
    for peer in &status.peers {
        let outcome = if peer.in_progress {
            "running".to_owned()
        } else if peer.last_error.is_empty() {
            "ok".to_owned()
        } else {
            format!("failed: {}", peer.last_error)
        };
        let _ = writeln!(
            text,
            "{:<8} {:>9} {:>10} {:>6}ms {:>6} {:>9} {:>5}/{:<6} {:>9}B  {outcome}",
            peer.node_id,
            peer.exchanges,
            ago(peer.last_started_ago_ms),
            peer.last_duration_ms,
            peer.last_ranges,
            peer.last_keys_differing,
            peer.last_keys_repaired,
            peer.keys_repaired,
            peer.bytes_moved
        );
    }
    if !status.ranges.is_empty() {
        let _ = writeln!(text, "\n{:<44} {:<16} AGREED", "RANGE", "REPLICAS");
        for range in &status.ranges {
            let agreed: Vec<String> = range
                .agreements
                .iter()
                .map(|a| format!("{} {}", a.node_id, ago(a.agreed_ago_ms)))
                .collect();
            let _ = writeln!(
                text,
                "[{:#018x}, {:#018x}] {:<16} {}",
                range.first,
                range.last,
                range.replicas.join(","),
                agreed.join(", ")
            );
        }
    }
    let json = json!({
        "node_id": status.node_id, "enabled": status.enabled, "interval_ms": status.interval_ms,
        "tree_items": status.tree_items, "tree_root": status.tree_root,
        "tombstones_pending": status.tombstones_pending,
        "tombstones_reaped": status.tombstones_reaped,
        "index_rebuild_keys": status.index_rebuild_keys, "index_rebuild_ms": status.index_rebuild_ms,
        "peers": status.peers.iter().map(|p| json!({
            "node_id": p.node_id, "exchanges": p.exchanges, "in_progress": p.in_progress,
            "keys_repaired": p.keys_repaired, "bytes_moved": p.bytes_moved,
            "last_started_ago_ms": p.last_started_ago_ms, "last_duration_ms": p.last_duration_ms,
            "last_ranges": p.last_ranges, "last_ranges_differing": p.last_ranges_differing,
            "last_keys_differing": p.last_keys_differing, "last_keys_repaired": p.last_keys_repaired,
            "last_error": p.last_error,
        })).collect::<Vec<_>>(),
        "ranges": status.ranges.iter().map(|r| json!({
            "first": r.first, "last": r.last, "replicas": r.replicas,
            "agreements": r.agreements.iter().map(|a| json!({
                "node_id": a.node_id, "agreed_ago_ms": a.agreed_ago_ms,
            })).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
    });
    (text, json)
}
