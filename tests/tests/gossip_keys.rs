//! Sealed gossip with real processes: a cluster whose datagrams are sealed under a
//! keyring rotates its key while running without a member ever turning SUSPECT, and drops
//! (and counts) datagrams that are garbage, sealed with a foreign key, forged or replayed.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use kv_client::MemberState;
use kv_e2e::scrape::{http_get, parse, total};
use kv_e2e::{GOSSIP, TestCluster};
use kv_gossip::{Keyring, Sealer};

const OLD: &str = "1111111111111111111111111111111111111111111111111111111111111111";
const NEW: &str = "2222222222222222222222222222222222222222222222222222222222222222";
/// Bound on each wait; a keyring is re-read every second.
const WAIT_LIMIT: Duration = Duration::from_secs(15);
const RELOADED: &str = "gossip keyring reloaded";

/// A counter of `node`, summed over the labels not given.
async fn metric(cluster: &TestCluster, node: &str, name: &str, labels: &[(&str, &str)]) -> u64 {
    let (status, body) = http_get(cluster.admin_address(node), "/metrics").await;
    assert_eq!(status, 200);
    total(&parse(&body), name, labels).round() as u64
}

/// Flaps (SUSPECT or DEAD transitions) and refused datagrams, summed over the nodes.
async fn trouble(cluster: &TestCluster) -> u64 {
    let mut total = 0;
    for node in cluster.node_ids() {
        for state in ["suspect", "dead"] {
            let labels = [("state", state)];
            total += metric(
                cluster,
                &node,
                "kvstore_gossip_state_changes_total",
                &labels,
            )
            .await;
        }
        total += metric(
            cluster,
            &node,
            "kvstore_gossip_datagrams_unsealed_total",
            &[],
        )
        .await;
    }
    total
}

fn reloads(cluster: &TestCluster, node: &str) -> usize {
    std::fs::read_to_string(cluster.log_path(node))
        .unwrap_or_default()
        .matches(RELOADED)
        .count()
}

/// Writes `keys` to the keyring file and waits until every node has reloaded it;
/// returns how long that took.
async fn rotate(cluster: &TestCluster, file: &Path, keys: &[&str], step: usize) -> Duration {
    std::fs::write(file, keys.join("\n") + "\n").unwrap();
    let written = Instant::now();
    for node in cluster.node_ids() {
        while reloads(cluster, &node) < step {
            assert!(
                written.elapsed() < WAIT_LIMIT,
                "{node} did not reload the keyring for step {step}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    written.elapsed()
}

async fn all_alive(cluster: &TestCluster) {
    for node in cluster.node_ids() {
        let view = cluster.client(&node).await.membership().await.unwrap();
        for member in view.members {
            assert_eq!(
                member.state,
                MemberState::Alive as i32,
                "{node} sees {} as {:?}",
                member.node_id,
                MemberState::try_from(member.state)
            );
        }
    }
}

/// A 3-node gossip cluster sealing with the keyring file it returns (holding `OLD`).
async fn sealed_cluster(test: &str, dir: &tempfile::TempDir) -> (TestCluster, PathBuf) {
    let file = dir.path().join("gossip.keys");
    std::fs::write(&file, format!("{OLD}\n")).unwrap();
    let flag = format!("--gossip-keyring={}", file.display());
    let cluster = TestCluster::start_with(
        env!("CARGO_BIN_EXE_kvstore-under-test"),
        env!("CARGO_TARGET_TMPDIR"),
        test,
        3,
        &[&flag],
        GOSSIP,
    )
    .await;
    (cluster, file)
}

#[tokio::test]
async fn keys_rotate_on_a_live_cluster_without_a_flap() {
    let dir = tempfile::tempdir().unwrap();
    let (cluster, file) = sealed_cluster("gossip_keys_rotate", &dir).await;
    all_alive(&cluster).await;
    let before = trouble(&cluster).await;

    // Add the new key everywhere, seal with it everywhere, then drop the old one.
    let mut slowest = Duration::ZERO;
    for (step, keys) in [[OLD, NEW].as_slice(), &[NEW, OLD], &[NEW]]
        .into_iter()
        .enumerate()
    {
        slowest = slowest.max(rotate(&cluster, &file, keys, step + 1).await);
    }
    println!("a keyring change reached every node within {slowest:?}");

    // Gossip still flows under the new key alone: packets keep arriving everywhere.
    for node in cluster.node_ids() {
        let name = "kvstore_gossip_packets_in_total";
        let start = metric(&cluster, &node, name, &[]).await;
        let waited = Instant::now();
        while metric(&cluster, &node, name, &[]).await < start + 5 {
            assert!(
                waited.elapsed() < WAIT_LIMIT,
                "{node} stopped hearing gossip"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    all_alive(&cluster).await;
    assert_eq!(
        trouble(&cluster).await,
        before,
        "a member flapped or a datagram was refused during the rotation"
    );
}

#[tokio::test]
async fn garbage_foreign_forged_and_replayed_datagrams_are_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let (cluster, _) = sealed_cluster("gossip_keys_attacks", &dir).await;
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let mut insider = Sealer::new(Keyring::parse(OLD).unwrap(), [7; 16]);
    let mut outsider = Sealer::new(Keyring::parse(NEW).unwrap(), [8; 16]);
    let valid = insider.seal(b"not a foca message", now_ms);
    let mut forged = insider.seal(b"not a foca message either", now_ms);
    *forged.last_mut().unwrap() ^= 1;
    let sent: [(&str, Vec<u8>); 5] = [
        ("malformed", b"hello, plain text".to_vec()),
        (
            "unknown_key",
            outsider.seal(b"from another cluster", now_ms),
        ),
        ("forged", forged),
        ("replayed", valid.clone()),
        ("replayed", valid),
    ];
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let target = cluster.gossip_address("n1");
    for (_, datagram) in &sent {
        socket.send_to(datagram, target).await.unwrap();
    }
    let name = "kvstore_gossip_datagrams_unsealed_total";
    for reason in ["malformed", "unknown_key", "forged", "replayed"] {
        let waited = Instant::now();
        while metric(&cluster, "n1", name, &[("reason", reason)]).await < 1 {
            assert!(
                waited.elapsed() < WAIT_LIMIT,
                "no {reason} datagram counted"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    // The first copy of the valid one opened, so only its replay counts as replayed.
    assert_eq!(
        metric(&cluster, "n1", name, &[("reason", "replayed")]).await,
        1
    );
    all_alive(&cluster).await;
}
