//! The node-to-node gRPC service, `kvstore.internal.Replica`. Versions travel in
//! kv-clock's binary encoding; client size limits do not apply here.

use std::sync::Arc;

use bytes::Bytes;
use kv_clock::{decode_dvvset, decode_version_vector, encode_dvvset, encode_version_vector};
use kv_proto::internal as wire;
use kv_proto::internal::replica_server::Replica;
use kv_storage::Siblings;
use tonic::{Request, Response, Status};

use crate::batcher::MAX_BATCH_ITEMS;
use crate::{Node, NodeError, PeerTransport, WriteCommand};

/// Serves `kvstore.internal.Replica` for one node.
#[derive(Debug)]
pub struct InternalApi<T> {
    node: Arc<Node<T>>,
}

impl<T> Clone for InternalApi<T> {
    fn clone(&self) -> Self {
        Self {
            node: Arc::clone(&self.node),
        }
    }
}

impl<T> InternalApi<T> {
    /// Wraps a node.
    pub fn new(node: Arc<Node<T>>) -> Self {
        Self { node }
    }
}

pub(crate) fn encode_siblings(versions: &Siblings) -> Bytes {
    let mut out = Vec::new();
    encode_dvvset(versions, &mut out);
    out.into()
}

pub(crate) fn decode_siblings(raw: &[u8]) -> Result<Siblings, NodeError> {
    decode_dvvset(raw).map_err(|e| NodeError::InvalidArgument(format!("malformed versions: {e}")))
}

pub(crate) fn encode_context(context: &kv_clock::VersionVector) -> Bytes {
    let mut out = Vec::new();
    encode_version_vector(context, &mut out);
    out.into()
}

pub(crate) fn decode_context(raw: &[u8]) -> Result<kv_clock::VersionVector, NodeError> {
    decode_version_vector(raw)
        .map_err(|e| NodeError::InvalidArgument(format!("malformed context: {e}")))
}

#[tonic::async_trait]
impl<T: PeerTransport> Replica for InternalApi<T> {
    async fn read(
        &self,
        request: Request<wire::ReadRequest>,
    ) -> Result<Response<wire::ReadResponse>, Status> {
        let versions = self.node.replica_read(&request.into_inner().key)?;
        Ok(Response::new(read_response(versions)))
    }

    async fn write(
        &self,
        request: Request<wire::WriteRequest>,
    ) -> Result<Response<wire::WriteResponse>, Status> {
        let req = request.into_inner();
        let versions = decode_siblings(&req.siblings)?;
        self.node.replica_write(req.key, versions).await?;
        Ok(Response::new(wire::WriteResponse {}))
    }

    async fn coordinate_write(
        &self,
        request: Request<wire::CoordinateWriteRequest>,
    ) -> Result<Response<wire::CoordinateWriteResponse>, Status> {
        let req = request.into_inner();
        let replicas = self.node.ring().replicas();
        let write_quorum = req.write_quorum as usize;
        if !(1..=replicas).contains(&write_quorum) {
            return Err(NodeError::InvalidArgument(format!(
                "write quorum {write_quorum} is outside 1..={replicas}"
            ))
            .into());
        }
        let command = WriteCommand {
            key: req.key,
            value: req.value,
            context: decode_context(&req.context)?,
            write_quorum,
            request_id: req.request_id,
        };
        let context = self.node.coordinate_write(command).await?;
        Ok(Response::new(wire::CoordinateWriteResponse {
            context: encode_context(&context),
        }))
    }

    async fn batch(
        &self,
        request: Request<wire::BatchRequest>,
    ) -> Result<Response<wire::BatchResponse>, Status> {
        let items = request.into_inner().items;
        if items.len() > MAX_BATCH_ITEMS {
            return Err(NodeError::InvalidArgument(format!(
                "a batch holds at most {MAX_BATCH_ITEMS} items, not {}",
                items.len()
            ))
            .into());
        }
        let outcomes = if self.node.storage_writes_block() {
            self.run_concurrently(items).await
        } else {
            let mut outcomes = Vec::with_capacity(items.len());
            for item in items {
                outcomes.push(self.batch_item(item).await);
            }
            outcomes
        };
        let results = outcomes
            .into_iter()
            .map(|outcome| wire::BatchResult {
                outcome: Some(outcome.unwrap_or_else(|error| {
                    let status = Status::from(error);
                    wire::batch_result::Outcome::Error(wire::ItemError {
                        code: status.code() as i32,
                        message: status.message().to_owned(),
                    })
                })),
            })
            .collect();
        Ok(Response::new(wire::BatchResponse { results }))
    }
}

impl<T: PeerTransport> InternalApi<T> {
    /// Runs the items side by side, so a batch of synced writes costs about one fsync's
    /// wait rather than one per item; results keep the items' order.
    async fn run_concurrently(
        &self,
        items: Vec<wire::BatchItem>,
    ) -> Vec<Result<wire::batch_result::Outcome, NodeError>> {
        let mut tasks = tokio::task::JoinSet::new();
        let count = items.len();
        for (index, item) in items.into_iter().enumerate() {
            let api = self.clone();
            tasks.spawn(async move { (index, api.batch_item(item).await) });
        }
        let mut outcomes: Vec<Result<_, NodeError>> = (0..count)
            .map(|_| Err(NodeError::Internal("the item's task failed".into())))
            .collect();
        while let Some(joined) = tasks.join_next().await {
            if let Ok((index, outcome)) = joined {
                outcomes[index] = outcome;
            }
        }
        outcomes
    }

    async fn batch_item(
        &self,
        item: wire::BatchItem,
    ) -> Result<wire::batch_result::Outcome, NodeError> {
        use wire::batch_item::Op;
        use wire::batch_result::Outcome;
        match item.op {
            Some(Op::Read(read)) => Ok(Outcome::Read(read_response(
                self.node.replica_read(&read.key)?,
            ))),
            Some(Op::Write(write)) => {
                let versions = decode_siblings(&write.siblings)?;
                self.node.replica_write(write.key, versions).await?;
                Ok(Outcome::Write(wire::WriteResponse {}))
            }
            None => Err(NodeError::InvalidArgument(
                "a batch item holds neither a read nor a write".into(),
            )),
        }
    }
}

fn read_response(versions: Option<Siblings>) -> wire::ReadResponse {
    match versions {
        Some(versions) => wire::ReadResponse {
            found: true,
            siblings: encode_siblings(&versions),
        },
        None => wire::ReadResponse::default(),
    }
}
