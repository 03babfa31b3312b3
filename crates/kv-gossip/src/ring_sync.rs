//! Ring synchronisation for a joining node. SWIM's join answer lists only the members a
//! seed considers alive, but a node must route with *every* member of the ring, dead ones
//! included, or its preference lists differ from everyone else's and quorums stop
//! intersecting. So a joining node asks a live member for its whole ring (each member's
//! identity, liveness and whether it left) and reports itself synced only once it has the
//! complete answer from a node that is synced itself. Messages travel on the gossip
//! socket, framed apart from foca's.
//!
//! Bootstrap: in a new cluster nobody is synced until the caller declares a founder
//! (`Gossip::found_cluster`); the others sync from it. An earlier heuristic (the lowest id
//! founds after hearing only from unsynced nodes) let a restarted node found a partial
//! ring when every node it could see was restarting too: the simulator found it.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::{MemberState, NodeIdentity};

/// First byte of every datagram: what follows.
pub(crate) const FRAME_FOCA: u8 = 0;
pub(crate) const FRAME_RING_REQUEST: u8 = 1;
pub(crate) const FRAME_RING_STATE: u8 = 2;

/// Most ring entries one answer may carry across all its parts.
pub const MAX_RING_ENTRIES: usize = 4096;

/// "Send me your ring": the asker says where to answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct RingRequest {
    pub(crate) from: NodeIdentity,
    /// Echoed in the answer so stale answers are recognisable.
    pub(crate) request_id: u64,
}

/// One member of the ring as the answering node sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct RingEntry {
    pub(crate) identity: NodeIdentity,
    pub(crate) state: MemberState,
    pub(crate) left_ring: bool,
}

/// One part of an answer; an answer too big for one datagram is split into parts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct RingStatePart {
    pub(crate) request_id: u64,
    /// Whether the answering node knows the whole ring itself. Only such an answer
    /// completes a sync; an unsynced node's view may be as partial as ours.
    pub(crate) synced: bool,
    pub(crate) part: u16,
    pub(crate) parts: u16,
    pub(crate) entries: Vec<RingEntry>,
}

/// A joining node's progress.
#[derive(Debug, Default)]
pub(crate) struct RingSync {
    pub(crate) synced: bool,
    /// The request in flight and the parts of its answer received so far.
    pub(crate) request_id: u64,
    pub(crate) parts_received: BTreeSet<u16>,
    /// When to ask again if no complete answer arrived.
    pub(crate) retry_at: Option<std::time::Duration>,
}

impl RingSync {
    /// Starts a new request; returns its id.
    pub(crate) fn next_request(&mut self) -> u64 {
        self.request_id += 1;
        self.parts_received.clear();
        self.request_id
    }

    /// Records a part of the current answer; true when it completes the sync.
    pub(crate) fn receive(&mut self, part: &RingStatePart) -> bool {
        if self.synced || part.request_id != self.request_id || part.part >= part.parts {
            return false;
        }
        self.parts_received.insert(part.part);
        if self.parts_received.len() < usize::from(part.parts) {
            return false;
        }
        self.synced = part.synced;
        self.synced
    }
}

/// Frames `message` for the gossip socket.
pub(crate) fn frame(tag: u8, message: &impl Serialize) -> Vec<u8> {
    postcard::to_extend(message, vec![tag]).expect("ring-sync messages always serialise")
}

/// Room for a part's frame tag, ids, counts and the entry list's length prefix.
const PART_OVERHEAD_BYTES: usize = 32;

/// Splits `entries` into framed parts that each fit `max_packet_bytes`.
pub(crate) fn answer_parts(
    request_id: u64,
    synced: bool,
    mut entries: Vec<RingEntry>,
    max_packet_bytes: usize,
) -> Vec<Vec<u8>> {
    entries.truncate(MAX_RING_ENTRIES);
    let budget = max_packet_bytes.saturating_sub(PART_OVERHEAD_BYTES);
    let mut chunks: Vec<Vec<RingEntry>> = vec![Vec::new()];
    let mut used = 0;
    for entry in entries {
        let size = postcard::experimental::serialized_size(&entry).unwrap_or(budget);
        let current = chunks.last_mut().expect("never empty");
        if !current.is_empty() && used + size > budget {
            chunks.push(Vec::new());
            used = 0;
        }
        used += size;
        chunks.last_mut().expect("never empty").push(entry);
    }
    let parts = chunks.len() as u16;
    chunks
        .into_iter()
        .enumerate()
        .map(|(part, entries)| {
            let part = RingStatePart {
                request_id,
                synced,
                part: part as u16,
                parts,
                entries,
            };
            frame(FRAME_RING_STATE, &part)
        })
        .collect()
}
