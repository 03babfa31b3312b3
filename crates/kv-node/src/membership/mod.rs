//! Who owns which keys: the layout (kv-layout's ring history) this node holds, how it is
//! kept (persisted in the store on every change, exchanged with peers), when the node may
//! route with it, and the work that moves a ring change forward (`driver.rs`: layout
//! exchanges and acks; `transfer.rs`: copying the ranges this node gains; `cleanup.rs`:
//! dropping the keys it no longer replicates once a change is over; `change.rs`: the
//! changes operators ask for, with their plan).
//!
//! A node serves once its layout is trustworthy: it founded the cluster at this start, or
//! its peers are a static list, or it exchanged layouts with a member of its cluster since
//! it started (a node back from a crash may have missed changes), or it is the only member
//! of every live version (nobody can tell it anything new).

mod change;
mod cleanup;
mod driver;
mod progress;
mod routing;
pub(crate) mod state;
mod transfer;

use std::sync::{Arc, PoisonError};

use bytes::Bytes;
use kv_layout::{Layout, encode_layout};
use tokio::time::Instant;

pub use change::{ChangePlan, MAX_CHANGE_NODES, PlannedMove, RingChange};
pub(crate) use driver::run_layout_gossip;
pub use progress::{CleanupProgress, SourceProgress, TransferProgress, TransferState};
pub use routing::Routing;
pub use state::MAX_LAYOUT_BYTES;
pub(crate) use state::{Origin, RingState, persist_layout, stored_layout};
pub(crate) use transfer::run_transfers;

use state::decode;

use crate::node::Node;
use crate::{NodeError, PeerTransport};

impl<T> Node<T> {
    /// The layout and rings this node routes with, if it has a layout (a new node has
    /// none until a peer sends it one).
    pub fn routing(&self) -> Option<Arc<Routing>> {
        self.membership.routing()
    }

    /// Whether this node routes client requests: it has a layout it can trust.
    pub fn serving(&self) -> bool {
        let Some(routing) = self.routing() else {
            return false;
        };
        self.membership.is_confirmed() || self.sole_member(&routing)
    }

    fn sole_member(&self, routing: &Routing) -> bool {
        let members = routing.members();
        members.len() == 1 && members.contains(self.config().node_id.as_str())
    }

    /// The routing for one request, refused while this node may not route.
    pub(crate) fn serving_routing(&self) -> Result<Arc<Routing>, NodeError> {
        match self.routing() {
            Some(routing) if self.membership.is_confirmed() || self.sole_member(&routing) => {
                Ok(routing)
            }
            _ => Err(NodeError::Joining {
                node: self.config().node_id.clone(),
            }),
        }
    }

    /// Applies `change` to a copy of the current layout (None for a node without one);
    /// when it reports a change, routes with, persists and announces the result. Returns
    /// whether anything changed.
    pub(crate) fn update_layout(
        &self,
        change: impl FnOnce(&mut Option<Layout>) -> Result<bool, NodeError>,
    ) -> Result<bool, NodeError> {
        let _guard = self.membership.lock_update();
        let current = self.routing();
        let mut layout = current.as_ref().map(|r| r.layout().clone());
        if !change(&mut layout)? {
            return Ok(false);
        }
        let Some(layout) = layout else {
            return Ok(false);
        };
        if layout.replicas() != self.config().replication_factor {
            return Err(NodeError::ReplicasMismatch {
                cluster: layout.replicas(),
                configured: self.config().replication_factor,
            });
        }
        let routing =
            Arc::new(Routing::new(layout).map_err(|e| NodeError::BadLayout(e.to_string()))?);
        if self.membership.persist {
            persist_layout(self.storage.as_ref(), routing.layout())?;
        }
        self.record_installed(current.as_deref(), &routing);
        *self
            .membership
            .routing
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Some(routing);
        self.membership.changed.notify_one();
        Ok(true)
    }

    fn record_installed(&self, before: Option<&Routing>, after: &Routing) {
        let mut installed = self
            .membership
            .installed
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        for version in after.versions() {
            let known = before.is_some_and(|b| {
                b.layout()
                    .version(version.number)
                    .zip(after.layout().version(version.number))
                    .is_some_and(|(old, new)| old.hash() == new.hash())
            });
            if !known || !installed.contains_key(&version.number) {
                installed.insert(version.number, Instant::now());
            }
        }
        let oldest = after.layout().oldest_live();
        installed.retain(|number, _| *number >= oldest);
    }

    /// Merges a layout a peer sent (empty: the peer has none yet) and answers with this
    /// node's (empty if it has none).
    pub fn receive_layout(&self, incoming: &[u8]) -> Result<Bytes, NodeError> {
        if !incoming.is_empty() {
            let theirs = decode(incoming)?;
            self.merge_layout(&theirs)?;
        }
        Ok(self.encoded_layout())
    }

    /// This node's layout, encoded (empty without one).
    pub(crate) fn encoded_layout(&self) -> Bytes {
        self.routing()
            .map_or_else(Bytes::new, |r| Bytes::from(encode_layout(r.layout())))
    }

    /// Merges `theirs` into this node's layout (adopting it if this node has none), and
    /// counts it as a confirmation of this node's layout.
    pub(crate) fn merge_layout(&self, theirs: &Layout) -> Result<bool, NodeError> {
        let changed = self.update_layout(|mine| {
            if let Some(mine) = mine {
                return Ok(mine.merge(theirs)?);
            }
            *mine = Some(theirs.clone());
            Ok(true)
        })?;
        if !self.membership.is_confirmed() {
            tracing::info!(
                node = %self.config().node_id,
                cluster = %format_args!("{:016x}", theirs.cluster_id()),
                "ring layout confirmed by a peer; serving requests"
            );
        }
        self.membership.confirm();
        Ok(changed)
    }
}

impl<T: PeerTransport> Node<T> {
    /// Installs the liveness and addresses gossip reports (the ring does not change: only
    /// explicit ring changes do). A peer newly seen ALIVE triggers a layout exchange.
    pub fn apply_peers(&self, peers: Vec<crate::PeerStatus>) {
        let specs: Vec<crate::PeerSpec> = peers
            .iter()
            .map(|p| crate::PeerSpec {
                node_id: p.node_id.clone(),
                internal_address: p.internal_address,
            })
            .collect();
        self.transport.update_peers(&specs);
        if self.peers.replace(peers) {
            self.membership.changed.notify_one();
        }
    }
}
