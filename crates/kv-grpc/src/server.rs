//! Serving a node: the public and internal services, gRPC reflection (v1 and v1alpha) and
//! the standard `grpc.health.v1.Health`, on one listener, until `shutdown` resolves.

use std::future::Future;
use std::sync::Arc;

use kv_node::{CLIENT_MESSAGE_LIMIT_BYTES, Node, PeerTransport};
use kv_proto::internal::replica_server::ReplicaServer;
use kv_proto::kvstore::kv_store_server::KvStoreServer;
use kv_proto::kvstore::membership_server::MembershipServer;
use thiserror::Error;
use tokio::net::TcpListener;
use tonic::transport::server::TcpIncoming;

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

/// Reflection over every service this listener serves: the public and internal APIs,
/// `grpc.health.v1.Health` (so `grpcurl ... grpc.health.v1.Health/Check` resolves it) and
/// reflection itself.
fn reflection() -> tonic_reflection::server::Builder<'static> {
    tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(kv_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET)
}

/// Serves `node` on `listener` until `shutdown` completes, then drains in-flight requests.
pub async fn serve<T: PeerTransport>(
    node: Arc<Node<T>>,
    listener: TcpListener,
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

    let public = PublicApi::new(Arc::clone(&node));
    let kv =
        KvStoreServer::new(public.clone()).max_decoding_message_size(CLIENT_MESSAGE_LIMIT_BYTES);
    let membership = MembershipServer::new(public);
    let internal = ReplicaServer::new(InternalApi::new(node))
        .max_decoding_message_size(INTERNAL_MESSAGE_LIMIT_BYTES)
        .max_encoding_message_size(INTERNAL_MESSAGE_LIMIT_BYTES);

    tonic::transport::Server::builder()
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(kv)
        .add_service(membership)
        .add_service(internal)
        // serve_with_incoming ignores the builder's TCP_NODELAY, so set it on the incoming
        // stream: with Nagle on, small replies wait for delayed ACKs (tens of ms).
        .serve_with_incoming_shutdown(
            TcpIncoming::from(listener).with_nodelay(Some(true)),
            shutdown,
        )
        .await?;
    Ok(())
}
