//! `GrpcTransport` and its batcher against real tonic servers on 127.0.0.1, each a
//! scripted `Replica` service on its own runtime (so a test can kill it like a process):
//! how failed calls are classified, how items share batches, and what a caller sees when
//! a peer refuses, hangs, answers wrongly or disappears mid-call.
//!
//! The classification decides whether a forwarded write may be retried on another
//! replica: only a peer that was certainly never reached is `Unreachable`.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use kv_clock::VersionVector;
use kv_grpc::{GrpcTransport, wire};
use kv_node::{
    ErrorKind, PeerSpec, PeerTransport, RemoteError, SharedVersions, TransportError, WriteCommand,
};
use kv_proto::internal as proto;
use kv_proto::internal::replica_server::{Replica, ReplicaServer};
use tokio::sync::Notify;
use tonic::{Code, Request, Response, Status};

const CALL_TIMEOUT: Duration = Duration::from_millis(500);

/// What the scripted peer does.
#[derive(Debug, Default)]
struct Script {
    /// Each batch's item count, in arrival order.
    batch_sizes: Mutex<Vec<usize>>,
    /// How long each batch takes to answer.
    batch_delay: Duration,
    /// Answer every batch with no results at all.
    drop_results: bool,
    /// Fail the items on this key (with FAILED_PRECONDITION).
    failing_key: Option<Bytes>,
    /// How `CoordinateWrite` answers: `None` hangs forever.
    coordinate: Option<Result<(), Code>>,
    /// Woken when a `CoordinateWrite` arrives.
    coordinate_arrived: Notify,
    /// How many digests `Digests` answers with, whatever it was asked.
    digests_answered: usize,
}

#[derive(Debug, Clone)]
struct ScriptedPeer(Arc<Script>);

#[tonic::async_trait]
impl Replica for ScriptedPeer {
    async fn read(
        &self,
        _request: Request<proto::ReadRequest>,
    ) -> Result<Response<proto::ReadResponse>, Status> {
        Err(Status::unimplemented("reads travel in batches"))
    }

    async fn write(
        &self,
        _request: Request<proto::WriteRequest>,
    ) -> Result<Response<proto::WriteResponse>, Status> {
        Err(Status::unimplemented("writes travel in batches"))
    }

    async fn coordinate_write(
        &self,
        _request: Request<proto::CoordinateWriteRequest>,
    ) -> Result<Response<proto::CoordinateWriteResponse>, Status> {
        self.0.coordinate_arrived.notify_one();
        match self.0.coordinate {
            Some(Ok(())) => Ok(Response::new(proto::CoordinateWriteResponse {
                context: wire::encode_context(&VersionVector::new()),
            })),
            Some(Err(code)) => Err(Status::new(code, "write quorum not met: W=2 of 3")),
            None => std::future::pending().await,
        }
    }

    async fn digests(
        &self,
        _request: Request<proto::DigestsRequest>,
    ) -> Result<Response<proto::DigestsResponse>, Status> {
        let digests = vec![proto::RangeDigest::default(); self.0.digests_answered];
        Ok(Response::new(proto::DigestsResponse { digests }))
    }

    async fn key_list(
        &self,
        request: Request<proto::KeyListRequest>,
    ) -> Result<Response<proto::KeyListResponse>, Status> {
        // One key more than asked for: a peer that ignores the limit.
        let keys = (0..=request.get_ref().limit)
            .map(|i| proto::KeyFingerprint {
                key: Bytes::from(format!("k{i}")),
                fingerprint: u64::from(i),
            })
            .collect();
        Ok(Response::new(proto::KeyListResponse {
            keys,
            complete: true,
        }))
    }

    async fn coordinate_read(
        &self,
        _request: Request<proto::CoordinateReadRequest>,
    ) -> Result<Response<proto::ReadResponse>, Status> {
        Err(Status::unimplemented("not scripted"))
    }

    async fn exchange_layout(
        &self,
        request: Request<proto::LayoutMessage>,
    ) -> Result<Response<proto::LayoutMessage>, Status> {
        // Echoes the layout: the transport must carry the bytes unchanged both ways.
        Ok(Response::new(request.into_inner()))
    }

    async fn batch(
        &self,
        request: Request<proto::BatchRequest>,
    ) -> Result<Response<proto::BatchResponse>, Status> {
        let items = request.into_inner().items;
        self.0
            .batch_sizes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(items.len());
        tokio::time::sleep(self.0.batch_delay).await;
        if self.0.drop_results {
            return Ok(Response::new(proto::BatchResponse::default()));
        }
        let results = items
            .into_iter()
            .map(|item| proto::BatchResult {
                outcome: Some(self.answer(item)),
            })
            .collect();
        Ok(Response::new(proto::BatchResponse { results }))
    }
}

impl ScriptedPeer {
    fn answer(&self, item: proto::BatchItem) -> wire::Outcome {
        let (key, outcome) = match item.op {
            Some(wire::Op::Read(read)) => {
                (read.key, wire::Outcome::Read(wire::read_response(None)))
            }
            Some(wire::Op::Write(write)) => {
                (write.key, wire::Outcome::Write(proto::WriteResponse {}))
            }
            Some(wire::Op::Hint(hint)) => (hint.key, wire::Outcome::Hint(proto::HintResponse {})),
            None => return wire::Outcome::Error(proto::ItemError::default()),
        };
        if self.0.failing_key.as_ref() == Some(&key) {
            return wire::Outcome::Error(proto::ItemError {
                code: Code::FailedPrecondition as i32,
                message: "too many siblings".into(),
            });
        }
        outcome
    }
}

/// A scripted peer serving on its own runtime and thread, so killing it closes every
/// connection at once, as a crashed process would.
struct Peer {
    address: SocketAddr,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Peer {
    fn start(script: Script) -> (Self, Arc<Script>) {
        let script = Arc::new(script);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let address = listener.local_addr().unwrap();
        let service = ReplicaServer::new(ScriptedPeer(Arc::clone(&script)));
        runtime.spawn(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener))
                .await
        });
        let peer = Self {
            address,
            runtime: Some(runtime),
        };
        (peer, script)
    }

    fn kill(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        self.kill();
    }
}

fn transport_to(address: SocketAddr) -> Arc<GrpcTransport> {
    let peers = [PeerSpec {
        node_id: "p".into(),
        internal_address: address,
    }];
    Arc::new(GrpcTransport::new(&peers, CALL_TIMEOUT))
}

fn command() -> WriteCommand {
    WriteCommand {
        key: Bytes::from_static(b"k"),
        value: Some(Bytes::from_static(b"v")),
        context: VersionVector::new(),
        write_quorum: 2,
        request_id: String::new(),
        sloppy: false,
    }
}

fn siblings() -> Arc<SharedVersions> {
    SharedVersions::new(kv_storage::Siblings::new())
}

/// A port nothing listens on.
fn closed_address() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

#[tokio::test]
async fn a_peer_nobody_listens_on_is_unreachable() {
    let transport = transport_to(closed_address());
    let forwarded = transport
        .coordinate_write("p", command())
        .await
        .unwrap_err();
    assert!(
        matches!(forwarded, TransportError::Unreachable { .. }),
        "{forwarded:?}"
    );
    let read = transport
        .read("p", Bytes::from_static(b"k"), "")
        .await
        .unwrap_err();
    assert!(
        matches!(read, TransportError::Unreachable { .. }),
        "{read:?}"
    );
    let unknown = transport
        .read("nobody", Bytes::new(), "")
        .await
        .unwrap_err();
    assert!(
        matches!(unknown, TransportError::Unreachable { .. }),
        "{unknown:?}"
    );
}

#[tokio::test]
async fn a_refusal_is_the_peers_answer_not_an_unreachable_peer() {
    let (peer, _) = Peer::start(Script {
        coordinate: Some(Err(Code::Unavailable)),
        ..Script::default()
    });
    let error = transport_to(peer.address)
        .coordinate_write("p", command())
        .await
        .unwrap_err();
    let TransportError::Remote {
        error: RemoteError { kind, message },
        ..
    } = error
    else {
        panic!("expected the peer's answer, got {error:?}");
    };
    assert_eq!(kind, ErrorKind::Unavailable);
    assert!(message.contains("W=2 of 3"), "{message}");
}

#[tokio::test]
async fn a_peer_that_hangs_times_out() {
    let (peer, _) = Peer::start(Script {
        coordinate: None,
        batch_delay: Duration::from_secs(3600),
        ..Script::default()
    });
    let transport = transport_to(peer.address);
    let forwarded = transport
        .coordinate_write("p", command())
        .await
        .unwrap_err();
    assert!(
        matches!(forwarded, TransportError::Timeout { .. }),
        "{forwarded:?}"
    );
    let read = transport
        .read("p", Bytes::from_static(b"k"), "")
        .await
        .unwrap_err();
    assert!(matches!(read, TransportError::Timeout { .. }), "{read:?}");
}

#[tokio::test]
async fn a_peer_that_dies_mid_call_may_have_applied_it() {
    let (mut peer, script) = Peer::start(Script {
        coordinate: None,
        ..Script::default()
    });
    let transport = transport_to(peer.address);
    let call = tokio::spawn({
        let transport = Arc::clone(&transport);
        async move { transport.coordinate_write("p", command()).await }
    });
    script.coordinate_arrived.notified().await;
    peer.kill();
    let error = call.await.unwrap().unwrap_err();
    // Never `Unreachable`: the peer had the request, so the write must not be retried on
    // another replica (it would mint a second version).
    assert!(
        matches!(error, TransportError::Interrupted { .. }),
        "{error:?}"
    );
}

#[tokio::test]
async fn queued_items_share_batches_of_at_most_the_limit() {
    let (peer, script) = Peer::start(Script {
        batch_delay: Duration::from_millis(20),
        ..Script::default()
    });
    let transport = transport_to(peer.address);
    let calls: Vec<_> = (0..600)
        .map(|i| {
            let transport = Arc::clone(&transport);
            tokio::spawn(async move {
                let key = Bytes::from(format!("k{i}"));
                if i % 2 == 0 {
                    transport.read("p", key, "").await.map(|_| ())
                } else {
                    transport.write("p", key, siblings(), "").await
                }
            })
        })
        .collect();
    for call in calls {
        call.await.unwrap().unwrap();
    }
    let sizes = script.batch_sizes.lock().unwrap().clone();
    assert_eq!(sizes.iter().sum::<usize>(), 600, "{sizes:?}");
    assert!(
        sizes.iter().all(|&n| n <= wire::MAX_BATCH_ITEMS),
        "{sizes:?}"
    );
    assert!(sizes.len() < 600, "items never shared a batch: {sizes:?}");
}

#[tokio::test]
async fn an_item_that_fails_fails_alone() {
    let (peer, _) = Peer::start(Script {
        batch_delay: Duration::from_millis(20),
        failing_key: Some(Bytes::from_static(b"bad")),
        ..Script::default()
    });
    let transport = transport_to(peer.address);
    let (good, bad) = tokio::join!(
        transport.write("p", Bytes::from_static(b"good"), siblings(), ""),
        transport.write("p", Bytes::from_static(b"bad"), siblings(), ""),
    );
    good.unwrap();
    let error = bad.unwrap_err();
    assert!(
        matches!(&error, TransportError::Remote { error, .. } if error.kind == ErrorKind::FailedPrecondition),
        "{error:?}"
    );
}

#[tokio::test]
async fn a_batch_answered_wrongly_fails_every_item_in_it() {
    let (peer, _) = Peer::start(Script {
        drop_results: true,
        ..Script::default()
    });
    let transport = transport_to(peer.address);
    let error = transport
        .read("p", Bytes::from_static(b"k"), "")
        .await
        .unwrap_err();
    let TransportError::Remote { error, .. } = error else {
        panic!("expected an unusable answer, got {error:?}");
    };
    assert_eq!(error.kind, ErrorKind::Internal);
    assert!(
        error.message.contains("0 results for 1 items"),
        "{}",
        error.message
    );
}

#[tokio::test]
async fn a_peer_that_disappears_mid_batch_fails_the_whole_batch() {
    let (mut peer, script) = Peer::start(Script {
        batch_delay: Duration::from_secs(3600),
        ..Script::default()
    });
    let transport = transport_to(peer.address);
    let calls: Vec<_> = (0..5)
        .map(|i| {
            let transport = Arc::clone(&transport);
            tokio::spawn(async move {
                transport
                    .write("p", Bytes::from(format!("k{i}")), siblings(), "")
                    .await
            })
        })
        .collect();
    while script.batch_sizes.lock().unwrap().is_empty() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    peer.kill();
    for call in calls {
        let error = call.await.unwrap().unwrap_err();
        assert!(
            !matches!(error, TransportError::Remote { .. }),
            "the peer never answered: {error:?}"
        );
    }
}

#[tokio::test]
async fn anti_entropy_answers_that_break_the_protocol_are_refused() {
    let (peer, _) = Peer::start(Script {
        digests_answered: 1,
        ..Script::default()
    });
    let transport = transport_to(peer.address);
    let ranges = vec![
        kv_aae::HashRange::FULL,
        kv_aae::HashRange::new(1, 2).unwrap(),
    ];
    let error = transport.aae_digests("p", "n1", ranges).await.unwrap_err();
    assert!(
        matches!(&error, TransportError::Remote { error, .. } if error.message.contains("1 digests answered 2 ranges")),
        "{error:?}"
    );
    let error = transport
        .aae_keys("p", "n1", kv_aae::HashRange::FULL, None, 3)
        .await
        .unwrap_err();
    assert!(
        matches!(&error, TransportError::Remote { error, .. } if error.message.contains("4 keys answered a request for 3")),
        "{error:?}"
    );
}
