//! `MemoryStore`: an in-memory engine for tests, simulation and `--storage memory`.

use std::collections::BTreeMap;
use std::ops::{Bound, RangeInclusive};
use std::sync::{PoisonError, RwLock};

use bytes::Bytes;

use crate::hints::{
    RawBounds, all_scan, grown_record, hint_from_raw, hint_key, removable, target_scan,
};
use crate::rules::{apply_merge, apply_write};
use crate::{
    Hint, HintUpdate, KeyHasher, ScanItem, Siblings, Storage, StorageError, Update, Write,
};

/// Keys and versions in a B-tree ordered by (ring position, key). Nothing survives the
/// process.
#[derive(Debug)]
pub struct MemoryStore {
    hasher: KeyHasher,
    map: RwLock<BTreeMap<(u64, Bytes), Siblings>>,
    meta: RwLock<BTreeMap<String, Vec<u8>>>,
    /// Hints by raw hint key, as encoded records (the same sizes fjall reports).
    hints: RwLock<BTreeMap<Vec<u8>, Vec<u8>>>,
}

impl MemoryStore {
    /// An empty store placing keys with `hasher`.
    pub fn new(hasher: KeyHasher) -> Self {
        Self {
            hasher,
            map: RwLock::new(BTreeMap::new()),
            meta: RwLock::new(BTreeMap::new()),
            hints: RwLock::new(BTreeMap::new()),
        }
    }

    fn slot(&self, key: &[u8]) -> (u64, Bytes) {
        ((self.hasher)(key), Bytes::copy_from_slice(key))
    }

    fn update(
        &self,
        key: &[u8],
        change: impl FnOnce(Option<Siblings>) -> Result<Update, StorageError>,
    ) -> Result<Update, StorageError> {
        let slot = self.slot(key);
        let mut map = self.map.write().unwrap_or_else(PoisonError::into_inner);
        let update = change(map.get(&slot).cloned())?;
        if update.changed() {
            map.insert(slot, update.after.clone());
        }
        Ok(update)
    }
}

impl Storage for MemoryStore {
    fn meta(&self, name: &str) -> Result<Option<Vec<u8>>, StorageError> {
        Ok(self
            .meta
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(name)
            .cloned())
    }

    fn set_meta(&self, name: &str, value: &[u8]) -> Result<(), StorageError> {
        self.meta
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(name.to_owned(), value.to_vec());
        Ok(())
    }

    fn get(&self, key: &[u8]) -> Result<Option<Siblings>, StorageError> {
        let map = self.map.read().unwrap_or_else(PoisonError::into_inner);
        Ok(map.get(&self.slot(key)).cloned())
    }

    fn put(&self, key: &[u8], write: &Write<'_>) -> Result<Update, StorageError> {
        self.update(key, |stored| apply_write(stored, write))
    }

    fn merge(&self, key: &[u8], incoming: &Siblings) -> Result<Update, StorageError> {
        self.update(key, |stored| Ok(apply_merge(stored, incoming)))
    }

    fn remove_if_unchanged(&self, key: &[u8], expected: &Siblings) -> Result<bool, StorageError> {
        let slot = self.slot(key);
        let mut map = self.map.write().unwrap_or_else(PoisonError::into_inner);
        if map.get(&slot) != Some(expected) {
            return Ok(false);
        }
        map.remove(&slot);
        Ok(true)
    }

    fn scan(
        &self,
        hashes: RangeInclusive<u64>,
        start_after: Option<(u64, &[u8])>,
        limit: usize,
    ) -> Result<Vec<ScanItem>, StorageError> {
        let start = match start_after {
            Some((hash, key)) => Bound::Excluded((hash, Bytes::copy_from_slice(key))),
            None => Bound::Included((*hashes.start(), Bytes::new())),
        };
        let map = self.map.read().unwrap_or_else(PoisonError::into_inner);
        Ok(map
            .range((start, Bound::Unbounded))
            .take_while(|((hash, _), _)| hash <= hashes.end())
            .filter(|((hash, _), _)| hashes.contains(hash))
            .take(limit)
            .map(|((hash, key), siblings)| ScanItem {
                hash: *hash,
                key: key.clone(),
                siblings: siblings.clone(),
            })
            .collect())
    }

    fn disk_bytes(&self) -> u64 {
        0
    }

    fn count(&self) -> Result<u64, StorageError> {
        let map = self.map.read().unwrap_or_else(PoisonError::into_inner);
        Ok(map.len() as u64)
    }

    fn store_hint(
        &self,
        target: &str,
        key: &[u8],
        versions: &Siblings,
        now_unix_ms: u64,
    ) -> Result<HintUpdate, StorageError> {
        let raw_key = hint_key(target, key)?;
        let mut hints = self.hints.write().unwrap_or_else(PoisonError::into_inner);
        let stored = hints.get(&raw_key).map(Vec::as_slice);
        let (record, update) = grown_record(&raw_key, key, stored, versions, now_unix_ms)?;
        hints.insert(raw_key, record);
        Ok(update)
    }

    fn hints(
        &self,
        target: &str,
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<Hint>, StorageError> {
        self.hint_range(target_scan(target, after)?, limit)
    }

    fn all_hints(
        &self,
        after: Option<(&str, &[u8])>,
        limit: usize,
    ) -> Result<Vec<Hint>, StorageError> {
        self.hint_range(all_scan(after), limit)
    }

    fn remove_hint_if_unchanged(
        &self,
        target: &str,
        key: &[u8],
        expected: &Siblings,
    ) -> Result<Option<u64>, StorageError> {
        let raw_key = hint_key(target, key)?;
        let mut hints = self.hints.write().unwrap_or_else(PoisonError::into_inner);
        let Some(stored) = hints.get(&raw_key) else {
            return Ok(None);
        };
        let freed = removable(&raw_key, key, stored, expected)?;
        if freed.is_some() {
            hints.remove(&raw_key);
        }
        Ok(freed)
    }
}

impl MemoryStore {
    fn hint_range(&self, bounds: RawBounds, limit: usize) -> Result<Vec<Hint>, StorageError> {
        let hints = self.hints.read().unwrap_or_else(PoisonError::into_inner);
        hints
            .range(bounds)
            .take(limit)
            .map(|(raw_key, raw)| hint_from_raw(raw_key, raw))
            .collect()
    }
}
