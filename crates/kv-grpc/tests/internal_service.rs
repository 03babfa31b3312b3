//! The `kvstore.internal.Replica` handlers: batch items run in order with their own
//! results, one bad item does not fail the others, and oversized or malformed requests are
//! refused with a message that names the problem.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kv_clock::{ActorId, VersionVector};
use kv_grpc::{GrpcTransport, InternalApi, wire};
use kv_node::{NodeBuilder, NodeConfig, StorageChoice};
use kv_proto::internal as proto;
use kv_proto::internal::replica_server::Replica;
use kv_storage::Siblings;
use tonic::{Code, Request};
use wire::Outcome;

fn api() -> InternalApi<GrpcTransport> {
    let config = NodeConfig::standalone("n1", "127.0.0.1:50051".parse().unwrap());
    let node = NodeBuilder::new(config, GrpcTransport::new(&[], Duration::from_secs(1)))
        .storage(StorageChoice::Memory.open().unwrap())
        .start_token(1)
        .build()
        .unwrap();
    InternalApi::new(Arc::clone(&node))
}

fn versions(value: &str) -> Siblings {
    let mut versions = Siblings::new();
    versions.update(
        &VersionVector::new(),
        Some(Bytes::from(value.to_owned())),
        &ActorId::new("n9").unwrap(),
    );
    versions
}

fn raw_write(key: &str, siblings: Bytes) -> proto::BatchItem {
    proto::BatchItem {
        op: Some(wire::Op::Write(proto::WriteRequest {
            key: Bytes::from(key.to_owned()),
            siblings,
            request_id: String::new(),
        })),
    }
}

fn read(key: &str) -> proto::BatchItem {
    wire::read_item(Bytes::from(key.to_owned()), "")
}

#[tokio::test]
async fn items_run_in_order_and_fail_alone() {
    let api = api();
    let items = vec![
        wire::write_item(Bytes::from_static(b"a"), &versions("1"), ""),
        raw_write("b", Bytes::from_static(b"not a dvvset")),
        read("a"),
        read("missing"),
        proto::BatchItem { op: None },
    ];
    let results = api
        .batch(Request::new(proto::BatchRequest { items }))
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
    let items = (0..=wire::MAX_BATCH_ITEMS)
        .map(|i| read(&format!("k{i}")))
        .collect();
    let status = api()
        .batch(Request::new(proto::BatchRequest { items }))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().contains("at most 256"),
        "{}",
        status.message()
    );
}

#[tokio::test]
async fn a_forwarded_write_is_checked_before_it_is_coordinated() {
    let api = api();
    let request = |context: Bytes, write_quorum: u32| proto::CoordinateWriteRequest {
        key: Bytes::from_static(b"k"),
        value: Some(Bytes::from_static(b"v")),
        context,
        write_quorum,
        request_id: String::new(),
        sloppy: false,
    };
    let malformed = api
        .coordinate_write(Request::new(request(Bytes::from_static(b"junk"), 1)))
        .await
        .unwrap_err();
    assert_eq!(malformed.code(), Code::InvalidArgument);
    assert!(
        malformed.message().contains("malformed context"),
        "{malformed:?}"
    );
    let empty = wire::encode_context(&VersionVector::new());
    for bad_w in [0, 2] {
        let status = api
            .coordinate_write(Request::new(request(empty.clone(), bad_w)))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "W={bad_w}");
        assert!(
            status.message().contains("write_quorum") && status.message().contains("1..=1"),
            "{status:?}"
        );
    }
    let reply = api
        .coordinate_write(Request::new(request(empty, 1)))
        .await
        .unwrap()
        .into_inner();
    let context = wire::decode_context(&reply.context).unwrap();
    assert_eq!(
        context.get("n1.1"),
        1,
        "the coordinator minted the first version under its actor (memory storage: n1.<start>)"
    );
}

#[tokio::test]
async fn anti_entropy_requests_are_checked_before_they_are_answered() {
    let api = api();
    let other_format = proto::TreeFormat {
        version: 1,
        partition_bits: 10,
        leaf_bits: 8,
    };
    let request = proto::DigestsRequest {
        format: Some(other_format),
        ranges: vec![proto::HashRange {
            first: 0,
            last: u64::MAX,
        }],
        initiator: "n2".into(),
        end: false,
        completed: false,
    };
    let status = api.digests(Request::new(request)).await.unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert!(
        status
            .message()
            .contains("tree format v1 (1024 partitions x 256 leaves)"),
        "{status:?}"
    );
    let backwards = proto::DigestsRequest {
        format: Some(wire::tree_format(kv_aae::TreeFormat::CURRENT)),
        ranges: vec![proto::HashRange { first: 5, last: 1 }],
        initiator: "n2".into(),
        end: false,
        completed: false,
    };
    let status = api.digests(Request::new(backwards)).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    let unbounded = proto::KeyListRequest {
        format: Some(wire::tree_format(kv_aae::TreeFormat::CURRENT)),
        range: Some(proto::HashRange {
            first: 0,
            last: u64::MAX,
        }),
        after: None,
        limit: 1_000_000,
        initiator: "n2".into(),
    };
    let status = api.key_list(Request::new(unbounded)).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("1..=1024"), "{status:?}");
    let empty = api
        .digests(Request::new(wire::digests_request(
            "n2",
            &[kv_aae::HashRange::FULL],
        )))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(empty.digests, vec![proto::RangeDigest::default()]);
}
