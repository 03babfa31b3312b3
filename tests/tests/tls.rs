//! Mutual TLS with real processes: a cluster whose nodes serve and dial over TLS, refusing
//! plaintext, certificates from another CA, and internal callers without a certificate;
//! and a node that picks up new certificate files without a restart.

use std::time::{Duration, Instant};

use kv_client::{Client, ClientTls, WriteOptions};
use kv_e2e::TestCluster;
use kv_harness::tls::{DevPki, create_dev_pki};
use kv_proto::internal::replica_client::ReplicaClient;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

async fn tls_cluster(test: &str) -> TestCluster {
    TestCluster::start_tls(
        env!("CARGO_BIN_EXE_kvstore-under-test"),
        env!("CARGO_TARGET_TMPDIR"),
        test,
        3,
        &[],
    )
    .await
}

/// Whether a health call through a client trusting `tls` (plaintext without) succeeds.
async fn health_answers(address: &str, tls: Option<&ClientTls>) -> bool {
    match Client::connect_with(address, tls).await {
        Ok(mut client) => client.health().await.is_ok(),
        Err(_) => false,
    }
}

fn trusting(pki: &DevPki) -> ClientTls {
    ClientTls::from_files(&pki.ca, None).unwrap()
}

/// `Replica/Batch` on `address` over TLS trusting `ca`, presenting `identity` (a node's
/// certificate) if given.
async fn internal_batch(address: &str, ca: &DevPki, identity: Option<(&DevPki, &str)>) -> bool {
    let mut config = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(std::fs::read(&ca.ca).unwrap()));
    if let Some((pki, node)) = identity {
        let cert = std::fs::read(pki.cert(node)).unwrap();
        let key = std::fs::read(pki.key(node)).unwrap();
        config = config.identity(Identity::from_pem(cert, key));
    }
    let endpoint = Endpoint::from_shared(format!("https://{address}"))
        .unwrap()
        .tls_config(config)
        .unwrap();
    let Ok(channel) = endpoint.connect().await else {
        return false;
    };
    ReplicaClient::new(channel)
        .batch(kv_proto::internal::BatchRequest::default())
        .await
        .is_ok()
}

#[tokio::test]
async fn nodes_talk_over_mutual_tls_and_refuse_plaintext_and_strangers() {
    let cluster = tls_cluster("tls_cluster").await;
    let pki = cluster.pki().unwrap().clone();

    // W=3 reaches every replica: the nodes dial each other over mutual TLS.
    let mut n1 = cluster.client("n1").await;
    let all = WriteOptions {
        w: Some(3),
        ..WriteOptions::default()
    };
    n1.put("k", "over tls", &all).await.unwrap();
    let read = cluster.client("n3").await.get("k", Some(3)).await.unwrap();
    assert_eq!(read.values(), ["over tls"]);

    let client_port = cluster.address("n1");
    let internal_port = cluster.internal_address("n1");
    assert!(
        !health_answers(&client_port, None).await,
        "plaintext served"
    );

    let dir = tempfile::tempdir().unwrap();
    let stranger = create_dev_pki(dir.path(), "another CA", &["n1".to_owned()]).unwrap();
    assert!(
        !health_answers(&client_port, Some(&trusting(&stranger))).await,
        "a client trusting another CA accepted the node's certificate"
    );

    assert!(internal_batch(&internal_port, &pki, Some((&pki, "n2"))).await);
    assert!(
        !internal_batch(&internal_port, &pki, None).await,
        "the internal listener served a caller without a client certificate"
    );
    assert!(
        !internal_batch(&internal_port, &pki, Some((&stranger, "n1"))).await,
        "the internal listener accepted a certificate from another CA"
    );
}

#[tokio::test]
async fn new_certificate_files_are_served_without_a_restart() {
    let cluster = tls_cluster("tls_reload").await;
    let old = cluster.pki().unwrap().clone();
    let address = cluster.address("n1");
    assert!(health_answers(&address, Some(&trusting(&old))).await);

    // n1's certificate and key are replaced by ones from another CA; once n1 re-reads
    // its files, new connections see the new certificate (its peers' CA file is
    // unchanged, so this shows the reload, not a rotation plan).
    let dir = tempfile::tempdir().unwrap();
    let new = create_dev_pki(dir.path(), "the new CA", &["n1".to_owned()]).unwrap();
    let key = std::fs::read(new.key("n1")).unwrap();
    let cert = std::fs::read(new.cert("n1")).unwrap();
    std::fs::write(old.key("n1"), key).unwrap();
    std::fs::write(old.cert("n1"), cert).unwrap();
    let started = Instant::now();
    while !health_answers(&address, Some(&trusting(&new))).await {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "n1 did not serve its new certificate"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!("new certificate served after {:?}", started.elapsed());
    assert!(!health_answers(&address, Some(&trusting(&old))).await);
    let log = std::fs::read_to_string(cluster.log_path("n1")).unwrap();
    assert!(log.contains("TLS certificates reloaded"), "{log}");
}
