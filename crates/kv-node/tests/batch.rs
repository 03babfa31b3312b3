//! The `Replica/Batch` handler: items run in order with their own results, one bad item
//! does not fail the others, and oversized or empty requests are refused clearly.

use std::sync::Arc;

use bytes::Bytes;
use kv_clock::{ActorId, VersionVector, encode_dvvset};
use kv_node::sim::SimNetwork;
use kv_node::{InternalApi, Node, NodeConfig};
use kv_proto::internal as wire;
use kv_proto::internal::replica_server::Replica;
use kv_storage::{MemoryStore, Siblings};
use tonic::{Code, Request};
use wire::batch_result::Outcome;

fn api() -> InternalApi<kv_node::sim::SimTransport> {
    let network = SimNetwork::new(1);
    let config = NodeConfig::new("n1", "127.0.0.1:50051".parse().unwrap());
    let storage = Arc::new(MemoryStore::new(kv_ring::key_hash));
    let node = Node::new(config, storage, network.transport("n1")).unwrap();
    network.register(&node);
    InternalApi::new(node)
}

fn encoded(value: &str) -> Bytes {
    let mut versions = Siblings::new();
    versions.update(
        &VersionVector::new(),
        Some(Bytes::from(value.to_owned())),
        &ActorId::new("n9").unwrap(),
    );
    let mut out = Vec::new();
    encode_dvvset(&versions, &mut out);
    out.into()
}

fn write(key: &str, siblings: Bytes) -> wire::BatchItem {
    wire::BatchItem {
        op: Some(wire::batch_item::Op::Write(wire::WriteRequest {
            key: Bytes::from(key.to_owned()),
            siblings,
        })),
    }
}

fn read(key: &str) -> wire::BatchItem {
    wire::BatchItem {
        op: Some(wire::batch_item::Op::Read(wire::ReadRequest {
            key: Bytes::from(key.to_owned()),
        })),
    }
}

#[tokio::test]
async fn items_run_in_order_and_fail_alone() {
    let api = api();
    let items = vec![
        write("a", encoded("1")),
        write("b", Bytes::from_static(b"not a dvvset")),
        read("a"),
        read("missing"),
        wire::BatchItem { op: None },
    ];
    let results = api
        .batch(Request::new(wire::BatchRequest { items }))
        .await
        .unwrap()
        .into_inner()
        .results;
    assert_eq!(results.len(), 5);
    assert!(matches!(results[0].outcome, Some(Outcome::Write(_))));
    match &results[1].outcome {
        Some(Outcome::Error(error)) => {
            assert_eq!(error.code, Code::InvalidArgument as i32);
            assert!(
                error.message.contains("malformed versions"),
                "{}",
                error.message
            );
        }
        other => panic!("expected an item error, got {other:?}"),
    }
    match &results[2].outcome {
        Some(Outcome::Read(reply)) => assert!(reply.found, "the read sees the write before it"),
        other => panic!("expected a read, got {other:?}"),
    }
    assert!(matches!(&results[3].outcome, Some(Outcome::Read(r)) if !r.found));
    assert!(
        matches!(&results[4].outcome, Some(Outcome::Error(e)) if e.code == Code::InvalidArgument as i32)
    );
}

#[tokio::test]
async fn an_oversized_batch_is_refused() {
    let items = (0..257).map(|i| read(&format!("k{i}"))).collect();
    let status = api()
        .batch(Request::new(wire::BatchRequest { items }))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().contains("at most 256"),
        "{}",
        status.message()
    );
}
