//! `HashRange`: an inclusive, non-wrapping range of ring positions. A ring arc that wraps
//! past the top of the hash space is two of them ([`arc`]).

use std::fmt;

/// Ring positions `first..=last` (never wrapping; `first <= last`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HashRange {
    first: u64,
    last: u64,
}

impl HashRange {
    /// The whole hash space.
    pub const FULL: Self = Self {
        first: 0,
        last: u64::MAX,
    };

    /// `first..=last`, if `first <= last`.
    pub fn new(first: u64, last: u64) -> Option<Self> {
        (first <= last).then_some(Self { first, last })
    }

    /// The first position in the range.
    pub fn first(&self) -> u64 {
        self.first
    }

    /// The last position in the range.
    pub fn last(&self) -> u64 {
        self.last
    }

    /// How many positions it holds (up to 2^64).
    pub fn len(&self) -> u128 {
        u128::from(self.last - self.first) + 1
    }

    /// Never true: a range holds at least one position.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Whether `position` lies in the range.
    pub fn contains(&self, position: u64) -> bool {
        (self.first..=self.last).contains(&position)
    }

    /// Whether `other` lies entirely inside this range.
    pub fn covers(&self, other: &HashRange) -> bool {
        self.first <= other.first && other.last <= self.last
    }

    /// The positions both ranges hold.
    pub fn intersect(&self, other: &HashRange) -> Option<HashRange> {
        HashRange::new(self.first.max(other.first), self.last.min(other.last))
    }
}

impl fmt::Display for HashRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{:#018x}, {:#018x}]", self.first, self.last)
    }
}

/// The ring arc `(after, up_to]` as the ring assigns it to a token (the positions after
/// the previous token, up to and including this one), as one or two ranges. An arc whose
/// ends are equal is the whole ring (a ring with a single token).
pub fn arc(after: u64, up_to: u64) -> Vec<HashRange> {
    if after == up_to {
        return vec![HashRange::FULL];
    }
    if after < up_to {
        return vec![HashRange {
            first: after + 1,
            last: up_to,
        }];
    }
    let mut pieces = Vec::with_capacity(2);
    pieces.push(HashRange {
        first: 0,
        last: up_to,
    });
    if after < u64::MAX {
        pieces.push(HashRange {
            first: after + 1,
            last: u64::MAX,
        });
    }
    pieces
}

/// `ranges` sorted, with touching or overlapping ranges joined.
pub fn coalesce(mut ranges: Vec<HashRange>) -> Vec<HashRange> {
    ranges.sort_unstable();
    let mut joined: Vec<HashRange> = Vec::with_capacity(ranges.len());
    for range in ranges {
        match joined.last_mut() {
            Some(last) if last.last == u64::MAX || range.first <= last.last + 1 => {
                last.last = last.last.max(range.last);
            }
            _ => joined.push(range),
        }
    }
    joined
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arcs_wrap_into_two_ranges() {
        assert_eq!(arc(10, 20), vec![HashRange::new(11, 20).unwrap()]);
        assert_eq!(
            arc(u64::MAX - 5, 3),
            vec![
                HashRange::new(0, 3).unwrap(),
                HashRange::new(u64::MAX - 4, u64::MAX).unwrap()
            ]
        );
        assert_eq!(arc(u64::MAX, 3), vec![HashRange::new(0, 3).unwrap()]);
        assert_eq!(arc(7, 7), vec![HashRange::FULL]);
        let total: u128 = arc(u64::MAX - 5, 3).iter().map(HashRange::len).sum();
        assert_eq!(total, 9);
    }

    #[test]
    fn coalesce_joins_touching_ranges() {
        let r = |a, b| HashRange::new(a, b).unwrap();
        assert_eq!(
            coalesce(vec![r(11, 20), r(0, 10), r(30, 40), r(35, 50)]),
            vec![r(0, 20), r(30, 50)]
        );
        assert_eq!(
            coalesce(vec![r(5, u64::MAX), r(0, 4)]),
            vec![HashRange::FULL]
        );
    }
}
