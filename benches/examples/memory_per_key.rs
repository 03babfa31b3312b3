//! Bytes per key held by each storage engine for 1M keys of 100-byte values.
//!
//! `cargo run --release -p kv-benches --example memory_per_key [keys]`
//! Reports the growth of this process's resident memory (from /proc/self/statm) and, for
//! fjall, the data directory's size on disk after the journal is flushed to tables.

use std::path::Path;

use bytes::Bytes;
use kv_clock::{ActorId, VersionVector};
use kv_ring::key_hash;
use kv_storage::{Durability, FjallStore, MemoryStore, Storage, Write};

const MIB: f64 = 1_048_576.0;

fn resident_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("Linux /proc");
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .expect("resident pages");
    pages * 4096
}

fn disk_bytes(path: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(path) else {
        return 0;
    };
    entries
        .flatten()
        .map(|entry| {
            let path = entry.path();
            if path.is_dir() {
                disk_bytes(&path)
            } else {
                entry.metadata().map_or(0, |m| m.len())
            }
        })
        .sum()
}

fn fill(store: &dyn Storage, keys: u64) {
    let actor = ActorId::new("n1").unwrap();
    let context = VersionVector::new();
    let value = Bytes::from(vec![7u8; 100]);
    for i in 0..keys {
        let key = format!("key-{i:010}");
        store
            .put(
                key.as_bytes(),
                &Write::new(&context, Some(value.clone()), &actor),
            )
            .unwrap();
    }
}

fn main() {
    let keys: u64 = std::env::args()
        .nth(1)
        .and_then(|k| k.parse().ok())
        .unwrap_or(1_000_000);
    println!("{keys} keys, 14-byte keys, 100-byte values, one version each");

    let before = resident_bytes();
    let memory = MemoryStore::new(key_hash);
    fill(&memory, keys);
    let grown = resident_bytes().saturating_sub(before);
    report("MemoryStore: resident growth", grown, keys);
    drop(memory);

    let dir = tempfile::tempdir().unwrap();
    let before = resident_bytes();
    {
        let fjall = FjallStore::open(dir.path(), key_hash, Durability::Buffer).unwrap();
        fill(&fjall, keys);
        let grown = resident_bytes().saturating_sub(before);
        report("FjallStore:  resident growth while open", grown, keys);
    }
    // Reopening replays the journal into tables; measure what stays on disk.
    drop(FjallStore::open(dir.path(), key_hash, Durability::Buffer).unwrap());
    let on_disk = disk_bytes(dir.path());
    report("FjallStore:  on disk (journal + LZ4 tables)", on_disk, keys);
}

fn report(what: &str, total_bytes: u64, keys: u64) {
    println!(
        "{what}: {:.1} MiB = {:.0} bytes/key",
        total_bytes as f64 / MIB,
        total_bytes as f64 / keys as f64
    );
}
