//! The admin HTTP listener of a real process: `/healthz`, `/readyz`, and `/metrics` in
//! a format a Prometheus text parser reads, with every family present and the request
//! counters and histograms moving under load.

use kv_client::WriteOptions;
use kv_e2e::scrape::{http_get, parse, sample};
use kv_e2e::{GOSSIP, TestCluster};

#[tokio::test]
async fn probes_and_metrics_answer_and_metrics_move_under_load() {
    let cluster = TestCluster::start_with(
        env!("CARGO_BIN_EXE_kvstore-under-test"),
        env!("CARGO_TARGET_TMPDIR"),
        "admin",
        3,
        &[],
        GOSSIP,
    )
    .await;
    let admin = cluster.admin_address("n1");

    assert_eq!(http_get(admin, "/healthz").await.0, 200);
    let (status, body) = http_get(admin, "/readyz").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(http_get(admin, "/nothing").await.0, 404);

    let before = parse(&http_get(admin, "/metrics").await.1);
    assert_families(&before, &["kvstore_request", "kvstore_peer_batch"]);
    assert_eq!(sample(&before, "kvstore_serving", &[]), Some(1.0));
    assert_eq!(
        sample(&before, "kvstore_members", &[("state", "alive")]),
        Some(3.0)
    );

    let mut client = cluster.client("n1").await;
    for i in 0..20 {
        client
            .put(
                &format!("key-{i}"),
                format!("v{i}"),
                &WriteOptions::default(),
            )
            .await
            .unwrap();
    }
    for i in 0..30 {
        client.get(&format!("key-{i}"), None).await.unwrap();
    }
    let refused = client.put("", "empty key", &WriteOptions::default()).await;
    assert!(refused.is_err());
    // Two blind writes of one key: the read after them returns both as siblings.
    for value in ["left", "right"] {
        client
            .put("conflict", value, &WriteOptions::default())
            .await
            .unwrap();
    }
    client.get("conflict", None).await.unwrap();

    let after = parse(&http_get(admin, "/metrics").await.1);
    let count = |op: &str, outcome: &str| {
        sample(
            &after,
            "kvstore_requests_total",
            &[("op", op), ("outcome", outcome)],
        )
    };
    assert_eq!(count("put", "ok"), Some(22.0));
    assert_eq!(count("get", "ok"), Some(31.0));
    assert_eq!(count("put", "invalid_argument"), Some(1.0));
    assert_eq!(
        sample(&after, "kvstore_request_duration_seconds", &[("op", "get")]),
        Some(31.0),
        "the get histogram counts every get"
    );
    assert_eq!(sample(&after, "kvstore_storage_keys", &[]), Some(21.0));
    assert_families(&after, &["kvstore_peer_batch_failures"]);
    let seen_alive = sample(
        &after,
        "kvstore_gossip_state_changes_total",
        &[("state", "alive")],
    );
    assert!(
        seen_alive.is_some_and(|count| count >= 2.0),
        "n1 saw n2 and n3 come alive: {seen_alive:?}"
    );
    assert!(sample(&after, "kvstore_gossip_packets_in_total", &[]).is_some_and(|n| n > 0.0));
    assert_siblings_histogram(&after);
    let batches = sample(
        &after,
        "kvstore_peer_batch_duration_seconds",
        &[("peer", "n2")],
    );
    assert!(
        batches.is_some_and(|count| count > 0.0),
        "no timed batch call to n2: {batches:?}"
    );
}

/// 20 reads of keys with one value and one read of two siblings (misses do not count).
fn assert_siblings_histogram(scrape: &prometheus_parse::Scrape) {
    let siblings = scrape
        .samples
        .iter()
        .find(|s| s.metric == "kvstore_read_siblings")
        .expect("the siblings histogram");
    let prometheus_parse::Value::Histogram(buckets) = &siblings.value else {
        panic!("kvstore_read_siblings is not a histogram: {siblings:?}");
    };
    let at_most = |bound: f64| {
        buckets
            .iter()
            .find(|b| (b.less_than - bound).abs() < f64::EPSILON)
            .map(|b| b.count)
    };
    assert_eq!(at_most(1.0), Some(20.0), "{buckets:?}");
    assert_eq!(at_most(2.0), Some(21.0), "{buckets:?}");
}

/// Every family is in `scrape` but those starting with one of `may_lack` (a family with
/// labels appears with its first sample: the first request, call or failure).
fn assert_families(scrape: &prometheus_parse::Scrape, may_lack: &[&str]) {
    let families = [
        "kvstore_requests_total",
        "kvstore_request_duration_seconds",
        "kvstore_serving",
        "kvstore_storage_keys",
        "kvstore_storage_bytes",
        "kvstore_members",
        "kvstore_ring_version",
        "kvstore_ring_members",
        "kvstore_ring_live_versions",
        "kvstore_read_repairs_total",
        "kvstore_aae_keys_repaired_total",
        "kvstore_tombstones_pending",
        "kvstore_transfer_keys_moved",
        "kvstore_cleanup_keys_dropped",
        "kvstore_read_siblings",
        "kvstore_peer_batch_items",
        "kvstore_peer_batch_duration_seconds",
        "kvstore_peer_batch_failures_total",
        "kvstore_gossip_state_changes_total",
        "kvstore_gossip_packets_in_total",
        "kvstore_gossip_packets_rejected_total",
    ];
    let missing: Vec<&str> = families
        .iter()
        .filter(|f| {
            !scrape.docs.contains_key(**f) && !scrape.samples.iter().any(|s| s.metric == **f)
        })
        .copied()
        .collect();
    assert!(
        missing
            .iter()
            .all(|f| may_lack.iter().any(|prefix| f.starts_with(prefix))),
        "missing families: {missing:?}"
    );
}
