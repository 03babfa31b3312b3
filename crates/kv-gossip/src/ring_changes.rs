//! Ring membership changes carried as foca custom broadcasts. Liveness never removes a
//! node from the ring; only an explicit leave does. A leave is versioned by the leaving
//! identity's `bump`, so a later incarnation that rejoins is not shadowed by it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::NodeIdentity;

/// "Node `node_id`, as of incarnation `bump`, has left the ring."
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RingLeave {
    /// The node leaving.
    pub node_id: String,
    /// Its identity's bump when it left; incarnations with a higher bump are members again.
    pub bump: u64,
}

impl foca::Invalidates for RingLeave {
    fn invalidates(&self, other: &Self) -> bool {
        self.node_id == other.node_id && self.bump >= other.bump
    }
}

/// A broadcast could not be decoded.
#[derive(Debug, Error)]
#[error("malformed ring-change broadcast: {0}")]
pub struct RingChangeError(String);

/// The newest leave per node, shared between foca's handler and `Gossip`'s queries.
pub(crate) type LeftTable = Arc<Mutex<HashMap<String, u64>>>;

/// Remembers the newest leave per node and tells foca which broadcasts are news.
#[derive(Debug, Default)]
pub(crate) struct RingChanges {
    left: LeftTable,
}

impl RingChanges {
    pub(crate) fn encode(leave: &RingLeave) -> Vec<u8> {
        postcard::to_allocvec(leave).expect("a RingLeave always serialises")
    }

    /// The table this handler fills, for `has_left` queries.
    pub(crate) fn table(&self) -> LeftTable {
        Arc::clone(&self.left)
    }
}

/// Whether `identity` has left the ring (a leave at or after its bump).
pub(crate) fn has_left(table: &LeftTable, identity: &NodeIdentity) -> bool {
    let left = table.lock().unwrap_or_else(PoisonError::into_inner);
    left.get(&identity.node_id)
        .is_some_and(|&bump| bump >= identity.bump)
}

impl foca::BroadcastHandler<NodeIdentity> for RingChanges {
    type Key = RingLeave;
    type Error = RingChangeError;

    fn receive_item(
        &mut self,
        data: &[u8],
        _sender: Option<&NodeIdentity>,
    ) -> Result<Option<RingLeave>, RingChangeError> {
        let leave: RingLeave =
            postcard::from_bytes(data).map_err(|e| RingChangeError(e.to_string()))?;
        if leave.node_id.is_empty() {
            return Err(RingChangeError("empty node id".into()));
        }
        let mut left = self.left.lock().unwrap_or_else(PoisonError::into_inner);
        match left.get(&leave.node_id) {
            Some(&known) if known >= leave.bump => Ok(None),
            _ => {
                left.insert(leave.node_id.clone(), leave.bump);
                Ok(Some(leave))
            }
        }
    }
}
