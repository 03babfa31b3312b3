//! Serving a node on its two listeners: the client API with gRPC reflection (v1 and
//! v1alpha) and `grpc.health.v1.Health`; the node-to-node service, on its own port and
//! absent from reflection, so that a client cannot write into replicas directly.

use std::future::Future;
use std::sync::Arc;

use kv_node::{CLIENT_MESSAGE_LIMIT_BYTES, Node, PeerTransport};
use kv_proto::internal::replica_server::ReplicaServer;
use kv_proto::kvstore::kv_store_server::KvStoreServer;
use kv_proto::kvstore::membership_server::MembershipServer;
use thiserror::Error;
use tokio::net::TcpListener;
use tonic::codegen::http;
use tower::util::MapResponseLayer;

use crate::gate::ClientAccess;
use crate::incoming::incoming;
use crate::tls::{Listener, NodeTls};
use crate::wire::INTERNAL_MESSAGE_LIMIT_BYTES;
use crate::{InternalApi, PublicApi};

/// Why serving failed.
#[derive(Debug, Error)]
pub enum ServeError {
    /// The reflection service could not be built from the descriptors.
    #[error("building the reflection service: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    /// The gRPC server failed.
    #[error("gRPC server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// Reflection over every service the client listener serves: the public API,
/// `grpc.health.v1.Health` (so `grpcurl ... grpc.health.v1.Health/Check` resolves it) and
/// reflection itself.
fn reflection() -> tonic_reflection::server::Builder<'static> {
    tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(kv_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET)
}

/// Serves the client API (`kvstore.KVStore`, `kvstore.Membership`), reflection over it and
/// `grpc.health.v1.Health` on `listener` until `shutdown` completes, then drains in-flight
/// requests. The node-to-node service is not here: see [`serve_internal`].
pub async fn serve_clients<T: PeerTransport>(
    node: Arc<Node<T>>,
    listener: TcpListener,
    tls: Option<Arc<NodeTls>>,
    access: ClientAccess,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    let reflection_v1 = reflection().build_v1()?;
    let reflection_v1alpha = reflection().build_v1alpha()?;
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<KvStoreServer<PublicApi<T>>>()
        .await;
    health_reporter
        .set_serving::<MembershipServer<PublicApi<T>>>()
        .await;

    let public = PublicApi::with_access(node, access);
    let kv =
        KvStoreServer::new(public.clone()).max_decoding_message_size(CLIENT_MESSAGE_LIMIT_BYTES);
    let membership = MembershipServer::new(public);

    tonic::transport::Server::builder()
        .layer(MapResponseLayer::new(oversized_is_resource_exhausted))
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(kv)
        .add_service(membership)
        .serve_with_incoming_shutdown(incoming(listener, tls, Listener::Client), shutdown)
        .await?;
    Ok(())
}

/// Bounds of the internal listener.
#[derive(Debug, Clone, Copy)]
pub struct InternalLimits {
    /// Most node-to-node calls running at once.
    pub max_concurrent_calls: usize,
    /// Most calls one peer runs at once.
    pub max_per_peer: usize,
}

/// Serves the node-to-node service (`kvstore.internal.Replica`) and
/// `grpc.health.v1.Health` on `listener`, its own port, until `shutdown` completes.
pub async fn serve_internal<T: PeerTransport>(
    node: Arc<Node<T>>,
    listener: TcpListener,
    tls: Option<Arc<NodeTls>>,
    limits: InternalLimits,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<ReplicaServer<InternalApi<T>>>()
        .await;
    let api = InternalApi::with_limits(node, limits.max_concurrent_calls, limits.max_per_peer);
    let internal = ReplicaServer::new(api)
        .max_decoding_message_size(INTERNAL_MESSAGE_LIMIT_BYTES)
        .max_encoding_message_size(INTERNAL_MESSAGE_LIMIT_BYTES);
    tonic::transport::Server::builder()
        .layer(MapResponseLayer::new(oversized_is_resource_exhausted))
        .add_service(health_service)
        .add_service(internal)
        .serve_with_incoming_shutdown(incoming(listener, tls, Listener::Internal), shutdown)
        .await?;
    Ok(())
}

/// Answers a message over the size limit with RESOURCE_EXHAUSTED, as the gRPC spec asks,
/// keeping tonic's message (which gives the size and the limit). tonic refuses such a
/// message before any handler runs, with OUT_OF_RANGE in a trailers-only response; our
/// handlers never answer OUT_OF_RANGE, so the code alone identifies it.
fn oversized_is_resource_exhausted<B>(mut response: http::Response<B>) -> http::Response<B> {
    let headers = response.headers_mut();
    let out_of_range = headers
        .get("grpc-status")
        .is_some_and(|status| status.as_bytes() == b"11");
    if out_of_range {
        headers.insert("grpc-status", http::HeaderValue::from_static("8"));
    }
    response
}
