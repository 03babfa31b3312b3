//! `/status`: a small server-rendered page (HTML and SVG, no script) that refreshes
//! itself: this node, the members as it sees them (liveness, since when, ring share, and
//! each ALIVE member's keys and bytes, asked through its public health call), a
//! picture of the newest ring (each arc coloured by its primary owner), the ring
//! versions live, and the last membership events gossip reported.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use kv_node::{Node, PeerState, PeerTransport};

/// How often the page reloads itself, seconds.
const REFRESH_SECONDS: u32 = 2;
/// Colours of the ring's members, in member order (repeated past the tenth).
const PALETTE: [&str; 10] = [
    "#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7",
    "#9c755f", "#bab0ac",
];
const RING_RADIUS: f64 = 120.0;
const RING_CENTRE: f64 = 150.0;

/// Longest a peer's health call may take while the page is rendered.
const PEER_HEALTH_TIMEOUT: Duration = Duration::from_millis(500);
/// Most peers asked for their store size per render.
const MAX_PEERS_ASKED: usize = 64;

/// A member row: id, liveness, since when (Unix seconds), gRPC address, ring shares, and
/// its store's keys and bytes (when it answered).
struct MemberRow {
    id: String,
    state: &'static str,
    since_unix: Option<u64>,
    address: String,
    primary_share: Option<f64>,
    replica_share: Option<f64>,
    store: Option<(u64, u64)>,
}

/// Each ALIVE peer's (keys, bytes on disk), asked through its public health call.
async fn peer_stores(peers: &[kv_node::PeerStatus]) -> HashMap<String, (u64, u64)> {
    let mut calls = tokio::task::JoinSet::new();
    for peer in peers
        .iter()
        .filter(|p| p.state == PeerState::Alive)
        .take(MAX_PEERS_ASKED)
    {
        let Some(address) = peer.client_address else {
            continue;
        };
        let (id, address) = (peer.node_id.clone(), address.to_string());
        calls.spawn(async move {
            let ask = async {
                let health = kv_client::Client::connect(&address)
                    .await
                    .ok()?
                    .health()
                    .await
                    .ok()?;
                Some((health.storage_keys, health.storage_bytes))
            };
            (
                id,
                tokio::time::timeout(PEER_HEALTH_TIMEOUT, ask)
                    .await
                    .ok()
                    .flatten(),
            )
        });
    }
    let mut stores = HashMap::new();
    while let Some(joined) = calls.join_next().await {
        if let Ok((id, Some(store))) = joined {
            stores.insert(id, store);
        }
    }
    stores
}

fn state_name(state: PeerState) -> &'static str {
    match state {
        PeerState::Unknown => "UNKNOWN",
        PeerState::Alive => "ALIVE",
        PeerState::Suspect => "SUSPECT",
        PeerState::Dead => "DEAD",
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn unix_seconds(time: SystemTime) -> Option<u64> {
    time.duration_since(UNIX_EPOCH).ok().map(|d| d.as_secs())
}

/// The page for `node`, now.
pub(crate) async fn render<T: PeerTransport>(node: &Node<T>) -> String {
    let health = node.health();
    let peers = node.peer_statuses();
    let stores = peer_stores(&peers).await;
    let ring = node.ring();
    let ownership = ring.as_ref().map(|r| r.ownership()).unwrap_or_default();
    let share = |id: &str| ownership.iter().find(|o| o.node == id);
    let mut rows = vec![MemberRow {
        id: health.node_id.clone(),
        state: "ALIVE",
        since_unix: None,
        address: node.config().client_address.to_string(),
        primary_share: share(&health.node_id).map(|o| o.primary_share),
        replica_share: share(&health.node_id).map(|o| o.replica_share),
        store: Some((health.storage_keys, health.storage_bytes)),
    }];
    for peer in peers {
        rows.push(MemberRow {
            state: state_name(peer.state),
            since_unix: unix_seconds(peer.since),
            address: peer.client_address.map_or_else(
                || format!("{} (internal)", peer.internal_address),
                |a| a.to_string(),
            ),
            primary_share: share(&peer.node_id).map(|o| o.primary_share),
            replica_share: share(&peer.node_id).map(|o| o.replica_share),
            store: stores.get(&peer.node_id).copied(),
            id: peer.node_id,
        });
    }
    rows.sort_by(|a, b| a.id.cmp(&b.id));
    let colours: Vec<(String, &str)> = ownership
        .iter()
        .enumerate()
        .map(|(i, o)| (o.node.clone(), PALETTE[i % PALETTE.len()]))
        .collect();

    let mut page = String::new();
    let _ = write!(
        page,
        "<!doctype html><html><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"refresh\" content=\"{REFRESH_SECONDS}\">\
         <title>kvstore {id}</title><style>{STYLE}</style></head><body>\
         <h1>kvstore <span id=\"node\">{id}</span></h1>\
         <p id=\"summary\">{status} · ring version {version} ({live} live) · {members} ring \
         members · N={n} R={r} W={w} · {keys} keys, {bytes} bytes on disk</p>",
        id = escape(&health.node_id),
        status = if health.serving { "SERVING" } else { "JOINING" },
        version = health.ring_version,
        live = health.live_versions,
        members = health.ring_members,
        n = health.replication_factor,
        r = health.read_quorum,
        w = health.write_quorum,
        keys = health.storage_keys,
        bytes = health.storage_bytes,
    );
    page.push_str("<div class=\"row\"><div>");
    members_table(&mut page, &rows, &colours);
    page.push_str("</div><div>");
    match ring {
        Some(ring) => ring_svg(&mut page, ring.tokens(), &colours),
        None => page.push_str("<p>no ring yet (this node waits to be joined)</p>"),
    }
    page.push_str("</div></div>");
    events_list(&mut page, &node.stats().gossip.recent_events());
    page.push_str("</body></html>\n");
    page
}

fn events_list(page: &mut String, events: &[kv_node::MembershipEvent]) {
    page.push_str("<h2>Recent membership events</h2><ol id=\"events\" reversed>");
    if events.is_empty() {
        page.push_str("<li>none yet (static membership, or nothing changed)</li>");
    }
    let now = SystemTime::now();
    for event in events.iter().rev() {
        let ago = now.duration_since(event.at).map_or(0, |d| d.as_secs());
        let _ = write!(
            page,
            "<li class=\"event\">{ago} s ago: {id} {state}</li>",
            id = escape(&event.node_id),
            state = event.state.to_uppercase(),
        );
    }
    page.push_str("</ol>");
}

fn members_table(page: &mut String, rows: &[MemberRow], colours: &[(String, &str)]) {
    page.push_str(
        "<table id=\"members\"><tr><th></th><th>node</th><th>state</th><th>since</th>\
         <th>address</th><th>primary</th><th>replica share</th><th>keys</th><th>on disk</th></tr>",
    );
    let percent =
        |share: Option<f64>| share.map_or("-".to_owned(), |s| format!("{:.1}%", s * 100.0));
    for row in rows {
        let colour = colours
            .iter()
            .find(|(id, _)| *id == row.id)
            .map_or("transparent", |(_, c)| c);
        let now = unix_seconds(SystemTime::now()).unwrap_or(0);
        let since = row.since_unix.map_or_else(
            || "-".to_owned(),
            |s| format!("{} s ago", now.saturating_sub(s)),
        );
        let _ = write!(
            page,
            "<tr class=\"member {state}\" data-node=\"{id}\"><td><span class=\"swatch\" \
             style=\"background:{colour}\"></span></td><td>{id}</td><td class=\"state\">{state}\
             </td><td>{since}</td><td>{address}</td><td>{primary}</td><td>{replica}</td>\
             <td class=\"keys\">{keys}</td><td>{bytes}</td></tr>",
            id = escape(&row.id),
            state = row.state,
            address = escape(&row.address),
            primary = percent(row.primary_share),
            replica = percent(row.replica_share),
            keys = row
                .store
                .map_or("-".to_owned(), |(keys, _)| keys.to_string()),
            bytes = row
                .store
                .map_or("-".to_owned(), |(_, bytes)| megabytes(bytes)),
        );
    }
    page.push_str("</table>");
}

/// The ring as a circle of arcs, each from the previous token to its token, coloured by
/// that token's owner (the key range it is the primary replica of).
fn ring_svg<'a>(
    page: &mut String,
    tokens: impl ExactSizeIterator<Item = (u64, &'a str)>,
    colours: &[(String, &str)],
) {
    let tokens: Vec<(u64, &str)> = tokens.collect();
    let size = RING_CENTRE * 2.0;
    let _ = write!(
        page,
        "<svg id=\"ring\" width=\"{size}\" height=\"{size}\" viewBox=\"0 0 {size} {size}\">"
    );
    let Some(&(last, _)) = tokens.last() else {
        page.push_str("</svg>");
        return;
    };
    let mut previous = last;
    for &(token, owner) in &tokens {
        let colour = colours
            .iter()
            .find(|(id, _)| id == owner)
            .map_or("#888", |(_, c)| c);
        let (from, to) = (angle(previous), angle(token));
        let sweep = (to - from).rem_euclid(std::f64::consts::TAU);
        let large = u8::from(sweep > std::f64::consts::PI);
        let (x1, y1) = point(from);
        let (x2, y2) = point(to);
        let _ = write!(
            page,
            "<path class=\"arc\" data-owner=\"{owner}\" d=\"M{x1:.2} {y1:.2} A{RING_RADIUS} \
             {RING_RADIUS} 0 {large} 1 {x2:.2} {y2:.2}\" stroke=\"{colour}\"/>",
            owner = escape(owner),
        );
        previous = token;
    }
    page.push_str("</svg>");
}

fn megabytes(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1_000_000.0)
}

/// A ring position as an angle, clockwise from the top.
fn angle(position: u64) -> f64 {
    position as f64 / 18_446_744_073_709_551_616.0 * std::f64::consts::TAU
}

fn point(angle: f64) -> (f64, f64) {
    (
        RING_CENTRE + RING_RADIUS * angle.sin(),
        RING_CENTRE - RING_RADIUS * angle.cos(),
    )
}

const STYLE: &str = "body{font-family:sans-serif;margin:1.5em;color:#222}\
    table{border-collapse:collapse}td,th{padding:.3em .7em;text-align:left;white-space:nowrap}\
    tr.member{border-top:1px solid #ddd}.SUSPECT .state{color:#c80}.DEAD .state{color:#c00}\
    .ALIVE .state{color:#080}.swatch{display:inline-block;width:.9em;height:.9em}\
    .row{display:flex;gap:2em;align-items:flex-start}\
    path.arc{fill:none;stroke-width:22}";
