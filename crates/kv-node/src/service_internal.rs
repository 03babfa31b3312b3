//! The node-to-node gRPC service, `kvstore.internal.Replica`. Versions travel in
//! kv-clock's binary encoding; client size limits do not apply here.

use std::sync::Arc;

use bytes::Bytes;
use kv_clock::{decode_dvvset, decode_version_vector, encode_dvvset, encode_version_vector};
use kv_proto::internal as wire;
use kv_proto::internal::replica_server::Replica;
use kv_storage::Siblings;
use tonic::{Request, Response, Status};

use crate::{Node, NodeError, PeerTransport, WriteCommand};

/// Serves `kvstore.internal.Replica` for one node.
#[derive(Debug)]
pub struct InternalApi<T> {
    node: Arc<Node<T>>,
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
        Ok(Response::new(match versions {
            Some(versions) => wire::ReadResponse {
                found: true,
                siblings: encode_siblings(&versions),
            },
            None => wire::ReadResponse::default(),
        }))
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
}
