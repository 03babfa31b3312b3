//! The node-to-node gRPC service, `kvstore.internal.Replica`: admit the call (a bound on
//! calls running at once), decode with the wire module, run the node's replica operation,
//! encode the answer. Client size limits do not apply.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use futures_util::FutureExt;
use futures_util::future::join_all;

use kv_node::{Node, NodeError, PeerTransport};
use kv_proto::internal as proto;
use kv_proto::internal::replica_server::Replica;
use tonic::{Request, Response, Status};

use crate::gate::Gate;
use crate::status::{item_error, status_of, wire_status};
use crate::wire::{self, Op, Outcome, WireError};

/// Serves `kvstore.internal.Replica` for one node.
#[derive(Debug)]
pub struct InternalApi<T> {
    node: Arc<Node<T>>,
    gate: Arc<Gate>,
}

impl<T> Clone for InternalApi<T> {
    fn clone(&self) -> Self {
        Self {
            node: Arc::clone(&self.node),
            gate: Arc::clone(&self.gate),
        }
    }
}

impl<T> InternalApi<T> {
    /// Wraps a node, admitting every call.
    pub fn new(node: Arc<Node<T>>) -> Self {
        Self {
            node,
            gate: Arc::new(Gate::open("internal")),
        }
    }

    /// Wraps a node, refusing calls beyond `max_concurrent_calls` running at once, or
    /// beyond `max_per_peer` from one peer (its client certificate under mTLS, else its
    /// IP address).
    pub fn with_limits(
        node: Arc<Node<T>>,
        max_concurrent_calls: usize,
        max_per_peer: usize,
    ) -> Self {
        let gate =
            Gate::new("internal", None, max_concurrent_calls).with_per_peer_limit(max_per_peer);
        Self {
            node,
            gate: Arc::new(gate),
        }
    }

    fn admit<M>(&self, request: &Request<M>, call: &str) -> Result<crate::gate::Admitted, Status> {
        // Peers hold no token: the internal listener is protected by where it listens
        // (and, later, by mutual TLS), so only the bound applies.
        let metrics = &self.node.stats().requests;
        let peer = request
            .extensions()
            .get::<crate::incoming::PeerKey>()
            .copied();
        self.gate
            .admit(request.metadata(), peer, call, None, metrics)
    }
}

/// Why one replica operation failed: the message broke the protocol, or the node failed.
enum ItemFailure {
    Wire(WireError),
    Node(NodeError),
}

impl ItemFailure {
    fn status(&self) -> Status {
        match self {
            Self::Wire(error) => wire_status(error),
            Self::Node(error) => status_of(error),
        }
    }
}

impl From<WireError> for ItemFailure {
    fn from(error: WireError) -> Self {
        Self::Wire(error)
    }
}

impl From<NodeError> for ItemFailure {
    fn from(error: NodeError) -> Self {
        Self::Node(error)
    }
}

#[tonic::async_trait]
impl<T: PeerTransport> Replica for InternalApi<T> {
    async fn read(
        &self,
        request: Request<proto::ReadRequest>,
    ) -> Result<Response<proto::ReadResponse>, Status> {
        let _permit = self.admit(&request, "Replica/Read")?;
        let outcome = self.read_one(request.get_ref()).map_err(|e| e.status())?;
        Ok(Response::new(outcome))
    }

    async fn write(
        &self,
        request: Request<proto::WriteRequest>,
    ) -> Result<Response<proto::WriteResponse>, Status> {
        let _permit = self.admit(&request, "Replica/Write")?;
        self.write_one(request.into_inner())
            .await
            .map_err(|e| e.status())?;
        Ok(Response::new(proto::WriteResponse {}))
    }

    async fn coordinate_write(
        &self,
        request: Request<proto::CoordinateWriteRequest>,
    ) -> Result<Response<proto::CoordinateWriteResponse>, Status> {
        let _permit = self.admit(&request, "Replica/CoordinateWrite")?;
        let command =
            wire::decode_coordinate_request(request.into_inner()).map_err(|e| wire_status(&e))?;
        let context = self
            .node
            .coordinate_write(command)
            .await
            .map_err(|e| status_of(&e))?;
        Ok(Response::new(proto::CoordinateWriteResponse {
            context: wire::encode_context(&context),
        }))
    }

    async fn coordinate_read(
        &self,
        request: Request<proto::CoordinateReadRequest>,
    ) -> Result<Response<proto::ReadResponse>, Status> {
        let _permit = self.admit(&request, "Replica/CoordinateRead")?;
        let request = request.into_inner();
        let merged = self
            .node
            .coordinate_read(request.key, request.read_quorum as usize)
            .await
            .map_err(|e| status_of(&e))?;
        Ok(Response::new(wire::read_response(merged.as_ref())))
    }

    async fn digests(
        &self,
        request: Request<proto::DigestsRequest>,
    ) -> Result<Response<proto::DigestsResponse>, Status> {
        let _permit = self.admit(&request, "Replica/Digests")?;
        let (format, ranges) =
            wire::decode_digests_request(request.get_ref()).map_err(|e| wire_status(&e))?;
        let request = request.into_inner();
        if request.end {
            self.node
                .aae_end(&request.initiator, request.completed, &ranges);
            return Ok(Response::new(proto::DigestsResponse::default()));
        }
        let digests = self
            .node
            .aae_digests(format, &request.initiator, &ranges)
            .map_err(|e| status_of(&e))?;
        Ok(Response::new(wire::digests_response(&digests)))
    }

    async fn key_list(
        &self,
        request: Request<proto::KeyListRequest>,
    ) -> Result<Response<proto::KeyListResponse>, Status> {
        let _permit = self.admit(&request, "Replica/KeyList")?;
        let request = request.into_inner();
        let (format, range, limit) =
            wire::decode_key_list_request(&request).map_err(|e| wire_status(&e))?;
        let page = self
            .node
            .aae_keys(
                format,
                &request.initiator,
                range,
                request.after.as_deref(),
                limit,
            )
            .map_err(|e| status_of(&e))?;
        Ok(Response::new(wire::key_list_response(page)))
    }

    async fn exchange_layout(
        &self,
        request: Request<proto::LayoutMessage>,
    ) -> Result<Response<proto::LayoutMessage>, Status> {
        let _permit = self.admit(&request, "Replica/ExchangeLayout")?;
        let layout = self
            .node
            .receive_layout(&request.into_inner().layout)
            .map_err(|e| status_of(&e))?;
        Ok(Response::new(proto::LayoutMessage { layout }))
    }

    async fn batch(
        &self,
        request: Request<proto::BatchRequest>,
    ) -> Result<Response<proto::BatchResponse>, Status> {
        let _permit = self.admit(&request, "Replica/Batch")?;
        let request = request.into_inner();
        wire::check_batch(&request).map_err(|e| wire_status(&e))?;
        let outcomes = if self.node.storage_writes_wait() {
            self.run_side_by_side(request.items).await
        } else {
            let mut outcomes = Vec::with_capacity(request.items.len());
            for item in request.items {
                outcomes.push(self.batch_item(item).await);
            }
            outcomes
        };
        let results = outcomes
            .into_iter()
            .map(|outcome| proto::BatchResult {
                outcome: Some(
                    outcome.unwrap_or_else(|failure| Outcome::Error(item_error(&failure.status()))),
                ),
            })
            .collect();
        Ok(Response::new(proto::BatchResponse { results }))
    }
}

impl<T: PeerTransport> InternalApi<T> {
    /// Runs the items side by side in this task, in order until one must wait: each
    /// write is applied at once and only its durability is awaited, so a batch of synced
    /// writes shares one group commit. A panicking item fails alone; results keep the
    /// items' order.
    async fn run_side_by_side(
        &self,
        items: Vec<proto::BatchItem>,
    ) -> Vec<Result<Outcome, ItemFailure>> {
        join_all(items.into_iter().map(|item| async move {
            match AssertUnwindSafe(self.batch_item(item)).catch_unwind().await {
                Ok(outcome) => outcome,
                Err(_panic) => Err(ItemFailure::Node(NodeError::Storage(
                    kv_storage::StorageError::Engine {
                        action: "running a batch item",
                        source: "the item panicked".into(),
                    },
                ))),
            }
        }))
        .await
    }

    async fn batch_item(&self, item: proto::BatchItem) -> Result<Outcome, ItemFailure> {
        match item.op {
            Some(Op::Read(read)) => self.read_one(&read).map(Outcome::Read),
            Some(Op::Write(write)) => {
                self.write_one(write).await?;
                Ok(Outcome::Write(proto::WriteResponse {}))
            }
            Some(Op::Hint(hint)) => {
                self.hint_one(hint).await?;
                Ok(Outcome::Hint(proto::HintResponse {}))
            }
            None => Err(WireError::EmptyItem.into()),
        }
    }

    fn read_one(&self, request: &proto::ReadRequest) -> Result<proto::ReadResponse, ItemFailure> {
        trace_item("replica read", &request.request_id, &request.key);
        let versions = self.node.replica_read(&request.key)?;
        Ok(wire::read_response(versions.as_ref()))
    }

    async fn write_one(&self, request: proto::WriteRequest) -> Result<(), ItemFailure> {
        trace_item("replica write", &request.request_id, &request.key);
        let versions = wire::decode_siblings(&request.siblings)?;
        self.node.replica_write(request.key, versions).await?;
        Ok(())
    }
}

impl<T: PeerTransport> InternalApi<T> {
    async fn hint_one(&self, request: proto::HintRequest) -> Result<(), ItemFailure> {
        trace_item("hint", &request.request_id, &request.key);
        let versions = wire::decode_siblings(&request.siblings)?;
        self.node
            .store_hint(&request.target, request.key, versions)
            .await?;
        Ok(())
    }
}

/// Most bytes of a request id a replica logs (the id comes from another node, which
/// bounds it; this bounds what a log line can carry whatever the peer sent).
const MAX_LOGGED_ID_BYTES: usize = 128;

/// Logs (at debug level) one replica read or write with the client request it serves,
/// so a request can be followed from its coordinator to every replica's log.
fn trace_item(what: &'static str, request_id: &str, key: &[u8]) {
    let mut end = request_id.len().min(MAX_LOGGED_ID_BYTES);
    while !request_id.is_char_boundary(end) {
        end -= 1;
    }
    tracing::debug!(
        request_id = &request_id[..end],
        key_hash = %crate::key_hash_hex(key),
        "{what}"
    );
}
