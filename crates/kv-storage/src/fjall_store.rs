//! `FjallStore`: the persistent engine, on the fjall LSM tree.

use std::ops::{Bound, RangeInclusive};
use std::path::Path;
use std::sync::{Mutex, PoisonError};

use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};

use crate::group_sync::{Durable, GroupSync};
use crate::hints::{
    RawBounds, all_scan, grown_record, hint_from_raw, hint_key, removable, target_scan,
};
use crate::record::{decode_record, encode_record, split_storage_key, storage_key};
use crate::rules::{apply_merge, apply_write};
use crate::{
    Hint, HintUpdate, KeyHasher, ScanItem, Siblings, Storage, StorageError, Update, Write,
};

/// Read-modify-write is serialised per key through one of this many lock stripes.
const LOCK_STRIPES: usize = 256;
/// fjall's key limit minus our 8-byte hash prefix.
const MAX_KEY_BYTES: usize = 65_536 - 8;
const KEYSPACE: &str = "kv";
/// Metadata about the store itself (its actor id, the ring history), apart from the data.
const META_KEYSPACE: &str = "meta";
/// Hints held for other replicas (see `hints.rs`), apart from this node's own keys.
const HINTS_KEYSPACE: &str = "hints";

/// How far a write must get before it is acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// Written to the OS page cache: survives a killed process, not a power loss.
    #[default]
    Buffer,
    /// fdatasync'd to the device: survives a power loss.
    Sync,
}

impl std::str::FromStr for Durability {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "buffer" => Ok(Self::Buffer),
            "sync" => Ok(Self::Sync),
            other => Err(format!("unknown durability {other:?}; use buffer or sync")),
        }
    }
}

/// A fjall database with one keyspace of (ring position, key) → record.
pub struct FjallStore {
    db: Database,
    keyspace: Keyspace,
    meta: Keyspace,
    hints: Keyspace,
    hasher: KeyHasher,
    durability: Durability,
    stripes: Vec<Mutex<()>>,
    /// The group commit, with `Sync` durability only.
    group_sync: Option<GroupSync>,
}

impl std::fmt::Debug for FjallStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FjallStore")
            .field("durability", &self.durability)
            .finish_non_exhaustive()
    }
}

impl FjallStore {
    /// Opens (creating if needed) the store in directory `path`. The same `hasher` must
    /// be used every time a directory is opened.
    pub fn open(
        path: impl AsRef<Path>,
        hasher: KeyHasher,
        durability: Durability,
    ) -> Result<Self, StorageError> {
        let db = Database::builder(path.as_ref())
            .open()
            .map_err(|e| engine("opening the database", e))?;
        let keyspace = db
            .keyspace(KEYSPACE, KeyspaceCreateOptions::default)
            .map_err(|e| engine("opening the keyspace", e))?;
        let meta = db
            .keyspace(META_KEYSPACE, KeyspaceCreateOptions::default)
            .map_err(|e| engine("opening the metadata keyspace", e))?;
        let hints = db
            .keyspace(HINTS_KEYSPACE, KeyspaceCreateOptions::default)
            .map_err(|e| engine("opening the hints keyspace", e))?;
        let group_sync = match durability {
            Durability::Buffer => None,
            Durability::Sync => {
                let db = db.clone();
                Some(GroupSync::start(move || {
                    db.persist(PersistMode::SyncData)
                        .map_err(|e| engine("syncing the journal", e))
                })?)
            }
        };
        Ok(Self {
            db,
            keyspace,
            meta,
            hints,
            hasher,
            durability,
            stripes: (0..LOCK_STRIPES).map(|_| Mutex::new(())).collect(),
            group_sync,
        })
    }

    fn read(&self, raw_key: &[u8], key: &[u8]) -> Result<Option<Siblings>, StorageError> {
        let raw = self
            .keyspace
            .get(raw_key)
            .map_err(|e| engine("reading a record", e))?;
        raw.map(|bytes| decode_record(key, &bytes)).transpose()
    }

    /// Reads, changes and writes one key under its stripe lock, and returns what is left
    /// to wait (outside the lock) for the write to be durable.
    fn update(
        &self,
        key: &[u8],
        change: impl FnOnce(Option<Siblings>) -> Result<Update, StorageError>,
    ) -> Result<(Update, Durable), StorageError> {
        let (hash, raw_key) = self.locate(key)?;
        let _guard = self
            .stripe(hash)
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let update = change(self.read(&raw_key, key)?)?;
        if !update.changed() {
            // Nothing written, but what was read may be another write still awaiting its
            // sync: a caller acknowledging it waits for the writes issued so far.
            let durable = self
                .group_sync
                .as_ref()
                .map_or_else(Durable::now, GroupSync::written_so_far);
            return Ok((update, durable));
        }
        self.insert(raw_key, &update.after)?;
        Ok((update, self.sync_ticket()))
    }

    /// A key's ring position and its key in the keyspace.
    fn locate(&self, key: &[u8]) -> Result<(u64, Vec<u8>), StorageError> {
        if key.len() > MAX_KEY_BYTES {
            return Err(StorageError::KeyTooLong {
                len_bytes: key.len(),
                max_bytes: MAX_KEY_BYTES,
            });
        }
        let hash = (self.hasher)(key);
        Ok((hash, storage_key(hash, key)))
    }

    fn stripe(&self, hash: u64) -> &Mutex<()> {
        &self.stripes[(hash % LOCK_STRIPES as u64) as usize]
    }

    /// With `Sync` durability, a ticket for the group sync that must cover a change
    /// (taken after the change, so any sync starting later covers it).
    fn sync_ticket(&self) -> Durable {
        self.group_sync
            .as_ref()
            .map_or_else(Durable::now, GroupSync::ticket)
    }
}

impl FjallStore {
    /// Hints are locked by the stripe of their key, as the key's own writes are.
    fn hint_stripe(&self, key: &[u8]) -> &Mutex<()> {
        self.stripe((self.hasher)(key))
    }

    fn read_hint(&self, raw_key: &[u8]) -> Result<Option<fjall::Slice>, StorageError> {
        self.hints
            .get(raw_key)
            .map_err(|e| engine("reading a hint", e))
    }

    /// At most `limit` hints within `bounds`.
    fn hint_range(&self, bounds: RawBounds, limit: usize) -> Result<Vec<Hint>, StorageError> {
        let mut found = Vec::new();
        for guard in self.hints.range::<Vec<u8>, _>(bounds) {
            if found.len() >= limit {
                break;
            }
            let (raw_key, raw_value) = guard
                .into_inner()
                .map_err(|e| engine("scanning hints", e))?;
            found.push(hint_from_raw(&raw_key, &raw_value)?);
        }
        Ok(found)
    }

    fn insert(&self, raw_key: Vec<u8>, versions: &Siblings) -> Result<(), StorageError> {
        self.keyspace
            .insert(raw_key, encode_record(versions))
            .map_err(|e| engine("writing a record", e))
    }
}

impl Storage for FjallStore {
    fn get(&self, key: &[u8]) -> Result<Option<Siblings>, StorageError> {
        self.read(&storage_key((self.hasher)(key), key), key)
    }

    fn put(&self, key: &[u8], write: &Write<'_>) -> Result<Update, StorageError> {
        let (update, durable) = self.put_deferred(key, write)?;
        durable.wait()?;
        Ok(update)
    }

    fn merge(&self, key: &[u8], incoming: &Siblings) -> Result<Update, StorageError> {
        let (update, durable) = self.merge_deferred(key, incoming)?;
        durable.wait()?;
        Ok(update)
    }

    fn put_deferred(
        &self,
        key: &[u8],
        write: &Write<'_>,
    ) -> Result<(Update, Durable), StorageError> {
        self.update(key, |stored| apply_write(stored, write))
    }

    fn merge_deferred(
        &self,
        key: &[u8],
        incoming: &Siblings,
    ) -> Result<(Update, Durable), StorageError> {
        self.update(key, |stored| Ok(apply_merge(stored, incoming)))
    }

    fn remove_if_unchanged(&self, key: &[u8], expected: &Siblings) -> Result<bool, StorageError> {
        let (hash, raw_key) = self.locate(key)?;
        let ticket = {
            let _guard = self
                .stripe(hash)
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if self.read(&raw_key, key)?.as_ref() != Some(expected) {
                return Ok(false);
            }
            self.keyspace
                .remove(raw_key)
                .map_err(|e| engine("removing a record", e))?;
            self.sync_ticket()
        };
        ticket.wait()?;
        Ok(true)
    }

    fn scan(
        &self,
        hashes: RangeInclusive<u64>,
        start_after: Option<(u64, &[u8])>,
        limit: usize,
    ) -> Result<Vec<ScanItem>, StorageError> {
        let start = match start_after {
            Some((hash, key)) => Bound::Excluded(storage_key(hash, key)),
            None => Bound::Included(hashes.start().to_be_bytes().to_vec()),
        };
        let end = match hashes.end().checked_add(1) {
            Some(next) => Bound::Excluded(next.to_be_bytes().to_vec()),
            None => Bound::Unbounded,
        };
        let mut items = Vec::new();
        for guard in self.keyspace.range::<Vec<u8>, _>((start, end)) {
            if items.len() >= limit {
                break;
            }
            let (raw_key, raw_value) = guard
                .into_inner()
                .map_err(|e| engine("scanning records", e))?;
            let (hash, key) = split_storage_key(&raw_key)?;
            if !hashes.contains(&hash) {
                continue;
            }
            let siblings = decode_record(&key, &raw_value)?;
            items.push(ScanItem {
                hash,
                key,
                siblings,
            });
        }
        Ok(items)
    }

    fn meta(&self, name: &str) -> Result<Option<Vec<u8>>, StorageError> {
        Ok(self
            .meta
            .get(name.as_bytes())
            .map_err(|e| engine("reading the store's metadata", e))?
            .map(|raw| raw.to_vec()))
    }

    fn set_meta(&self, name: &str, value: &[u8]) -> Result<(), StorageError> {
        self.meta
            .insert(name.as_bytes(), value)
            .map_err(|e| engine("recording the store's metadata", e))?;
        self.db
            .persist(PersistMode::SyncAll)
            .map_err(|e| engine("syncing the store's metadata", e))
    }

    fn writes_block(&self) -> bool {
        self.durability == Durability::Sync
    }

    fn store_hint(
        &self,
        target: &str,
        key: &[u8],
        versions: &Siblings,
        now_unix_ms: u64,
    ) -> Result<HintUpdate, StorageError> {
        let raw_key = hint_key(target, key)?;
        let (ticket, update) = {
            let _guard = self
                .hint_stripe(key)
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let stored = self.read_hint(&raw_key)?;
            let (record, update) =
                grown_record(&raw_key, key, stored.as_deref(), versions, now_unix_ms)?;
            self.hints
                .insert(raw_key, record)
                .map_err(|e| engine("writing a hint", e))?;
            (self.sync_ticket(), update)
        };
        ticket.wait()?;
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
        let (ticket, freed) = {
            let _guard = self
                .hint_stripe(key)
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let Some(stored) = self.read_hint(&raw_key)? else {
                return Ok(None);
            };
            let Some(freed) = removable(&raw_key, key, &stored, expected)? else {
                return Ok(None);
            };
            self.hints
                .remove(raw_key)
                .map_err(|e| engine("removing a hint", e))?;
            (self.sync_ticket(), freed)
        };
        ticket.wait()?;
        Ok(Some(freed))
    }

    fn disk_bytes(&self) -> u64 {
        // Journal and tables: recent writes live in the journal until a flush.
        self.db.disk_space().unwrap_or(0)
    }

    fn count(&self) -> Result<u64, StorageError> {
        let len = self
            .keyspace
            .len()
            .map_err(|e| engine("counting records", e))?;
        Ok(len as u64)
    }
}

fn engine(action: &'static str, source: fjall::Error) -> StorageError {
    StorageError::Engine {
        action,
        source: Box::new(source),
    }
}
