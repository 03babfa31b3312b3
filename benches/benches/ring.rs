//! Preference-list lookup (N=3, 8 nodes x 256 vnodes) beside the bare key hash.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use kv_ring::{Member, Ring, key_hash};

fn keys() -> Vec<Vec<u8>> {
    (0..1024u32)
        .map(|i| format!("user:{i:06}").into_bytes())
        .collect()
}

fn ring(c: &mut Criterion) {
    let ring = Ring::new((1..=8).map(|i| Member::new(format!("n{i}"))), 3).unwrap();
    let keys = keys();
    let mut group = c.benchmark_group("ring");
    let mut i = 0usize;
    group.bench_function("baseline_key_hash", |b| {
        b.iter(|| {
            i = (i + 1) & 1023;
            key_hash(black_box(&keys[i]))
        });
    });
    let mut i = 0usize;
    group.bench_function("preference_list_n3_8x256", |b| {
        b.iter(|| {
            i = (i + 1) & 1023;
            let list = ring.preference_list(black_box(&keys[i]));
            black_box(list.iter().next())
        });
    });
    group.bench_function("build_ring_8x256", |b| {
        b.iter(|| Ring::new((1..=8).map(|i| Member::new(format!("n{i}"))), 3).unwrap());
    });
    group.finish();
}

criterion_group!(benches, ring);
criterion_main!(benches);
