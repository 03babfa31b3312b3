//! The simulated network between nodes, with the faults a test or a fault schedule
//! controls: nodes down, one-way or two-way partitions, seeded random loss of requests and
//! replies, delays with seeded jitter that reorders messages, slow nodes, black holes.
//!
//! Nodes call each other with kv-grpc's real `GrpcTransport` (batcher, wire codec, error
//! classification); only the channel under it is simulated: [`SimChannel`] encodes each
//! request to protobuf bytes, carries it through the faults, decodes it and runs the
//! target's real `InternalApi` handler, then brings the encoded reply back the same way.
//! No sockets, no threads, no wall clock: a seed replays exactly.
//!
//! The same fault model decides the fate of any other message between nodes (gossip
//! datagrams) through [`SimNetwork::fate`], so one partition cuts both.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use kv_grpc::status::connect_failure;
use kv_grpc::{Connector, GrpcTransport, InternalApi, ReplicaChannel};
use kv_node::Node;
use kv_proto::internal as proto;
use kv_proto::internal::replica_server::Replica;
use prost::Message;
use tonic::Status;

use crate::rng::SimRng;

/// The transport simulated nodes use: the production one over simulated channels.
pub type SimTransport = GrpcTransport<SimConnector>;

/// A simulated node.
pub type SimNode = Node<SimTransport>;

/// Nodes of one simulated cluster and the faults between them.
#[derive(Debug)]
pub struct SimNetwork {
    state: Mutex<NetState>,
}

#[derive(Debug)]
struct NetState {
    nodes: BTreeMap<String, Weak<SimNode>>,
    /// Incarnation of each node's current transport: messages from an older one (a
    /// crashed process's leftover tasks) are refused.
    generations: BTreeMap<String, u64>,
    down: BTreeSet<String>,
    hanging: BTreeSet<String>,
    blocked: BTreeSet<(String, String)>,
    slow: BTreeMap<String, Duration>,
    delay: Duration,
    jitter: Duration,
    drop_per_mille: u32,
    rng: SimRng,
}

/// What happens to one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    /// It arrives after this delay.
    Deliver(Duration),
    /// It is lost, for this reason.
    Lost(&'static str),
}

impl SimNetwork {
    /// An empty network whose random drops and jitter follow `seed`.
    pub fn new(seed: u64) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(NetState {
                nodes: BTreeMap::new(),
                generations: BTreeMap::new(),
                down: BTreeSet::new(),
                hanging: BTreeSet::new(),
                blocked: BTreeSet::new(),
                slow: BTreeMap::new(),
                delay: Duration::ZERO,
                jitter: Duration::ZERO,
                drop_per_mille: 0,
                rng: SimRng::new(seed),
            }),
        })
    }

    fn with<R>(&self, f: impl FnOnce(&mut NetState) -> R) -> R {
        f(&mut self.state.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// A transport for node `from` whose calls time out after `call_timeout` (the node's
    /// peer timeout, as in production). Each call starts a new incarnation of `from`:
    /// calls still in flight from an older transport of the same node are refused.
    pub fn transport(
        self: &Arc<Self>,
        from: &str,
        peers: &[kv_node::PeerSpec],
        call_timeout: Duration,
    ) -> SimTransport {
        let generation = self.with(|s| {
            let generation = s.generations.entry(from.to_owned()).or_default();
            *generation += 1;
            *generation
        });
        let connector = SimConnector {
            from: from.to_owned(),
            generation,
            call_timeout,
            network: Arc::clone(self),
        };
        GrpcTransport::with_connector(connector, peers, call_timeout)
    }

    /// Makes `node` reachable under its id (replacing an earlier incarnation).
    pub fn register(&self, node: &Arc<SimNode>) {
        let id = node.config().node_id.clone();
        self.with(|s| s.nodes.insert(id, Arc::downgrade(node)));
    }

    /// Marks a node crashed (`true`) or back up (`false`): messages to or from it are lost.
    pub fn set_down(&self, node: &str, down: bool) {
        self.with(|s| toggle(&mut s.down, node.to_owned(), down));
    }

    /// Makes calls to `node` hang (a black hole: no answer, no error) or stop hanging.
    pub fn set_hanging(&self, node: &str, hanging: bool) {
        self.with(|s| toggle(&mut s.hanging, node.to_owned(), hanging));
    }

    /// Slows every message to or from `node` by `extra` (zero makes it normal again).
    pub fn set_slow(&self, node: &str, extra: Duration) {
        self.with(|s| {
            if extra.is_zero() {
                s.slow.remove(node);
            } else {
                s.slow.insert(node.to_owned(), extra);
            }
        });
    }

    /// Blocks messages from `from` to `to` (one way).
    pub fn block(&self, from: &str, to: &str) {
        self.with(|s| s.blocked.insert((from.to_owned(), to.to_owned())));
    }

    /// Splits the nodes into two groups that cannot reach each other.
    pub fn partition(&self, side_a: &[&str], side_b: &[&str]) {
        for a in side_a {
            for b in side_b {
                self.block(a, b);
                self.block(b, a);
            }
        }
    }

    /// Removes every partition and block.
    pub fn heal(&self) {
        self.with(|s| s.blocked.clear());
    }

    /// Delays every message by `delay`.
    pub fn set_delay(&self, delay: Duration) {
        self.with(|s| s.delay = delay);
    }

    /// Adds a seeded random delay in `0..=jitter` to every message, which reorders them.
    pub fn set_jitter(&self, jitter: Duration) {
        self.with(|s| s.jitter = jitter);
    }

    /// Loses this many messages per thousand (requests and replies alike), chosen by the
    /// seeded generator.
    pub fn set_drop_per_mille(&self, per_mille: u32) {
        self.with(|s| s.drop_per_mille = per_mille.min(1000));
    }

    /// Decides the fate of one message from `from` to `to` under the current faults.
    pub fn fate(&self, from: &str, to: &str) -> Fate {
        self.with(|s| {
            if s.down.contains(to) || s.down.contains(from) {
                return Fate::Lost("node is down");
            }
            if s.blocked.contains(&(from.to_owned(), to.to_owned())) {
                return Fate::Lost("partitioned");
            }
            if s.drop_per_mille > 0 && s.rng.below(1000) < u64::from(s.drop_per_mille) {
                return Fate::Lost("message dropped");
            }
            let mut delay = s.delay;
            if !s.jitter.is_zero() {
                let jitter_ms = s.jitter.as_millis() as u64;
                delay += Duration::from_millis(s.rng.below(jitter_ms + 1));
            }
            for node in [from, to] {
                delay += s.slow.get(node).copied().unwrap_or_default();
            }
            Fate::Deliver(delay)
        })
    }

    fn is_hanging(&self, node: &str) -> bool {
        self.with(|s| s.hanging.contains(node))
    }

    fn is_current(&self, node: &str, generation: u64) -> bool {
        self.with(|s| s.generations.get(node) == Some(&generation))
    }

    /// The node a delivered request reaches, if it is up.
    fn receiver(&self, to: &str) -> Option<Arc<SimNode>> {
        self.with(|s| {
            if s.down.contains(to) {
                return None;
            }
            s.nodes.get(to).and_then(Weak::upgrade)
        })
    }
}

fn toggle(set: &mut BTreeSet<String>, node: String, on: bool) {
    if on {
        set.insert(node);
    } else {
        set.remove(&node);
    }
}

/// Opens [`SimChannel`]s from one node incarnation.
#[derive(Debug)]
pub struct SimConnector {
    from: String,
    generation: u64,
    call_timeout: Duration,
    network: Arc<SimNetwork>,
}

impl Connector for SimConnector {
    type Channel = SimChannel;

    fn connect(&self, peer: &str, _address: SocketAddr) -> SimChannel {
        SimChannel {
            from: self.from.clone(),
            to: peer.to_owned(),
            generation: self.generation,
            call_timeout: self.call_timeout,
            network: Arc::clone(&self.network),
        }
    }
}

/// One node's channel to one peer over the simulated network.
#[derive(Debug, Clone)]
pub struct SimChannel {
    from: String,
    to: String,
    generation: u64,
    call_timeout: Duration,
    network: Arc<SimNetwork>,
}

impl ReplicaChannel for SimChannel {
    async fn batch(&self, request: proto::BatchRequest) -> Result<proto::BatchResponse, Status> {
        self.unary(
            request,
            |api, request| async move { api.batch(request).await },
        )
        .await
    }

    async fn digests(
        &self,
        request: proto::DigestsRequest,
    ) -> Result<proto::DigestsResponse, Status> {
        self.unary(
            request,
            |api, request| async move { api.digests(request).await },
        )
        .await
    }

    async fn key_list(
        &self,
        request: proto::KeyListRequest,
    ) -> Result<proto::KeyListResponse, Status> {
        self.unary(request, |api, request| async move {
            api.key_list(request).await
        })
        .await
    }

    async fn coordinate_read(
        &self,
        request: proto::CoordinateReadRequest,
    ) -> Result<proto::ReadResponse, Status> {
        self.call(request, |api, request| async move {
            // Boxed, like coordinate_write: the handler reads through channels like this.
            Box::pin(api.coordinate_read(tonic::Request::new(request)))
                .await
                .map(tonic::Response::into_inner)
        })
        .await
    }

    async fn exchange_layout(
        &self,
        request: proto::LayoutMessage,
    ) -> Result<proto::LayoutMessage, Status> {
        self.unary(request, |api, request| async move {
            api.exchange_layout(request).await
        })
        .await
    }

    async fn coordinate_write(
        &self,
        request: proto::CoordinateWriteRequest,
    ) -> Result<proto::CoordinateWriteResponse, Status> {
        self.call(request, |api, request| async move {
            // Boxed: this handler coordinates a write that calls other nodes through
            // channels like this one, a recursion the compiler must size.
            Box::pin(api.coordinate_write(tonic::Request::new(request)))
                .await
                .map(tonic::Response::into_inner)
        })
        .await
    }
}

impl SimChannel {
    async fn unary<Q, R, F>(
        &self,
        request: Q,
        handle: impl FnOnce(InternalApi<SimTransport>, tonic::Request<Q>) -> F,
    ) -> Result<R, Status>
    where
        Q: Message + Default,
        R: Message + Default,
        F: Future<Output = Result<tonic::Response<R>, Status>>,
    {
        self.call(request, |api, request| async move {
            handle(api, tonic::Request::new(request))
                .await
                .map(tonic::Response::into_inner)
        })
        .await
    }

    /// Carries `request` to the peer, runs `handle` there, and brings the reply back, each
    /// leg subject to the network's faults; a call that outlives the call timeout fails
    /// as tonic's deadline does. A lost request fails as a connection that could not be
    /// opened (certainly not processed); a lost reply is a call that never returns.
    async fn call<Q, R, F>(
        &self,
        request: Q,
        handle: impl FnOnce(InternalApi<SimTransport>, Q) -> F,
    ) -> Result<R, Status>
    where
        Q: Message + Default,
        R: Message + Default,
        F: Future<Output = Result<R, Status>>,
    {
        let network = &self.network;
        let round_trip = async {
            if !network.is_current(&self.from, self.generation) {
                return Err(connect_failure("the sending node restarted"));
            }
            if network.is_hanging(&self.to) {
                std::future::pending::<()>().await;
            }
            match network.fate(&self.from, &self.to) {
                Fate::Lost(reason) => return Err(connect_failure(reason)),
                Fate::Deliver(delay) => sleep_unless_zero(delay).await,
            }
            let node = network
                .receiver(&self.to)
                .ok_or_else(|| connect_failure("node is down"))?;
            let result = match reencode(&request) {
                Ok(request) => handle(InternalApi::new(node), request).await,
                Err(status) => Err(status),
            };
            let reply = result.and_then(|reply| reencode(&reply));
            match network.fate(&self.to, &self.from) {
                Fate::Lost(_) => std::future::pending().await,
                Fate::Deliver(delay) => sleep_unless_zero(delay).await,
            }
            reply
        };
        tokio::time::timeout(self.call_timeout, round_trip)
            .await
            .unwrap_or_else(|_| Err(Status::deadline_exceeded("simulated call timed out")))
    }
}

/// A message as the other side decodes it from the bytes this side encodes.
fn reencode<M: Message + Default>(message: &M) -> Result<M, Status> {
    M::decode(message.encode_to_vec().as_slice())
        .map_err(|e| Status::internal(format!("message failed to decode: {e}")))
}

async fn sleep_unless_zero(delay: Duration) {
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
}
