//! Hinted handoff with real processes, anti-entropy off so only hints can move data: a
//! replica stopped during writes gets every write it missed after it restarts, with no
//! read, even when the node holding the hints was killed and restarted meanwhile; hints
//! past the age limit are dropped, not delivered; a delivery cut short by a crash of the
//! target loses nothing and resumes; and on 5 nodes a sloppy write with two of a key's
//! three replicas down succeeds through a fallback (a strict one does not) and reaches
//! both replicas once they are back.

use std::time::{Duration, Instant};

use kv_client::{Client, Code, HintsResponse, WriteMode, WriteOptions};
use kv_e2e::{GOSSIP, TestCluster};

/// Anti-entropy off: whatever reaches a restarted replica came from hints.
const NO_AAE: &str = "--aae-interval-ms=0";
const WAIT_LIMIT: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(100);

async fn cluster(test: &str, count: usize, extra: &[&str]) -> TestCluster {
    let mut args = vec![NO_AAE];
    args.extend_from_slice(extra);
    TestCluster::start_with(
        env!("CARGO_BIN_EXE_kvstore-under-test"),
        env!("CARGO_TARGET_TMPDIR"),
        test,
        count,
        &args,
        GOSSIP,
    )
    .await
}

async fn hints(cluster: &TestCluster, node: &str) -> HintsResponse {
    cluster.client(node).await.hints().await.unwrap()
}

/// Hints `view` holds for `target`.
fn pending_for(view: &HintsResponse, target: &str) -> u64 {
    view.targets
        .iter()
        .filter(|t| t.target == target)
        .map(|t| t.hints)
        .sum()
}

async fn storage_keys(cluster: &TestCluster, node: &str) -> u64 {
    cluster
        .client(node)
        .await
        .health()
        .await
        .unwrap()
        .storage_keys
}

/// Polls `check` (asking the nodes, never reading a key) until it holds; fails with
/// `what` and the last state seen after [`WAIT_LIMIT`]. Returns how long it took.
async fn wait_for<F, Fut>(what: &str, mut check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = (bool, String)>,
{
    let started = Instant::now();
    loop {
        let (done, state) = check().await;
        if done {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < WAIT_LIMIT,
            "{what} not reached after {WAIT_LIMIT:?}; last seen: {state}"
        );
        tokio::time::sleep(POLL).await;
    }
}

async fn write_keys(client: &mut Client, prefix: &str, count: usize, options: &WriteOptions) {
    for i in 0..count {
        client
            .put(&format!("{prefix}-{i}"), format!("v{i}"), options)
            .await
            .unwrap_or_else(|e| panic!("put {prefix}-{i}: {e}"));
    }
}

async fn wait_pending(cluster: &TestCluster, holder: &str, target: &str, expected: u64) {
    wait_for(
        &format!("{expected} hints on {holder} for {target}"),
        || async {
            let view = hints(cluster, holder).await;
            (pending_for(&view, target) == expected, format!("{view:?}"))
        },
    )
    .await;
}

async fn wait_storage_keys(cluster: &TestCluster, node: &str, expected: u64) -> Duration {
    wait_for(&format!("{expected} keys stored on {node}"), || async {
        let keys = storage_keys(cluster, node).await;
        (keys == expected, format!("{keys} keys"))
    })
    .await
}

#[tokio::test]
async fn hints_survive_the_holders_restart_and_reach_the_restarted_replica_without_reads() {
    const KEYS: usize = 200;
    let mut cluster = cluster("hints_restart", 3, &[]).await;
    cluster.kill("n3");
    let mut n1 = cluster.client("n1").await;
    // On 3 nodes every key lives on all three: no node is outside a key's replicas, so
    // its coordinator (n1) keeps the hint itself.
    write_keys(&mut n1, "k", KEYS, &WriteOptions::default()).await;
    wait_pending(&cluster, "n1", "n3", KEYS as u64).await;

    cluster.kill("n1");
    cluster.restart("n1").await;
    let view = hints(&cluster, "n1").await;
    assert_eq!(
        pending_for(&view, "n3"),
        KEYS as u64,
        "hints are in the store, not only in memory: {view:?}"
    );

    cluster.restart("n3").await;
    wait_storage_keys(&cluster, "n3", KEYS as u64).await;
    wait_pending(&cluster, "n1", "n3", 0).await;
    let view = hints(&cluster, "n1").await;
    assert_eq!(view.delivered_total, KEYS as u64, "{view:?}");

    // What n3 received is the acknowledged value (R=1 through n3 answers from its copy).
    let mut n3 = cluster.client("n3").await;
    for i in (0..KEYS).step_by(23) {
        let read = n3.get(&format!("k-{i}"), Some(1)).await.unwrap();
        assert_eq!(read.values(), [bytes::Bytes::from(format!("v{i}"))]);
    }
}

#[tokio::test]
async fn hints_past_the_age_limit_are_dropped_not_delivered() {
    const KEYS: usize = 20;
    let mut cluster = cluster("hints_expire", 3, &["--hint-max-age-secs=1"]).await;
    cluster.kill("n3");
    let mut n1 = cluster.client("n1").await;
    write_keys(&mut n1, "old", KEYS, &WriteOptions::default()).await;
    wait_for("every hint expired", || async {
        let view = hints(&cluster, "n1").await;
        let done = view.expired_total == KEYS as u64 && pending_for(&view, "n3") == 0;
        (done, format!("{view:?}"))
    })
    .await;
    cluster.restart("n3").await;
    let view = hints(&cluster, "n1").await;
    assert_eq!(view.delivered_total, 0, "{view:?}");
    assert_eq!(storage_keys(&cluster, "n3").await, 0);
}

#[tokio::test]
async fn a_delivery_cut_short_by_the_targets_crash_loses_nothing_and_resumes() {
    const KEYS: usize = 400;
    let mut cluster = cluster(
        "hints_interrupted",
        3,
        &["--hint-delivery-keys-per-sec=100"],
    )
    .await;
    cluster.kill("n3");
    let mut n1 = cluster.client("n1").await;
    write_keys(&mut n1, "k", KEYS, &WriteOptions::default()).await;
    wait_pending(&cluster, "n1", "n3", KEYS as u64).await;

    cluster.restart("n3").await;
    wait_for("delivery under way", || async {
        let view = hints(&cluster, "n1").await;
        let pending = pending_for(&view, "n3");
        (
            pending > 0 && view.delivered_total >= 50,
            format!("{view:?}"),
        )
    })
    .await;
    cluster.kill("n3");
    let view = hints(&cluster, "n1").await;
    let pending = pending_for(&view, "n3");
    assert!(
        pending > 0,
        "the delivery finished before the kill: {view:?}"
    );
    // A hint leaves n1 only once n3 acknowledged it; the others are all still there.
    assert!(
        pending + view.delivered_total >= KEYS as u64,
        "hints lost: {view:?}"
    );

    cluster.restart("n3").await;
    wait_pending(&cluster, "n1", "n3", 0).await;
    wait_storage_keys(&cluster, "n3", KEYS as u64).await;
}

#[tokio::test]
async fn a_sloppy_write_survives_two_replicas_down_and_reaches_them_when_they_return() {
    let mut cluster = cluster("hints_sloppy", 5, &[]).await;
    let key = "sloppy-key";
    let replicas = cluster
        .client("n1")
        .await
        .ring(Some(key))
        .await
        .unwrap()
        .preference_list;
    assert_eq!(replicas.len(), 3);
    let (coordinator, down) = (&replicas[0], &replicas[1..]);
    for node in down {
        cluster.kill(node);
    }
    let mut client = cluster.client(coordinator).await;
    let strict = WriteOptions {
        w: Some(2),
        mode: WriteMode::Strict,
        ..WriteOptions::default()
    };
    let refused = client.put(key, "strict", &strict).await.unwrap_err();
    assert_eq!(refused.code(), Some(Code::Unavailable), "{refused}");

    let sloppy = WriteOptions {
        w: Some(2),
        mode: WriteMode::Sloppy,
        ..WriteOptions::default()
    };
    client.put(key, "sloppy", &sloppy).await.unwrap();
    let view = hints(&cluster, coordinator).await;
    assert!(view.sloppy_acks_total >= 1, "{view:?}");
    let fallbacks: Vec<String> = cluster
        .node_ids()
        .into_iter()
        .filter(|n| !replicas.contains(n))
        .collect();
    let mut hinted = 0;
    for fallback in &fallbacks {
        let view = hints(&cluster, fallback).await;
        hinted += down.iter().map(|d| pending_for(&view, d)).sum::<u64>();
    }
    assert!(hinted >= 1, "no fallback holds a hint for {down:?}");

    for node in down {
        cluster.restart(node).await;
    }
    for node in down {
        // Each returning replica holds exactly the key it missed, with no read.
        wait_storage_keys(&cluster, node, 1).await;
    }
    for node in down {
        let read = cluster.client(node).await.get(key, Some(1)).await.unwrap();
        let values = read.values();
        assert!(
            values.contains(&bytes::Bytes::from("sloppy")),
            "{node}: {values:?}"
        );
    }
}
