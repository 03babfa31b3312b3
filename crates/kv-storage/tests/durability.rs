//! Crash and corruption behaviour of the fjall engine: every acknowledged write survives
//! a killed process, and damaged data is reported as an error, never served or panicked on.

use std::process::{Command, Stdio};

use bytes::Bytes;
use kv_clock::{ActorId, VersionVector};
use kv_ring::key_hash;
use kv_storage::{Durability, FjallStore, Storage, StorageError, Write};

const CHILD_DIR_VAR: &str = "KV_STORAGE_CRASH_CHILD_DIR";
const KEYS_BEFORE_ABORT: u32 = 2_000;

/// Runs only inside the child process the crash test starts: writes keys, printing each
/// one after its write is acknowledged, then aborts without closing anything.
#[test]
fn crash_child_writes_then_aborts() {
    let Ok(dir) = std::env::var(CHILD_DIR_VAR) else {
        return; // not the child: nothing to do
    };
    let store = FjallStore::open(&dir, key_hash, Durability::Buffer).unwrap();
    let n1 = ActorId::new("n1").unwrap();
    for i in 0..KEYS_BEFORE_ABORT {
        let key = format!("key-{i}");
        put_value(&store, key.as_bytes(), key.clone(), &n1);
        println!("ACK {key}");
    }
    std::process::abort();
}

#[test]
fn acknowledged_writes_survive_a_killed_process() {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "crash_child_writes_then_aborts",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_DIR_VAR, dir.path())
        .stderr(Stdio::null())
        .output()
        .unwrap();
    assert!(!output.status.success(), "the child was meant to abort");
    let acknowledged: Vec<String> = String::from_utf8_lossy(&output.stdout)
        .lines()
        // libtest may print its "test name ... " prefix on the same line as the first ACK.
        .filter_map(|line| line.split_once("ACK ").map(|(_, key)| key.to_owned()))
        .collect();
    assert_eq!(
        acknowledged.len(),
        KEYS_BEFORE_ABORT as usize,
        "child stopped early"
    );

    let store = FjallStore::open(dir.path(), key_hash, Durability::Buffer).unwrap();
    for key in &acknowledged {
        let stored = store.get(key.as_bytes()).unwrap();
        let stored = stored.unwrap_or_else(|| panic!("acknowledged {key} lost in the crash"));
        assert_eq!(
            stored.values().next(),
            Some(&Some(Bytes::from(key.clone())))
        );
    }
    assert_eq!(store.count().unwrap(), u64::from(KEYS_BEFORE_ABORT));
}

#[test]
fn data_survives_reopen_after_drop() {
    let dir = tempfile::tempdir().unwrap();
    let n1 = ActorId::new("n1").unwrap();
    let written = {
        let store = FjallStore::open(dir.path(), key_hash, Durability::Sync).unwrap();
        put_value(&store, b"k", "v", &n1)
    };
    let store = FjallStore::open(dir.path(), key_hash, Durability::Sync).unwrap();
    assert_eq!(store.get(b"k").unwrap(), Some(written));
}

#[test]
fn hints_survive_reopen_after_drop() {
    let dir = tempfile::tempdir().unwrap();
    let n1 = ActorId::new("n1").unwrap();
    let written = {
        let store = FjallStore::open(dir.path(), key_hash, Durability::Sync).unwrap();
        let written = put_value(&store, b"scratch", "v", &n1);
        store.store_hint("n3", b"k", &written, 7).unwrap();
        written
    };
    let store = FjallStore::open(dir.path(), key_hash, Durability::Sync).unwrap();
    let hints = store.hints("n3", None, 10).unwrap();
    assert_eq!(hints.len(), 1);
    assert_eq!(hints[0].versions, written);
    assert_eq!(hints[0].updated_unix_ms, 7);
}

#[test]
fn a_corrupt_record_is_reported_not_served() {
    let dir = tempfile::tempdir().unwrap();
    let n1 = ActorId::new("n1").unwrap();
    {
        let store = FjallStore::open(dir.path(), key_hash, Durability::Sync).unwrap();
        put_value(&store, b"good", "good", &n1);
    }
    // Damage one record behind the store's back, through fjall directly.
    {
        let db = fjall::Database::builder(dir.path()).open().unwrap();
        let keyspace = db
            .keyspace("kv", fjall::KeyspaceCreateOptions::default)
            .unwrap();
        let mut raw_key = key_hash(b"bad").to_be_bytes().to_vec();
        raw_key.extend_from_slice(b"bad");
        keyspace.insert(raw_key, vec![1, 0, 0, 0, 0, 1, 1]).unwrap();
        db.persist(fjall::PersistMode::SyncAll).unwrap();
    }
    let store = FjallStore::open(dir.path(), key_hash, Durability::Sync).unwrap();
    assert!(store.get(b"good").unwrap().is_some());
    let error = store.get(b"bad").unwrap_err();
    assert!(
        matches!(&error, StorageError::Corrupt { key, reason } if key == "bad" && reason.contains("checksum")),
        "{error}"
    );
    let scan = store.scan(0..=u64::MAX, None, 10);
    assert!(
        matches!(scan, Err(StorageError::Corrupt { .. })),
        "scan served a corrupt record"
    );
    // A merge must not silently overwrite a record it cannot read.
    let other = kv_storage::MemoryStore::new(key_hash);
    let incoming = other
        .put(b"bad", &Write::new(&VersionVector::new(), None, &n1))
        .unwrap()
        .after;
    assert!(store.merge(b"bad", &incoming).is_err());
    assert!(store.remove_if_unchanged(b"bad", &incoming).is_err());
}

#[test]
fn a_damaged_table_file_is_reported_not_served() {
    let dir = tempfile::tempdir().unwrap();
    let n1 = ActorId::new("n1").unwrap();
    let keys: Vec<String> = (0..500).map(|i| format!("key-{i}")).collect();
    {
        let store = FjallStore::open(dir.path(), key_hash, Durability::Sync).unwrap();
        for key in &keys {
            put_value(&store, key.as_bytes(), key.clone(), &n1);
        }
    }
    // Flush the journal into a table file, then flip bytes in the middle of every table.
    {
        let db = fjall::Database::builder(dir.path()).open().unwrap();
        let keyspace = db
            .keyspace("kv", fjall::KeyspaceCreateOptions::default)
            .unwrap();
        keyspace.rotate_memtable_and_wait().unwrap();
    }
    let mut damaged = 0;
    for path in walk(dir.path()) {
        let is_table = path.components().any(|c| c.as_os_str() == "tables");
        if is_table {
            let mut bytes = std::fs::read(&path).unwrap();
            if bytes.len() > 64 {
                let middle = bytes.len() / 3;
                for b in &mut bytes[middle..middle + 16] {
                    *b ^= 0xa5;
                }
                std::fs::write(&path, bytes).unwrap();
                damaged += 1;
            }
        }
    }
    assert!(
        damaged > 0,
        "no table file found under {:?}",
        walk(dir.path())
    );
    // Opening may fail, or reads may fail; what must not happen is a panic or wrong data.
    let Ok(store) = FjallStore::open(dir.path(), key_hash, Durability::Sync) else {
        return;
    };
    let mut errors = 0;
    for key in &keys {
        match store.get(key.as_bytes()) {
            Ok(Some(found)) => {
                assert_eq!(found.values().next(), Some(&Some(Bytes::from(key.clone()))));
            }
            Ok(None) => panic!("{key} silently vanished"),
            Err(_) => errors += 1,
        }
    }
    assert!(errors > 0, "damage went unnoticed");
}

fn put_value(
    store: &FjallStore,
    key: &[u8],
    text: impl Into<Bytes>,
    actor: &ActorId,
) -> kv_storage::Siblings {
    let context = VersionVector::new();
    store
        .put(key, &Write::new(&context, Some(text.into()), actor))
        .unwrap()
        .after
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files
}
