//! How long a node takes to rebuild its anti-entropy index from its store at start-up.
//!
//! `cargo run --release -p kv-benches --example index_rebuild [keys]` (default 1,000,000)
//! fills a fjall store (`buffer` durability) with that many 100-byte values, reopens it,
//! and builds a node on it: the builder scans every key into the digest tree before the
//! node serves. Prints the keys indexed and the time the rebuild took.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kv_clock::{ActorId, VersionVector};
use kv_grpc::GrpcTransport;
use kv_node::{NodeBuilder, NodeConfig};
use kv_storage::{Durability, FjallStore, Storage, Write};

fn main() {
    let keys: u64 = std::env::args()
        .nth(1)
        .map_or(1_000_000, |k| k.parse().expect("a number of keys"));
    let dir = tempfile::tempdir().unwrap();
    let started = Instant::now();
    {
        let store = FjallStore::open(dir.path(), kv_ring::key_hash, Durability::Buffer).unwrap();
        let actor = ActorId::new("n1.0").unwrap();
        let context = VersionVector::new();
        let value = Bytes::from(vec![7u8; 100]);
        for i in 0..keys {
            let key = format!("key-{i:010}");
            let write = Write::new(&context, Some(value.clone()), &actor);
            store.put(key.as_bytes(), &write).unwrap();
        }
        store.set_meta("actor", b"n1.0").unwrap();
    }
    println!("wrote {keys} keys in {:.1?}", started.elapsed());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let store = FjallStore::open(dir.path(), kv_ring::key_hash, Durability::Buffer).unwrap();
        let config = NodeConfig::standalone("n1", "127.0.0.1:1".parse().unwrap());
        let transport = GrpcTransport::new(&[], Duration::from_secs(1));
        let built = Instant::now();
        let node = NodeBuilder::new(config, transport)
            .storage(Arc::new(store))
            .build()
            .unwrap();
        let total = built.elapsed();
        let status = node.anti_entropy_status();
        let (indexed, took) = status.rebuild.expect("the builder rebuilt the index");
        println!(
            "index rebuilt from {indexed} keys in {took:.2?} ({:.0} keys/s); node built in {total:.2?}",
            indexed as f64 / took.as_secs_f64()
        );
    });
}
