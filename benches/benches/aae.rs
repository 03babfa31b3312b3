//! The anti-entropy cost of one write: fingerprint the key's new state and move it in the
//! digest tree (XOR the old fingerprint out, the new one in), beside a bare XXH3 hash of
//! the same bytes measured in the same run.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use kv_aae::{DigestTree, TreeFormat, fingerprint};
use xxhash_rust::xxh3::xxh3_64;

/// A key and a state the size of a small DVVSet's causal part (3 actors, one dot).
fn items() -> Vec<(Vec<u8>, Vec<u8>, u64)> {
    (0..1024u32)
        .map(|i| {
            let key = format!("user:{i:06}").into_bytes();
            let state = format!("n1:{i};n2:{};n3:7;dot:n1:{i}", i + 1).into_bytes();
            let position = kv_ring::key_hash(&key);
            (key, state, position)
        })
        .collect()
}

fn aae(c: &mut Criterion) {
    let items = items();
    let joined: Vec<Vec<u8>> = items
        .iter()
        .map(|(k, s, _)| [k.as_slice(), s].concat())
        .collect();
    let mut tree = DigestTree::new(TreeFormat::CURRENT);
    let mut current: Vec<u64> = items
        .iter()
        .map(|(k, s, p)| {
            let f = fingerprint(k, s);
            tree.insert(*p, f);
            f
        })
        .collect();
    let mut group = c.benchmark_group("aae");
    let mut i = 0usize;
    group.bench_function("baseline_xxh3_of_key_and_state", |b| {
        b.iter(|| {
            i = (i + 1) & 1023;
            xxh3_64(black_box(&joined[i]))
        });
    });
    let mut i = 0usize;
    let mut generation = 0u8;
    group.bench_function("tree_update_per_write", |b| {
        b.iter(|| {
            i = (i + 1) & 1023;
            if i == 0 {
                generation = generation.wrapping_add(1);
            }
            let (key, state, position) = &items[i];
            let mut fingerprinter = kv_aae::Fingerprinter::new(black_box(key));
            let new = fingerprinter
                .bytes(state)
                .number(u64::from(generation))
                .finish();
            tree.replace(*position, Some(current[i]), Some(new));
            current[i] = new;
        });
    });
    group.finish();
}

criterion_group!(benches, aae);
criterion_main!(benches);
