//! Proves the hot paths the benchmarks measure never touch the heap: clock comparisons
//! and ring preference-list lookups. One counting allocator, counted per thread so tests
//! running side by side do not disturb each other.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use kv_clock::{ActorId, Causality, DvvSet, VersionVector};
use kv_ring::{Member, Ring};

struct CountingAllocator;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

#[allow(unsafe_code)]
// SAFETY: forwards every call to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.with(|c| c.set(c.get() + 1));
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as our caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: CountingAllocator = CountingAllocator;

fn allocations() -> u64 {
    ALLOCATIONS.with(Cell::get)
}

#[test]
fn comparisons_do_not_allocate() {
    let names: Vec<String> = (0..16).map(|i| format!("node-{i}")).collect();
    let a = VersionVector::from_entries(names.iter().map(|n| (n.as_str(), 5))).unwrap();
    let b = VersionVector::from_entries(
        names
            .iter()
            .enumerate()
            .map(|(i, n)| (n.as_str(), i as u64 + 1)),
    )
    .unwrap();
    let mut x: DvvSet<u64> = DvvSet::new();
    let mut y: DvvSet<u64> = DvvSet::new();
    for (i, name) in names.iter().enumerate() {
        let actor = ActorId::new(name).unwrap();
        x.update(&VersionVector::new(), i as u64, &actor);
        y.update(&a, i as u64, &actor);
    }
    let before = allocations();
    assert_eq!(a.compare(&b), Causality::Concurrent);
    assert_eq!(a.compare(&a), Causality::Equal);
    assert_eq!(x.compare(&y), Causality::Before);
    assert_eq!(y.compare_context(&a), Causality::After);
    assert_eq!(allocations() - before, 0, "comparison allocated");
}

#[test]
fn preference_list_lookup_does_not_allocate() {
    let ring = Ring::new((1..=8).map(|i| Member::new(format!("n{i}"))), 3).unwrap();
    let keys: Vec<Vec<u8>> = (0..10_000u32)
        .map(|i| format!("user:{i}").into_bytes())
        .collect();
    let before = allocations();
    let mut total_len = 0;
    for key in &keys {
        let list = ring.preference_list(key);
        total_len += list.iter().map(str::len).sum::<usize>();
        assert!(list.contains(list.iter().next().unwrap()));
    }
    assert_eq!(allocations() - before, 0, "lookups allocated");
    assert!(total_len > 0);
}
