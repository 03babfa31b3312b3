//! A node's layout state: the routing it serves with (rebuilt on every layout change),
//! whether that layout is confirmed, when each version was first routed with, and its
//! transfers' progress; and the layout's place in the store.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};

use kv_layout::{Layout, decode_layout, encode_layout};
use kv_storage::Storage;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::progress::{CleanupState, TransferLog};
use super::routing::Routing;
use crate::NodeError;

/// The store metadata holding the layout.
pub(crate) const LAYOUT_META: &str = "layout";
/// Largest encoded layout accepted from a peer or a store.
pub const MAX_LAYOUT_BYTES: usize = 1024 * 1024;

/// How a node's layout came to be at start.
#[derive(Debug)]
pub(crate) enum Origin {
    /// A static peer list: never changes, never persisted.
    Fixed(Layout),
    /// Founded now (`--bootstrap`, or a gossip node without seeds on an empty store).
    Founded(Layout),
    /// Read from the store: trusted once a peer confirms it (or the node is alone).
    Stored(Layout),
    /// None yet: a new node learns its cluster's layout from the first peer it reaches.
    Joining,
}

/// The layout this node routes with, and what follows from it.
#[derive(Debug)]
pub(crate) struct RingState {
    pub(super) routing: RwLock<Option<Arc<Routing>>>,
    /// Serialises read-modify-write updates of the layout (and their persistence).
    update: Mutex<()>,
    /// Whether the layout is known to be current enough to route with.
    confirmed: AtomicBool,
    /// Whether layouts are written to the store (not for a static peer list).
    pub(super) persist: bool,
    /// When this node first routed with each version it knows (acks wait for in-flight
    /// requests of the older routing to end).
    pub(super) installed: Mutex<BTreeMap<u64, Instant>>,
    /// This node's transfers, for operators.
    pub(crate) transfers: Mutex<TransferLog>,
    /// The last cleanup pass, for operators.
    pub(crate) cleanup: Mutex<CleanupState>,
    /// Woken when the layout changed here, so the driver pushes it to every peer.
    pub(crate) changed: Notify,
}

impl RingState {
    /// The state for a node starting from `origin`.
    pub(crate) fn new(origin: Origin) -> Result<(Self, Option<Layout>), kv_ring::RingError> {
        let (layout, confirmed, persist) = match origin {
            Origin::Fixed(layout) => (Some(layout), true, false),
            Origin::Founded(layout) => (Some(layout), true, true),
            Origin::Stored(layout) => (Some(layout), false, true),
            Origin::Joining => (None, false, true),
        };
        let routing = layout.clone().map(Routing::new).transpose()?.map(Arc::new);
        let installed = routing
            .iter()
            .flat_map(|r| r.versions().iter().map(|v| (v.number, Instant::now())))
            .collect();
        let state = Self {
            routing: RwLock::new(routing),
            update: Mutex::new(()),
            confirmed: AtomicBool::new(confirmed),
            persist,
            installed: Mutex::new(installed),
            transfers: Mutex::new(TransferLog::default()),
            cleanup: Mutex::new(CleanupState::default()),
            changed: Notify::new(),
        };
        Ok((state, layout.filter(|_| persist)))
    }

    pub(crate) fn routing(&self) -> Option<Arc<Routing>> {
        self.routing
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub(super) fn lock_update(&self) -> MutexGuard<'_, ()> {
        self.update.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(super) fn installed_at(&self, version: u64) -> Option<Instant> {
        self.installed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&version)
            .copied()
    }

    pub(crate) fn confirm(&self) {
        self.confirmed.store(true, Ordering::Release);
    }

    pub(super) fn is_confirmed(&self) -> bool {
        self.confirmed.load(Ordering::Acquire)
    }
}

/// Writes `layout` to `storage`'s metadata.
pub(crate) fn persist_layout(storage: &dyn Storage, layout: &Layout) -> Result<(), NodeError> {
    storage.set_meta(LAYOUT_META, &encode_layout(layout))?;
    Ok(())
}

/// Reads the layout `storage` holds, if any.
pub(crate) fn stored_layout(storage: &dyn Storage) -> Result<Option<Layout>, NodeError> {
    let Some(bytes) = storage.meta(LAYOUT_META)? else {
        return Ok(None);
    };
    decode(&bytes).map(Some)
}

pub(super) fn decode(bytes: &[u8]) -> Result<Layout, NodeError> {
    if bytes.len() > MAX_LAYOUT_BYTES {
        return Err(NodeError::BadLayout(format!(
            "{} bytes, over the limit of {MAX_LAYOUT_BYTES}",
            bytes.len()
        )));
    }
    decode_layout(bytes).map_err(|error| NodeError::BadLayout(error.to_string()))
}
