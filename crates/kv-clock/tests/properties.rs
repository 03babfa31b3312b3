//! Property tests for kv-clock: the causal partial order, the algebra of `sync`, and a
//! model check that a DVVSet keeps exactly the causally maximal writes.

use std::collections::{BTreeMap, BTreeSet};

use kv_clock::{
    ActorId, Causality, DvvSet, VersionVector, decode_dvvset, decode_version_vector, encode_dvvset,
    encode_version_vector,
};
use proptest::prelude::*;

const ACTORS: [&str; 4] = ["a", "b", "c", "d"];

fn actor(i: usize) -> ActorId {
    ActorId::new(ACTORS[i % ACTORS.len()]).unwrap()
}

fn version_vector() -> impl Strategy<Value = VersionVector> {
    proptest::collection::btree_map(0..ACTORS.len(), 1..6u64, 0..=ACTORS.len()).prop_map(|m| {
        VersionVector::from_entries(m.into_iter().map(|(a, c)| (ACTORS[a], c))).unwrap()
    })
}

fn leq(a: &VersionVector, b: &VersionVector) -> bool {
    matches!(a.compare(b), Causality::Before | Causality::Equal)
}

proptest! {
    #[test]
    fn compare_is_reflexive(a in version_vector()) {
        prop_assert_eq!(a.compare(&a), Causality::Equal);
    }

    #[test]
    fn compare_is_antisymmetric(a in version_vector(), b in version_vector()) {
        let expected = match a.compare(&b) {
            Causality::Before => Causality::After,
            Causality::After => Causality::Before,
            same => same,
        };
        prop_assert_eq!(b.compare(&a), expected);
        if a.compare(&b) == Causality::Equal {
            prop_assert_eq!(&a, &b);
        }
    }

    #[test]
    fn compare_is_transitive(a in version_vector(), b in version_vector(), c in version_vector()) {
        if leq(&a, &b) && leq(&b, &c) {
            prop_assert!(leq(&a, &c));
        }
    }

    #[test]
    fn compare_agrees_with_pointwise_order(a in version_vector(), b in version_vector()) {
        let pointwise = ACTORS.iter().all(|x| a.get(x) <= b.get(x));
        prop_assert_eq!(leq(&a, &b), pointwise);
    }

    #[test]
    fn merge_is_least_upper_bound(a in version_vector(), b in version_vector()) {
        let mut joined = a.clone();
        joined.merge(&b);
        prop_assert!(leq(&a, &joined) && leq(&b, &joined));
        for x in ACTORS {
            prop_assert_eq!(joined.get(x), a.get(x).max(b.get(x)));
        }
    }

    #[test]
    fn version_vector_encoding_round_trips(a in version_vector()) {
        let mut buf = Vec::new();
        encode_version_vector(&a, &mut buf);
        prop_assert_eq!(decode_version_vector(&buf).unwrap(), a);
    }

    #[test]
    fn decoding_garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
        let _ = decode_dvvset::<Option<Vec<u8>>>(&bytes);
        let _ = decode_version_vector(&bytes);
    }
}

/// A step of a random replicated history.
#[derive(Debug, Clone)]
enum Op {
    /// A client writes through `replica`, with the context of snapshot `context`
    /// (an index into the history so far, wrapped) or blind.
    Put {
        replica: usize,
        context: Option<usize>,
    },
    /// `from` sends its state to `into`, which syncs it.
    Sync { from: usize, into: usize },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0..3usize, proptest::option::of(any::<usize>()))
            .prop_map(|(replica, context)| Op::Put { replica, context }),
        (0..3usize, 0..3usize).prop_map(|(from, into)| Op::Sync { from, into }),
    ]
}

/// Runs a history against real DVVSets and against an explicit model of causality:
/// each write records the set of writes its context covered; a replica's correct
/// siblings are the writes it knows that no known write covered.
struct Simulation {
    replicas: Vec<DvvSet<u64>>,
    known: Vec<BTreeSet<u64>>,
    covered_by: BTreeMap<u64, BTreeSet<u64>>,
    dots: BTreeMap<u64, kv_clock::Dot>,
    snapshots: Vec<(DvvSet<u64>, BTreeSet<u64>)>,
}

impl Simulation {
    fn run(ops: &[Op]) -> Self {
        let mut sim = Simulation {
            replicas: vec![DvvSet::new(); 3],
            known: vec![BTreeSet::new(); 3],
            covered_by: BTreeMap::new(),
            dots: BTreeMap::new(),
            snapshots: Vec::new(),
        };
        for op in ops {
            sim.apply(op);
        }
        sim
    }

    fn apply(&mut self, op: &Op) {
        match *op {
            Op::Put { replica, context } => {
                let context = match context {
                    Some(i) if !self.snapshots.is_empty() => {
                        self.snapshots[i % self.snapshots.len()].0.join()
                    }
                    _ => VersionVector::new(),
                };
                let id = self.dots.len() as u64;
                let covered: BTreeSet<u64> = self
                    .dots
                    .iter()
                    .filter(|(_, dot)| context.contains(dot))
                    .map(|(&w, _)| w)
                    .collect();
                let dot = self.replicas[replica].update(&context, id, &actor(replica));
                self.dots.insert(id, dot);
                self.known[replica].extend(covered.iter().copied());
                self.known[replica].insert(id);
                self.covered_by.insert(id, covered);
                self.snapshot(replica);
            }
            Op::Sync { from, into } => {
                let incoming = self.replicas[from].clone();
                self.replicas[into].sync(&incoming);
                let learned = self.known[from].clone();
                self.known[into].extend(learned);
                self.snapshot(into);
            }
        }
    }

    fn snapshot(&mut self, replica: usize) {
        self.snapshots
            .push((self.replicas[replica].clone(), self.known[replica].clone()));
    }

    fn maximal(&self, known: &BTreeSet<u64>) -> BTreeSet<u64> {
        known
            .iter()
            .copied()
            .filter(|w| !known.iter().any(|other| self.covered_by[other].contains(w)))
            .collect()
    }
}

fn values(set: &DvvSet<u64>) -> BTreeSet<u64> {
    set.values().copied().collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn dvvset_keeps_exactly_the_maximal_writes(ops in proptest::collection::vec(op(), 1..40)) {
        let sim = Simulation::run(&ops);
        for (set, known) in &sim.snapshots {
            prop_assert_eq!(values(set), sim.maximal(known));
            prop_assert_eq!(set.sibling_count(), values(set).len(), "a value appears twice");
        }
    }

    #[test]
    fn sync_is_commutative_associative_idempotent(
        ops in proptest::collection::vec(op(), 1..30),
        picks in (any::<usize>(), any::<usize>(), any::<usize>()),
    ) {
        let sim = Simulation::run(&ops);
        let pick = |i: usize| sim.snapshots[i % sim.snapshots.len()].0.clone();
        let (a, b, c) = (pick(picks.0), pick(picks.1), pick(picks.2));
        let sync = |x: &DvvSet<u64>, y: &DvvSet<u64>| { let mut z = x.clone(); z.sync(y); z };
        prop_assert_eq!(sync(&a, &b), sync(&b, &a));
        prop_assert_eq!(sync(&sync(&a, &b), &c), sync(&a, &sync(&b, &c)));
        prop_assert_eq!(sync(&a, &a), a.clone());
    }

    #[test]
    fn sync_never_drops_an_undominated_value(
        ops in proptest::collection::vec(op(), 1..30),
        picks in (any::<usize>(), any::<usize>()),
    ) {
        let sim = Simulation::run(&ops);
        let (a, known_a) = &sim.snapshots[picks.0 % sim.snapshots.len()];
        let (b, known_b) = &sim.snapshots[picks.1 % sim.snapshots.len()];
        let mut merged = a.clone();
        merged.sync(b);
        let known: BTreeSet<u64> = known_a.union(known_b).copied().collect();
        let kept = values(&merged);
        for w in values(a).union(&values(b)) {
            let dominated = known.iter().any(|other| sim.covered_by[other].contains(w));
            prop_assert_eq!(kept.contains(w), !dominated, "write {} mishandled", w);
        }
    }

    #[test]
    fn write_with_full_context_leaves_one_value(ops in proptest::collection::vec(op(), 1..30), replica in 0..3usize) {
        let mut set = Simulation::run(&ops).replicas[replica].clone();
        let context = set.join();
        set.update(&context, u64::MAX, &actor(replica));
        prop_assert_eq!(values(&set), BTreeSet::from([u64::MAX]));
        prop_assert_eq!(set.compare_context(&context), Causality::After);
    }

    #[test]
    fn dvvset_encoding_round_trips(ops in proptest::collection::vec(op(), 1..30)) {
        let sim = Simulation::run(&ops);
        for (set, _) in &sim.snapshots {
            let mut buf = Vec::new();
            encode_dvvset(set, &mut buf);
            prop_assert_eq!(&decode_dvvset::<u64>(&buf).unwrap(), set);
            for cut in 0..buf.len() {
                prop_assert!(decode_dvvset::<u64>(&buf[..cut]).is_err());
            }
        }
    }
}

#[test]
fn two_blind_writes_through_one_coordinator_both_survive() {
    let n1 = actor(0);
    let mut set = DvvSet::new();
    set.update(&VersionVector::new(), 1u64, &n1);
    set.update(&VersionVector::new(), 2u64, &n1);
    assert_eq!(values(&set), BTreeSet::from([1, 2]));
}

#[test]
fn riak_sibling_explosion_sequence_keeps_b_and_c() {
    // Clients X and Y write through the same coordinator: X writes A blind, Y writes B
    // blind, then X writes C with the version it got back for A.
    let coordinator = actor(0);
    let mut set = DvvSet::new();
    let dot_a = set.update(&VersionVector::new(), "A", &coordinator);
    let version_of_a =
        VersionVector::from_entries([(dot_a.actor.as_str(), dot_a.counter)]).unwrap();
    set.update(&VersionVector::new(), "B", &coordinator);
    set.update(&version_of_a, "C", &coordinator);
    let mut kept: Vec<&str> = set.values().copied().collect();
    kept.sort_unstable();
    assert_eq!(kept, ["B", "C"]);
}

#[test]
fn concurrent_writes_at_two_coordinators_become_siblings_and_resolve() {
    let (x, y) = (actor(0), actor(1));
    let mut at_x = DvvSet::new();
    let mut at_y = DvvSet::new();
    at_x.update(&VersionVector::new(), 1u64, &x);
    at_y.update(&VersionVector::new(), 2u64, &y);
    assert_eq!(at_x.compare(&at_y), Causality::Concurrent);
    at_x.sync(&at_y);
    assert_eq!(values(&at_x), BTreeSet::from([1, 2]));
    let context = at_x.join();
    at_y.update(&context, 3, &y);
    at_x.sync(&at_y);
    assert_eq!(values(&at_x), BTreeSet::from([3]));
    assert_eq!(at_x, at_y.clone().tap_sync(&at_x));
}

#[test]
fn malformed_versions_are_rejected_with_reasons() {
    use kv_clock::ClockError;
    assert_eq!(
        VersionVector::from_entries([("n1", 0)]),
        Err(ClockError::ZeroCounter { actor: "n1".into() })
    );
    assert_eq!(
        VersionVector::from_entries([("n1", 1), ("n1", 2)]),
        Err(ClockError::DuplicateActor { actor: "n1".into() })
    );
    assert_eq!(
        VersionVector::from_entries([("", 1)]),
        Err(ClockError::EmptyActorId)
    );
    let long = "x".repeat(kv_clock::MAX_ACTOR_ID_BYTES + 1);
    assert!(matches!(
        VersionVector::from_entries([(long.as_str(), 1)]),
        Err(ClockError::ActorIdTooLong { .. })
    ));
}

trait TapSync {
    fn tap_sync(self, other: &Self) -> Self;
}

impl TapSync for DvvSet<u64> {
    fn tap_sync(mut self, other: &Self) -> Self {
        self.sync(other);
        self
    }
}
