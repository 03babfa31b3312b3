//! One behaviour suite, run against every engine: both must store, merge, cap, scan
//! and count identically.

use bytes::Bytes;
use kv_clock::{ActorId, VersionVector};
use kv_ring::key_hash;
use kv_storage::{FjallStore, MemoryStore, Siblings, Storage, StorageError, Write};

fn actor(name: &str) -> ActorId {
    ActorId::new(name).unwrap()
}

/// A stored value as the engines hold it: `Some` bytes (`None` is a tombstone).
#[allow(clippy::unnecessary_wraps)]
fn value(text: &str) -> Option<Bytes> {
    Some(Bytes::copy_from_slice(text.as_bytes()))
}

fn values(siblings: &Siblings) -> Vec<Option<Bytes>> {
    let mut out: Vec<_> = siblings.values().cloned().collect();
    out.sort();
    out
}

fn put(
    store: &dyn Storage,
    key: &str,
    context: &VersionVector,
    text: &str,
    by: &ActorId,
) -> Siblings {
    store
        .put(key.as_bytes(), &Write::new(context, value(text), by))
        .unwrap()
        .after
}

fn missing_key_reads_none(store: &dyn Storage) {
    assert!(store.get(b"nope").unwrap().is_none());
    assert_eq!(store.count().unwrap(), 0);
}

fn put_then_get_round_trips(store: &dyn Storage) {
    let n1 = actor("n1");
    let written = put(store, "k", &VersionVector::new(), "v1", &n1);
    assert_eq!(store.get(b"k").unwrap(), Some(written.clone()));
    assert_eq!(values(&written), vec![value("v1")]);
}

fn blind_writes_become_siblings_and_context_resolves(store: &dyn Storage) {
    let n1 = actor("n1");
    put(store, "k", &VersionVector::new(), "a", &n1);
    let both = put(store, "k", &VersionVector::new(), "b", &n1);
    assert_eq!(values(&both), vec![value("a"), value("b")]);
    let resolved = put(store, "k", &both.join(), "c", &n1);
    assert_eq!(values(&resolved), vec![value("c")]);
    assert_eq!(store.get(b"k").unwrap(), Some(resolved));
}

fn tombstone_is_a_versioned_delete(store: &dyn Storage) {
    let n1 = actor("n1");
    let written = put(store, "k", &VersionVector::new(), "a", &n1);
    let deleted = store
        .put(b"k", &Write::new(&written.join(), None, &n1))
        .unwrap()
        .after;
    assert_eq!(values(&deleted), vec![None]);
    assert_eq!(store.get(b"k").unwrap(), Some(deleted));
    assert_eq!(
        store.count().unwrap(),
        1,
        "tombstones are kept until reaped"
    );
}

fn merge_syncs_replicas_and_is_idempotent(store: &dyn Storage) {
    let (n1, n2) = (actor("n1"), actor("n2"));
    put(store, "k", &VersionVector::new(), "local", &n1);
    let other = MemoryStore::new(key_hash);
    let remote = put(&other, "k", &VersionVector::new(), "remote", &n2);
    let update = store.merge(b"k", &remote).unwrap();
    assert!(update.changed());
    let merged = update.after;
    assert_eq!(values(&merged), vec![value("local"), value("remote")]);
    let again = store.merge(b"k", &remote).unwrap();
    assert_eq!(again.after, merged, "merge is idempotent");
    assert!(
        !again.changed(),
        "a merge that adds nothing changes nothing"
    );
    // An older state never rolls a replica back.
    let newer = put(store, "k", &merged.join(), "newest", &n1);
    assert_eq!(store.merge(b"k", &remote).unwrap().after, newer);
    // Merging into an absent key stores the incoming versions as they are.
    let fresh = store.merge(b"fresh", &remote).unwrap();
    assert_eq!((fresh.before, fresh.after), (None, remote));
}

fn writes_report_the_state_they_replaced(store: &dyn Storage) {
    let n1 = actor("n1");
    let first = store
        .put(b"k", &Write::new(&VersionVector::new(), value("a"), &n1))
        .unwrap();
    assert_eq!(first.before, None);
    let second = store
        .put(b"k", &Write::new(&first.after.join(), value("b"), &n1))
        .unwrap();
    assert_eq!(second.before, Some(first.after));
    assert_eq!(store.get(b"k").unwrap(), Some(second.after));
}

fn removal_only_takes_the_state_it_expects(store: &dyn Storage) {
    let n1 = actor("n1");
    let stale = put(store, "k", &VersionVector::new(), "a", &n1);
    let current = put(store, "k", &stale.join(), "b", &n1);
    assert!(!store.remove_if_unchanged(b"k", &stale).unwrap());
    assert_eq!(store.get(b"k").unwrap(), Some(current.clone()));
    assert!(store.remove_if_unchanged(b"k", &current).unwrap());
    assert_eq!(store.get(b"k").unwrap(), None);
    assert_eq!(store.count().unwrap(), 0);
    assert!(!store.remove_if_unchanged(b"k", &current).unwrap());
}

fn sibling_cap_refuses_and_keeps_what_was_stored(store: &dyn Storage) {
    let n1 = actor("n1");
    let context = VersionVector::new();
    for i in 0..3 {
        let mut write = Write::new(&context, value(&format!("v{i}")), &n1);
        write.max_siblings = 3;
        store.put(b"k", &write).unwrap();
    }
    let before = store.get(b"k").unwrap();
    let mut write = Write::new(&context, value("one too many"), &n1);
    write.max_siblings = 3;
    let error = store.put(b"k", &write).unwrap_err();
    assert!(
        matches!(
            error,
            StorageError::TooManySiblings {
                siblings: 4,
                max: 3
            }
        ),
        "{error}"
    );
    assert_eq!(store.get(b"k").unwrap(), before);
}

fn scan_pages_through_a_hash_range(store: &dyn Storage) {
    let n1 = actor("n1");
    let keys: Vec<String> = (0..200).map(|i| format!("key-{i}")).collect();
    for key in &keys {
        put(store, key, &VersionVector::new(), key, &n1);
    }
    assert_eq!(store.count().unwrap(), 200);
    let (low, high) = (u64::MAX / 4, u64::MAX / 4 * 3);
    let mut expected: Vec<(u64, String)> = keys
        .iter()
        .map(|k| (key_hash(k.as_bytes()), k.clone()))
        .filter(|(h, _)| (low..=high).contains(h))
        .collect();
    expected.sort();
    let mut seen = Vec::new();
    let mut cursor: Option<(u64, Bytes)> = None;
    for _page in 0..100 {
        let after = cursor.as_ref().map(|(h, k)| (*h, &k[..]));
        let page = store.scan(low..=high, after, 7).unwrap();
        assert!(page.len() <= 7);
        let Some(last) = page.last() else { break };
        cursor = Some((last.hash, last.key.clone()));
        for item in &page {
            assert_eq!(
                values(&item.siblings),
                vec![value(std::str::from_utf8(&item.key).unwrap())]
            );
            seen.push((item.hash, String::from_utf8(item.key.to_vec()).unwrap()));
        }
    }
    assert_eq!(seen, expected);
    assert_eq!(
        store.scan(0..=u64::MAX, None, usize::MAX).unwrap().len(),
        200
    );
}

fn hints_coalesce_per_target_and_key_and_stay_apart_from_keys(store: &dyn Storage) {
    let (n1, n2) = (actor("n1"), actor("n2"));
    let first = put(store, "scratch", &VersionVector::new(), "a", &n1);
    let concurrent = {
        let other = MemoryStore::new(key_hash);
        put(&other, "scratch", &VersionVector::new(), "b", &n2)
    };
    let stored = store.store_hint("n3", b"k", &first, 100).unwrap();
    assert_eq!(stored.before_bytes, None);
    let grown = store.store_hint("n3", b"k", &concurrent, 200).unwrap();
    assert_eq!(grown.before_bytes, Some(stored.after_bytes));
    assert!(grown.after_bytes > stored.after_bytes);
    store.store_hint("n4", b"k", &first, 150).unwrap();
    store.store_hint("n3", b"j", &first, 150).unwrap();

    let for_n3 = store.hints("n3", None, 10).unwrap();
    let keys: Vec<&[u8]> = for_n3.iter().map(|h| &h.key[..]).collect();
    assert_eq!(keys, [&b"j"[..], &b"k"[..]]);
    let coalesced = &for_n3[1];
    assert_eq!(values(&coalesced.versions), [value("a"), value("b")]);
    assert_eq!(coalesced.updated_unix_ms, 200);
    assert_eq!(coalesced.size_bytes, grown.after_bytes);
    assert_eq!(store.hints("n3", Some(b"j"), 10).unwrap().len(), 1);
    assert_eq!(store.hints("n4", None, 10).unwrap().len(), 1);
    assert_eq!(store.hints("n", None, 10).unwrap().len(), 0);
    let everything = store.all_hints(None, 10).unwrap();
    assert_eq!(everything.len(), 3);
    let page = store.all_hints(Some(("n3", b"k")), 10).unwrap();
    assert_eq!(page.len(), 1);
    assert_eq!(page[0].target, "n4");
    // Hints are not keys: the store's own key space only holds what was put.
    assert_eq!(store.count().unwrap(), 1);
    assert!(store.get(b"k").unwrap().is_none());

    // Only the exact state delivered is removed.
    assert_eq!(
        store.remove_hint_if_unchanged("n3", b"k", &first).unwrap(),
        None
    );
    let freed = store
        .remove_hint_if_unchanged("n3", b"k", &coalesced.versions)
        .unwrap();
    assert_eq!(freed, Some(grown.after_bytes));
    assert_eq!(store.hints("n3", None, 10).unwrap().len(), 1);
    assert!(store.store_hint("", b"k", &first, 1).is_err());
}

fn deferred_writes_are_read_at_once_and_complete_durable(store: &dyn Storage) {
    let (n1, n2) = (actor("n1"), actor("n2"));
    let blind = VersionVector::new();
    let waits: Vec<_> = (0..20)
        .map(|i| {
            let key = format!("k{i}");
            let write = Write::new(&blind, value(&key), &n1);
            let (update, durable) = store.put_deferred(key.as_bytes(), &write).unwrap();
            assert_eq!(
                store.get(key.as_bytes()).unwrap().as_ref(),
                Some(&update.after),
                "a deferred write is visible before its sync"
            );
            durable
        })
        .collect();
    for durable in waits {
        durable.wait().unwrap();
    }
    let stored = store.get(b"k3").unwrap().unwrap();
    let (unchanged, durable) = store.merge_deferred(b"k3", &stored).unwrap();
    assert!(
        !unchanged.changed(),
        "merging what is stored changes nothing"
    );
    durable.wait().unwrap();
    let other = put(store, "k3", &VersionVector::new(), "concurrent", &n2);
    let (merged, durable) = store.merge_deferred(b"k3", &other).unwrap();
    durable.wait().unwrap();
    assert_eq!(merged.after, other, "the put already holds both siblings");
}

macro_rules! suite {
    ($engine:ident, $make:expr) => {
        mod $engine {
            use super::*;
            fn run(test: fn(&dyn Storage)) {
                let (store, _dir) = $make;
                test(&store);
            }
            #[test]
            fn deferred_writes_are_read_at_once_and_complete_durable() {
                run(super::deferred_writes_are_read_at_once_and_complete_durable)
            }
            #[test]
            fn missing_key_reads_none() {
                run(super::missing_key_reads_none)
            }
            #[test]
            fn put_then_get_round_trips() {
                run(super::put_then_get_round_trips)
            }
            #[test]
            fn blind_writes_become_siblings_and_context_resolves() {
                run(super::blind_writes_become_siblings_and_context_resolves)
            }
            #[test]
            fn tombstone_is_a_versioned_delete() {
                run(super::tombstone_is_a_versioned_delete)
            }
            #[test]
            fn merge_syncs_replicas_and_is_idempotent() {
                run(super::merge_syncs_replicas_and_is_idempotent)
            }
            #[test]
            fn sibling_cap_refuses_and_keeps_what_was_stored() {
                run(super::sibling_cap_refuses_and_keeps_what_was_stored)
            }
            #[test]
            fn scan_pages_through_a_hash_range() {
                run(super::scan_pages_through_a_hash_range)
            }
            #[test]
            fn writes_report_the_state_they_replaced() {
                run(super::writes_report_the_state_they_replaced)
            }
            #[test]
            fn removal_only_takes_the_state_it_expects() {
                run(super::removal_only_takes_the_state_it_expects)
            }
            #[test]
            fn hints_coalesce_per_target_and_key_and_stay_apart_from_keys() {
                run(super::hints_coalesce_per_target_and_key_and_stay_apart_from_keys)
            }
        }
    };
}

suite!(memory, (MemoryStore::new(key_hash), ()));
suite!(fjall_buffer, {
    let dir = tempfile::tempdir().unwrap();
    (
        FjallStore::open(dir.path(), key_hash, kv_storage::Durability::Buffer).unwrap(),
        dir,
    )
});
suite!(fjall_sync, {
    let dir = tempfile::tempdir().unwrap();
    (
        FjallStore::open(dir.path(), key_hash, kv_storage::Durability::Sync).unwrap(),
        dir,
    )
});

#[test]
fn metadata_lasts_as_long_as_the_store_and_a_new_store_has_none() {
    let memory = MemoryStore::new(key_hash);
    assert_eq!(memory.meta("actor").unwrap(), None);
    memory.set_meta("actor", b"n1.abc").unwrap();
    assert_eq!(
        memory.meta("actor").unwrap().as_deref(),
        Some(&b"n1.abc"[..])
    );
    let dir = tempfile::tempdir().unwrap();
    {
        let fjall = FjallStore::open(dir.path(), key_hash, kv_storage::Durability::Buffer).unwrap();
        assert_eq!(fjall.meta("actor").unwrap(), None);
        fjall.set_meta("actor", b"n1.xyz").unwrap();
        fjall.set_meta("layout", b"v1").unwrap();
        fjall.set_meta("layout", b"v2").unwrap();
    }
    let reopened = FjallStore::open(dir.path(), key_hash, kv_storage::Durability::Buffer).unwrap();
    assert_eq!(
        reopened.meta("actor").unwrap().as_deref(),
        Some(&b"n1.xyz"[..])
    );
    assert_eq!(
        reopened.meta("layout").unwrap().as_deref(),
        Some(&b"v2"[..])
    );
    assert_eq!(reopened.count().unwrap(), 0, "metadata is not keys");
}
