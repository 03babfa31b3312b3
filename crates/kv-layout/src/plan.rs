//! The transfer plan between two ring versions: which ranges each node gains a replica
//! of, and which nodes held them before. A new owner copies each such range from its old
//! owners (with the anti-entropy exchange) before it marks the new version synced.

use std::collections::BTreeMap;

use kv_aae::{HashRange, arc, coalesce};
use kv_ring::Ring;

/// Ranges one node gains, grouped by the old owners it copies them from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Move {
    /// The node gaining the ranges.
    pub to: String,
    /// Their replicas in the older version, primary first.
    pub from: Vec<String>,
    /// The ranges.
    pub ranges: Vec<HashRange>,
}

impl Move {
    /// The share of the hash space these ranges cover (0..=1).
    pub fn share(&self) -> f64 {
        share(&self.ranges)
    }
}

/// The share of the hash space `ranges` cover.
pub fn share(ranges: &[HashRange]) -> f64 {
    const SPACE: f64 = 18_446_744_073_709_551_616.0; // 2^64
    ranges.iter().map(|r| r.len() as f64).sum::<f64>() / SPACE
}

/// What changes from `old` to `new`: for every node, the ranges it replicates in `new`
/// but not in `old`, with their replicas in `old`. Ordered by node, then old owners.
pub fn plan(old: &Ring, new: &Ring) -> Vec<Move> {
    let mut tokens: Vec<u64> = old
        .tokens()
        .map(|(t, _)| t)
        .chain(new.tokens().map(|(t, _)| t))
        .collect();
    tokens.sort_unstable();
    tokens.dedup();
    let Some(&last) = tokens.last() else {
        return Vec::new();
    };
    let mut moves: BTreeMap<(String, Vec<String>), Vec<HashRange>> = BTreeMap::new();
    let mut previous = last;
    for &token in &tokens {
        // No token of either ring lies inside (previous, token]: one preference list each.
        let before: Vec<String> = old
            .preference_list_for_hash(token)
            .iter()
            .map(str::to_owned)
            .collect();
        for node in new.preference_list_for_hash(token).iter() {
            if !before.iter().any(|b| b == node) {
                moves
                    .entry((node.to_owned(), before.clone()))
                    .or_default()
                    .extend(arc(previous, token));
            }
        }
        previous = token;
    }
    moves
        .into_iter()
        .map(|((to, from), ranges)| Move {
            to,
            from,
            ranges: coalesce(ranges),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use kv_ring::Member;

    use super::*;

    fn ring(members: &[&str]) -> Ring {
        Ring::new(members.iter().map(|m| Member::with_vnodes(*m, 64)), 3).unwrap()
    }

    #[test]
    fn a_join_moves_about_one_new_share_to_the_newcomer_only() {
        let old = ring(&["n1", "n2", "n3", "n4"]);
        let new = ring(&["n1", "n2", "n3", "n4", "n5"]);
        let moves = plan(&old, &new);
        assert!(moves.iter().all(|m| m.to == "n5"), "{moves:?}");
        let gained: f64 = moves.iter().map(Move::share).sum();
        // n5 replicates about N/5 of the ring after the join.
        assert!((gained - 3.0 / 5.0).abs() < 0.1, "{gained}");
        for m in &moves {
            assert_eq!(m.from.len(), 3);
            assert!(!m.from.contains(&"n5".to_owned()));
        }
    }

    #[test]
    fn a_removal_re_replicates_from_the_survivors() {
        let old = ring(&["n1", "n2", "n3", "n4"]);
        let new = ring(&["n1", "n2", "n3"]);
        let moves = plan(&old, &new);
        assert!(!moves.is_empty());
        for m in &moves {
            assert_ne!(m.to, "n4");
            assert!(
                m.from.contains(&"n4".to_owned()),
                "only n4's ranges move: {m:?}"
            );
        }
        assert!(plan(&new, &new).is_empty());
    }
}
