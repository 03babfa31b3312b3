//! The seam under the gRPC transport: a [`ReplicaChannel`] carries `kvstore.internal`
//! calls to one peer, and a [`Connector`] opens one per peer. Production uses tonic
//! channels ([`TonicConnector`]); a simulation supplies channels that route the same
//! messages through its simulated network, so the transport, the batcher, the wire codec
//! and the error classification above this seam all run in simulation too.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use kv_proto::internal as proto;
use kv_proto::internal::replica_client::ReplicaClient;
use tonic::Status;
use tonic::transport::{Channel, Endpoint};

use crate::tls::{NodeTls, PeerTlsConnector};
use crate::wire::INTERNAL_MESSAGE_LIMIT_BYTES;

/// How long opening a connection to a peer may take.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);

/// Calls to one peer's `kvstore.internal.Replica` service.
pub trait ReplicaChannel: Clone + Send + Sync + 'static {
    /// `Replica/Batch`.
    fn batch(
        &self,
        request: proto::BatchRequest,
    ) -> impl Future<Output = Result<proto::BatchResponse, Status>> + Send;

    /// `Replica/CoordinateWrite`.
    fn coordinate_write(
        &self,
        request: proto::CoordinateWriteRequest,
    ) -> impl Future<Output = Result<proto::CoordinateWriteResponse, Status>> + Send;

    /// `Replica/CoordinateRead`.
    fn coordinate_read(
        &self,
        request: proto::CoordinateReadRequest,
    ) -> impl Future<Output = Result<proto::ReadResponse, Status>> + Send;

    /// `Replica/Digests`.
    fn digests(
        &self,
        request: proto::DigestsRequest,
    ) -> impl Future<Output = Result<proto::DigestsResponse, Status>> + Send;

    /// `Replica/KeyList`.
    fn key_list(
        &self,
        request: proto::KeyListRequest,
    ) -> impl Future<Output = Result<proto::KeyListResponse, Status>> + Send;

    /// `Replica/ExchangeLayout`.
    fn exchange_layout(
        &self,
        request: proto::LayoutMessage,
    ) -> impl Future<Output = Result<proto::LayoutMessage, Status>> + Send;
}

/// Opens channels to peers.
pub trait Connector: Send + Sync + 'static {
    /// The channel type.
    type Channel: ReplicaChannel;

    /// A channel to `peer` at `address`; it may connect lazily, on first use.
    fn connect(&self, peer: &str, address: SocketAddr) -> Self::Channel;
}

/// Tonic channels over TCP, one per peer, connected on first use, with a deadline on
/// every call.
#[derive(Debug, Clone)]
pub struct TonicConnector {
    call_timeout: Duration,
    tls: Option<Arc<NodeTls>>,
}

impl TonicConnector {
    /// Channels whose calls time out after `call_timeout`.
    pub fn new(call_timeout: Duration) -> Self {
        Self {
            call_timeout,
            tls: None,
        }
    }

    /// Channels over mutual TLS with the node's current certificate.
    #[must_use]
    pub fn with_tls(mut self, tls: Arc<NodeTls>) -> Self {
        self.tls = Some(tls);
        self
    }
}

impl Connector for TonicConnector {
    type Channel = ReplicaClient<Channel>;

    fn connect(&self, _peer: &str, address: SocketAddr) -> ReplicaClient<Channel> {
        let uri = tonic::transport::Uri::try_from(format!("http://{address}"))
            .expect("a socket address is a valid URI authority");
        let endpoint = Endpoint::from(uri)
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(self.call_timeout)
            .tcp_nodelay(true);
        let channel = match &self.tls {
            Some(tls) => endpoint.connect_with_connector_lazy(PeerTlsConnector {
                tls: Arc::clone(tls),
                address,
            }),
            None => endpoint.connect_lazy(),
        };
        ReplicaClient::new(channel)
            .max_decoding_message_size(INTERNAL_MESSAGE_LIMIT_BYTES)
            .max_encoding_message_size(INTERNAL_MESSAGE_LIMIT_BYTES)
    }
}

impl ReplicaChannel for ReplicaClient<Channel> {
    async fn batch(&self, request: proto::BatchRequest) -> Result<proto::BatchResponse, Status> {
        // Inherent methods, named in full: `client.batch(..)` would resolve to this trait.
        let mut client = self.clone();
        ReplicaClient::batch(&mut client, request)
            .await
            .map(tonic::Response::into_inner)
    }

    async fn coordinate_write(
        &self,
        request: proto::CoordinateWriteRequest,
    ) -> Result<proto::CoordinateWriteResponse, Status> {
        let mut client = self.clone();
        ReplicaClient::coordinate_write(&mut client, request)
            .await
            .map(tonic::Response::into_inner)
    }

    async fn coordinate_read(
        &self,
        request: proto::CoordinateReadRequest,
    ) -> Result<proto::ReadResponse, Status> {
        let mut client = self.clone();
        ReplicaClient::coordinate_read(&mut client, request)
            .await
            .map(tonic::Response::into_inner)
    }

    async fn digests(
        &self,
        request: proto::DigestsRequest,
    ) -> Result<proto::DigestsResponse, Status> {
        let mut client = self.clone();
        ReplicaClient::digests(&mut client, request)
            .await
            .map(tonic::Response::into_inner)
    }

    async fn key_list(
        &self,
        request: proto::KeyListRequest,
    ) -> Result<proto::KeyListResponse, Status> {
        let mut client = self.clone();
        ReplicaClient::key_list(&mut client, request)
            .await
            .map(tonic::Response::into_inner)
    }

    async fn exchange_layout(
        &self,
        request: proto::LayoutMessage,
    ) -> Result<proto::LayoutMessage, Status> {
        let mut client = self.clone();
        ReplicaClient::exchange_layout(&mut client, request)
            .await
            .map(tonic::Response::into_inner)
    }
}
