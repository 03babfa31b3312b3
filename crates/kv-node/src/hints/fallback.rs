//! The coordinator's side of hinted handoff: which nodes are a key's fallbacks (the
//! next distinct live nodes clockwise after its replicas, Dynamo §4.6), a sloppy write's
//! call to one replica (the replica, else a hint on its fallback), and the hints a
//! write leaves for the replicas that never acknowledged it.

use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;

use crate::membership::Routing;
use crate::node::{Node, declared_dead};
use crate::placement::Placement;
use crate::{PeerTransport, SharedVersions, TransportError};

/// Who acknowledged a write to one replica's slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Ack {
    /// The replica itself.
    Replica,
    /// A fallback, which stored the versions as a hint for the replica.
    Hinted,
}

impl<T: PeerTransport> Node<T> {
    /// Up to `most` fallbacks of the key at `placement`: nodes of the newest ring that are
    /// not replicas of the key, not this node and not down, nearest clockwise first.
    pub(crate) fn fallbacks(
        &self,
        routing: &Routing,
        placement: &Placement,
        most: usize,
    ) -> Vec<Arc<str>> {
        let me = self.config().node_id.as_str();
        routing
            .newest()
            .successors(placement.hash())
            .filter(|node| {
                &***node != me && placement.position(node).is_none() && !self.peers.is_down(node)
            })
            .take(most)
            .cloned()
            .collect()
    }

    /// Sends a write's versions to `replica`; with a `fallback` (a sloppy write), a
    /// replica that stays silent for half the request timeout is replaced by a hint on the
    /// fallback, which then acknowledges the slot. A replica gossip declared DEAD is not
    /// called at all.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn replicate(
        self: &Arc<Self>,
        replica: Arc<str>,
        dead: bool,
        fallback: Option<Arc<str>>,
        key: Bytes,
        versions: Arc<SharedVersions>,
        request_id: String,
    ) -> impl Future<Output = Result<Ack, TransportError>> + Send + 'static {
        let node = Arc::clone(self);
        let replica_budget = self.config().request_timeout / 2;
        async move {
            let call =
                node.transport
                    .write(&replica, key.clone(), Arc::clone(&versions), &request_id);
            let answer = if dead {
                Err(declared_dead(&replica))
            } else if fallback.is_some() {
                tokio::time::timeout(replica_budget, call)
                    .await
                    .unwrap_or_else(|_| {
                        Err(TransportError::Timeout {
                            peer: replica.to_string(),
                        })
                    })
            } else {
                call.await
            };
            let error = match answer {
                Ok(()) => return Ok(Ack::Replica),
                Err(error) => error,
            };
            let Some(fallback) = fallback.filter(|_| error.is_silence()) else {
                return Err(error);
            };
            let hinted = node
                .transport
                .store_hint(&fallback, &replica, key, versions, &request_id)
                .await;
            match hinted {
                Ok(()) => {
                    node.hints.count_sloppy_ack();
                    Ok(Ack::Hinted)
                }
                Err(hint_error) => {
                    tracing::debug!(%replica, %fallback, %hint_error, "fallback refused a hint");
                    Err(error)
                }
            }
        }
    }

    /// Leaves a hint for each replica of `placement` at `missed` (they never acknowledged
    /// a write of `key`): on a fallback if the key has a live one, else on this node
    /// (a cluster of N nodes has no node outside a key's replicas).
    pub(crate) async fn hint_missed(
        &self,
        routing: &Routing,
        placement: &Placement,
        missed: &[usize],
        key: &Bytes,
        versions: &Arc<SharedVersions>,
    ) {
        if missed.is_empty() || !self.config().hints.enabled() {
            return;
        }
        // This node's own copy is in its store already (only its sync can be late).
        let me = self.config().node_id.as_str();
        let missed: Vec<usize> = missed
            .iter()
            .copied()
            .filter(|&index| &*placement.replica(index) != me)
            .collect();
        let fallbacks = self.fallbacks(routing, placement, missed.len());
        for (rank, &index) in missed.iter().enumerate() {
            let target = placement.replica(index);
            if let Some(fallback) = fallbacks.get(rank) {
                let sent = self
                    .transport
                    .store_hint(fallback, &target, key.clone(), Arc::clone(versions), "")
                    .await;
                match sent {
                    Ok(()) => continue,
                    Err(error) => {
                        tracing::debug!(%target, %fallback, %error, "fallback refused a hint; keeping it here");
                    }
                }
            }
            if let Err(error) = self
                .store_hint(&target, key.clone(), versions.siblings().clone())
                .await
            {
                tracing::warn!(%target, %error, "hint not stored; anti-entropy will repair the replica");
            }
        }
    }
}
