//! Who may call what on a real cluster: the node-to-node service only on its own listener
//! (and absent from the client listener's reflection), client bearer tokens with roles,
//! and the CLI carrying a token from the environment.

use kv_client::{Client, Code, RingChangeKind, WriteOptions};
use kv_e2e::TestCluster;
use kv_proto::internal::replica_client::ReplicaClient;
use kv_proto::kvstore::kv_store_client::KvStoreClient;

const ADMIN_TOKEN: &str = "admin-0123456789abcdef0123456789";
const WRITE_TOKEN: &str = "write-0123456789abcdef0123456789";
const READ_TOKEN: &str = "read-0123456789abcdef01234567890";

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

async fn channel(address: &str) -> tonic::transport::Channel {
    tonic::transport::Endpoint::from_shared(format!("http://{address}"))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

#[tokio::test]
async fn the_internal_service_is_served_only_on_its_own_port() {
    let cluster = cluster_with("internal_listener", &[]).await;
    let client_port = channel(&cluster.address("n1")).await;
    let refused = ReplicaClient::new(client_port.clone())
        .batch(kv_proto::internal::BatchRequest::default())
        .await
        .unwrap_err();
    assert_eq!(
        refused.code(),
        tonic::Code::Unimplemented,
        "Replica/Batch on the client port: {refused:?}"
    );

    let internal_port = channel(&cluster.internal_address("n1")).await;
    let answered = ReplicaClient::new(internal_port.clone())
        .batch(kv_proto::internal::BatchRequest::default())
        .await;
    assert!(
        answered.is_ok(),
        "the internal port serves Replica: {answered:?}"
    );
    let not_here = KvStoreClient::new(internal_port)
        .get(kv_proto::kvstore::GetRequest {
            key: "k".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(not_here.code(), tonic::Code::Unimplemented);

    // Peers are dialled at their internal addresses, and the membership shows both.
    let mut n1 = cluster.client("n1").await;
    n1.put("k", "v", &WriteOptions::default()).await.unwrap();
    let members = n1.membership().await.unwrap().members;
    let me = members.iter().find(|m| m.node_id == "n1").unwrap();
    assert_eq!(me.grpc_address, cluster.address("n1"));
    assert_eq!(me.internal_address, cluster.internal_address("n1"));
    let n2 = members.iter().find(|m| m.node_id == "n2").unwrap();
    assert_eq!(n2.internal_address, cluster.internal_address("n2"));
}

fn token_file(dir: &tempfile::TempDir) -> String {
    let path = dir.path().join("tokens");
    let text = format!(
        "# role name token\nadmin ops {ADMIN_TOKEN}\nwrite app {WRITE_TOKEN}\nread dash {READ_TOKEN}\n"
    );
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

async fn with_token(cluster: &TestCluster, token: &str) -> Client {
    cluster.client("n1").await.with_token(token).unwrap()
}

#[tokio::test]
async fn tokens_and_roles_guard_the_client_api() {
    let dir = tempfile::tempdir().unwrap();
    let flag = format!("--auth-tokens={}", token_file(&dir));
    let cluster = cluster_with("tokens", &[&flag]).await;
    let blind = WriteOptions::default();

    let mut anonymous = cluster.client("n1").await;
    let error = anonymous.put("k", "v", &blind).await.unwrap_err();
    assert_eq!(error.code(), Some(Code::Unauthenticated), "{error}");
    assert!(
        error.to_string().contains("authorization: Bearer"),
        "{error}"
    );
    let error = anonymous.get("k", None).await.unwrap_err();
    assert_eq!(error.code(), Some(Code::Unauthenticated), "{error}");
    assert!(anonymous.health().await.is_ok(), "health needs no token");

    let stranger = "strange-0123456789abcdef0123456";
    let error = with_token(&cluster, stranger)
        .await
        .get("k", None)
        .await
        .unwrap_err();
    assert_eq!(error.code(), Some(Code::Unauthenticated), "{error}");
    assert!(!error.to_string().contains(stranger), "echoed: {error}");

    let mut reader = with_token(&cluster, READ_TOKEN).await;
    assert!(reader.get("k", None).await.is_ok());
    let error = reader.put("k", "v", &blind).await.unwrap_err();
    assert_eq!(error.code(), Some(Code::PermissionDenied), "{error}");
    assert!(
        error
            .to_string()
            .contains("KVStore/Put needs the write role"),
        "{error}"
    );
    assert!(!error.to_string().contains(READ_TOKEN), "echoed: {error}");

    let mut writer = with_token(&cluster, WRITE_TOKEN).await;
    writer.put("k", "v", &blind).await.unwrap();
    assert_eq!(writer.get("k", None).await.unwrap().values(), ["v"]);
    let leave = [String::from("n3")];
    let error = writer
        .change_ring(RingChangeKind::Leave, &leave, true)
        .await
        .unwrap_err();
    assert_eq!(error.code(), Some(Code::PermissionDenied), "{error}");
    assert!(error.to_string().contains("admin role"), "{error}");

    // The admin passes the gate; a static cluster then refuses ring changes on its own.
    let mut admin = with_token(&cluster, ADMIN_TOKEN).await;
    let error = admin
        .change_ring(RingChangeKind::Leave, &leave, true)
        .await
        .unwrap_err();
    assert_eq!(error.code(), Some(Code::FailedPrecondition), "{error}");
}

#[tokio::test]
async fn the_cli_sends_the_token_from_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let flag = format!("--auth-tokens={}", token_file(&dir));
    let cluster = cluster_with("cli_token", &[&flag]).await;
    let cli = |token: Option<&str>| {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_kvstore-under-test"));
        command.args(["put", "k", "from-cli", "--addr", &cluster.address("n2")]);
        command.env_remove("KVSTORE_TOKEN");
        if let Some(token) = token {
            command.env("KVSTORE_TOKEN", token);
        }
        command.output().unwrap()
    };
    let refused = cli(None);
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("UNAUTHENTICATED"), "{stderr}");
    let written = cli(Some(WRITE_TOKEN));
    assert!(
        written.status.success(),
        "{}",
        String::from_utf8_lossy(&written.stderr)
    );
    let read = with_token(&cluster, READ_TOKEN)
        .await
        .get("k", None)
        .await
        .unwrap();
    assert_eq!(read.values(), ["from-cli"]);
}
