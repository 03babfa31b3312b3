//! End-to-end behaviour of a 3-node cluster of real server processes on 127.0.0.1.

use std::time::{Duration, Instant};

use bytes::Bytes;
use kv_client::{Code, Context, ReadResult, WriteOptions};
use kv_e2e::TestCluster;

async fn cluster(test: &str) -> TestCluster {
    cluster_with(test, &[]).await
}

async fn cluster_with(test: &str, extra: &[&str]) -> TestCluster {
    TestCluster::start(
        env!("CARGO_BIN_EXE_kvstore-under-test"),
        env!("CARGO_TARGET_TMPDIR"),
        test,
        3,
        extra,
    )
    .await
}

fn sorted_values(read: &ReadResult) -> Vec<String> {
    let mut values: Vec<String> = read
        .values()
        .iter()
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .collect();
    values.sort();
    values
}

fn blind() -> WriteOptions {
    WriteOptions::default()
}

#[tokio::test]
async fn round_trip_through_every_node() {
    let cluster = cluster("round_trip").await;
    for writer in cluster.node_ids() {
        let key = format!("key-from-{writer}");
        cluster
            .client(&writer)
            .await
            .put(&key, writer.clone(), &blind())
            .await
            .unwrap();
        for reader in cluster.node_ids() {
            let read = cluster.client(&reader).await.get(&key, None).await.unwrap();
            assert_eq!(
                sorted_values(&read),
                std::slice::from_ref(&writer),
                "{key} read through {reader}"
            );
        }
    }
}

#[tokio::test]
async fn concurrent_writes_through_two_coordinators_are_siblings_and_resolve() {
    let cluster = cluster("siblings_two_coordinators").await;
    let (mut n1, mut n2) = (cluster.client("n1").await, cluster.client("n2").await);
    n1.put("k", "a", &blind()).await.unwrap();
    n2.put("k", "b", &blind()).await.unwrap();
    let read = n1.get("k", Some(3)).await.unwrap();
    assert!(matches!(read, ReadResult::Siblings { .. }), "{read:?}");
    assert_eq!(sorted_values(&read), ["a", "b"]);

    let (merged, context) = read.resolve(|values| values.concat().into());
    n2.put("k", merged, &WriteOptions::with_context(context))
        .await
        .unwrap();
    let read = n1.get("k", Some(3)).await.unwrap();
    assert!(matches!(read, ReadResult::Value { .. }), "{read:?}");
    assert_eq!(read.values().len(), 1);
}

#[tokio::test]
async fn blind_writes_through_one_coordinator_both_survive() {
    let cluster = cluster("siblings_one_coordinator").await;
    let mut n1 = cluster.client("n1").await;
    n1.put("k", "first", &blind()).await.unwrap();
    n1.put("k", "second", &blind()).await.unwrap();
    let read = cluster.client("n3").await.get("k", Some(3)).await.unwrap();
    assert_eq!(sorted_values(&read), ["first", "second"]);
}

#[tokio::test]
async fn delete_then_absent() {
    let cluster = cluster("delete").await;
    let mut n1 = cluster.client("n1").await;
    let context = n1.put("k", "v", &blind()).await.unwrap();
    n1.delete("k", &WriteOptions::with_context(context))
        .await
        .unwrap();
    let read = cluster.client("n2").await.get("k", None).await.unwrap();
    assert!(
        matches!(read, ReadResult::NotFound { context: Some(_) }),
        "{read:?}"
    );
    let never = cluster
        .client("n2")
        .await
        .get("never-written", None)
        .await
        .unwrap();
    assert_eq!(never, ReadResult::NotFound { context: None });
}

#[tokio::test]
async fn one_node_killed_quorum_two_works_and_three_is_unavailable() {
    let mut cluster = cluster("node_killed").await;
    cluster.kill("n3");
    let mut n1 = cluster.client("n1").await;
    let context = n1.put("k", "v", &blind()).await.unwrap();
    let read = cluster.client("n2").await.get("k", Some(2)).await.unwrap();
    assert_eq!(sorted_values(&read), ["v"]);

    let all_three = WriteOptions {
        w: Some(3),
        context: Some(context),
        ..WriteOptions::default()
    };
    let error = n1.put("k", "w", &all_three).await.unwrap_err();
    assert_eq!(error.code(), Some(Code::Unavailable), "{error}");
    assert!(error.to_string().contains("W=3 of 3"), "{error}");
    let error = n1.get("k", Some(3)).await.unwrap_err();
    assert_eq!(error.code(), Some(Code::Unavailable), "{error}");
}

#[tokio::test]
async fn a_restarted_stale_node_converges_through_read_repair() {
    // Hints off: n1's hint would otherwise bring n3 up to date within a second of its
    // restart, racing the stale read this test needs.
    let mut cluster = cluster_with("read_repair", &["--hint-max-bytes=0"]).await;
    let mut n1 = cluster.client("n1").await;
    let everywhere = WriteOptions {
        w: Some(3),
        context: None,
        ..WriteOptions::default()
    };
    let context = n1.put("k", "old", &everywhere).await.unwrap();
    cluster.kill("n3");
    n1.put("k", "new", &WriteOptions::with_context(context))
        .await
        .unwrap();
    cluster.restart("n3").await;

    // R=1 through n3 answers from n3's own copy first: stale until repaired.
    let mut n3 = cluster.client("n3").await;
    let stale = n3.get("k", Some(1)).await.unwrap();
    assert_eq!(sorted_values(&stale), ["old"]);
    let started = Instant::now();
    loop {
        let read = n3.get("k", Some(1)).await.unwrap();
        if sorted_values(&read) == ["new"] {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "n3 not repaired: {read:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn bad_input_is_invalid_argument_and_the_node_keeps_serving() {
    let cluster = cluster("bad_input").await;
    let mut n1 = cluster.client("n1").await;
    let too_long_key = "k".repeat(1025);
    let huge_value = Bytes::from(vec![b'x'; 1024 * 1024 + 1]);
    let bad_context = |text: &str| WriteOptions::with_context(text.parse::<Context>().unwrap());
    let cases: Vec<(&str, &str, Bytes, WriteOptions)> = vec![
        ("empty key", "", Bytes::from("v"), blind()),
        ("key over 1 KiB", &too_long_key, Bytes::from("v"), blind()),
        ("empty value", "k", Bytes::new(), blind()),
        ("value over 1 MiB", "k", huge_value, blind()),
        (
            "W above N",
            "k",
            Bytes::from("v"),
            WriteOptions {
                w: Some(4),
                context: None,
                ..WriteOptions::default()
            },
        ),
        ("zero counter", "k", Bytes::from("v"), bad_context("n1:0")),
        (
            "repeated node",
            "k",
            Bytes::from("v"),
            bad_context("n1:1,n1:2"),
        ),
    ];
    for (case, key, value, options) in cases {
        let error = n1.put(key, value, &options).await.unwrap_err();
        assert_eq!(error.code(), Some(Code::InvalidArgument), "{case}: {error}");
    }
    let error = n1.get("k", Some(0xffff)).await.unwrap_err();
    assert_eq!(
        error.code(),
        Some(Code::InvalidArgument),
        "R out of range: {error}"
    );
    let error = n1.delete("", &blind()).await.unwrap_err();
    assert_eq!(
        error.code(),
        Some(Code::InvalidArgument),
        "delete empty key: {error}"
    );

    // A message over the 4 MiB transport limit is refused before it is decoded, with
    // RESOURCE_EXHAUSTED as the gRPC spec says (tonic's own answer is OUT_OF_RANGE).
    let oversized = Bytes::from(vec![b'x'; 5 * 1024 * 1024]);
    let error = n1.put("k", oversized, &blind()).await.unwrap_err();
    assert_eq!(
        error.code(),
        Some(Code::ResourceExhausted),
        "oversized message: {error}"
    );
    assert!(error.to_string().contains("the limit is"), "{error}");

    n1.put("k", "still serving", &blind()).await.unwrap();
    let read = cluster.client("n2").await.get("k", None).await.unwrap();
    assert_eq!(sorted_values(&read), ["still serving"]);
}

#[tokio::test]
async fn data_survives_kill_nine_of_every_node() {
    let mut cluster = cluster("kill_all").await;
    let mut n1 = cluster.client("n1").await;
    let keys: Vec<String> = (0..50).map(|i| format!("durable-{i}")).collect();
    for key in &keys {
        n1.put(key, key.clone(), &blind()).await.unwrap();
    }
    for node in cluster.node_ids() {
        cluster.kill(&node);
    }
    for node in cluster.node_ids() {
        cluster.restart(&node).await;
    }
    let mut n2 = cluster.client("n2").await;
    for key in &keys {
        let read = n2.get(key, Some(2)).await.unwrap();
        assert_eq!(
            sorted_values(&read),
            std::slice::from_ref(key),
            "{key} lost after kill -9"
        );
    }
}

/// The `n1` actors in a context, sorted.
fn actors_of(context: &Context, node: &str) -> Vec<String> {
    let prefix = format!("{node}.");
    let mut actors: Vec<String> = context
        .entries()
        .iter()
        .map(|(actor, _)| actor.clone())
        .filter(|actor| actor.starts_with(&prefix))
        .collect();
    actors.sort();
    actors
}

/// Writes `value` under `k` through n1 (its coordinator: every node replicates every key).
async fn put_through_n1(cluster: &TestCluster, value: &str, options: WriteOptions) -> Context {
    let mut n1 = cluster.client("n1").await;
    n1.put("k", value.to_owned(), &options).await.unwrap()
}

#[tokio::test]
async fn a_graceful_stop_keeps_the_actor_id_and_a_kill_nine_takes_a_new_one() {
    let mut cluster = cluster("actor_after_stops").await;
    let first = put_through_n1(&cluster, "before", blind()).await;
    let before = actors_of(&first, "n1");
    assert_eq!(before.len(), 1, "{first:?}");

    cluster.stop("n1");
    cluster.restart("n1").await;
    let after_stop =
        put_through_n1(&cluster, "after a stop", WriteOptions::with_context(first)).await;
    assert_eq!(
        actors_of(&after_stop, "n1"),
        before,
        "a graceful stop keeps the actor: {after_stop:?}"
    );

    cluster.kill("n1");
    cluster.restart("n1").await;
    let after_kill = put_through_n1(
        &cluster,
        "after a kill",
        WriteOptions::with_context(after_stop),
    )
    .await;
    let actors = actors_of(&after_kill, "n1");
    assert_eq!(
        actors.len(),
        2,
        "a new actor beside the old one: {after_kill:?}"
    );
    assert!(actors.contains(&before[0]), "{after_kill:?}");
    let read = cluster.client("n2").await.get("k", Some(3)).await.unwrap();
    assert_eq!(sorted_values(&read), ["after a kill"]);
}

#[tokio::test]
async fn membership_ring_and_health_describe_the_cluster() {
    let cluster = cluster("views").await;
    let mut n1 = cluster.client("n1").await;
    n1.put("k", "v", &blind()).await.unwrap();
    let membership = n1.membership().await.unwrap();
    assert_eq!(membership.members.len(), 3);
    let ring = n1.ring(Some("k")).await.unwrap();
    assert_eq!(ring.replication_factor, 3);
    assert_eq!(ring.preference_list.len(), 3);
    let shares: f64 = ring.nodes.iter().map(|n| n.primary_share).sum();
    assert!((shares - 1.0).abs() < 1e-6);
    let health = n1.health().await.unwrap();
    assert_eq!(health.status, "SERVING");
    assert_eq!(health.members_total, 3);
}

/// One reflection request, as grpcurl sends it; the first answer.
async fn reflect(
    reflection: &mut tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient<
        tonic::transport::Channel,
    >,
    request: tonic_reflection::pb::v1::server_reflection_request::MessageRequest,
) -> tonic_reflection::pb::v1::ServerReflectionResponse {
    let request = tonic_reflection::pb::v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(request),
    };
    let mut responses = reflection
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    responses.message().await.unwrap().unwrap()
}

#[tokio::test]
async fn standard_health_and_reflection_services_answer() {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

    let cluster = cluster("grpc_services").await;
    let channel =
        tonic::transport::Endpoint::from_shared(format!("http://{}", cluster.address("n1")))
            .unwrap()
            .connect()
            .await
            .unwrap();
    let mut health = HealthClient::new(channel.clone());
    let request = tonic_health::pb::HealthCheckRequest {
        service: "kvstore.KVStore".into(),
    };
    let status = health.check(request).await.unwrap().into_inner().status;
    assert_eq!(status, ServingStatus::Serving as i32);

    let mut reflection = ServerReflectionClient::new(channel);
    let response = reflect(&mut reflection, MessageRequest::ListServices(String::new())).await;
    let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
        panic!("unexpected reflection answer: {response:?}");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for expected in [
        "kvstore.KVStore",
        "kvstore.Membership",
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} missing from {names:?}"
        );
    }
    assert!(
        !names.iter().any(|n| n.starts_with("kvstore.internal")),
        "the client listener lists the node-to-node service: {names:?}"
    );
    // What grpcurl asks before it calls a method (the seed README's calls included): the
    // file that defines the service.
    for symbol in [
        "grpc.health.v1.Health",
        "kvstore.KVStore",
        "kvstore.Membership",
    ] {
        let request = MessageRequest::FileContainingSymbol(symbol.into());
        let response = reflect(&mut reflection, request).await;
        assert!(
            matches!(
                response.message_response,
                Some(MessageResponse::FileDescriptorResponse(ref files)) if !files.file_descriptor_proto.is_empty()
            ),
            "{symbol} does not resolve: {response:?}"
        );
    }
}

#[tokio::test]
async fn the_load_generator_reports_throughput_latency_and_errors() {
    let cluster = cluster("bench").await;
    let targets = cluster
        .node_ids()
        .iter()
        .map(|n| cluster.address(n))
        .collect::<Vec<_>>()
        .join(",");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_kvbench-under-test"))
        .args([
            "--json",
            "load",
            "--targets",
            &targets,
            "--mix",
            "mixed",
            "--duration",
            "1s",
        ])
        .args(["--concurrency", "8", "--connections", "2", "--keys", "200"])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8(output.stdout).unwrap();
    for field in ["\"ops\":", "\"ops_per_s\":", "\"p99_ms\":", "\"errors\":{}"] {
        assert!(text.contains(field), "{field} missing from {text}");
    }
    assert!(
        !text.contains("\"ops\":0,"),
        "no operation completed: {text}"
    );
    // Every key holds one value afterwards: writes carried their contexts.
    let read = cluster
        .client("n1")
        .await
        .get("bench:0000000000", Some(3))
        .await
        .unwrap();
    assert_eq!(read.values().len(), 1, "{read:?}");
}

#[tokio::test]
async fn a_client_of_several_nodes_keeps_working_when_one_is_down() {
    let mut cluster = cluster("connect_many").await;
    // Port 1 on loopback: nothing listens there.
    let mut addresses = vec!["127.0.0.1:1".to_owned()];
    addresses.extend(cluster.node_ids().iter().map(|n| cluster.address(n)));
    let mut client = kv_client::Client::connect_many(&addresses).unwrap();
    for i in 0..30 {
        let key = format!("many-{i}");
        client
            .put(&key, format!("v{i}"), &WriteOptions::default())
            .await
            .unwrap_or_else(|e| panic!("put {key}: {e}"));
    }
    cluster.kill("n2");
    for i in 0..30 {
        let key = format!("many-{i}");
        let read = client
            .get(&key, None)
            .await
            .unwrap_or_else(|e| panic!("get {key} with n2 down: {e}"));
        assert_eq!(sorted_values(&read), [format!("v{i}")]);
    }
    assert!(kv_client::Client::connect_many::<&str>(&[]).is_err());
}
