//! A Rust client for kvstore.
//!
//! [`Client`] wraps the gRPC API: [`Client::get`] returns a [`ReadResult`] (absent, one
//! value, or concurrent siblings) with the causal [`Context`] to pass to the next write;
//! [`ReadResult::resolve`] merges siblings with your function and gives the context that
//! supersedes all of them. [`Client::connect_many`] spreads over several nodes and skips
//! one that cannot be reached. For secured clusters, [`Client::connect_with`] takes a
//! [`ClientTls`] (the cluster's CA) and [`Client::with_token`] a bearer token.
//!
//! ```no_run
//! # async fn demo() -> Result<(), kv_client::ClientError> {
//! use kv_client::{Client, ReadResult, WriteOptions};
//! let mut client = Client::connect_many(&["127.0.0.1:50051", "127.0.0.1:50052"])?;
//! client.put("user:1", "Ada", &WriteOptions::default()).await?;
//! let read = client.get("user:1", None).await?;
//! // Concurrent writes come back as siblings; merge them and write the result back.
//! let (value, context) = read.resolve(|values| values.into_iter().max().unwrap_or_default());
//! client.put("user:1", value, &WriteOptions::with_context(context)).await?;
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

mod context;

use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use kv_proto::kvstore as api;
use kv_proto::kvstore::kv_store_client::KvStoreClient;
use kv_proto::kvstore::membership_client::MembershipClient;
use thiserror::Error;
use tonic::transport::{Channel, Endpoint};

pub use context::{Context, ContextParseError};
pub use kv_proto::kvstore::{
    AntiEntropyResponse, ChangeRingResponse, GetMembershipResponse, GetRingResponse,
    HealthResponse, HintsResponse, MemberState, NodeOwnership, PeerExchange, RangeAgreement,
    RingChangeKind, RingTransfersResponse, TargetHints, Transfer, WriteMode,
};
pub use tonic::Code;

/// A request failed.
#[derive(Debug, Error)]
pub enum ClientError {
    /// The address was invalid or the node could not be reached.
    #[error("cannot connect to {address}: {reason}")]
    Connect {
        /// The address tried.
        address: String,
        /// Why it failed.
        reason: String,
    },
    /// The node answered with an error status.
    #[error("{}: {}", code_name(*.code), .message)]
    Status {
        /// The gRPC status code.
        code: tonic::Code,
        /// The node's explanation.
        message: String,
    },
    /// The token cannot be sent as a header.
    #[error("the token cannot be sent: {0}")]
    BadToken(&'static str),
}

fn code_name(code: tonic::Code) -> String {
    format!("{code:?}")
        .chars()
        .enumerate()
        .flat_map(|(i, c)| {
            let separator = (i > 0 && c.is_uppercase()).then_some('_');
            separator.into_iter().chain(c.to_uppercase())
        })
        .collect()
}

impl From<tonic::Status> for ClientError {
    fn from(status: tonic::Status) -> Self {
        Self::Status {
            code: status.code(),
            message: status.message().to_owned(),
        }
    }
}

impl ClientError {
    /// The gRPC status code, when the node answered.
    pub fn code(&self) -> Option<tonic::Code> {
        match self {
            Self::Status { code, .. } => Some(*code),
            Self::Connect { .. } | Self::BadToken(_) => None,
        }
    }
}

/// Options for a write or delete.
#[derive(Debug, Clone, Default)]
pub struct WriteOptions {
    /// Write quorum; `None` uses the node's default.
    pub w: Option<u32>,
    /// What the write replaces; `None` writes blind (concurrent with what is stored).
    pub context: Option<Context>,
    /// Strict or sloppy quorum; `Default` uses the node's setting. With `Sloppy`, a
    /// fallback's hint for a replica that is down counts toward W: the write succeeds
    /// while W nodes are reachable, but a read may miss it until the hint is delivered.
    pub mode: WriteMode,
}

impl WriteOptions {
    /// A write that replaces what `context` describes.
    pub fn with_context(context: Context) -> Self {
        Self {
            context: Some(context),
            ..Self::default()
        }
    }
}

/// A sibling: one of several concurrent values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sibling {
    /// The value.
    pub value: Bytes,
    /// The write that created it: (node id, counter).
    pub dot: (String, u64),
}

/// What a read found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadResult {
    /// The key was never written, or is deleted. A delete leaves a context: writing with
    /// it replaces the tombstone cleanly.
    NotFound {
        /// Context of the tombstones, if any.
        context: Option<Context>,
    },
    /// Exactly one live value.
    Value {
        /// The value.
        value: Bytes,
        /// Pass to the next write to replace it.
        context: Context,
    },
    /// Concurrent values.
    Siblings {
        /// Every live value.
        siblings: Vec<Sibling>,
        /// Pass to the next write to replace all of them.
        context: Context,
    },
}

impl ReadResult {
    /// The causal context of everything read.
    pub fn context(&self) -> Option<&Context> {
        match self {
            Self::NotFound { context } => context.as_ref(),
            Self::Value { context, .. } | Self::Siblings { context, .. } => Some(context),
        }
    }

    /// Every live value (empty when not found).
    pub fn values(&self) -> Vec<Bytes> {
        match self {
            Self::NotFound { .. } => Vec::new(),
            Self::Value { value, .. } => vec![value.clone()],
            Self::Siblings { siblings, .. } => siblings.iter().map(|s| s.value.clone()).collect(),
        }
    }

    /// Merges the live values with `merge` and returns the merged value with the context
    /// that supersedes them all.
    pub fn resolve(self, merge: impl FnOnce(Vec<Bytes>) -> Bytes) -> (Bytes, Context) {
        let values = self.values();
        let context = self.context().cloned().unwrap_or_default();
        (merge(values), context)
    }
}

/// A connection to one kvstore node, or to several ([`Client::connect_many`]).
#[derive(Debug, Clone)]
pub struct Client {
    nodes: std::sync::Arc<[NodeChannel]>,
    /// The node requests go to until it cannot be reached.
    current: usize,
    client_id: String,
    next_request: std::sync::Arc<AtomicU64>,
}

/// Adds `authorization: Bearer <token>` to every call, when the client has a token.
#[derive(Debug, Clone, Default)]
struct Bearer(Option<tonic::metadata::AsciiMetadataValue>);

impl tonic::service::Interceptor for Bearer {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

/// A stub's channel: the connection, with the bearer token added to each call.
type Stub = tonic::service::interceptor::InterceptedService<Channel, Bearer>;

/// The stubs of one node.
#[derive(Debug, Clone)]
struct NodeChannel {
    channel: Channel,
    kv: KvStoreClient<Stub>,
    membership: MembershipClient<Stub>,
}

impl NodeChannel {
    fn new(channel: Channel, bearer: &Bearer) -> Self {
        Self {
            kv: KvStoreClient::with_interceptor(channel.clone(), bearer.clone()),
            membership: MembershipClient::with_interceptor(channel.clone(), bearer.clone()),
            channel,
        }
    }
}

/// Whether a failed call certainly never reached its node (no connection could be
/// made), so sending it to another node cannot apply a write twice.
fn never_reached(status: &tonic::Status) -> bool {
    status.code() == tonic::Code::Unavailable && {
        let message = status.message().to_ascii_lowercase();
        [
            "tcp connect error",
            "connection refused",
            "error trying to connect",
        ]
        .iter()
        .any(|marker| message.contains(marker))
    }
}

/// TLS for a client: the CA that signs the nodes' certificates, and a client
/// certificate for listeners that require one.
#[derive(Debug, Clone)]
pub struct ClientTls {
    /// The CA certificate(s), PEM.
    pub ca_pem: Vec<u8>,
    /// A client certificate and its key, PEM, if the node asks for one.
    pub identity: Option<(Vec<u8>, Vec<u8>)>,
}

impl ClientTls {
    /// Reads the CA certificate from `ca_path` (and a client certificate and key).
    pub fn from_files(
        ca_path: &std::path::Path,
        identity: Option<(&std::path::Path, &std::path::Path)>,
    ) -> Result<Self, ClientError> {
        let read = |path: &std::path::Path| {
            std::fs::read(path)
                .map_err(|e| connect_error(&path.display().to_string(), &e.to_string()))
        };
        let identity = match identity {
            Some((cert, key)) => Some((read(cert)?, read(key)?)),
            None => None,
        };
        Ok(Self {
            ca_pem: read(ca_path)?,
            identity,
        })
    }

    fn config(&self) -> tonic::transport::ClientTlsConfig {
        let config = tonic::transport::ClientTlsConfig::new()
            .ca_certificate(tonic::transport::Certificate::from_pem(&self.ca_pem));
        match &self.identity {
            Some((cert, key)) => config.identity(tonic::transport::Identity::from_pem(cert, key)),
            None => config,
        }
    }
}

impl Client {
    /// Connects to a node at `address` (`host:port`, or a full `http://` URI).
    pub async fn connect(address: &str) -> Result<Self, ClientError> {
        Self::connect_with(address, None).await
    }

    /// Connects to a node at `address`, over TLS when `tls` is given (the node's
    /// certificate must name the host of `address`).
    pub async fn connect_with(address: &str, tls: Option<&ClientTls>) -> Result<Self, ClientError> {
        let channel = endpoint(address, tls)?
            .connect()
            .await
            .map_err(|e| connect_error(address, &e.to_string()))?;
        Ok(Self::over(vec![NodeChannel::new(
            channel,
            &Bearer::default(),
        )]))
    }

    /// A client of the nodes at `addresses` (any node coordinates any key). Requests go
    /// to one node; a Put, Get or Delete that cannot reach it at all (no connection)
    /// moves on to the next, so a node that is down is skipped, and a write is never
    /// sent twice. Connects lazily: a malformed address is an error now, an unreachable
    /// node only when no node can be reached. Other calls go to the current node.
    pub fn connect_many<S: AsRef<str>>(addresses: &[S]) -> Result<Self, ClientError> {
        Self::connect_many_with(addresses, None)
    }

    /// Like [`Client::connect_many`], over TLS when `tls` is given.
    pub fn connect_many_with<S: AsRef<str>>(
        addresses: &[S],
        tls: Option<&ClientTls>,
    ) -> Result<Self, ClientError> {
        if addresses.is_empty() {
            return Err(connect_error("-", "no node address given"));
        }
        let nodes = addresses
            .iter()
            .map(|a| {
                let channel = endpoint(a.as_ref(), tls)?.connect_lazy();
                Ok(NodeChannel::new(channel, &Bearer::default()))
            })
            .collect::<Result<Vec<_>, ClientError>>()?;
        Ok(Self::over(nodes))
    }

    fn over(nodes: Vec<NodeChannel>) -> Self {
        debug_assert!(!nodes.is_empty());
        Self {
            nodes: nodes.into(),
            current: 0,
            client_id: format!("kv-client-{}", std::process::id()),
            next_request: std::sync::Arc::new(AtomicU64::new(1)),
        }
    }

    /// Sends `authorization: Bearer <token>` with every call, for nodes started with
    /// `--auth-tokens`.
    pub fn with_token(mut self, token: &str) -> Result<Self, ClientError> {
        let token = token.trim();
        if token.is_empty() {
            return Err(ClientError::BadToken("it is empty"));
        }
        let value = format!("Bearer {token}")
            .parse()
            .map_err(|_| ClientError::BadToken("it must be printable ASCII"))?;
        let bearer = Bearer(Some(value));
        self.nodes = self
            .nodes
            .iter()
            .map(|node| NodeChannel::new(node.channel.clone(), &bearer))
            .collect();
        Ok(self)
    }

    /// Sets the `client_id` sent with every request.
    #[must_use]
    pub fn with_client_id(mut self, client_id: impl Into<String>) -> Self {
        self.client_id = client_id.into();
        self
    }

    fn request_id(&self) -> String {
        format!(
            "{}-{}",
            self.client_id,
            self.next_request.fetch_add(1, Ordering::Relaxed)
        )
    }

    /// Writes `value` under `key`; returns the context after the write.
    pub async fn put(
        &mut self,
        key: &str,
        value: impl Into<Bytes>,
        options: &WriteOptions,
    ) -> Result<Context, ClientError> {
        let request = api::PutRequest {
            key: key.to_owned(),
            value: value.into(),
            consistency_w: options.w.unwrap_or(0),
            version: options.context.as_ref().map(Context::to_api),
            client_id: self.client_id.clone(),
            request_id: self.request_id(),
            write_mode: options.mode.into(),
            ..api::PutRequest::default()
        };
        let response = self
            .with_failover(|mut kv| {
                let request = request.clone();
                async move { kv.put(request).await }
            })
            .await?;
        Ok(Context::from_api(response.version.as_ref()))
    }

    /// Reads `key` with read quorum `r` (`None` for the node's default).
    pub async fn get(&mut self, key: &str, r: Option<u32>) -> Result<ReadResult, ClientError> {
        let request = api::GetRequest {
            key: key.to_owned(),
            consistency_r: r.unwrap_or(0),
            client_id: self.client_id.clone(),
            request_id: self.request_id(),
        };
        let response = self
            .with_failover(|mut kv| {
                let request = request.clone();
                async move { kv.get(request).await }
            })
            .await?;
        Ok(read_result(response))
    }

    /// Deletes `key` (writes a tombstone); returns the context after the delete.
    pub async fn delete(
        &mut self,
        key: &str,
        options: &WriteOptions,
    ) -> Result<Context, ClientError> {
        let request = api::DeleteRequest {
            key: key.to_owned(),
            consistency_w: options.w.unwrap_or(0),
            version: options.context.as_ref().map(Context::to_api),
            client_id: self.client_id.clone(),
            request_id: self.request_id(),
            write_mode: options.mode.into(),
        };
        let response = self
            .with_failover(|mut kv| {
                let request = request.clone();
                async move { kv.delete(request).await }
            })
            .await?;
        Ok(Context::from_api(response.version.as_ref()))
    }

    fn admin(&self) -> MembershipClient<Stub> {
        self.nodes[self.current].membership.clone()
    }

    /// Runs `call` against the current node, moving on to the next while a node cannot
    /// be reached at all.
    async fn with_failover<R, F, Fut>(&mut self, call: F) -> Result<R, ClientError>
    where
        F: Fn(KvStoreClient<Stub>) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<R>, tonic::Status>>,
    {
        let count = self.nodes.len();
        let mut tried = 0;
        loop {
            match call(self.nodes[self.current].kv.clone()).await {
                Ok(response) => return Ok(response.into_inner()),
                Err(status) if never_reached(&status) && tried + 1 < count => {
                    tried += 1;
                    self.current = (self.current + 1) % count;
                }
                Err(status) => return Err(status.into()),
            }
        }
    }

    /// The node's view of cluster membership.
    pub async fn membership(&mut self) -> Result<GetMembershipResponse, ClientError> {
        let request = api::GetMembershipRequest {};
        Ok(self.admin().get_membership(request).await?.into_inner())
    }

    /// Ring ownership, and `key`'s preference list when given.
    pub async fn ring(&mut self, key: Option<&str>) -> Result<GetRingResponse, ClientError> {
        let request = api::GetRingRequest {
            key: key.unwrap_or_default().to_owned(),
        };
        Ok(self.admin().get_ring(request).await?.into_inner())
    }

    /// Asks the connected node (a member of the ring) to change the ring: `kind` with
    /// `nodes` (for a replacement, the old node then the new one). With `dry_run`, only
    /// the plan comes back.
    pub async fn change_ring(
        &mut self,
        kind: RingChangeKind,
        nodes: &[String],
        dry_run: bool,
    ) -> Result<ChangeRingResponse, ClientError> {
        let request = api::ChangeRingRequest {
            kind: kind.into(),
            nodes: nodes.to_vec(),
            dry_run,
        };
        Ok(self.admin().change_ring(request).await?.into_inner())
    }

    /// The live ring versions, every node's acks and syncs, and the connected node's
    /// transfers.
    pub async fn ring_transfers(&mut self) -> Result<RingTransfersResponse, ClientError> {
        Ok(self
            .admin()
            .ring_transfers(api::RingTransfersRequest {})
            .await?
            .into_inner())
    }

    /// The node's health summary.
    pub async fn health(&mut self) -> Result<HealthResponse, ClientError> {
        Ok(self
            .admin()
            .health(api::HealthRequest {})
            .await?
            .into_inner())
    }

    /// The hints the node holds for replicas that missed writes, per target.
    pub async fn hints(&mut self) -> Result<HintsResponse, ClientError> {
        Ok(self.admin().hints(api::HintsRequest {}).await?.into_inner())
    }

    /// The node's background anti-entropy: per peer, the last exchange and keys repaired;
    /// with `ranges`, since when each range it replicates is known to agree.
    pub async fn anti_entropy(&mut self, ranges: bool) -> Result<AntiEntropyResponse, ClientError> {
        Ok(self
            .admin()
            .anti_entropy(api::AntiEntropyRequest { ranges })
            .await?
            .into_inner())
    }
}

fn read_result(response: api::GetResponse) -> ReadResult {
    let context = Context::from_api(response.context.as_ref());
    if response.status == api::Status::NotFound as i32 {
        let context = (!context.is_empty()).then_some(context);
        return ReadResult::NotFound { context };
    }
    if let Some(value) = response.value {
        return ReadResult::Value {
            value: value.value,
            context,
        };
    }
    let siblings = response
        .conflicts
        .into_iter()
        .map(|sibling| {
            let dot = sibling
                .version
                .and_then(|v| v.entries.into_iter().next())
                .map(|e| (e.node_id, e.counter))
                .unwrap_or_default();
            Sibling {
                value: sibling.value,
                dot,
            }
        })
        .collect();
    ReadResult::Siblings { siblings, context }
}

/// The endpoint of the node at `address` (`host:port`, or a full `http://` URI).
/// The endpoint of `address`: `https` with `tls`, else `http`, unless the address names
/// its scheme.
fn endpoint(address: &str, tls: Option<&ClientTls>) -> Result<Endpoint, ClientError> {
    let scheme = if tls.is_some() { "https" } else { "http" };
    let uri = if address.contains("://") {
        address.to_owned()
    } else {
        format!("{scheme}://{address}")
    };
    let endpoint = Endpoint::from_shared(uri)
        .map_err(|e| connect_error(address, &e.to_string()))?
        .connect_timeout(std::time::Duration::from_secs(2));
    match tls {
        Some(tls) => endpoint
            .tls_config(tls.config())
            .map_err(|e| connect_error(address, &e.to_string())),
        None => Ok(endpoint),
    }
}

fn connect_error(address: &str, reason: &str) -> ClientError {
    ClientError::Connect {
        address: address.to_owned(),
        reason: reason.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_codes_print_like_grpc_names() {
        assert_eq!(code_name(tonic::Code::InvalidArgument), "INVALID_ARGUMENT");
        assert_eq!(code_name(tonic::Code::Unavailable), "UNAVAILABLE");
    }

    #[test]
    fn resolve_merges_siblings_and_keeps_the_context() {
        let context: Context = "n1:1,n2:1".parse().unwrap();
        let read = ReadResult::Siblings {
            siblings: vec![
                Sibling {
                    value: Bytes::from("a"),
                    dot: ("n1".into(), 1),
                },
                Sibling {
                    value: Bytes::from("b"),
                    dot: ("n2".into(), 1),
                },
            ],
            context: context.clone(),
        };
        let (value, resolved) = read.resolve(|values| values.concat().into());
        assert_eq!(value, Bytes::from("ab"));
        assert_eq!(resolved, context);
    }
}
