//! A `Storage` that records every version a coordinator mints (key, dot, value, the
//! client's context, when), so the checker knows the causal history exactly without
//! trusting what the nodes report about it.

use std::collections::BTreeMap;
use std::ops::RangeInclusive;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use kv_clock::{Dot, VersionVector};
use kv_storage::{
    Hint, HintUpdate, MemoryStore, ScanItem, Siblings, Storage, StorageError, Update, Write,
};

/// One version created by a coordinator.
#[derive(Debug, Clone)]
pub struct Mint {
    /// Its dot.
    pub dot: Dot,
    /// The value, `None` for a delete.
    pub value: Option<Bytes>,
    /// The context the client sent: the versions this one supersedes.
    pub context: VersionVector,
    /// Simulated time of the mint.
    pub at: Duration,
}

/// Every mint of one run, by key. Shared by all nodes' stores.
#[derive(Debug, Default)]
pub struct MintLog {
    mints: Mutex<BTreeMap<Bytes, Vec<Mint>>>,
    origin: Mutex<Option<tokio::time::Instant>>,
}

impl MintLog {
    /// A log whose times count from `origin`.
    pub fn new(origin: tokio::time::Instant) -> Arc<Self> {
        let log = Self::default();
        *log.origin.lock().unwrap_or_else(PoisonError::into_inner) = Some(origin);
        Arc::new(log)
    }

    fn record(&self, key: &[u8], mint: Mint) {
        self.mints
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(Bytes::copy_from_slice(key))
            .or_default()
            .push(mint);
    }

    fn now(&self) -> Duration {
        self.origin
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .map_or(Duration::ZERO, |o| o.elapsed())
    }

    /// The mints of `key`, in the order they happened.
    pub fn of(&self, key: &[u8]) -> Vec<Mint> {
        self.mints
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(key)
            .cloned()
            .unwrap_or_default()
    }
}

/// A [`MemoryStore`] whose coordinated writes are recorded in a [`MintLog`]. It stands
/// for a node's disk: the simulation keeps it across a crash unless the fault loses it.
#[derive(Debug)]
pub struct RecordingStore {
    inner: MemoryStore,
    log: Arc<MintLog>,
}

impl RecordingStore {
    /// An empty store recording into `log`.
    pub fn new(log: Arc<MintLog>) -> Self {
        Self {
            inner: MemoryStore::new(kv_ring::key_hash),
            log,
        }
    }
}

impl Storage for RecordingStore {
    fn meta(&self, name: &str) -> Result<Option<Vec<u8>>, StorageError> {
        self.inner.meta(name)
    }

    fn set_meta(&self, name: &str, value: &[u8]) -> Result<(), StorageError> {
        self.inner.set_meta(name, value)
    }

    fn get(&self, key: &[u8]) -> Result<Option<Siblings>, StorageError> {
        self.inner.get(key)
    }

    fn put(&self, key: &[u8], write: &Write<'_>) -> Result<Update, StorageError> {
        let stored = self.inner.put(key, write)?;
        // The new version is the newest dot of the writing actor.
        let dot = stored
            .after
            .siblings()
            .map(|(dot, _)| dot)
            .filter(|dot| dot.actor == *write.actor)
            .max_by_key(|dot| dot.counter)
            .expect("a successful put stores a version of its actor");
        let mint = Mint {
            dot,
            value: write.value.clone(),
            context: write.context.clone(),
            at: self.log.now(),
        };
        self.log.record(key, mint);
        Ok(stored)
    }

    fn merge(&self, key: &[u8], incoming: &Siblings) -> Result<Update, StorageError> {
        self.inner.merge(key, incoming)
    }

    fn remove_if_unchanged(&self, key: &[u8], expected: &Siblings) -> Result<bool, StorageError> {
        self.inner.remove_if_unchanged(key, expected)
    }

    fn scan(
        &self,
        hashes: RangeInclusive<u64>,
        start_after: Option<(u64, &[u8])>,
        limit: usize,
    ) -> Result<Vec<ScanItem>, StorageError> {
        self.inner.scan(hashes, start_after, limit)
    }

    fn disk_bytes(&self) -> u64 {
        self.inner.disk_bytes()
    }

    fn count(&self) -> Result<u64, StorageError> {
        self.inner.count()
    }

    fn store_hint(
        &self,
        target: &str,
        key: &[u8],
        versions: &Siblings,
        now_unix_ms: u64,
    ) -> Result<HintUpdate, StorageError> {
        self.inner.store_hint(target, key, versions, now_unix_ms)
    }

    fn hints(
        &self,
        target: &str,
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<Hint>, StorageError> {
        self.inner.hints(target, after, limit)
    }

    fn all_hints(
        &self,
        after: Option<(&str, &[u8])>,
        limit: usize,
    ) -> Result<Vec<Hint>, StorageError> {
        self.inner.all_hints(after, limit)
    }

    fn remove_hint_if_unchanged(
        &self,
        target: &str,
        key: &[u8],
        expected: &Siblings,
    ) -> Result<Option<u64>, StorageError> {
        self.inner.remove_hint_if_unchanged(target, key, expected)
    }
}
