//! `MemoryStore`: an in-memory engine for tests, simulation and `--storage memory`.

use std::collections::BTreeMap;
use std::ops::{Bound, RangeInclusive};
use std::sync::{PoisonError, RwLock};

use bytes::Bytes;

use crate::rules::{apply_merge, apply_write};
use crate::{KeyHasher, ScanItem, Siblings, Storage, StorageError, Update, Write};

/// Keys and versions in a B-tree ordered by (ring position, key). Nothing survives the
/// process.
#[derive(Debug)]
pub struct MemoryStore {
    hasher: KeyHasher,
    map: RwLock<BTreeMap<(u64, Bytes), Siblings>>,
    meta: RwLock<BTreeMap<String, Vec<u8>>>,
}

impl MemoryStore {
    /// An empty store placing keys with `hasher`.
    pub fn new(hasher: KeyHasher) -> Self {
        Self {
            hasher,
            map: RwLock::new(BTreeMap::new()),
            meta: RwLock::new(BTreeMap::new()),
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
}
