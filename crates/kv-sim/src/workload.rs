//! Simulated clients: each loops over put/get/delete on a small key set through random
//! nodes' public gRPC service handlers (validation included, HTTP/2 excluded), with and
//! without causal contexts, and records every request and answer.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use kv_clock::VersionVector;
use kv_proto::kvstore as api;
use kv_proto::kvstore::kv_store_server::KvStore;
use tonic::{Code, Request};

use crate::cluster::SimCluster;
use crate::history::{Op, OpKind, Outcome};
use crate::rng::SimRng;

/// A client gives up on a request after this long (longer than the node's own deadline).
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(6);

/// How the clients behave.
#[derive(Debug, Clone)]
pub struct WorkloadConfig {
    /// Concurrent clients.
    pub clients: usize,
    /// Keys they share (`k0`, `k1`, ...).
    pub keys: usize,
    /// When they stop issuing requests.
    pub end: Duration,
    /// Whether writes may use W=1 (not in runs where a node loses its memory: a write
    /// held by one replica may then legitimately vanish).
    pub allow_w1: bool,
    /// Largest pause between two requests of one client.
    pub max_think: Duration,
    /// Strict or sloppy writes, or a random choice per write.
    pub mode: QuorumMode,
}

/// Which quorum the simulated clients' writes ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuorumMode {
    /// Every write strict (only the key's replicas count toward W).
    Strict,
    /// Every write sloppy (a fallback's hint counts too).
    Sloppy,
    /// Each write chooses at random.
    Mixed,
}

impl std::str::FromStr for QuorumMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "strict" => Ok(Self::Strict),
            "sloppy" => Ok(Self::Sloppy),
            "mixed" => Ok(Self::Mixed),
            other => Err(format!(
                "unknown quorum mode {other:?}; use strict, sloppy or mixed"
            )),
        }
    }
}

impl QuorumMode {
    /// As the replay command spells it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Strict => "strict",
            Self::Sloppy => "sloppy",
            Self::Mixed => "mixed",
        }
    }
}

/// The recorded history, shared by all clients.
pub type History = Arc<Mutex<Vec<Op>>>;

/// The key named by index `i`.
pub fn key_name(i: usize) -> String {
    format!("k{i}")
}

/// One request to make.
#[derive(Debug)]
pub struct ClientRequest {
    /// Which client makes it.
    pub client: usize,
    /// Put, delete or get.
    pub kind: OpKind,
    /// Key index.
    pub key: usize,
    /// Target node.
    pub node: usize,
    /// Value for a put.
    pub value: Option<Bytes>,
    /// Context to send with a write.
    pub context: Option<VersionVector>,
    /// W or R.
    pub quorum: u32,
    /// A sloppy write.
    pub sloppy: bool,
}

/// Runs one client until `config.end`.
pub async fn run_client(
    cluster: Arc<SimCluster>,
    client: usize,
    mut rng: SimRng,
    config: WorkloadConfig,
    history: History,
) {
    let mut contexts: BTreeMap<usize, VersionVector> = BTreeMap::new();
    let mut sequence = 0u64;
    let max_think_ms = config.max_think.as_millis() as u64;
    loop {
        tokio::time::sleep(Duration::from_millis(rng.between(1, max_think_ms))).await;
        if cluster.now() >= config.end {
            return;
        }
        sequence += 1;
        let request = choose(
            &mut rng,
            &config,
            client,
            sequence,
            &contexts,
            cluster.size(),
        );
        let op = execute(&cluster, request).await;
        match &op.outcome {
            Outcome::Written { context } | Outcome::Read { context, .. } => {
                contexts.insert(key_index(&op.key), context.clone());
            }
            Outcome::Failed { .. } => {}
        }
        history
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(op);
    }
}

fn key_index(key: &[u8]) -> usize {
    std::str::from_utf8(&key[1..])
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

fn choose(
    rng: &mut SimRng,
    config: &WorkloadConfig,
    client: usize,
    sequence: u64,
    contexts: &BTreeMap<usize, VersionVector>,
    nodes: usize,
) -> ClientRequest {
    let key = rng.below(config.keys as u64) as usize;
    let node = rng.below(nodes as u64) as usize;
    let roll = rng.below(100);
    let kind = match roll {
        0..45 => OpKind::Put,
        45..85 => OpKind::Get,
        _ => OpKind::Delete,
    };
    let lowest_w = if config.allow_w1 { 1 } else { 2 };
    let quorum = match kind {
        OpKind::Get => rng.between(1, 3) as u32,
        _ => rng.between(lowest_w, 3) as u32,
    };
    let with_context = kind != OpKind::Get && rng.chance(600);
    let sloppy = kind != OpKind::Get
        && match config.mode {
            QuorumMode::Strict => false,
            QuorumMode::Sloppy => true,
            QuorumMode::Mixed => rng.chance(500),
        };
    ClientRequest {
        client,
        kind,
        key,
        node,
        value: (kind == OpKind::Put).then(|| Bytes::from(format!("c{client}.{sequence}"))),
        context: with_context.then(|| contexts.get(&key).cloned().unwrap_or_default()),
        quorum,
        sloppy,
    }
}

/// Sends `request` to its node and waits for the answer, the node's crash, or the
/// client's own timeout. Like kv-client with several nodes, a client whose node is down
/// (the connection is refused: the request never reached it) tries the next node; one
/// that crashed during the call is not retried (the request may have been applied).
pub async fn execute(cluster: &SimCluster, request: ClientRequest) -> Op {
    let start = cluster.now();
    let nodes = cluster.size();
    let reachable = (0..nodes)
        .map(|step| (request.node + step) % nodes)
        .find_map(|node| cluster.endpoint(node).map(|endpoint| (node, endpoint)));
    let node = reachable.as_ref().map_or(request.node, |(node, _)| *node);
    let outcome = match reachable {
        None => failed(Code::Unavailable, "connection refused: every node is down"),
        Some((_, (api, mut crashed))) => {
            let call = call(&api, &request);
            tokio::select! {
                biased;
                _ = crashed.wait_for(|c| *c) => failed(Code::Unavailable, "connection reset: node crashed"),
                answer = tokio::time::timeout(CLIENT_TIMEOUT, call) => answer
                    .unwrap_or_else(|_| failed(Code::DeadlineExceeded, "client timeout")),
            }
        }
    };
    Op {
        client: request.client,
        kind: request.kind,
        key: Bytes::from(key_name(request.key)),
        node,
        value: request.value,
        context: request.context,
        quorum: request.quorum,
        sloppy: request.sloppy,
        start,
        end: cluster.now(),
        outcome,
    }
}

fn failed(code: Code, message: &str) -> Outcome {
    Outcome::Failed {
        code,
        message: message.to_owned(),
    }
}

async fn call(
    api: &kv_grpc::PublicApi<crate::net::SimTransport>,
    request: &ClientRequest,
) -> Outcome {
    let key = key_name(request.key);
    let (client_id, request_id) = (format!("c{}", request.client), String::new());
    let version = request.context.as_ref().map(to_api);
    let write_mode = if request.sloppy {
        api::WriteMode::Sloppy
    } else {
        api::WriteMode::Strict
    };
    let answer = match request.kind {
        OpKind::Put => api
            .put(Request::new(api::PutRequest {
                key,
                value: request.value.clone().unwrap_or_default(),
                consistency_w: request.quorum,
                consistency_r: 0,
                version,
                client_id,
                request_id,
                write_mode: write_mode.into(),
            }))
            .await
            .map(|r| written(r.into_inner().version.as_ref())),
        OpKind::Delete => api
            .delete(Request::new(api::DeleteRequest {
                key,
                consistency_w: request.quorum,
                version,
                client_id,
                request_id,
                write_mode: write_mode.into(),
            }))
            .await
            .map(|r| written(r.into_inner().version.as_ref())),
        OpKind::Get => api
            .get(Request::new(api::GetRequest {
                key,
                consistency_r: request.quorum,
                client_id,
                request_id,
            }))
            .await
            .map(|r| read(r.into_inner())),
    };
    answer.unwrap_or_else(|status| Outcome::Failed {
        code: status.code(),
        message: status.message().to_owned(),
    })
}

fn written(version: Option<&api::Version>) -> Outcome {
    Outcome::Written {
        context: from_api(version),
    }
}

fn read(response: api::GetResponse) -> Outcome {
    let values = match response.value {
        Some(single) => vec![single.value],
        None => response.conflicts.into_iter().map(|c| c.value).collect(),
    };
    Outcome::Read {
        values,
        context: from_api(response.context.as_ref()),
    }
}

fn to_api(version: &VersionVector) -> api::Version {
    kv_grpc::convert::version_to_api(version)
}

fn from_api(version: Option<&api::Version>) -> VersionVector {
    kv_grpc::convert::version_from_api(version).expect("nodes answer with valid versions")
}
