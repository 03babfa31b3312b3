//! Storage engines for a Dynamo-style store: each key maps to a [`Siblings`] set (a
//! DVVSet of values, where `None` is a tombstone), kept in ring-hash order so a node can
//! scan the keys of one ring arc.
//!
//! The [`Storage`] trait has two engines: [`MemoryStore`] for tests and simulation, and
//! [`FjallStore`], a persistent LSM store whose writes return only once the configured
//! [`Durability`] is reached. Both share the update rules in one place, so they behave
//! identically; the same test suite runs against both.
//!
//! ```
//! use bytes::Bytes;
//! use kv_clock::{ActorId, VersionVector};
//! use kv_storage::{MemoryStore, Storage, Write};
//!
//! let store = MemoryStore::new(|key| key.len() as u64); // any stable key hash
//! let n1 = ActorId::new("n1").unwrap();
//! let blind = VersionVector::new(); // the context of a client that read nothing
//! let write = Write::new(&blind, Some(Bytes::from("v1")), &n1);
//! let update = store.put(b"user:1", &write)?;
//! assert!(update.before.is_none());
//! let stored = store.get(b"user:1")?.expect("written");
//! assert_eq!(stored, update.after);
//! assert_eq!(stored.values().next(), Some(&Some(Bytes::from("v1"))));
//! # Ok::<(), kv_storage::StorageError>(())
//! ```

#![warn(missing_docs)]

mod error;
mod fjall_store;
mod group_sync;
mod hints;
mod memory;
mod record;
mod rules;

use std::ops::RangeInclusive;

use bytes::Bytes;
use kv_clock::{ActorId, DvvSet, VersionVector};

pub use error::StorageError;
pub use fjall_store::{Durability, FjallStore};
pub use group_sync::Durable;
pub use hints::{Hint, HintUpdate, MAX_HINT_TARGET_BYTES};
pub use memory::MemoryStore;

/// The on-disk record decoders, for the fuzz targets (`kv-fuzz`); not a stable API.
#[doc(hidden)]
pub mod disk_format {
    use crate::{Hint, Siblings, StorageError};

    /// Decodes a data record stored under `key`.
    pub fn decode_record(key: &[u8], raw: &[u8]) -> Result<Siblings, StorageError> {
        crate::record::decode_record(key, raw)
    }

    /// Encodes a data record as the persistent store writes it.
    pub fn encode_record(siblings: &Siblings) -> Vec<u8> {
        crate::record::encode_record(siblings)
    }

    /// A hint's raw key and record, as the persistent store writes them.
    pub fn encode_hint(
        target: &str,
        key: &[u8],
        siblings: &Siblings,
        updated_unix_ms: u64,
    ) -> Result<(Vec<u8>, Vec<u8>), StorageError> {
        let raw_key = crate::hints::hint_key(target, key)?;
        Ok((
            raw_key,
            crate::hints::encode_hint(siblings, updated_unix_ms),
        ))
    }

    /// Decodes a hint from its raw key and record.
    pub fn decode_hint(raw_key: &[u8], raw_value: &[u8]) -> Result<Hint, StorageError> {
        crate::hints::hint_from_raw(raw_key, raw_value)
    }
}

/// What a replica stores per key: live values (`None` = tombstone) and their history.
pub type Siblings = DvvSet<Option<Bytes>>;

/// Maps a key to its ring position. Every store of a cluster must use the same one.
pub type KeyHasher = fn(&[u8]) -> u64;

/// Default cap on sibling values per key for [`Write::new`].
pub const DEFAULT_MAX_SIBLINGS: usize = 64;

/// A coordinated write: a new value or tombstone, the context the client read, and the
/// actor (this replica) that mints its dot.
#[derive(Debug, Clone)]
pub struct Write<'a> {
    /// Versions the client had seen; values it covers are replaced.
    pub context: &'a VersionVector,
    /// The new value, or `None` to delete.
    pub value: Option<Bytes>,
    /// The replica coordinating the write.
    pub actor: &'a ActorId,
    /// Refuse the write if the key would hold more sibling values than this.
    pub max_siblings: usize,
}

impl<'a> Write<'a> {
    /// A write with the [`DEFAULT_MAX_SIBLINGS`] cap.
    pub fn new(context: &'a VersionVector, value: Option<Bytes>, actor: &'a ActorId) -> Self {
        Self {
            context,
            value,
            actor,
            max_siblings: DEFAULT_MAX_SIBLINGS,
        }
    }
}

/// What a write did to one key: its versions before (`None`: the key was absent) and
/// after. Callers that index the store (anti-entropy trees) move the key from its old
/// state to its new one; the two are read and written under the key's lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Update {
    /// The versions before the write.
    pub before: Option<Siblings>,
    /// The versions after it.
    pub after: Siblings,
}

impl Update {
    /// Whether the write changed what is stored.
    pub fn changed(&self) -> bool {
        self.before.as_ref() != Some(&self.after)
    }
}

/// One key found by [`Storage::scan`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanItem {
    /// The key's ring position.
    pub hash: u64,
    /// The key.
    pub key: Bytes,
    /// Its stored versions.
    pub siblings: Siblings,
}

/// A key-value store of [`Siblings`], ordered by ring position.
///
/// Every method is atomic per key, and a method that writes returns only after the
/// write reached the store's durability level (the `_deferred` writes return before, with
/// a [`Durable`] to await).
pub trait Storage: Send + Sync + std::fmt::Debug + 'static {
    /// The stored versions of `key`, if it was ever written.
    fn get(&self, key: &[u8]) -> Result<Option<Siblings>, StorageError>;

    /// Applies a coordinated write (see [`Write`]).
    fn put(&self, key: &[u8], write: &Write<'_>) -> Result<Update, StorageError>;

    /// Syncs versions from another replica into this one (replication, read repair,
    /// handoff). Never limited by size or sibling caps: refusing would block convergence.
    fn merge(&self, key: &[u8], incoming: &Siblings) -> Result<Update, StorageError>;

    /// Removes `key` if it still holds exactly `expected` (tombstone reaping: a write that
    /// arrived since the caller looked keeps the key). Returns whether it was removed.
    fn remove_if_unchanged(&self, key: &[u8], expected: &Siblings) -> Result<bool, StorageError>;

    /// Up to `limit` keys whose ring position lies in `hashes`, in (hash, key) order,
    /// starting after `start_after` (the last `(hash, key)` of the previous page).
    fn scan(
        &self,
        hashes: RangeInclusive<u64>,
        start_after: Option<(u64, &[u8])>,
        limit: usize,
    ) -> Result<Vec<ScanItem>, StorageError>;

    /// Number of keys stored, tombstoned ones included. An engine may scan every key to
    /// count them (fjall does): for tests and tools, not for a request path.
    fn count(&self) -> Result<u64, StorageError>;

    /// Bytes the engine takes on disk, its log included (0 for an engine that keeps
    /// nothing on disk). Space freed by removals comes back as the engine compacts.
    fn disk_bytes(&self) -> u64;

    /// [`put`](Storage::put) without waiting for durability: returns once the write is
    /// in the engine (visible to reads, atomic per key), with the wait that remains. An
    /// engine that syncs a journal leaves that to its group commit, so an async caller
    /// awaits it without a thread of its own. The default waits inside, as `put` does.
    fn put_deferred(
        &self,
        key: &[u8],
        write: &Write<'_>,
    ) -> Result<(Update, Durable), StorageError> {
        Ok((self.put(key, write)?, Durable::now()))
    }

    /// [`merge`](Storage::merge) without waiting for durability (see
    /// [`put_deferred`](Storage::put_deferred)).
    fn merge_deferred(
        &self,
        key: &[u8],
        incoming: &Siblings,
    ) -> Result<(Update, Durable), StorageError> {
        Ok((self.merge(key, incoming)?, Durable::now()))
    }

    /// Whether a write may block for long (e.g. an fsync), so an async caller should move
    /// it off its event loop (the deferred writes excepted: they never wait for a sync).
    /// Writes that only touch memory or the page cache do not.
    fn writes_block(&self) -> bool {
        false
    }

    /// A named piece of the store's own metadata (its node's actor id, the cluster's ring
    /// history), apart from the keys: `None` if never set. A new store (a wiped disk, a
    /// memory store after a restart) has none, so its node knows it starts afresh.
    fn meta(&self, name: &str) -> Result<Option<Vec<u8>>, StorageError>;

    /// Sets a named piece of metadata, synced to the device whatever the durability (it
    /// changes rarely, and a node must not forget it).
    fn set_meta(&self, name: &str, value: &[u8]) -> Result<(), StorageError>;

    /// Adds `versions` of `key` to the hint held for replica `target` (DVVSet sync with
    /// what the hint held: hints for one key coalesce), stamped `now_unix_ms`. Durable
    /// like a write of a key.
    fn store_hint(
        &self,
        target: &str,
        key: &[u8],
        versions: &Siblings,
        now_unix_ms: u64,
    ) -> Result<HintUpdate, StorageError>;

    /// Up to `limit` of `target`'s hints in key order, after key `after`.
    fn hints(
        &self,
        target: &str,
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<Hint>, StorageError>;

    /// Up to `limit` hints of every target in (target, key) order, after `after`.
    fn all_hints(
        &self,
        after: Option<(&str, &[u8])>,
        limit: usize,
    ) -> Result<Vec<Hint>, StorageError>;

    /// Removes `target`'s hint for `key` if it still holds exactly `expected` (a hint
    /// that grew since it was delivered stays). Returns the bytes freed, if removed.
    fn remove_hint_if_unchanged(
        &self,
        target: &str,
        key: &[u8],
        expected: &Siblings,
    ) -> Result<Option<u64>, StorageError>;
}
