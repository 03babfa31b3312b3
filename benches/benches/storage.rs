//! Put and get of 100-byte values on each engine.

use std::hint::black_box;

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use kv_clock::{ActorId, VersionVector};
use kv_ring::key_hash;
use kv_storage::{Durability, FjallStore, MemoryStore, Storage, Write};

const KEYS: u32 = 10_000;

fn bench_engine(c: &mut Criterion, name: &str, store: &dyn Storage) {
    let actor = ActorId::new("n1").unwrap();
    let value = Bytes::from(vec![7u8; 100]);
    let keys: Vec<Vec<u8>> = (0..KEYS)
        .map(|i| format!("key-{i:08}").into_bytes())
        .collect();
    let context = VersionVector::new();
    for key in &keys {
        let write = Write::new(&context, Some(value.clone()), &actor);
        store.put(key, &write).unwrap();
    }
    let mut group = c.benchmark_group("storage");
    let mut i = 0usize;
    group.bench_function(BenchmarkId::new("get_100b", name), |b| {
        b.iter(|| {
            i = (i + 1) % keys.len();
            store.get(black_box(&keys[i])).unwrap()
        });
    });
    let mut i = 0usize;
    group.bench_function(BenchmarkId::new("put_100b_overwrite", name), |b| {
        b.iter(|| {
            i = (i + 1) % keys.len();
            let stored = store.get(&keys[i]).unwrap().unwrap();
            let context = stored.join();
            let write = Write::new(&context, Some(value.clone()), &actor);
            store.put(black_box(&keys[i]), &write).unwrap()
        });
    });
    group.finish();
}

fn storage(c: &mut Criterion) {
    bench_engine(c, "memory", &MemoryStore::new(key_hash));
    let dir = tempfile::tempdir().unwrap();
    let fjall = FjallStore::open(dir.path(), key_hash, Durability::Buffer).unwrap();
    bench_engine(c, "fjall_buffer", &fjall);
}

criterion_group!(benches, storage);
criterion_main!(benches);
