//! Whole-cluster behaviour of statically configured nodes over the simulated network, on
//! tokio's paused clock: no sockets, no real time, the same result every run. Nodes are
//! built by `NodeBuilder` and call each other through kv-grpc's transport, so every
//! replica call crosses the wire codec, the batcher and the internal service.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use kv_clock::VersionVector;
use kv_grpc::PublicApi;
use kv_node::{ClientRead, ClientWrite, ErrorKind, NodeBuilder, NodeConfig, NodeError, PeerSpec};
use kv_proto::kvstore as api;
use kv_proto::kvstore::kv_store_server::KvStore;
use kv_sim::net::{SimNetwork, SimNode};
use kv_storage::{MemoryStore, Siblings, StorageError};
use tonic::Request;

struct Cluster {
    network: Arc<SimNetwork>,
    nodes: Vec<Arc<SimNode>>,
}

fn config(id: usize, count: usize, tune: &dyn Fn(&mut NodeConfig)) -> NodeConfig {
    let address = |i: usize| format!("127.0.0.1:{}", 50050 + i).parse().unwrap();
    let mut config = NodeConfig::new(format!("n{id}"), address(id));
    config.peers = (1..=count)
        .filter(|&i| i != id)
        .map(|i| PeerSpec {
            node_id: format!("n{i}"),
            internal_address: address(i),
        })
        .collect();
    tune(&mut config);
    config
}

impl Cluster {
    fn new(count: usize) -> Self {
        Self::with(count, &|_| {})
    }

    fn with(count: usize, tune: &dyn Fn(&mut NodeConfig)) -> Self {
        let network = SimNetwork::new(42);
        let nodes = (1..=count)
            .map(|i| {
                let config = config(i, count, tune);
                let transport =
                    network.transport(&config.node_id, &config.peers, config.peer_timeout);
                let node = NodeBuilder::new(config, transport)
                    .storage(Arc::new(MemoryStore::new(kv_ring::key_hash)))
                    .start_token(1)
                    .build()
                    .unwrap();
                network.register(&node);
                node
            })
            .collect();
        Self { network, nodes }
    }

    fn node(&self, id: &str) -> &Arc<SimNode> {
        self.nodes
            .iter()
            .find(|n| n.config().node_id == id)
            .unwrap()
    }
}

fn write(key: &str, value: Option<&str>, context: &VersionVector, w: u32) -> ClientWrite {
    ClientWrite {
        key: key.to_owned(),
        value: value.map(|v| Bytes::copy_from_slice(v.as_bytes())),
        consistency_w: w,
        version: context
            .iter()
            .map(|(actor, counter)| (actor.to_string(), counter))
            .collect(),
        ..ClientWrite::default()
    }
}

fn live_values(siblings: Option<&Siblings>) -> Vec<String> {
    let mut values: Vec<String> = siblings
        .into_iter()
        .flat_map(kv_clock::DvvSet::values)
        .flatten()
        .map(|v| String::from_utf8(v.to_vec()).unwrap())
        .collect();
    values.sort();
    values
}

fn read(key: &str, r: u32) -> ClientRead {
    ClientRead {
        key: key.to_owned(),
        consistency_r: r,
        ..ClientRead::default()
    }
}

async fn get(node: &Arc<SimNode>, key: &str, r: u32) -> Option<Siblings> {
    node.client_get(read(key, r)).await.unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_write_through_any_node_is_read_through_every_node() {
    let cluster = Cluster::new(3);
    for (i, writer) in cluster.nodes.iter().enumerate() {
        let key = format!("key-{i}");
        writer
            .client_put(write(&key, Some("hello"), &VersionVector::new(), 2))
            .await
            .unwrap();
        for reader in &cluster.nodes {
            assert_eq!(live_values(get(reader, &key, 2).await.as_ref()), ["hello"]);
        }
    }
}

#[tokio::test(start_paused = true)]
async fn blind_writes_through_two_coordinators_become_siblings_and_resolve() {
    let cluster = Cluster::new(3);
    let blind = VersionVector::new();
    cluster
        .node("n1")
        .client_put(write("k", Some("a"), &blind, 2))
        .await
        .unwrap();
    cluster
        .node("n2")
        .client_put(write("k", Some("b"), &blind, 2))
        .await
        .unwrap();
    let read = get(cluster.node("n3"), "k", 3).await;
    assert_eq!(live_values(read.as_ref()), ["a", "b"]);
    let context = read.unwrap().join();
    cluster
        .node("n3")
        .client_put(write("k", Some("c"), &context, 2))
        .await
        .unwrap();
    assert_eq!(
        live_values(get(cluster.node("n1"), "k", 3).await.as_ref()),
        ["c"]
    );
}

#[tokio::test(start_paused = true)]
async fn blind_writes_through_one_coordinator_both_survive() {
    let cluster = Cluster::new(3);
    let blind = VersionVector::new();
    cluster
        .node("n1")
        .client_put(write("k", Some("a"), &blind, 2))
        .await
        .unwrap();
    cluster
        .node("n1")
        .client_put(write("k", Some("b"), &blind, 2))
        .await
        .unwrap();
    assert_eq!(
        live_values(get(cluster.node("n2"), "k", 2).await.as_ref()),
        ["a", "b"]
    );
}

#[tokio::test(start_paused = true)]
async fn delete_makes_the_key_absent_and_a_later_write_returns_it() {
    let cluster = Cluster::new(3);
    let written = cluster
        .node("n1")
        .client_put(write("k", Some("a"), &VersionVector::new(), 2))
        .await
        .unwrap();
    cluster
        .node("n2")
        .client_put(write("k", None, &written, 2))
        .await
        .unwrap();
    let read = get(cluster.node("n3"), "k", 2).await;
    assert!(
        live_values(read.as_ref()).is_empty(),
        "deleted key still has values"
    );
    let context = read.unwrap().join();
    cluster
        .node("n3")
        .client_put(write("k", Some("again"), &context, 2))
        .await
        .unwrap();
    assert_eq!(
        live_values(get(cluster.node("n1"), "k", 2).await.as_ref()),
        ["again"]
    );
}

#[tokio::test(start_paused = true)]
async fn one_node_down_keeps_quorum_two_but_not_three() {
    let cluster = Cluster::new(3);
    cluster.network.set_down("n3", true);
    let blind = VersionVector::new();
    cluster
        .node("n1")
        .client_put(write("k", Some("v"), &blind, 2))
        .await
        .unwrap();
    assert_eq!(
        live_values(get(cluster.node("n2"), "k", 2).await.as_ref()),
        ["v"]
    );
    let error = cluster
        .node("n1")
        .client_put(write("k", Some("w"), &blind, 3))
        .await
        .unwrap_err();
    assert!(
        matches!(error, NodeError::QuorumNotMet { needed: 3, .. }),
        "{error:?}"
    );
    let message = error.to_string();
    assert!(message.contains("W=3 of 3"), "{message}");
    assert!(message.contains("peer n3 unreachable"), "{message}");
    let error = cluster
        .node("n1")
        .client_get(read("k", 3))
        .await
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Unavailable);
    let message = error.to_string();
    assert!(
        message.contains("R=3 of 3") && message.contains("n3"),
        "{message}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_stale_replica_converges_through_read_repair() {
    let cluster = Cluster::new(3);
    let first = cluster
        .node("n1")
        .client_put(write("k", Some("old"), &VersionVector::new(), 3))
        .await
        .unwrap();
    cluster.network.set_down("n3", true);
    cluster
        .node("n1")
        .client_put(write("k", Some("new"), &first, 2))
        .await
        .unwrap();
    cluster.network.set_down("n3", false);
    assert_eq!(
        live_values(cluster.node("n3").replica_read(b"k").unwrap().as_ref()),
        ["old"]
    );

    assert_eq!(
        live_values(get(cluster.node("n2"), "k", 2).await.as_ref()),
        ["new"]
    );
    let n2 = cluster.node("n2");
    for _ in 0..50 {
        if n2.stats().repairs_sent.load(Ordering::Relaxed) > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        live_values(cluster.node("n3").replica_read(b"k").unwrap().as_ref()),
        ["new"]
    );
}

#[tokio::test(start_paused = true)]
async fn a_minority_partition_cannot_reach_quorum_and_its_write_resurfaces_as_a_sibling() {
    let cluster = Cluster::new(3);
    cluster.network.partition(&["n1"], &["n2", "n3"]);
    let error = cluster
        .node("n1")
        .client_put(write("k", Some("minority"), &VersionVector::new(), 2))
        .await
        .unwrap_err();
    assert!(matches!(error, NodeError::QuorumNotMet { .. }), "{error:?}");
    cluster
        .node("n2")
        .client_put(write("k", Some("majority"), &VersionVector::new(), 2))
        .await
        .unwrap();
    cluster.network.heal();
    // Dynamo semantics: a write refused for lack of quorum is not rolled back on the
    // replica that stored it, so after the heal it is a sibling of the majority's write.
    assert_eq!(
        live_values(get(cluster.node("n1"), "k", 3).await.as_ref()),
        ["majority", "minority"]
    );
}

#[tokio::test(start_paused = true)]
async fn a_non_replica_forwards_to_a_replica_and_falls_back_when_it_is_down() {
    let cluster = Cluster::new(5);
    let key = "forwarded";
    let replicas = cluster.nodes[0].replicas_for(key.as_bytes());
    let outsider = cluster
        .nodes
        .iter()
        .find(|n| !replicas.contains(&n.config().node_id))
        .unwrap();
    cluster.network.set_down(&replicas[0], true);
    outsider
        .client_put(write(key, Some("v"), &VersionVector::new(), 2))
        .await
        .unwrap();
    let coordinator = cluster.node(&replicas[1]);
    let stored = coordinator.replica_read(key.as_bytes()).unwrap().unwrap();
    let (dot, _) = stored.siblings().next().unwrap();
    assert_eq!(
        dot.actor,
        coordinator.actor(),
        "the first live replica minted the version"
    );
}

#[tokio::test(start_paused = true)]
async fn too_many_siblings_is_refused_and_nothing_is_lost() {
    let cluster = Cluster::with(3, &|c| c.limits.max_siblings = 3);
    let blind = VersionVector::new();
    for value in ["a", "b", "c"] {
        cluster
            .node("n1")
            .client_put(write("k", Some(value), &blind, 2))
            .await
            .unwrap();
    }
    let error = cluster
        .node("n1")
        .client_put(write("k", Some("d"), &blind, 2))
        .await
        .unwrap_err();
    assert!(
        matches!(
            &error,
            NodeError::Storage(StorageError::TooManySiblings { max: 3, .. })
        ),
        "{error:?}"
    );
    assert_eq!(error.kind(), ErrorKind::FailedPrecondition);
    assert_eq!(
        live_values(get(cluster.node("n2"), "k", 3).await.as_ref()),
        ["a", "b", "c"]
    );
}

#[tokio::test(start_paused = true)]
async fn bad_requests_are_invalid_argument_and_the_node_keeps_serving() {
    let cluster = Cluster::new(3);
    let api = PublicApi::new(Arc::clone(cluster.node("n1")));
    let put = |key: &str, value: Vec<u8>, w: u32, version: Vec<(&str, u64)>| api::PutRequest {
        key: key.to_owned(),
        value: value.into(),
        consistency_w: w,
        version: Some(api::Version {
            entries: version
                .into_iter()
                .map(|(n, c)| api::VersionEntry {
                    node_id: n.to_owned(),
                    counter: c,
                })
                .collect(),
        }),
        ..api::PutRequest::default()
    };
    let cases = [
        (put("", b"v".to_vec(), 0, vec![]), "key must not be empty"),
        (
            put(&"k".repeat(1025), b"v".to_vec(), 0, vec![]),
            "key is 1025 bytes",
        ),
        (put("k", vec![], 0, vec![]), "value must not be empty"),
        (
            put("k", vec![0; 1024 * 1024 + 1], 0, vec![]),
            "value is 1048577 bytes",
        ),
        (
            put("k", b"v".to_vec(), 4, vec![]),
            "consistency_w=4 is outside 1..=3",
        ),
        (put("k", b"v".to_vec(), 0, vec![("n1", 0)]), "counter 0"),
        (
            put("k", b"v".to_vec(), 0, vec![("n1", 1), ("n1", 2)]),
            "more than once",
        ),
        (
            put("k", b"v".to_vec(), 0, vec![("", 1)]),
            "must not be empty",
        ),
    ];
    for (request, expected) in cases {
        let status = api.put(Request::new(request)).await.unwrap_err();
        assert_eq!(
            status.code(),
            tonic::Code::InvalidArgument,
            "{expected}: {status:?}"
        );
        assert!(
            status.message().contains(expected),
            "{:?} lacks {expected:?}",
            status.message()
        );
    }
    let bad_read = api::GetRequest {
        key: "k".into(),
        consistency_r: 9,
        ..Default::default()
    };
    let status = api.get(Request::new(bad_read)).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(status.message().contains("consistency_r=9"));

    let ok = api
        .put(Request::new(put("k", b"v".to_vec(), 0, vec![])))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ok.status, api::Status::Success as i32);
    let read = api::GetRequest {
        key: "k".into(),
        ..Default::default()
    };
    let answer = api.get(Request::new(read)).await.unwrap().into_inner();
    assert_eq!(answer.value.unwrap().value, Bytes::from_static(b"v"));
}

#[tokio::test(start_paused = true)]
async fn get_response_shapes_match_the_api() {
    let cluster = Cluster::new(3);
    let api = PublicApi::new(Arc::clone(cluster.node("n1")));
    let read = |key: &str| {
        api.get(Request::new(api::GetRequest {
            key: key.into(),
            ..Default::default()
        }))
    };
    let missing = read("missing").await.unwrap().into_inner();
    assert_eq!(missing.status, api::Status::NotFound as i32);

    for value in ["x", "y"] {
        let request = api::PutRequest {
            key: "k".into(),
            value: Bytes::from(value),
            ..Default::default()
        };
        api.put(Request::new(request)).await.unwrap();
    }
    let both = read("k").await.unwrap().into_inner();
    assert!(both.value.is_none());
    assert_eq!(both.conflicts.len(), 2);
    let context = both.context.clone();
    let resolve = api::PutRequest {
        key: "k".into(),
        value: Bytes::from("z"),
        version: context,
        ..Default::default()
    };
    let written = api.put(Request::new(resolve)).await.unwrap().into_inner();
    let one = read("k").await.unwrap().into_inner();
    assert!(one.conflicts.is_empty());
    let value = one.value.unwrap();
    assert_eq!(value.value, Bytes::from("z"));
    assert_eq!(
        value.version, written.version,
        "a single value's version is the write's context"
    );
}

#[tokio::test(start_paused = true)]
async fn a_replica_declared_dead_fails_fast_instead_of_timing_out() {
    use kv_node::{PeerState, PeerStatus};
    // A peer timeout longer than the request: it must not cut the black hole short.
    let cluster = Cluster::with(3, &|c| c.peer_timeout = Duration::from_secs(60));
    cluster.network.set_hanging("n3", true);
    let n1 = cluster.node("n1");
    let started = tokio::time::Instant::now();
    let error = n1
        .client_put(write("k", Some("v"), &VersionVector::new(), 3))
        .await
        .unwrap_err();
    assert!(matches!(error, NodeError::Timeout { .. }), "{error:?}");
    assert!(
        started.elapsed() >= n1.config().request_timeout,
        "a black hole should cost the full deadline"
    );

    // The failure detector declares n3 dead: coordinators stop waiting for it.
    let dead = n1.peer_statuses().into_iter().map(|mut p: PeerStatus| {
        if p.node_id == "n3" {
            p.state = PeerState::Dead;
        }
        p
    });
    n1.apply_peers(dead.collect());
    assert_eq!(
        n1.ring().unwrap().len(),
        3,
        "a dead node keeps its place in the ring"
    );
    let started = tokio::time::Instant::now();
    let error = n1
        .client_put(write("k", Some("v"), &VersionVector::new(), 3))
        .await
        .unwrap_err();
    assert!(
        matches!(&error, NodeError::QuorumNotMet { .. })
            && error.to_string().contains("declared DEAD"),
        "{error:?}"
    );
    assert!(
        started.elapsed() < Duration::from_millis(100),
        "waited {:?}",
        started.elapsed()
    );
    n1.client_put(write("k", Some("v"), &VersionVector::new(), 2))
        .await
        .unwrap();
    // The two refused W=3 writes stay on the replicas that stored them (no rollback).
    assert_eq!(live_values(get(n1, "k", 2).await.as_ref()), ["v", "v", "v"]);
}

#[tokio::test(start_paused = true)]
async fn liveness_never_changes_the_ring() {
    use kv_node::{PeerState, PeerStatus};
    let cluster = Cluster::new(3);
    let n1 = cluster.node("n1");
    let mut peers: Vec<PeerStatus> = n1.peer_statuses();
    for peer in &mut peers {
        peer.state = PeerState::Dead;
    }
    n1.apply_peers(peers.clone());
    assert_eq!(n1.ring().unwrap().len(), 3, "dead members stay in the ring");
    peers.retain(|p| p.node_id != "n2");
    n1.apply_peers(peers);
    assert_eq!(
        n1.ring().unwrap().members().collect::<Vec<_>>(),
        ["n1", "n2", "n3"],
        "a member gossip forgot stays in the ring: only a ring change removes it"
    );
}

/// The replicas of `key` and a node that is none of them.
fn outsider_of<'a>(cluster: &'a Cluster, key: &str) -> (Vec<String>, &'a Arc<SimNode>) {
    let replicas = cluster.nodes[0].replicas_for(key.as_bytes());
    let outsider = cluster
        .nodes
        .iter()
        .find(|n| !replicas.contains(&n.config().node_id))
        .unwrap();
    (replicas, outsider)
}

#[tokio::test(start_paused = true)]
async fn a_forwarded_write_whose_answer_is_lost_is_not_coordinated_twice() {
    let cluster = Cluster::new(5);
    let key = "lost-answer";
    let (replicas, outsider) = outsider_of(&cluster, key);
    let outsider_id = outsider.config().node_id.clone();
    // The first replica gets the write and coordinates it, but its answer never returns.
    cluster.network.block(&replicas[0], &outsider_id);
    let error = outsider
        .client_put(write(key, Some("once"), &VersionVector::new(), 2))
        .await
        .unwrap_err();
    assert!(
        matches!(&error, NodeError::ForwardedWriteUncertain { replica, .. } if *replica == replicas[0]),
        "{error:?}"
    );
    assert_eq!(error.kind(), ErrorKind::DeadlineExceeded);
    cluster.network.heal();
    let stored = get(cluster.node(&replicas[1]), key, 3).await;
    assert_eq!(
        live_values(stored.as_ref()),
        ["once"],
        "a retry on another replica would have minted a second version"
    );
}

#[tokio::test(start_paused = true)]
async fn a_forwarded_write_the_coordinator_refuses_is_not_retried() {
    let cluster = Cluster::new(5);
    let key = "refused";
    let (replicas, outsider) = outsider_of(&cluster, key);
    // The first replica can be reached but cannot reach the other replicas: it mints the
    // version, misses W=2 and says so. That is an answer, not an unreachable replica.
    let others: Vec<&str> = replicas[1..].iter().map(String::as_str).collect();
    cluster.network.partition(&[replicas[0].as_str()], &others);
    let error = outsider
        .client_put(write(key, Some("v"), &VersionVector::new(), 2))
        .await
        .unwrap_err();
    assert!(
        matches!(&error, NodeError::Remote { peer, kind: ErrorKind::Unavailable, .. } if *peer == replicas[0]),
        "{error:?}"
    );
    assert!(error.to_string().contains("W=2 of 3"), "{error}");
    cluster.network.heal();
    let stored = get(cluster.node(&replicas[1]), key, 3).await;
    assert_eq!(
        live_values(stored.as_ref()),
        ["v"],
        "one version, minted once"
    );
}

#[tokio::test(start_paused = true)]
async fn a_write_over_the_follow_up_bound_is_acknowledged_and_only_its_hint_is_skipped() {
    let cluster = Cluster::with(3, &|config| config.max_follow_ups = 1);
    // n3 never answers, so every write's follow-up waits for it and then hints it.
    cluster.network.set_hanging("n3", true);
    let n1 = cluster.node("n1");
    let blind = VersionVector::new();
    n1.client_put(write("first", Some("1"), &blind, 2))
        .await
        .unwrap();
    n1.client_put(write("second", Some("2"), &blind, 2))
        .await
        .unwrap();
    let shed = |node: &SimNode| node.stats().write_follow_ups_shed.load(Ordering::Relaxed);
    assert_eq!(shed(n1), 1, "the second write found the only slot taken");

    // Past the late-reply grace the slot is free again and the first write's hint exists.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let held_for_n3 = |node: &SimNode| {
        node.hints_status()
            .targets
            .iter()
            .find(|t| t.target == "n3")
            .map_or(0, |t| t.hints)
    };
    assert_eq!(held_for_n3(n1), 1, "only the first write was hinted");
    n1.client_put(write("third", Some("3"), &blind, 2))
        .await
        .unwrap();
    assert_eq!(shed(n1), 1, "a freed slot is reused");
    for key in ["first", "second", "third"] {
        assert_eq!(
            live_values(get(n1, key, 2).await.as_ref()).len(),
            1,
            "{key}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_node_that_stopped_minting_refuses_to_coordinate_but_still_takes_replica_writes() {
    let cluster = Cluster::new(3);
    let n1 = cluster.node("n1");
    n1.stop_minting().unwrap();
    let refused = n1
        .client_put(write("k", Some("v"), &VersionVector::new(), 2))
        .await
        .unwrap_err();
    assert!(matches!(refused, NodeError::Stopping { .. }), "{refused}");
    assert_eq!(refused.kind(), ErrorKind::Unavailable);
    cluster
        .node("n2")
        .client_put(write("k", Some("v"), &VersionVector::new(), 3))
        .await
        .unwrap();
    assert_eq!(
        live_values(n1.replica_read(b"k").unwrap().as_ref()),
        ["v"],
        "a stopping node still stores what other coordinators send it"
    );
}
