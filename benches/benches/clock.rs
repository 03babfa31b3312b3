//! Clock operations with 3 and 16 actors, beside comparing two equal-length `Vec<u64>`.

use std::cmp::Ordering;
use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use kv_clock::{ActorId, DvvSet, VersionVector};

/// The floor for a version-vector compare: a pointwise walk over plain counters.
fn compare_plain(a: &[u64], b: &[u64]) -> (bool, bool) {
    let (mut ahead, mut behind) = (false, false);
    for (x, y) in a.iter().zip(b) {
        match x.cmp(y) {
            Ordering::Greater => ahead = true,
            Ordering::Less => behind = true,
            Ordering::Equal => {}
        }
    }
    (ahead, behind)
}

/// A replica state that has seen `actors` coordinators write, with one live sibling each.
fn replica(actors: &[ActorId], rounds: u64) -> DvvSet<u64> {
    let mut set = DvvSet::new();
    for round in 0..rounds {
        for actor in actors {
            let context = set.join();
            set.update(&context, round, actor);
        }
    }
    let mut concurrent = DvvSet::new();
    for actor in actors {
        concurrent.update(&VersionVector::new(), 0, actor);
    }
    set.sync(&concurrent);
    set
}

fn clock(c: &mut Criterion) {
    let mut group = c.benchmark_group("clock");
    for actor_count in [3usize, 16] {
        let actors: Vec<ActorId> = (0..actor_count)
            .map(|i| ActorId::new(&format!("node-{i}")).unwrap())
            .collect();
        let plain_a: Vec<u64> = (0..actor_count as u64).collect();
        let plain_b: Vec<u64> = plain_a.clone();
        let a = replica(&actors, 3);
        let mut b = a.clone();
        b.update(&VersionVector::new(), 99, &actors[0]);
        let (vv_a, vv_b) = (a.join(), b.join());

        group.bench_function(
            BenchmarkId::new("baseline_vec_u64_compare", actor_count),
            |bench| {
                bench.iter(|| compare_plain(black_box(&plain_a), black_box(&plain_b)));
            },
        );
        group.bench_function(
            BenchmarkId::new("version_vector_compare", actor_count),
            |bench| {
                bench.iter(|| black_box(&vv_a).compare(black_box(&vv_b)));
            },
        );
        group.bench_function(BenchmarkId::new("dvvset_compare", actor_count), |bench| {
            bench.iter(|| black_box(&a).compare(black_box(&b)));
        });
        group.bench_function(BenchmarkId::new("dvvset_sync", actor_count), |bench| {
            bench.iter(|| {
                let mut merged = a.clone();
                merged.sync(black_box(&b));
                merged
            });
        });
        group.bench_function(BenchmarkId::new("dvvset_update", actor_count), |bench| {
            bench.iter(|| {
                let mut updated = a.clone();
                updated.update(black_box(&vv_a), 7, &actors[1]);
                updated
            });
        });
        group.bench_function(BenchmarkId::new("clone_only", actor_count), |bench| {
            bench.iter(|| black_box(&a).clone());
        });
    }
    group.finish();
}

criterion_group!(benches, clock);
criterion_main!(benches);
