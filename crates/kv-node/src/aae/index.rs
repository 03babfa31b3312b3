//! The node's anti-entropy index: one digest tree over everything the store holds, kept
//! in step with every write, and the ledger of keys that hold only tombstones (with when
//! this node first saw them so), for reaping. Both live in memory and are rebuilt from a
//! scan of the store when the node starts.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard, PoisonError};

use bytes::Bytes;
use kv_aae::{Digest, DigestTree, Fingerprinter, HashRange, TreeFormat};
use kv_storage::{Siblings, Storage, StorageError, Update};
use tokio::time::Instant;

/// Keys read per page when the index is rebuilt or a range is scanned.
const SCAN_PAGE: usize = 1024;

/// A page of a range's keys with their fingerprints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyPage {
    /// (key, fingerprint), in store order.
    pub keys: Vec<(Bytes, u64)>,
    /// Whether the page holds every key asked for.
    pub complete: bool,
}

/// The fingerprint of a key's state: its causal history (the join of its versions) and
/// the dot of every live value or tombstone. Two replicas with equal versions compute
/// the same fingerprint; the values need not be hashed, since a dot names one value.
pub fn fingerprint_of(key: &[u8], versions: &Siblings) -> u64 {
    let mut fingerprinter = Fingerprinter::new(key);
    for (actor, counter) in versions.join().iter() {
        fingerprinter
            .bytes(actor.as_str().as_bytes())
            .number(counter);
    }
    fingerprinter.number(u64::MAX);
    for (dot, value) in versions.siblings() {
        fingerprinter
            .bytes(dot.actor.as_str().as_bytes())
            .number(dot.counter)
            .number(u64::from(value.is_some()));
    }
    fingerprinter.finish()
}

/// Whether every version of a key is a tombstone (the key reads as deleted).
pub(crate) fn only_tombstones(versions: &Siblings) -> bool {
    versions.values().all(Option::is_none)
}

/// What a rebuild found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Rebuilt {
    pub(crate) items: u64,
    pub(crate) tombstones: u64,
}

#[derive(Debug)]
pub(crate) struct Index {
    tree: Mutex<DigestTree>,
    /// Keys holding only tombstones, with when this node first saw them so.
    tombstones: Mutex<BTreeMap<Bytes, Instant>>,
}

impl Index {
    pub(crate) fn new() -> Self {
        Self {
            tree: Mutex::new(DigestTree::new(TreeFormat::CURRENT)),
            tombstones: Mutex::new(BTreeMap::new()),
        }
    }

    fn tree(&self) -> MutexGuard<'_, DigestTree> {
        self.tree.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn tombstones(&self) -> MutexGuard<'_, BTreeMap<Bytes, Instant>> {
        self.tombstones
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Moves `key` from its old state to its new one. Updates of one key may arrive in
    /// any order: XOR makes the tree's result the same.
    pub(crate) fn observe(&self, key: &[u8], update: &Update, now: Instant) {
        if !update.changed() {
            return;
        }
        let position = kv_ring::key_hash(key);
        let old = update.before.as_ref().map(|v| fingerprint_of(key, v));
        let new = fingerprint_of(key, &update.after);
        self.tree().replace(position, old, Some(new));
        self.note_tombstone(key, &update.after, now);
    }

    /// Records that `key` was removed from the store holding `versions`.
    pub(crate) fn forget(&self, key: &[u8], versions: &Siblings) {
        let position = kv_ring::key_hash(key);
        self.tree().remove(position, fingerprint_of(key, versions));
        self.tombstones().remove(key);
    }

    fn note_tombstone(&self, key: &[u8], versions: &Siblings, now: Instant) {
        let mut tombstones = self.tombstones();
        if only_tombstones(versions) {
            tombstones.entry(Bytes::copy_from_slice(key)).or_insert(now);
        } else {
            tombstones.remove(key);
        }
    }

    /// Rebuilds the tree and the tombstone ledger from the whole store. Run before the
    /// node takes writes: a write racing the scan could be counted twice.
    pub(crate) fn rebuild(
        &self,
        storage: &dyn Storage,
        now: Instant,
    ) -> Result<Rebuilt, StorageError> {
        let mut tree = DigestTree::new(TreeFormat::CURRENT);
        let mut tombstones = BTreeMap::new();
        let mut items = 0;
        let mut after: Option<(u64, Bytes)> = None;
        loop {
            let start = after.as_ref().map(|(hash, key)| (*hash, key.as_ref()));
            let page = storage.scan(0..=u64::MAX, start, SCAN_PAGE)?;
            let full = page.len() == SCAN_PAGE;
            for item in &page {
                tree.insert(item.hash, fingerprint_of(&item.key, &item.siblings));
                if only_tombstones(&item.siblings) {
                    tombstones.insert(item.key.clone(), now);
                }
            }
            items += page.len() as u64;
            match page.into_iter().last() {
                Some(last) if full => after = Some((last.hash, last.key)),
                _ => break,
            }
        }
        let rebuilt = Rebuilt {
            items,
            tombstones: tombstones.len() as u64,
        };
        *self.tree() = tree;
        *self.tombstones() = tombstones;
        Ok(rebuilt)
    }

    /// Items the tree counts.
    pub(crate) fn items(&self) -> u64 {
        self.tree().root().count
    }

    /// XOR of every key's fingerprint.
    pub(crate) fn root_hash(&self) -> u64 {
        self.tree().root().hash
    }

    /// Keys holding only tombstones.
    pub(crate) fn tombstones_pending(&self) -> u64 {
        self.tombstones().len() as u64
    }

    /// The digest of each range: whole leaves from the tree, the partial ends scanned.
    pub(crate) fn digests(
        &self,
        storage: &dyn Storage,
        ranges: &[HashRange],
    ) -> Result<Vec<Digest>, StorageError> {
        let plans: Vec<_> = {
            let tree = self.tree();
            ranges.iter().map(|range| tree.digest(*range)).collect()
        };
        plans
            .into_iter()
            .map(|plan| {
                plan.partial
                    .iter()
                    .try_fold(plan.whole_leaves, |digest, piece| {
                        Ok(digest.combine(scan_digest(storage, *piece)?))
                    })
            })
            .collect()
    }

    /// Up to `limit` keys that have held only tombstones since before `cutoff`.
    pub(crate) fn tombstones_before(&self, cutoff: Instant, limit: usize) -> Vec<(Bytes, Instant)> {
        self.tombstones()
            .iter()
            .filter(|(_, since)| **since <= cutoff)
            .take(limit)
            .map(|(key, since)| (key.clone(), *since))
            .collect()
    }

    /// When `key` was first seen holding only tombstones, if it still does.
    pub(crate) fn tombstone_since(&self, key: &[u8]) -> Option<Instant> {
        self.tombstones().get(key).copied()
    }
}

/// Up to `limit` keys of `range` (after `after`, a key at the range's only position) with
/// their fingerprints, from a scan of the store.
pub(crate) fn key_page(
    storage: &dyn Storage,
    range: HashRange,
    after: Option<&[u8]>,
    limit: usize,
) -> Result<KeyPage, StorageError> {
    let start = after.map(|key| (range.first(), key));
    let mut page = storage.scan(range.first()..=range.last(), start, limit + 1)?;
    let complete = page.len() <= limit;
    page.truncate(limit);
    Ok(KeyPage {
        keys: page
            .into_iter()
            .map(|item| {
                let fingerprint = fingerprint_of(&item.key, &item.siblings);
                (item.key, fingerprint)
            })
            .collect(),
        complete,
    })
}

/// The digest of every key in `range`, from a scan of the store.
fn scan_digest(storage: &dyn Storage, range: HashRange) -> Result<Digest, StorageError> {
    let mut digest = Digest::EMPTY;
    let mut after: Option<(u64, Bytes)> = None;
    loop {
        let start = after.as_ref().map(|(hash, key)| (*hash, key.as_ref()));
        let page = storage.scan(range.first()..=range.last(), start, SCAN_PAGE)?;
        let full = page.len() == SCAN_PAGE;
        for item in &page {
            digest.add(fingerprint_of(&item.key, &item.siblings));
        }
        match page.into_iter().last() {
            Some(last) if full => after = Some((last.hash, last.key)),
            _ => return Ok(digest),
        }
    }
}

#[cfg(test)]
mod tests {
    use kv_clock::{ActorId, VersionVector};
    use kv_storage::{MemoryStore, Write};

    use super::*;

    fn write(store: &MemoryStore, index: &Index, key: &str, value: Option<&str>) -> Siblings {
        let context = store
            .get(key.as_bytes())
            .unwrap()
            .map_or_else(VersionVector::new, |v| v.join());
        let actor = ActorId::new("n1").unwrap();
        let value = value.map(|v| Bytes::from(v.to_owned()));
        let update = store
            .put(key.as_bytes(), &Write::new(&context, value, &actor))
            .unwrap();
        index.observe(key.as_bytes(), &update, Instant::now());
        update.after
    }

    #[tokio::test]
    async fn the_index_follows_writes_and_equals_a_rebuild() {
        let store = MemoryStore::new(kv_ring::key_hash);
        let index = Index::new();
        for i in 0..300 {
            write(&store, &index, &format!("k{i}"), Some("v"));
        }
        write(&store, &index, "k7", Some("w"));
        let deleted = write(&store, &index, "k8", None);
        assert_eq!(index.tombstones_pending(), 1);
        let rebuilt = Index::new();
        let found = rebuilt.rebuild(&store, Instant::now()).unwrap();
        assert_eq!(
            found,
            Rebuilt {
                items: 300,
                tombstones: 1
            }
        );
        assert_eq!(*index.tree(), *rebuilt.tree());
        let digests = index.digests(&store, &[HashRange::FULL]).unwrap();
        assert_eq!(digests, vec![index.tree().root()]);
        assert!(store.remove_if_unchanged(b"k8", &deleted).unwrap());
        index.forget(b"k8", &deleted);
        assert_eq!(index.tombstones_pending(), 0);
        assert_eq!(index.items(), 299);
    }

    #[tokio::test]
    async fn key_pages_stop_at_the_limit_and_say_so() {
        let store = MemoryStore::new(kv_ring::key_hash);
        let index = Index::new();
        for i in 0..10 {
            write(&store, &index, &format!("k{i}"), Some("v"));
        }
        let page = key_page(&store, HashRange::FULL, None, 4).unwrap();
        assert_eq!((page.keys.len(), page.complete), (4, false));
        let all = key_page(&store, HashRange::FULL, None, 10).unwrap();
        assert_eq!((all.keys.len(), all.complete), (10, true));
    }
}
