//! Ring changes operators ask for (join, leave, remove, replace): checked against what
//! this node knows of the peers, turned into a new layout version, and described as a
//! plan (which ranges move, from where to where, about how many keys).

use kv_layout::{Layout, Proposal, plan};
use kv_ring::Ring;

use crate::node::Node;
use crate::{MAX_NODE_ID_BYTES, NodeError, PeerState, PeerTransport};

/// Most nodes one change names.
pub const MAX_CHANGE_NODES: usize = 64;

/// A membership change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RingChange {
    /// Add these nodes (running, seen ALIVE by gossip, with this node's vnode count).
    Join(Vec<String>),
    /// Take these nodes out after they hand their data off (they keep serving until then).
    Leave(Vec<String>),
    /// Take these dead nodes out; the surviving replicas re-replicate their ranges.
    Remove(Vec<String>),
    /// Put `new` (running, not a member) in `old`'s place.
    Replace {
        /// The node replaced.
        old: String,
        /// Its replacement.
        new: String,
    },
}

impl RingChange {
    /// The nodes the change names.
    pub fn nodes(&self) -> Vec<&str> {
        match self {
            Self::Join(nodes) | Self::Leave(nodes) | Self::Remove(nodes) => {
                nodes.iter().map(String::as_str).collect()
            }
            Self::Replace { old, new } => vec![old, new],
        }
    }

    /// Checks the node ids: at least one, each a valid node id, none twice.
    pub fn validate(&self) -> Result<(), NodeError> {
        let nodes = self.nodes();
        let bad = |why: String| Err(NodeError::BadRingChange(why));
        if nodes.is_empty() {
            return bad("name at least one node".into());
        }
        if nodes.len() > MAX_CHANGE_NODES {
            return bad(format!(
                "{} nodes named; at most {MAX_CHANGE_NODES}",
                nodes.len()
            ));
        }
        for (i, node) in nodes.iter().enumerate() {
            if node.is_empty() || node.len() > MAX_NODE_ID_BYTES {
                return bad(format!(
                    "node id {node:?} must be 1..={MAX_NODE_ID_BYTES} bytes"
                ));
            }
            if node
                .chars()
                .any(|c| c.is_whitespace() || c.is_control() || c == ',')
            {
                return bad(format!(
                    "node id {node:?} holds a space, comma or control character"
                ));
            }
            if nodes[..i].contains(node) {
                return bad(format!("{node} is named twice"));
            }
        }
        Ok(())
    }
}

/// The ranges one node gains, and the nodes that held them before.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedMove {
    /// The node gaining them.
    pub to: String,
    /// Their replicas before the change (the node copies from each live one), by id.
    pub from: Vec<String>,
    /// How many contiguous ranges.
    pub ranges: usize,
    /// The share of the hash space they cover.
    pub share: f64,
    /// About how many keys they hold (this node's key count spread over the share of the
    /// ring it replicates).
    pub keys_estimate: u64,
}

/// What a change does.
#[derive(Debug, Clone, PartialEq)]
pub struct ChangePlan {
    /// The version the change makes.
    pub version: u64,
    /// The change, in words.
    pub change: String,
    /// Whether it was made (false for a dry run).
    pub applied: bool,
    /// The moves, by node gaining ranges.
    pub moves: Vec<PlannedMove>,
    /// Members after the change.
    pub members: Vec<String>,
}

impl<T: PeerTransport> Node<T> {
    /// Plans `change` and, unless `dry_run`, makes it: a new ring version that every node
    /// learns through layout exchanges, after which the nodes gaining ranges copy them.
    pub fn change_ring(&self, change: &RingChange, dry_run: bool) -> Result<ChangePlan, NodeError> {
        change.validate()?;
        let routing = self.serving_routing()?;
        let layout = routing.layout();
        if layout.is_fixed() {
            return Err(NodeError::StaticMembership);
        }
        let me = self.config().node_id.as_str();
        if !layout.newest().has(me) {
            return Err(NodeError::NotAMember {
                node: me.to_owned(),
                members: layout.newest().members.keys().cloned().collect(),
            });
        }
        let proposal = self.check_change(layout, change)?;
        let mut next = layout.clone();
        let version = next.propose(&proposal)?;
        let new = next.version(version).expect("just made");
        let after = new.members.len();
        if after < layout.replicas() && layout.newest().members.len() >= layout.replicas() {
            return Err(NodeError::ChangeRefused(format!(
                "{} would leave {after} member(s) for N={}: join a node first, or replace",
                new.change,
                layout.replicas()
            )));
        }
        let ring = new
            .ring(layout.replicas())
            .map_err(|e| NodeError::BadLayout(e.to_string()))?;
        let plan = ChangePlan {
            version,
            change: new.change.to_string(),
            applied: !dry_run,
            moves: self.planned_moves(routing.newest(), &ring),
            members: new.members.keys().cloned().collect(),
        };
        if !dry_run {
            self.update_layout(|current| {
                let layout = current.as_mut().ok_or_else(|| NodeError::Joining {
                    node: me.to_owned(),
                })?;
                let made = layout.propose(&proposal)?;
                layout.ack(me, made);
                Ok(true)
            })?;
            tracing::info!(version, change = %plan.change, "ring change made");
        }
        Ok(plan)
    }

    /// Checks `change` against the newest version and the peers' liveness.
    fn check_change(&self, layout: &Layout, change: &RingChange) -> Result<Proposal, NodeError> {
        let vnodes = self.config().vnodes;
        let me = self.config().node_id.as_str();
        let refuse = |why: String| Err(NodeError::ChangeRefused(why));
        match change {
            RingChange::Join(nodes) => {
                for node in nodes {
                    self.require_alive(node, "join")?;
                }
                Ok(Proposal::Join(
                    nodes.iter().map(|n| (n.clone(), vnodes)).collect(),
                ))
            }
            RingChange::Leave(nodes) => {
                for node in nodes {
                    if node != me && self.peers.is_dead(node) {
                        return refuse(format!(
                            "{node} is DEAD and cannot hand its data off: remove it instead"
                        ));
                    }
                }
                Ok(Proposal::Leave(nodes.clone()))
            }
            RingChange::Remove(nodes) => {
                for node in nodes {
                    let alive = node == me
                        || self
                            .peers
                            .status(node)
                            .is_some_and(|s| s.state == PeerState::Alive);
                    if alive {
                        return refuse(format!(
                            "{node} is ALIVE: use leave, so it hands its data off first"
                        ));
                    }
                }
                Ok(Proposal::Remove(nodes.clone()))
            }
            RingChange::Replace { old, new } => {
                if !layout.newest().has(old) {
                    return Err(NodeError::Layout(kv_layout::LayoutError::NotMember(
                        old.clone(),
                    )));
                }
                self.require_alive(new, "replace with")?;
                Ok(Proposal::Replace {
                    old: old.clone(),
                    new: new.clone(),
                })
            }
        }
    }

    /// Refuses a node gossip has not seen ALIVE (a member needs its address and must run).
    fn require_alive(&self, node: &str, action: &str) -> Result<(), NodeError> {
        match self.peers.status(node) {
            Some(status) if status.state == PeerState::Alive => Ok(()),
            Some(status) => Err(NodeError::ChangeRefused(format!(
                "cannot {action} {node}: it is {:?} to this node; start it with --seeds \
                 pointing at a member and wait until `kvstore membership` shows it ALIVE",
                status.state
            ))),
            None => Err(NodeError::UnknownMember {
                node: node.to_owned(),
            }),
        }
    }

    /// The moves from `old` to `new`, one per node gaining ranges (its sources merged),
    /// with key estimates from this node's own share.
    fn planned_moves(&self, old: &Ring, new: &Ring) -> Vec<PlannedMove> {
        let me = self.config().node_id.as_str();
        let my_share = old
            .ownership()
            .into_iter()
            .find(|o| o.node == me)
            .map_or(0.0, |o| o.replica_share);
        let keys_per_space = if my_share > 0.0 {
            self.aae.index.items() as f64 / my_share
        } else {
            0.0
        };
        let mut by_node: std::collections::BTreeMap<String, PlannedMove> =
            std::collections::BTreeMap::new();
        for m in plan(old, new) {
            let entry = by_node.entry(m.to.clone()).or_insert_with(|| PlannedMove {
                to: m.to.clone(),
                from: Vec::new(),
                ranges: 0,
                share: 0.0,
                keys_estimate: 0,
            });
            entry.share += m.share();
            entry.ranges += m.ranges.len();
            for source in m.from {
                if !entry.from.contains(&source) {
                    entry.from.push(source);
                }
            }
        }
        by_node
            .into_values()
            .map(|mut m| {
                m.from.sort();
                m.keys_estimate = (m.share * keys_per_space).round() as u64;
                m
            })
            .collect()
    }
}
