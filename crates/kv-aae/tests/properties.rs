//! Properties of the digest tree and the exchange: trees depend only on contents, and an
//! exchange names exactly the keys that differ, however the keys are spread and however
//! small the lists and the tree.

use std::collections::{BTreeMap, BTreeSet};

use kv_aae::{
    Digest, DigestTree, Exchange, ExchangeLimits, HashRange, Step, TreeFormat, encode_tree,
    fingerprint,
};
use proptest::prelude::*;

/// One replica: items by key (position, state) and its tree.
struct Replica {
    items: BTreeMap<String, (u64, u8)>,
    tree: DigestTree,
}

impl Replica {
    fn new(format: TreeFormat, items: &BTreeMap<String, (u64, u8)>) -> Self {
        let mut tree = DigestTree::new(format);
        for (key, (position, state)) in items {
            tree.insert(*position, fingerprint(key.as_bytes(), &[*state]));
        }
        Self {
            items: items.clone(),
            tree,
        }
    }

    fn in_range(&self, range: HashRange) -> impl Iterator<Item = (&String, u64)> {
        self.items
            .iter()
            .filter(move |(_, (p, _))| range.contains(*p))
            .map(|(k, (_, s))| (k, fingerprint(k.as_bytes(), &[*s])))
    }

    /// The digest of `range`: the tree's whole leaves plus a scan of the partial ends.
    fn digest(&self, range: HashRange) -> Digest {
        let from_tree = self.tree.digest(range);
        from_tree
            .partial
            .iter()
            .flat_map(|piece| self.in_range(*piece))
            .fold(from_tree.whole_leaves, |mut d, (_, f)| {
                d.add(f);
                d
            })
    }

    /// Keys of `range` after `after`, in (position, key) order as a store scans them.
    fn keys(
        &self,
        range: HashRange,
        after: Option<&String>,
        limit: usize,
    ) -> (Vec<(String, u64)>, bool) {
        let mut all: Vec<(u64, String, u64)> = self
            .in_range(range)
            .filter(|(k, _)| after.is_none_or(|a| *k > a))
            .map(|(k, f)| (self.items[k].0, k.clone(), f))
            .collect();
        all.sort();
        let complete = all.len() <= limit;
        (
            all.into_iter()
                .take(limit)
                .map(|(_, k, f)| (k, f))
                .collect(),
            complete,
        )
    }
}

/// Runs a whole exchange; returns every key it reported as differing.
fn exchange(a: &Replica, b: &Replica, limits: ExchangeLimits) -> BTreeSet<String> {
    let mut exchange = Exchange::new([HashRange::FULL], limits);
    let mut found = BTreeSet::new();
    for _ in 0..100_000 {
        match exchange.next_step() {
            Step::Digests(ranges) => {
                let mine: Vec<Digest> = ranges.iter().map(|r| a.digest(*r)).collect();
                let theirs: Vec<Digest> = ranges.iter().map(|r| b.digest(*r)).collect();
                exchange.digests(&mine, &theirs).unwrap();
            }
            Step::Keys {
                range,
                after,
                limit,
                local_count,
                remote_count,
            } => {
                assert!(limit == limits.keys_per_list || limit == limits.keys_per_page);
                let (mine, mine_complete) = a.keys(range, after.as_ref(), limit);
                // A side the digests found empty need not be asked; it must be empty.
                let (theirs, theirs_complete) = if remote_count == 0 {
                    (Vec::new(), true)
                } else {
                    b.keys(range, after.as_ref(), limit)
                };
                if local_count == 0 {
                    assert!(mine.is_empty() && mine_complete);
                }
                let diff = exchange
                    .keys(mine, mine_complete, theirs, theirs_complete)
                    .unwrap();
                found.extend(diff.only_local);
                found.extend(diff.only_remote);
                found.extend(diff.differing);
            }
            Step::Done => return found,
        }
    }
    panic!("the exchange did not finish");
}

fn expected_difference(
    a: &BTreeMap<String, (u64, u8)>,
    b: &BTreeMap<String, (u64, u8)>,
) -> BTreeSet<String> {
    a.keys()
        .chain(b.keys())
        .filter(|k| a.get(*k) != b.get(*k))
        .cloned()
        .collect()
}

/// Where keys land: a key's position is a function of the key alone, as the ring's hash
/// is; `spread` the mixing hash itself, the others crowd keys into a few leaves, a few
/// positions, or (`squeeze = 2`) onto the same positions (to force splits below a leaf
/// and paging within one position).
#[derive(Debug, Clone, Copy)]
struct Layout {
    squeeze: u64,
    shift: u32,
}

impl Layout {
    fn position(self, key: &str) -> u64 {
        let hash = mix(key);
        if self.squeeze == 0 {
            hash
        } else {
            (hash % self.squeeze) << self.shift
        }
    }
}

/// A stable mix of a key (FNV-1a then a finalizer), so the tests need no hash crate.
fn mix(key: &str) -> u64 {
    let mut hash = 0xcbf2_9ce4_8422_2325u64;
    for byte in key.bytes() {
        hash = (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
    }
    hash ^= hash >> 33;
    hash = hash.wrapping_mul(0xff51_afd7_ed55_8ccd);
    hash ^ (hash >> 33)
}

fn layouts() -> impl Strategy<Value = Layout> {
    prop_oneof![
        Just(Layout {
            squeeze: 0,
            shift: 0
        }),
        Just(Layout {
            squeeze: 64,
            shift: 20
        }),
        Just(Layout {
            squeeze: 4096,
            shift: 0
        }),
        Just(Layout {
            squeeze: 2,
            shift: 0
        }),
    ]
}

/// Keys with their states.
fn states(max: usize) -> impl Strategy<Value = BTreeMap<String, u8>> {
    proptest::collection::btree_map("[a-z]{1,6}", 0u8..4, 0..max)
}

fn placed(layout: Layout, states: &BTreeMap<String, u8>) -> BTreeMap<String, (u64, u8)> {
    states
        .iter()
        .map(|(key, state)| (key.clone(), (layout.position(key), *state)))
        .collect()
}

fn position() -> impl Strategy<Value = u64> {
    prop_oneof![any::<u64>(), (0u64..64).prop_map(|p| p << 20), 0u64..4096]
}

const SMALL: TreeFormat = TreeFormat {
    version: 1,
    partition_bits: 2,
    leaf_bits: 3,
};

fn formats() -> impl Strategy<Value = TreeFormat> {
    prop_oneof![Just(TreeFormat::CURRENT), Just(SMALL)]
}

fn limits() -> impl Strategy<Value = ExchangeLimits> {
    (1usize..8, 1usize..6, 1usize..9, 2usize..17).prop_map(|(ranges, keys, page, fanout)| {
        ExchangeLimits {
            ranges_per_request: ranges,
            keys_per_list: keys,
            keys_per_page: page,
            fanout,
        }
    })
}

proptest! {
    #[test]
    fn equal_contents_give_equal_trees_whatever_the_write_order(
        contents in states(60),
        layout in layouts(),
        seed in any::<u64>(),
        format in formats(),
    ) {
        let contents = placed(layout, &contents);
        let forward = Replica::new(format, &contents).tree;
        let mut shuffled: Vec<_> = contents.iter().collect();
        let len = shuffled.len().max(1) as u64;
        shuffled.rotate_left((seed % len) as usize);
        shuffled.reverse();
        let mut backward = DigestTree::new(format);
        // Write every item twice with a stale state first, as a replica that later caught
        // up would have: the stale fingerprint is XORed out again.
        for (key, (position, state)) in &shuffled {
            let stale = fingerprint(key.as_bytes(), &[state.wrapping_add(1)]);
            backward.insert(*position, stale);
            backward.replace(*position, Some(stale), Some(fingerprint(key.as_bytes(), &[*state])));
        }
        prop_assert_eq!(encode_tree(&forward), encode_tree(&backward));
        prop_assert_eq!(forward, backward);
    }

    #[test]
    fn a_single_differing_key_is_always_found(
        contents in states(60),
        layout in layouts(),
        pick in any::<prop::sample::Index>(),
        change in 0u8..3,
        extra in "[A-Z]{1,4}",
        format in formats(),
        limits in limits(),
    ) {
        let contents = placed(layout, &contents);
        let mut other = contents.clone();
        let differing = match (change, contents.keys().nth(pick.index(contents.len().max(1)))) {
            (0, Some(key)) => {
                other.remove(key);
                key.clone()
            }
            (1, Some(key)) => {
                other.get_mut(key).unwrap().1 ^= 1;
                key.clone()
            }
            _ => {
                other.insert(extra.clone(), (layout.position(&extra), 0));
                extra
            }
        };
        let found = exchange(&Replica::new(format, &contents), &Replica::new(format, &other), limits);
        prop_assert_eq!(found, BTreeSet::from([differing]));
    }

    #[test]
    fn an_exchange_names_exactly_the_differing_keys(
        a in states(80),
        b in states(80),
        layout in layouts(),
        format in formats(),
        limits in limits(),
    ) {
        let (a, b) = (placed(layout, &a), placed(layout, &b));
        let found = exchange(&Replica::new(format, &a), &Replica::new(format, &b), limits);
        prop_assert_eq!(found, expected_difference(&a, &b));
    }

    #[test]
    fn a_range_digest_equals_the_xor_of_its_items(
        contents in states(60),
        layout in layouts(),
        first in position(),
        span in any::<u64>(),
        format in formats(),
    ) {
        let range = HashRange::new(first, first.saturating_add(span)).unwrap();
        let replica = Replica::new(format, &placed(layout, &contents));
        let brute = replica.in_range(range).fold(Digest::EMPTY, |mut d, (_, f)| { d.add(f); d });
        prop_assert_eq!(replica.digest(range), brute);
    }

    #[test]
    fn splits_cover_their_range_exactly(first in any::<u64>(), span in 1u64.., fanout in 2usize..40) {
        let range = HashRange::new(first, first.saturating_add(span)).unwrap();
        prop_assume!(range.len() > 1);
        let pieces = kv_aae::split(range, fanout);
        prop_assert!(pieces.len() >= 2 && pieces.len() <= fanout);
        prop_assert_eq!(pieces[0].first(), range.first());
        prop_assert_eq!(pieces.last().unwrap().last(), range.last());
        for pair in pieces.windows(2) {
            prop_assert_eq!(pair[0].last() + 1, pair[1].first());
        }
    }
}
