//! Proves a preference-list lookup never touches the heap, with a counting allocator.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

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
