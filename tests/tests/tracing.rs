//! One client request followed through the logs: with `--log-format=json` and
//! `--log-filter=info,kv_grpc=debug`, a Put with W=3 through n1 carries its request id
//! into the coordinator's span and into the replica writes it sends, so the id is found
//! in the JSON log of every node that stored the write.

use std::time::Duration;

use kv_e2e::{GOSSIP, TestCluster};
use kv_proto::kvstore as api;
use kv_proto::kvstore::kv_store_client::KvStoreClient;

/// Longest the log lines may take to reach the files.
const LOG_LIMIT: Duration = Duration::from_secs(10);

#[tokio::test]
async fn a_request_id_is_found_in_every_replicas_log() {
    let cluster = TestCluster::start_with(
        env!("CARGO_BIN_EXE_kvstore-under-test"),
        env!("CARGO_TARGET_TMPDIR"),
        "tracing",
        3,
        &["--log-format=json", "--log-filter=info,kv_grpc=debug"],
        GOSSIP,
    )
    .await;
    let request_id = format!("trace-me-{}", std::process::id());
    let mut client = KvStoreClient::connect(format!("http://{}", cluster.address("n1")))
        .await
        .unwrap();
    client
        .put(api::PutRequest {
            key: "traced".into(),
            value: b"v".to_vec().into(),
            consistency_w: 3,
            client_id: "tracing-test".into(),
            request_id: request_id.clone(),
            ..api::PutRequest::default()
        })
        .await
        .unwrap();

    let started = tokio::time::Instant::now();
    for node in ["n1", "n2", "n3"] {
        let path = cluster.log_path(node);
        loop {
            let log = std::fs::read_to_string(&path).unwrap_or_default();
            let lines: Vec<&str> = log.lines().filter(|l| l.contains(&request_id)).collect();
            if let Some(line) = lines.first() {
                assert!(line.starts_with('{'), "{node}: not a JSON line: {line}");
                break;
            }
            assert!(
                started.elapsed() < LOG_LIMIT,
                "{request_id} is not in {node}'s log ({})",
                path.display()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}
