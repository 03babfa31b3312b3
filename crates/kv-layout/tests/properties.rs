//! Layouts merge like a CRDT: whatever changes, acks and syncs happen at which node, and
//! in whatever order nodes exchange layouts, they end up with the same layout; merging
//! is commutative, associative and idempotent; and a version retires only once every
//! member of the newest version read-acked past it (after every member synced).

use kv_layout::{Layout, Proposal, decode_layout, encode_layout};
use proptest::prelude::*;

const NODES: [&str; 5] = ["n1", "n2", "n3", "n4", "n5"];

/// What one node does to its own copy of the layout (node `i` owns copy `i`).
#[derive(Debug, Clone)]
enum Op {
    Join(usize, usize),
    Leave(usize, usize),
    Ack(usize),
    Sync(usize),
    Read(usize),
    Exchange(usize, usize),
}

const COPIES: usize = 4;

fn op() -> impl Strategy<Value = Op> {
    let at = 0usize..COPIES;
    prop_oneof![
        (at.clone(), 0usize..5).prop_map(|(a, n)| Op::Join(a, n)),
        (at.clone(), 0usize..5).prop_map(|(a, n)| Op::Leave(a, n)),
        at.clone().prop_map(Op::Ack),
        at.clone().prop_map(Op::Sync),
        at.clone().prop_map(Op::Read),
        (at.clone(), 0usize..COPIES).prop_map(|(a, b)| Op::Exchange(a, b)),
    ]
}

/// The copies of one cluster's layout at nodes n1..n4, changed by `ops` as the nodes
/// would: a node proposes only while a member of the newest version (and acks at once),
/// acks for itself, and marks a version synced only once every node acked it.
fn run(ops: &[Op]) -> Vec<Layout> {
    let mut copies = vec![Layout::found(42, 3, "n1", 8); COPIES];
    for op in ops {
        match *op {
            Op::Join(at, node) => propose(
                &mut copies[at],
                at,
                &Proposal::Join(vec![(NODES[node].into(), 8)]),
            ),
            Op::Leave(at, node) => propose(
                &mut copies[at],
                at,
                &Proposal::Leave(vec![NODES[node].into()]),
            ),
            Op::Ack(at) => {
                let newest = copies[at].newest().number;
                copies[at].ack(NODES[at], newest);
            }
            Op::Sync(at) => {
                let newest = copies[at].newest().number;
                if copies[at].acked_by_all(newest, |_| false) {
                    copies[at].mark_synced(NODES[at], newest);
                }
            }
            Op::Read(at) => {
                let readable = copies[at].readable();
                copies[at].mark_read(NODES[at], readable);
            }
            Op::Exchange(a, b) => {
                let other = copies[b].clone();
                copies[a].merge(&other).unwrap();
            }
        }
    }
    copies
}

fn propose(layout: &mut Layout, at: usize, proposal: &Proposal) {
    if layout.newest().has(NODES[at])
        && let Ok(number) = layout.propose(proposal)
    {
        layout.ack(NODES[at], number);
    }
}

fn merged(a: &Layout, b: &Layout) -> Layout {
    let mut out = a.clone();
    out.merge(b).unwrap();
    out
}

proptest! {
    #[test]
    fn nodes_that_exchange_layouts_converge(ops in proptest::collection::vec(op(), 0..40)) {
        let mut copies = run(&ops);
        // Two rounds of everyone-to-everyone exchanges.
        for _ in 0..2 {
            for a in 0..COPIES {
                for b in 0..COPIES {
                    let other = copies[b].clone();
                    copies[a].merge(&other).unwrap();
                }
            }
        }
        for copy in &copies[1..] {
            prop_assert_eq!(&copies[0], copy);
        }
        // Once converged, what retired did so on read acks (and syncs) of the content
        // every node has.
        let layout = &copies[0];
        let oldest = layout.oldest_live();
        if oldest > 1 {
            for member in layout.newest().members.keys() {
                prop_assert!(
                    layout.read_acked(member) >= oldest && layout.synced(member) >= oldest,
                    "{member} read-acked {} synced {} < {oldest}: {layout:?}",
                    layout.read_acked(member),
                    layout.synced(member)
                );
            }
        }
    }

    #[test]
    fn merge_is_commutative_associative_and_idempotent(ops in proptest::collection::vec(op(), 0..40)) {
        let copies = run(&ops);
        let (a, b, c) = (&copies[0], &copies[1], &copies[2]);
        prop_assert_eq!(merged(a, b), merged(b, a));
        prop_assert_eq!(merged(&merged(a, b), c), merged(a, &merged(b, c)));
        prop_assert_eq!(merged(a, a), a.clone());
    }

    #[test]
    fn layouts_round_trip_through_their_encoding(ops in proptest::collection::vec(op(), 0..40)) {
        for layout in run(&ops) {
            prop_assert_eq!(decode_layout(&encode_layout(&layout)).unwrap(), layout);
        }
    }
}

#[test]
fn layouts_of_other_clusters_do_not_merge() {
    let mut ours = Layout::found(1, 3, "n1", 8);
    let theirs = Layout::found(2, 3, "n9", 8);
    let error = ours.merge(&theirs).unwrap_err();
    assert!(error.to_string().contains("cluster"), "{error}");
    assert!(decode_layout(b"\x09junk").is_err());
    assert!(decode_layout(b"").is_err());
}

#[test]
fn changes_are_checked() {
    let mut layout = Layout::found(1, 3, "n1", 8);
    assert!(
        layout
            .propose(&Proposal::Join(vec![("n1".into(), 8)]))
            .is_err()
    );
    assert!(layout.propose(&Proposal::Leave(vec!["n2".into()])).is_err());
    assert!(layout.propose(&Proposal::Leave(vec!["n1".into()])).is_err());
    let fixed = &mut Layout::fixed(3, [("a".to_owned(), 8), ("b".to_owned(), 8)]);
    assert!(
        fixed
            .propose(&Proposal::Join(vec![("c".into(), 8)]))
            .is_err()
    );
}
