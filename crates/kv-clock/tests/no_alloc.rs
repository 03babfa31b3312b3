//! Proves comparing clocks never touches the heap, with a counting allocator.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use kv_clock::{ActorId, Causality, DvvSet, VersionVector};

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
