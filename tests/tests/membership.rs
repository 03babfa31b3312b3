//! Ring changes with real processes: a gossip cluster grows from 3 to 6 nodes by joins and
//! shrinks to 4 by a leave and a removal while a client keeps writing, and every
//! acknowledged key stays readable with R=1 through every node at every step; a kill -9
//! of every node comes back by itself with every write; a store of a cluster refuses
//! `--bootstrap`; a ring smaller than N refuses requests instead of pretending; once the
//! ring settled, every member dropped the keys it no longer replicates.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use kv_client::{Client, Code, ReadResult, RingChangeKind, WriteOptions};
use kv_e2e::{GOSSIP, TestCluster};
use tokio::sync::watch;

/// Acks after 1 s (the request timeout) and layouts exchanged every 200 ms keep each
/// change to seconds.
const FAST_RING: &[&str] = &["--layout-interval-ms=200", "--request-timeout-ms=1000"];
/// Keys written before the first change.
const KEYS: usize = 400;
/// Most keys the background writer writes.
const MAX_LOAD_KEYS: usize = 1_500;
/// Readers per node when every acknowledged key is read back.
const READERS_PER_NODE: usize = 8;

async fn gossip_cluster(test: &str, count: usize) -> TestCluster {
    TestCluster::start_with(
        env!("CARGO_BIN_EXE_kvstore-under-test"),
        env!("CARGO_TARGET_TMPDIR"),
        test,
        count,
        FAST_RING,
        GOSSIP,
    )
    .await
}

/// Keys a writer had acknowledged, with their values.
type Acked = Arc<Mutex<Vec<(String, String)>>>;

async fn write_keys(client: &mut Client, prefix: &str, count: usize, w: u32, acked: &Acked) {
    let options = WriteOptions {
        w: Some(w),
        ..WriteOptions::default()
    };
    for i in 0..count {
        let (key, value) = (format!("{prefix}-{i}"), format!("v{i}"));
        client
            .put(&key, value.clone(), &options)
            .await
            .unwrap_or_else(|e| panic!("put {key}: {e}"));
        acked
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push((key, value));
    }
}

/// Writes keys through `address` (W=2) until `stop`, recording those acknowledged; a
/// refused write (e.g. while a node is being killed) is not recorded and not retried.
fn start_load(
    address: String,
    acked: Acked,
    mut stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<usize> {
    tokio::spawn(async move {
        let mut client = Client::connect(&address).await.expect("connect");
        let mut refused = 0;
        for i in 0..MAX_LOAD_KEYS {
            if *stop.borrow_and_update() {
                break;
            }
            let (key, value) = (format!("load-{i}"), format!("l{i}"));
            match client
                .put(&key, value.clone(), &WriteOptions::default())
                .await
            {
                Ok(_) => acked
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push((key, value)),
                Err(_) => refused += 1,
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        refused
    })
}

/// Reads every acknowledged key with R=1 through each of `nodes` (several readers per
/// node at once); panics naming the first key that is not readable.
async fn assert_all_readable(cluster: &TestCluster, nodes: &[&str], acked: &Acked, step: &str) {
    let keys = acked.lock().unwrap_or_else(PoisonError::into_inner).clone();
    let mut readers = tokio::task::JoinSet::new();
    for node in nodes {
        let client = cluster.client(node).await;
        for reader in 0..READERS_PER_NODE {
            let (mut client, node, step) = (client.clone(), (*node).to_owned(), step.to_owned());
            let mine: Vec<(String, String)> = keys
                .iter()
                .skip(reader)
                .step_by(READERS_PER_NODE)
                .cloned()
                .collect();
            readers.spawn(async move {
                for (key, value) in mine {
                    match client.get(&key, Some(1)).await {
                        Ok(ReadResult::Value { value: read, .. }) if read == value.as_bytes() => {}
                        other => {
                            panic!(
                                "{step}: {key} through {node} with R=1: {other:?} (wanted {value})"
                            )
                        }
                    }
                }
            });
        }
    }
    while let Some(done) = readers.join_next().await {
        done.unwrap_or_else(|panic| std::panic::resume_unwind(panic.into_panic()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_to_six_to_four_under_load_keeps_every_acknowledged_key() {
    let mut cluster = gossip_cluster("three_to_six_to_four", 3).await;
    let acked: Acked = Arc::default();
    write_keys(&mut cluster.client("n1").await, "base", KEYS, 2, &acked).await;
    let (stop, stopped) = watch::channel(false);
    let load = start_load(cluster.address("n2"), Arc::clone(&acked), stopped);

    let mut members = vec!["n1", "n2", "n3"];
    for joiner in ["n4", "n5", "n6"] {
        let added = cluster.add_node().await;
        assert_eq!(added, joiner);
        let plan = cluster.change("n1", RingChangeKind::Join, &[joiner]).await;
        let gained: f64 = plan
            .moves
            .iter()
            .filter(|m| m.to == joiner)
            .map(|m| m.share)
            .sum();
        assert!(
            gained > 0.3,
            "{joiner} gains {gained} of the ring: {plan:?}"
        );
        assert_all_readable(&cluster, &members, &acked, &format!("while {joiner} joins")).await;
        members.push(joiner);
        cluster.wait_settled(&members).await;
        assert_all_readable(
            &cluster,
            &members,
            &acked,
            &format!("after {joiner} joined"),
        )
        .await;
    }

    // n1 hands its data off and leaves; then n2 dies and is removed.
    cluster.change("n3", RingChangeKind::Leave, &["n1"]).await;
    members.retain(|m| *m != "n1");
    cluster.wait_settled(&members).await;
    assert_all_readable(&cluster, &members, &acked, "after n1 left").await;
    let _ = stop.send(true);
    let refused = load.await.unwrap();
    cluster.kill("n2");
    members.retain(|m| *m != "n2");
    wait_dead(&cluster, "n3", "n2").await;
    cluster.change("n3", RingChangeKind::Remove, &["n2"]).await;
    let version = cluster.wait_settled(&members).await;
    assert_all_readable(&cluster, &members, &acked, "after n2 was removed").await;

    let ring = cluster.client("n4").await.ring(None).await.unwrap();
    let mut owners: Vec<&str> = ring.nodes.iter().map(|n| n.node_id.as_str()).collect();
    owners.sort_unstable();
    assert_eq!(owners, ["n3", "n4", "n5", "n6"]);
    assert_eq!(ring.version, version);
    let written = acked.lock().unwrap_or_else(PoisonError::into_inner).len();
    assert!(
        written > KEYS + 100,
        "the load wrote only {} keys ({refused} refused)",
        written - KEYS
    );
    assert_cleaned(&cluster, &members, version, written + refused).await;
}

/// Once every member's cleanup pass for `version` is done, the members hold no more than
/// N copies of the keys ever written (`at_most_keys`): each dropped what it stopped
/// replicating. Without cleanup, n3 alone would still hold every key.
async fn assert_cleaned(
    cluster: &TestCluster,
    members: &[&str],
    version: u64,
    at_most_keys: usize,
) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut stored = 0;
    for node in members {
        let mut client = cluster.client(node).await;
        loop {
            let view = client.ring_transfers().await.expect("ring transfers");
            if view.cleanup.is_some_and(|c| c.done && c.version == version) {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{node}: no finished cleanup for version {version}: {:?}",
                view.cleanup
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        stored += client.health().await.expect("health").storage_keys;
    }
    assert!(
        stored <= 3 * at_most_keys as u64,
        "{stored} keys stored on {members:?}, more than 3 copies of {at_most_keys} keys"
    );
}

async fn wait_dead(cluster: &TestCluster, observer: &str, node: &str) {
    let mut client = cluster.client(observer).await;
    for _ in 0..200 {
        let view = client.membership().await.unwrap();
        let dead = view
            .members
            .iter()
            .any(|m| m.node_id == node && m.state == i32::from(kv_client::MemberState::Dead));
        if dead {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{observer} never saw {node} DEAD");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_nine_of_every_node_comes_back_by_itself() {
    let mut cluster = gossip_cluster("kill_nine_of_every_node", 3).await;
    let acked: Acked = Arc::default();
    // W=3: every node holds every key when all are killed, so an R=1 read through any of
    // them must find it (with W=2 the last write's third copy may still be in flight).
    write_keys(&mut cluster.client("n2").await, "k", 200, 3, &acked).await;
    for node in ["n1", "n2", "n3"] {
        cluster.kill(node);
    }
    // Alone, a restarted node waits for a peer to confirm its ring.
    cluster.start_again("n1");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let alone = cluster.client("n1").await.health().await.unwrap();
    assert_eq!(alone.status, "JOINING", "{alone:?}");
    assert_eq!(alone.ring_members, 3, "its store kept the ring: {alone:?}");
    cluster.start_again("n2");
    cluster.start_again("n3");
    for node in ["n1", "n2", "n3"] {
        cluster.wait_serving_node(node).await;
    }
    assert_all_readable(
        &cluster,
        &["n1", "n2", "n3"],
        &acked,
        "after kill -9 of all",
    )
    .await;
    cluster.kill("n1");
    let refused = cluster.run_to_exit("n1", &["--bootstrap"]);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success());
    let cluster_id = cluster
        .client("n2")
        .await
        .health()
        .await
        .unwrap()
        .cluster_id;
    assert!(
        stderr.contains("already belongs to cluster") && stderr.contains(&cluster_id),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ring_smaller_than_n_refuses_instead_of_pretending() {
    // Three nodes run, but only the founder is in the ring (N=3).
    let cluster = TestCluster::start_with(
        env!("CARGO_BIN_EXE_kvstore-under-test"),
        env!("CARGO_TARGET_TMPDIR"),
        "smaller_than_n",
        1,
        FAST_RING,
        GOSSIP,
    )
    .await;
    let mut client = cluster.client("n1").await;
    let health = client.health().await.unwrap();
    assert_eq!((health.ring_members, health.replication_factor), (1, 3));
    let error = client
        .put("k", "v", &WriteOptions::default())
        .await
        .unwrap_err();
    assert_eq!(error.code(), Some(Code::Unavailable), "{error}");
    assert!(error.to_string().contains("1 member(s) but N=3"), "{error}");
    let error = client.get("k", None).await.unwrap_err();
    assert_eq!(error.code(), Some(Code::Unavailable), "{error}");
}

#[test]
fn binding_all_interfaces_needs_an_advertised_address() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_kvstore-under-test"))
        .args([
            "serve",
            "--node-id=n1",
            "--listen=0.0.0.0:0",
            "--storage=memory",
        ])
        .output()
        .expect("run kvstore");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("add --advertise-addr"), "{stderr}");
}
