//! A member's identity: who it is, where to reach it, and a `bump` that makes a restarted
//! or renewed incarnation win over the old one at the same gossip address.

use std::fmt;
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

/// A cluster member as gossip knows it.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct NodeIdentity {
    /// Stable node id (e.g. `n1`).
    pub node_id: String,
    /// Where its gossip (UDP) socket listens.
    pub gossip_addr: SocketAddr,
    /// Where its node-to-node (internal) gRPC service listens: what peers dial.
    pub internal_addr: SocketAddr,
    /// Where its client gRPC API listens: what operators and clients are shown.
    pub client_addr: SocketAddr,
    /// Distinguishes incarnations of the same node: set from the start time, incremented
    /// on renewal. The higher bump wins an address conflict.
    pub bump: u64,
}

impl NodeIdentity {
    /// A placeholder for a seed known only by address: real identities always win over it.
    pub(crate) fn seed(gossip_addr: SocketAddr) -> Self {
        Self {
            node_id: String::new(),
            gossip_addr,
            internal_addr: gossip_addr,
            client_addr: gossip_addr,
            bump: 0,
        }
    }
}

impl fmt::Debug for NodeIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}#{}", self.node_id, self.gossip_addr, self.bump)
    }
}

impl foca::Identity for NodeIdentity {
    type Addr = SocketAddr;

    fn renew(&self) -> Option<Self> {
        Some(Self {
            bump: self.bump.wrapping_add(1),
            ..self.clone()
        })
    }

    fn addr(&self) -> SocketAddr {
        self.gossip_addr
    }

    fn win_addr_conflict(&self, adversary: &Self) -> bool {
        (self.bump, &self.node_id) > (adversary.bump, &adversary.node_id)
    }
}
