//! Anti-entropy with real processes: a node that missed writes while stopped, or lost its
//! data directory, catches up with no client read at all (the nodes' digest trees become
//! equal); deleted keys' tombstones are reaped everywhere and do not come back.

use std::time::{Duration, Instant};

use kv_client::{AntiEntropyResponse, Client, ReadResult, WriteOptions};
use kv_e2e::TestCluster;

/// Rounds every 300 ms and a 1.5 s grace, so the tests take seconds; hints off, so what a
/// returning node gets comes from anti-entropy alone (`hints.rs` tests the other way).
const FAST_AAE: &[&str] = &[
    "--aae-interval-ms=300",
    "--tombstone-grace-ms=1500",
    "--hint-max-bytes=0",
];
const CONVERGENCE_LIMIT: Duration = Duration::from_secs(60);
const KEYS: usize = 300;

async fn cluster(test: &str) -> TestCluster {
    TestCluster::start(
        env!("CARGO_BIN_EXE_kvstore-under-test"),
        env!("CARGO_TARGET_TMPDIR"),
        test,
        3,
        FAST_AAE,
    )
    .await
}

async fn status(cluster: &TestCluster, node: &str) -> AntiEntropyResponse {
    cluster
        .client(node)
        .await
        .anti_entropy(false)
        .await
        .unwrap()
}

/// Waits (reading nothing but the nodes' anti-entropy status) until every node holds the
/// same data: equal tree roots and key counts. Returns how long that took.
async fn wait_equal_trees(cluster: &TestCluster) -> Duration {
    let started = Instant::now();
    loop {
        let mut seen = Vec::new();
        for node in cluster.node_ids() {
            let status = status(cluster, &node).await;
            seen.push((node, status.tree_items, status.tree_root));
        }
        if seen
            .windows(2)
            .all(|w| (w[0].1, w[0].2) == (w[1].1, w[1].2))
        {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < CONVERGENCE_LIMIT,
            "trees still differ after {CONVERGENCE_LIMIT:?}: {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn write_keys(client: &mut Client, w: u32) {
    let options = WriteOptions {
        w: Some(w),
        context: None,
        ..WriteOptions::default()
    };
    for i in 0..KEYS {
        client
            .put(&format!("key-{i}"), format!("value-{i}"), &options)
            .await
            .unwrap();
    }
}

/// Reads a sample of keys with R=1 through `node`: it answers from its own copy first.
async fn assert_holds_values(cluster: &TestCluster, node: &str) {
    let mut client = cluster.client(node).await;
    for i in (0..KEYS).step_by(37) {
        let read = client.get(&format!("key-{i}"), Some(1)).await.unwrap();
        assert_eq!(
            read.values(),
            [bytes::Bytes::from(format!("value-{i}"))],
            "key-{i} on {node}"
        );
    }
}

#[tokio::test]
async fn a_node_that_missed_writes_catches_up_without_reads() {
    let mut cluster = cluster("aae_missed_writes").await;
    cluster.kill("n3");
    write_keys(&mut cluster.client("n1").await, 2).await;
    cluster.restart("n3").await;
    let before = status(&cluster, "n3").await;
    assert!(before.tree_items < KEYS as u64, "n3 missed the writes");
    let took = wait_equal_trees(&cluster).await;
    println!("n3 caught up in {took:?}");
    let mut moved = 0;
    for node in ["n1", "n2", "n3"] {
        moved += status(&cluster, node)
            .await
            .peers
            .iter()
            .map(|p| p.keys_repaired)
            .sum::<u64>();
    }
    assert!(moved >= KEYS as u64, "only {moved} keys repaired");
    assert_holds_values(&cluster, "n3").await;

    // What an operator sees: per peer and per range, as text and as JSON.
    let cli = |args: &[&str]| {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_kvstore-under-test"))
            .args(["--addr", &cluster.address("n3")])
            .args(args)
            .output()
            .unwrap();
        assert!(output.status.success(), "{output:?}");
        String::from_utf8(output.stdout).unwrap()
    };
    let text = cli(&["aae", "status", "--ranges"]);
    for expected in ["anti-entropy on n3", "PEER", "n1", "n2", "RANGE", "AGREED"] {
        assert!(text.contains(expected), "{expected} missing from:\n{text}");
    }
    let json = cli(&["--json", "aae", "status"]);
    for expected in [
        "\"keys_repaired\":",
        "\"tree_root\":",
        "\"tombstones_pending\":0",
    ] {
        assert!(json.contains(expected), "{expected} missing from {json}");
    }
}

#[tokio::test]
async fn a_node_that_lost_its_data_is_refilled() {
    let mut cluster = cluster("aae_wiped").await;
    write_keys(&mut cluster.client("n1").await, 3).await;
    cluster.kill("n3");
    cluster.wipe("n3");
    cluster.restart("n3").await;
    assert_eq!(
        status(&cluster, "n3").await.index_rebuild_keys,
        0,
        "n3 started on an empty store"
    );
    let took = wait_equal_trees(&cluster).await;
    println!("n3 refilled in {took:?}");
    assert_holds_values(&cluster, "n3").await;
}

#[tokio::test]
async fn tombstones_are_reaped_everywhere_and_stay_gone() {
    let cluster = cluster("aae_reaping").await;
    let mut client = cluster.client("n1").await;
    write_keys(&mut client, 3).await;
    for i in 0..KEYS {
        let key = format!("key-{i}");
        let context = client.get(&key, Some(3)).await.unwrap().context().cloned();
        let options = WriteOptions {
            w: Some(3),
            context,
            ..WriteOptions::default()
        };
        client.delete(&key, &options).await.unwrap();
    }
    let started = Instant::now();
    loop {
        let mut done = true;
        for node in cluster.node_ids() {
            let status = status(&cluster, &node).await;
            done &= status.tree_items == 0 && status.tombstones_pending == 0;
        }
        if done {
            break;
        }
        assert!(
            started.elapsed() < CONVERGENCE_LIMIT,
            "tombstones still held after {CONVERGENCE_LIMIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Several more rounds: nothing comes back.
    tokio::time::sleep(Duration::from_secs(2)).await;
    for node in cluster.node_ids() {
        let status = status(&cluster, &node).await;
        assert_eq!(
            (status.tree_items, status.tombstones_pending),
            (0, 0),
            "{node}"
        );
    }
    let reaped: u64 = {
        let mut total = 0;
        for node in cluster.node_ids() {
            total += status(&cluster, &node).await.tombstones_reaped;
        }
        total
    };
    assert_eq!(
        reaped,
        3 * KEYS as u64,
        "each replica reaped each tombstone once"
    );
    let read = client.get("key-7", Some(3)).await.unwrap();
    assert!(
        matches!(read, ReadResult::NotFound { context: None }),
        "{read:?}"
    );
}
