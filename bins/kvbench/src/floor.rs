//! `kvbench floor`: a no-op `kvstore.KVStore` service answering with messages of the
//! same shape and size as a real node's, and doing nothing else. Load against it measures
//! the gRPC and client cost alone: the floor every store result is compared with.

use bytes::Bytes;
use kv_proto::kvstore as api;
use kv_proto::kvstore::kv_store_server::{KvStore, KvStoreServer};
use tonic::{Request, Response, Status};

/// Canned answers: a one-entry version, and a value of the benchmark's size.
#[derive(Debug, Clone)]
struct Floor {
    value: Bytes,
    version: api::Version,
}

#[tonic::async_trait]
impl KvStore for Floor {
    async fn put(
        &self,
        _request: Request<api::PutRequest>,
    ) -> Result<Response<api::PutResponse>, Status> {
        Ok(Response::new(api::PutResponse {
            status: api::Status::Success.into(),
            version: Some(self.version.clone()),
        }))
    }

    async fn get(
        &self,
        _request: Request<api::GetRequest>,
    ) -> Result<Response<api::GetResponse>, Status> {
        Ok(Response::new(api::GetResponse {
            status: api::Status::Success.into(),
            value: Some(api::VersionedValue {
                value: self.value.clone(),
                version: Some(self.version.clone()),
                deleted: false,
            }),
            conflicts: Vec::new(),
            context: Some(self.version.clone()),
        }))
    }

    async fn delete(
        &self,
        _request: Request<api::DeleteRequest>,
    ) -> Result<Response<api::DeleteResponse>, Status> {
        Ok(Response::new(api::DeleteResponse {
            status: api::Status::Success.into(),
            version: Some(self.version.clone()),
        }))
    }
}

pub(crate) async fn run(listen: std::net::SocketAddr, value_size: usize) -> Result<(), String> {
    let floor = Floor {
        value: Bytes::from(vec![b'x'; value_size]),
        version: api::Version {
            entries: vec![api::VersionEntry {
                node_id: "n1".into(),
                counter: 1,
            }],
        },
    };
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    eprintln!("floor service on {listen} (values of {value_size} bytes)");
    tonic::transport::Server::builder()
        .add_service(KvStoreServer::new(floor))
        .serve_with_incoming_shutdown(
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
            async {
                let _ = tokio::signal::ctrl_c().await;
            },
        )
        .await
        .map_err(|e| format!("floor server failed: {e}"))
}
