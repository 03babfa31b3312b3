//! The coordinator side: client requests through this node. Only members of the newest
//! ring version coordinate (they read-ack versions, so they alone choose which version a
//! read may use); another node forwards. A write is coordinated by a replica of its key,
//! which mints the version and waits for W acknowledgements (in every live ring
//! version's list while the ring changes); a read asks every replica in one version's
//! list and answers after R.

use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::future::Either;
use kv_clock::VersionVector;
use kv_quorum::{Fanout, GroupQuorum, Outcome, Reply};
use kv_repair::reconcile;
use kv_storage::{Durable, Siblings};
use tokio::time::Instant;

use super::Node;
use super::background::{Written, answers};
use crate::error::{Failures, Operation};
use crate::hints::Ack;
use crate::membership::Routing;
use crate::metrics::RequestOp;
use crate::placement::Placement;
use crate::request::{self, ClientRead, ClientWrite, InvalidRequest, ReadCommand};
use crate::transport::RemoteError;
use crate::{NodeError, PeerTransport, SharedVersions, TransportError, WriteCommand};

impl<T: PeerTransport> Node<T> {
    /// A client Put or Delete through this node: validated against one routing
    /// snapshot, then coordinated here or forwarded to a replica of the key. Counted in
    /// the node's request metrics.
    pub async fn client_put(
        self: &Arc<Self>,
        write: ClientWrite,
    ) -> Result<VersionVector, NodeError> {
        let op = if write.value.is_some() {
            RequestOp::put
        } else {
            RequestOp::delete
        };
        let started = tokio::time::Instant::now();
        let result = self.put_unmeasured(write).await;
        self.stats().requests.record(op, &result, started.elapsed());
        result
    }

    async fn put_unmeasured(
        self: &Arc<Self>,
        write: ClientWrite,
    ) -> Result<VersionVector, NodeError> {
        let routing = self.request_routing()?;
        let command = write.validate(
            &self.config.limits,
            routing.replicas(),
            self.config.write_quorum,
            self.config.hints.sloppy_quorum,
        )?;
        let placement = routing.write_placement(kv_ring::key_hash(&command.key));
        let own = placement
            .position(&self.config.node_id)
            .filter(|_| self.coordinates(&routing));
        match own {
            Some(own) => self.coordinate(&routing, placement, own, command).await,
            None => self.forward_write(&placement, command).await,
        }
    }

    /// Whether this node coordinates requests: it is a member of the newest version.
    fn coordinates(&self, routing: &Routing) -> bool {
        routing.layout().newest().has(&self.config.node_id)
    }

    /// A client Get through this node: asks all N replicas, answers once R replied, and
    /// repairs stale replicas in the background afterwards. Counted in the node's request
    /// metrics.
    pub async fn client_get(
        self: &Arc<Self>,
        read: ClientRead,
    ) -> Result<Option<Siblings>, NodeError> {
        let started = tokio::time::Instant::now();
        let result = self.get_unmeasured(read).await;
        let requests = &self.stats().requests;
        requests.record(RequestOp::get, &result, started.elapsed());
        if let Ok(Some(versions)) = &result {
            let live = versions.values().filter(|value| value.is_some()).count();
            if live > 0 {
                requests.record_siblings(live);
            }
        }
        result
    }

    async fn get_unmeasured(
        self: &Arc<Self>,
        read: ClientRead,
    ) -> Result<Option<Siblings>, NodeError> {
        let routing = self.request_routing()?;
        let command = read.validate(
            &self.config.limits,
            routing.replicas(),
            self.config.read_quorum,
        )?;
        if !self.coordinates(&routing) {
            return self.forward_read(&routing, command).await;
        }
        self.read_with(
            &routing,
            command.key,
            command.read_quorum,
            &command.request_id,
        )
        .await
    }

    /// Coordinates a read a node outside the newest ring version forwarded.
    pub async fn coordinate_read(
        self: &Arc<Self>,
        key: Bytes,
        read_quorum: usize,
    ) -> Result<Option<Siblings>, NodeError> {
        let routing = self.request_routing()?;
        request::forwarded_quorum(read_quorum, routing.replicas())?;
        if !self.coordinates(&routing) {
            return Err(NodeError::NotAMember {
                node: self.config.node_id.clone(),
                members: routing.layout().newest().members.keys().cloned().collect(),
            });
        }
        self.read_with(&routing, key, read_quorum, "").await
    }

    async fn read_with(
        self: &Arc<Self>,
        routing: &Routing,
        key: Bytes,
        read_quorum: usize,
        request_id: &str,
    ) -> Result<Option<Siblings>, NodeError> {
        let placement = routing.read_placement(kv_ring::key_hash(&key));
        // Only a list from before the ring held N members is shorter than R.
        let needed = read_quorum.min(placement.len());
        self.read_quorum(placement, key, needed, request_id).await
    }

    /// Hands a read to a member of the newest version, trying the key's replicas in it
    /// in order (a read changes nothing, so any failure may be retried on the next).
    async fn forward_read(
        &self,
        routing: &Routing,
        command: ReadCommand,
    ) -> Result<Option<Siblings>, NodeError> {
        let deadline = Instant::now() + self.config.request_timeout;
        let hash = kv_ring::key_hash(&command.key);
        let mut tried = Vec::new();
        for replica in routing.newest().preference_list_for_hash(hash).iter() {
            if self.peers.is_dead(replica) {
                tried.push(declared_dead(replica));
                continue;
            }
            let call = self.transport.coordinate_read(
                replica,
                command.key.clone(),
                command.read_quorum,
                command.request_id.clone(),
            );
            let result = tokio::time::timeout_at(deadline, call)
                .await
                .unwrap_or_else(|_| {
                    Err(TransportError::Timeout {
                        peer: replica.to_owned(),
                    })
                });
            match result {
                Ok(merged) => return Ok(merged),
                Err(TransportError::Remote { peer, error }) => {
                    return Err(NodeError::Remote {
                        peer,
                        kind: error.kind,
                        message: error.message,
                    });
                }
                Err(error) => tried.push(error),
            }
        }
        Err(NodeError::NoCoordinator {
            tried: Failures(tried),
        })
    }

    /// The routing for a client request: refused while this node may not route, and
    /// while the ring has fewer members than N (no key could have N distinct replicas).
    fn request_routing(&self) -> Result<Arc<Routing>, NodeError> {
        let routing = self.serving_routing()?;
        if let Some(members) = routing.under_replicated() {
            return Err(NodeError::UnderReplicated {
                members,
                replicas: routing.replicas(),
            });
        }
        Ok(routing)
    }

    /// Coordinates a write a peer forwarded: this node must be a replica of the key in its
    /// own routing, and W must fit N.
    pub async fn coordinate_write(
        self: &Arc<Self>,
        command: WriteCommand,
    ) -> Result<VersionVector, NodeError> {
        let routing = self.request_routing()?;
        request::forwarded_quorum(command.write_quorum, routing.replicas())?;
        let placement = routing.write_placement(kv_ring::key_hash(&command.key));
        let own = placement
            .position(&self.config.node_id)
            .filter(|_| self.coordinates(&routing));
        let Some(own) = own else {
            return Err(NodeError::NotReplica {
                node: self.config.node_id.clone(),
                replicas: placement.describe(),
            });
        };
        self.coordinate(&routing, placement, own, command).await
    }

    /// Mints the new version locally, then replicates it and waits for W acknowledgements
    /// (this one included, once its copy is durable: with `sync`, its group commit runs
    /// while the other replicas write theirs). A sloppy write gives each other replica a
    /// fallback whose hint acknowledges for it if it stays silent; replicas that never
    /// acknowledge get hints in the background either way.
    async fn coordinate(
        self: &Arc<Self>,
        routing: &Arc<Routing>,
        placement: Placement,
        own: usize,
        command: WriteCommand,
    ) -> Result<VersionVector, NodeError> {
        let deadline = Instant::now() + self.config.request_timeout;
        let (stored, local_durable) = self.mint_locally(&command)?;
        let context = stored.join();
        let shared = SharedVersions::new(stored);
        let others: Vec<usize> = (0..placement.len()).filter(|&i| i != own).collect();
        let fallbacks = if command.sloppy && self.config.hints.enabled() {
            self.fallbacks(routing, &placement, others.len())
        } else {
            Vec::new()
        };
        let calls = others.iter().enumerate().map(|(rank, &index)| {
            let replica = placement.replica(index);
            let dead = self.peers.is_dead(&replica);
            let call = self.replicate(
                replica,
                dead,
                fallbacks.get(rank).cloned(),
                command.key.clone(),
                Arc::clone(&shared),
                command.request_id.clone(),
            );
            (index, Either::Left(call))
        });
        let durable_now = local_durable.is_done();
        let local =
            (!durable_now).then(|| (own, Either::Right(self.local_durability(local_durable))));
        let mut fanout = start_fanout(&placement, command.write_quorum, calls.chain(local))?;
        if durable_now {
            fanout.record(Reply {
                replica: own,
                result: Ok(Ack::Replica),
            });
        }
        let outcome = fanout.wait(deadline).await;
        self.observe_replies(&placement, fanout.replies());
        let acked = fanout.quorum().successes();
        let failures = failures(fanout.replies());
        let written = Written {
            routing: Arc::clone(routing),
            placement: placement.clone(),
            key: command.key.clone(),
            versions: shared,
        };
        self.finish_in_background(fanout, written);
        self.decide(
            Operation::Write,
            outcome,
            command.write_quorum,
            acked,
            placement.len(),
            failures,
        )
        .map(|()| context)
    }

    /// Hands a write to the first replica that can be reached. Only a replica that was
    /// certainly not reached is skipped: one that may have applied the write ends the
    /// attempt, since a second coordinator would mint a second version of it.
    async fn forward_write(
        &self,
        placement: &Placement,
        command: WriteCommand,
    ) -> Result<VersionVector, NodeError> {
        let deadline = Instant::now() + self.config.request_timeout;
        let mut tried = Vec::new();
        // Only the newest version's replicas coordinate (they come first in a placement).
        for index in 0..placement.newest_len() {
            let replica = &*placement.replica(index);
            if self.peers.is_dead(replica) {
                tried.push(declared_dead(replica));
                continue;
            }
            let call = self.transport.coordinate_write(replica, command.clone());
            let result = tokio::time::timeout_at(deadline, call)
                .await
                .unwrap_or_else(|_| {
                    Err(TransportError::Timeout {
                        peer: replica.to_owned(),
                    })
                });
            self.peers.observe(
                replica,
                result.as_ref().map_or_else(|e| !e.is_silence(), |_| true),
            );
            match result {
                Ok(context) => return Ok(context),
                Err(error @ TransportError::Unreachable { .. }) => tried.push(error),
                Err(TransportError::Remote { peer, error }) => {
                    let RemoteError { kind, message } = error;
                    return Err(NodeError::Remote {
                        peer,
                        kind,
                        message,
                    });
                }
                Err(
                    cause @ (TransportError::Timeout { .. } | TransportError::Interrupted { .. }),
                ) => {
                    return Err(NodeError::ForwardedWriteUncertain {
                        replica: replica.to_owned(),
                        cause,
                    });
                }
            }
        }
        Err(NodeError::NoCoordinator {
            tried: Failures(tried),
        })
    }

    /// Reads `key` from every replica of `placement` and answers after `needed` replies.
    async fn read_quorum(
        self: &Arc<Self>,
        placement: Placement,
        key: Bytes,
        needed: usize,
        request_id: &str,
    ) -> Result<Option<Siblings>, NodeError> {
        let deadline = Instant::now() + self.config.request_timeout;
        let own = placement.position(&self.config.node_id);
        let mut fanout = self.fan_out(&placement, own, needed, |transport, peer| {
            let (key, request_id) = (key.clone(), request_id.to_owned());
            async move { transport.read(&peer, key, &request_id).await }
        })?;
        if let Some(index) = own {
            let local = self
                .replica_read(&key)
                .map_err(|error| self.local_failure(&error));
            fanout.record(Reply {
                replica: index,
                result: local,
            });
        }
        let outcome = fanout.wait(deadline).await;
        self.observe_replies(&placement, fanout.replies());
        let answered = fanout.quorum().successes();
        self.decide(
            Operation::Read,
            outcome,
            needed,
            answered,
            placement.len(),
            failures(fanout.replies()),
        )?;
        let reconciled = reconcile(&answers(fanout.replies()));
        self.repair_in_background(key, fanout, placement, reconciled.repairs);
        Ok(reconciled.merged)
    }

    /// Starts `call` toward every replica of `placement` but `skip` (this node), needing
    /// `needed` successes. A replica gossip declared DEAD fails at once without a call,
    /// so the quorum is decided without waiting for its timeout.
    fn fan_out<V, C, F>(
        &self,
        placement: &Placement,
        skip: Option<usize>,
        needed: usize,
        call: C,
    ) -> Result<Fanout<V, TransportError>, NodeError>
    where
        V: Send + 'static,
        C: Fn(Arc<T>, Arc<str>) -> F,
        F: Future<Output = Result<V, TransportError>> + Send + 'static,
    {
        let calls = (0..placement.len())
            .filter(|index| Some(*index) != skip)
            .map(|index| {
                let peer = placement.replica(index);
                let dead = self.peers.is_dead(&peer);
                let pending = call(Arc::clone(&self.transport), Arc::clone(&peer));
                (index, async move {
                    if dead {
                        return Err(declared_dead(&peer));
                    }
                    pending.await
                })
            });
        start_fanout(placement, needed, calls)
    }

    /// Turns a quorum outcome into the client's answer.
    fn decide(
        &self,
        op: Operation,
        outcome: Outcome,
        needed: usize,
        acked: usize,
        replicas: usize,
        failures: Failures,
    ) -> Result<(), NodeError> {
        match outcome {
            Outcome::Reached => Ok(()),
            Outcome::Impossible => Err(NodeError::QuorumNotMet {
                op,
                needed,
                acked,
                replicas,
                failures,
            }),
            Outcome::DeadlineExceeded => Err(NodeError::Timeout {
                op,
                timeout_ms: self.config.request_timeout.as_millis() as u64,
                acked,
                needed,
                replicas,
            }),
        }
    }

    /// This node's own failure, recorded among the replicas' replies.
    pub(crate) fn local_failure(&self, error: &NodeError) -> TransportError {
        TransportError::Remote {
            peer: self.config.node_id.clone(),
            error: RemoteError {
                kind: error.kind(),
                message: error.to_string(),
            },
        }
    }
}

/// Starts `calls` (replica index, call) needing `needed` successes (in every version's
/// list, for a write while the ring changes).
fn start_fanout<V, F>(
    placement: &Placement,
    needed: usize,
    calls: impl IntoIterator<Item = (usize, F)>,
) -> Result<Fanout<V, TransportError>, NodeError>
where
    V: Send + 'static,
    F: Future<Output = Result<V, TransportError>> + Send + 'static,
{
    let quorum: GroupQuorum = placement.quorum(needed).map_err(|_| {
        NodeError::from(InvalidRequest::QuorumOutOfRange {
            field: "quorum",
            requested: u32::try_from(needed).unwrap_or(u32::MAX),
            replicas: placement.len(),
        })
    })?;
    Ok(Fanout::start_grouped(calls, quorum))
}

impl<T: PeerTransport> Node<T> {
    /// This node's own copy of a write as a replica call: acknowledged once durable, a
    /// failed sync reported as this node's failure.
    fn local_durability(
        self: &Arc<Self>,
        durable: Durable,
    ) -> impl Future<Output = Result<Ack, TransportError>> + Send + 'static {
        let node = Arc::clone(self);
        async move {
            durable
                .await
                .map(|()| Ack::Replica)
                .map_err(|error| node.local_failure(&NodeError::from(error)))
        }
    }
}

/// The failure a coordinator records, without calling, for a peer gossip declared dead.
pub(crate) fn declared_dead(peer: &str) -> TransportError {
    TransportError::Unreachable {
        peer: peer.to_owned(),
        reason: "declared DEAD by the failure detector".into(),
    }
}

/// The failed replies, for error messages.
fn failures<V>(replies: &[Reply<V, TransportError>]) -> Failures {
    Failures(
        replies
            .iter()
            .filter_map(|reply| reply.result.as_ref().err().cloned())
            .collect(),
    )
}
