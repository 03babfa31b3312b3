//! Dots, version vectors and the causal partial order between them.

use std::cmp::Ordering;

use crate::{ActorId, ClockError};

/// One event: the `counter`-th event minted by `actor`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Dot {
    /// The actor that minted the event.
    pub actor: ActorId,
    /// Its sequence number at that actor, starting at 1.
    pub counter: u64,
}

/// How two causal histories relate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Causality {
    /// Both histories contain exactly the same events.
    Equal,
    /// The left history is a strict subset of the right: left happened before right.
    Before,
    /// The left history strictly contains the right: left happened after right.
    After,
    /// Each history has events the other lacks: neither saw the other.
    Concurrent,
}

/// A version vector: for each actor, how many of its events are known.
///
/// Entries are sorted by actor and every counter is at least 1 (a missing actor means 0).
/// This is the causal *context* a client reads and passes back with its next write.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct VersionVector {
    entries: Vec<(ActorId, u64)>,
}

impl VersionVector {
    /// The empty vector: no events known (a blind write's context).
    pub fn new() -> Self {
        Self::default()
    }

    /// Builds a vector from untrusted `(node_id, counter)` pairs in any order.
    ///
    /// Rejects empty or overlong ids, zero counters and repeated ids.
    ///
    /// ```
    /// use kv_clock::VersionVector;
    /// let vv = VersionVector::from_entries([("n2", 1), ("n1", 4)]).unwrap();
    /// assert_eq!(vv.get("n1"), 4);
    /// assert!(VersionVector::from_entries([("n1", 0)]).is_err());
    /// ```
    pub fn from_entries<'a, I>(entries: I) -> Result<Self, ClockError>
    where
        I: IntoIterator<Item = (&'a str, u64)>,
    {
        let mut parsed = Vec::new();
        for (id, counter) in entries {
            let actor = ActorId::new(id)?;
            if counter == 0 {
                return Err(ClockError::ZeroCounter {
                    actor: id.to_owned(),
                });
            }
            parsed.push((actor, counter));
        }
        parsed.sort_by(|a, b| a.0.cmp(&b.0));
        if let Some(pair) = parsed.windows(2).find(|w| w[0].0 == w[1].0) {
            return Err(ClockError::DuplicateActor {
                actor: pair[0].0.to_string(),
            });
        }
        Ok(Self { entries: parsed })
    }

    /// Builds a vector from entries already known to be sorted, unique and non-zero.
    pub(crate) fn from_sorted_unchecked(entries: Vec<(ActorId, u64)>) -> Self {
        debug_assert!(entries.windows(2).all(|w| w[0].0 < w[1].0));
        debug_assert!(entries.iter().all(|(_, c)| *c > 0));
        Self { entries }
    }

    /// The counter for `actor` (0 when absent).
    pub fn get(&self, actor: &str) -> u64 {
        self.entries
            .binary_search_by(|(a, _)| a.as_str().cmp(actor))
            .map_or(0, |i| self.entries[i].1)
    }

    /// Whether this history includes the event `dot`.
    pub fn contains(&self, dot: &Dot) -> bool {
        self.get(dot.actor.as_str()) >= dot.counter
    }

    /// Whether this vector knows no events.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Number of actors with a non-zero counter.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// The `(actor, counter)` entries in actor order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&ActorId, u64)> + '_ {
        self.entries.iter().map(|(a, c)| (a, *c))
    }

    /// Raises this vector to include everything `other` knows (pointwise maximum).
    pub fn merge(&mut self, other: &VersionVector) {
        let mut merged = Vec::with_capacity(self.entries.len().max(other.entries.len()));
        let mut mine = std::mem::take(&mut self.entries).into_iter().peekable();
        let mut theirs = other.entries.iter().peekable();
        loop {
            match (mine.peek(), theirs.peek()) {
                (Some(a), Some(b)) => match a.0.cmp(&b.0) {
                    Ordering::Less => merged.extend(mine.next()),
                    Ordering::Greater => merged.extend(theirs.next().cloned()),
                    Ordering::Equal => {
                        let (actor, count) = mine.next().expect("peeked");
                        let theirs_count = theirs.next().expect("peeked").1;
                        merged.push((actor, count.max(theirs_count)));
                    }
                },
                (Some(_), None) => merged.extend(mine.by_ref()),
                (None, Some(_)) => merged.extend(theirs.by_ref().cloned()),
                (None, None) => break,
            }
        }
        self.entries = merged;
    }

    /// The causal relation of `self` to `other`. Does not allocate.
    ///
    /// ```
    /// use kv_clock::{Causality, VersionVector};
    /// let a = VersionVector::from_entries([("n1", 1)]).unwrap();
    /// let b = VersionVector::from_entries([("n1", 2)]).unwrap();
    /// let c = VersionVector::from_entries([("n2", 1)]).unwrap();
    /// assert_eq!(a.compare(&b), Causality::Before);
    /// assert_eq!(b.compare(&c), Causality::Concurrent);
    /// ```
    pub fn compare(&self, other: &VersionVector) -> Causality {
        compare_sorted(self.iter(), other.iter())
    }
}

/// Compares two histories given as `(actor, counter)` pairs sorted by actor, without
/// allocating. Shared by version vectors and DVVSets.
pub(crate) fn compare_sorted<'a, A, B>(left: A, right: B) -> Causality
where
    A: Iterator<Item = (&'a ActorId, u64)>,
    B: Iterator<Item = (&'a ActorId, u64)>,
{
    let mut left = left.peekable();
    let mut right = right.peekable();
    let (mut left_ahead, mut right_ahead) = (false, false);
    loop {
        match (left.peek(), right.peek()) {
            (Some(&(la, lc)), Some(&(ra, rc))) => match la.cmp(ra) {
                Ordering::Less => {
                    left_ahead = true;
                    left.next();
                }
                Ordering::Greater => {
                    right_ahead = true;
                    right.next();
                }
                Ordering::Equal => {
                    left_ahead |= lc > rc;
                    right_ahead |= rc > lc;
                    left.next();
                    right.next();
                }
            },
            (Some(_), None) => {
                left_ahead = true;
                break;
            }
            (None, Some(_)) => {
                right_ahead = true;
                break;
            }
            (None, None) => break,
        }
        if left_ahead && right_ahead {
            break;
        }
    }
    match (left_ahead, right_ahead) {
        (false, false) => Causality::Equal,
        (false, true) => Causality::Before,
        (true, false) => Causality::After,
        (true, true) => Causality::Concurrent,
    }
}
