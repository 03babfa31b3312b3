//! DVVSet: a compact set of concurrent values, each tagged by a dot, with one shared
//! causal history (Almeida, Baquero, Gonçalves, Preguiça, Fonte: "Scalable and Accurate
//! Causality Tracking for Eventually Consistent Stores", 2014).

use std::cmp::Ordering;

use crate::version_vector::compare_sorted;
use crate::{ActorId, Causality, Dot, VersionVector};

/// One actor's slice of a DVVSet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Entry<V> {
    pub(crate) actor: ActorId,
    /// Events of this actor that are known: dots `(actor, 1..=counter)`.
    pub(crate) counter: u64,
    /// Values still live, newest first: `values[k]` carries dot `(actor, counter - k)`.
    pub(crate) values: Vec<V>,
}

impl<V> Entry<V> {
    fn valid(&self) -> bool {
        self.counter >= 1 && self.values.len() as u64 <= self.counter
    }

    /// Lowest counter whose value was discarded: values exist only above this.
    fn floor(&self) -> u64 {
        self.counter - self.values.len() as u64
    }
}

/// A set of sibling values with their causal history: what a replica stores for one key.
///
/// Invariants: entries are sorted by actor with no repeats; each counter is at least 1;
/// an entry holds at most `counter` values. Every live value has a unique dot.
///
/// ```
/// use kv_clock::{ActorId, DvvSet, VersionVector};
/// let n1 = ActorId::new("n1").unwrap();
/// let mut stored = DvvSet::new();
/// // Two clients write blind through the same coordinator: both values survive.
/// stored.update(&VersionVector::new(), "A", &n1);
/// stored.update(&VersionVector::new(), "B", &n1);
/// assert_eq!(stored.values().count(), 2);
/// // A client that read both writes with their joint context: one value remains.
/// let context = stored.join();
/// stored.update(&context, "C", &n1);
/// assert_eq!(stored.values().collect::<Vec<_>>(), vec![&"C"]);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DvvSet<V> {
    pub(crate) entries: Vec<Entry<V>>,
}

impl<V> Default for DvvSet<V> {
    fn default() -> Self {
        Self {
            entries: Vec::new(),
        }
    }
}

impl<V: Clone> DvvSet<V> {
    /// An empty set: no history, no values.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records a write of `value`, coordinated by `actor`, by a client that had read
    /// `context`. Values the context covers are discarded (the client saw them and
    /// replaces them); the new value gets a fresh dot, which is returned.
    pub fn update(&mut self, context: &VersionVector, value: V, actor: &ActorId) -> Dot {
        self.discard_covered(context);
        let position = self.entries.binary_search_by(|e| e.actor.cmp(actor));
        let counter = match position {
            Ok(i) => {
                let entry = &mut self.entries[i];
                entry.counter += 1;
                entry.values.insert(0, value);
                entry.counter
            }
            Err(i) => {
                self.entries.insert(
                    i,
                    Entry {
                        actor: actor.clone(),
                        counter: 1,
                        values: vec![value],
                    },
                );
                1
            }
        };
        self.debug_check();
        Dot {
            actor: actor.clone(),
            counter,
        }
    }

    /// Merges what another replica holds into this one. Commutative, associative and
    /// idempotent; keeps exactly the values no known write has superseded.
    pub fn sync(&mut self, other: &DvvSet<V>) {
        let mut merged = Vec::with_capacity(self.entries.len().max(other.entries.len()));
        let mut mine = std::mem::take(&mut self.entries).into_iter().peekable();
        let mut theirs = other.entries.iter().peekable();
        loop {
            match (mine.peek(), theirs.peek()) {
                (Some(a), Some(b)) => match a.actor.cmp(&b.actor) {
                    Ordering::Less => merged.extend(mine.next()),
                    Ordering::Greater => merged.extend(theirs.next().cloned()),
                    Ordering::Equal => {
                        let a = mine.next().expect("peeked");
                        let b = theirs.next().expect("peeked");
                        merged.push(merge_entry(a, b));
                    }
                },
                (Some(_), None) => merged.extend(mine.by_ref()),
                (None, Some(_)) => merged.extend(theirs.by_ref().cloned()),
                (None, None) => break,
            }
        }
        self.entries = merged;
        self.debug_check();
    }

    /// Discards the values whose dots `context` covers, and raises the history to
    /// include `context`: the "sync with a value-less clock" step of an update.
    fn discard_covered(&mut self, context: &VersionVector) {
        for (actor, seen) in context.iter() {
            match self.entries.binary_search_by(|e| e.actor.cmp(actor)) {
                Ok(i) => {
                    let entry = &mut self.entries[i];
                    let unseen = entry.counter.saturating_sub(seen);
                    entry.values.truncate(unseen as usize);
                    entry.counter = entry.counter.max(seen);
                }
                Err(i) => self.entries.insert(
                    i,
                    Entry {
                        actor: actor.clone(),
                        counter: seen,
                        values: Vec::new(),
                    },
                ),
            }
        }
    }
}

impl<V> DvvSet<V> {
    /// The causal context of everything this set has seen: hand it to a client so its
    /// next write supersedes all current siblings.
    pub fn join(&self) -> VersionVector {
        VersionVector::from_sorted_unchecked(
            self.entries
                .iter()
                .map(|e| (e.actor.clone(), e.counter))
                .collect(),
        )
    }

    /// The live (sibling) values, newest first per actor.
    pub fn values(&self) -> impl Iterator<Item = &V> + '_ {
        self.entries.iter().flat_map(|e| e.values.iter())
    }

    /// The live values with their dots.
    pub fn siblings(&self) -> impl Iterator<Item = (Dot, &V)> + '_ {
        self.entries.iter().flat_map(|e| {
            e.values.iter().enumerate().map(move |(k, v)| {
                let dot = Dot {
                    actor: e.actor.clone(),
                    counter: e.counter - k as u64,
                };
                (dot, v)
            })
        })
    }

    /// Number of live values.
    pub fn sibling_count(&self) -> usize {
        self.entries.iter().map(|e| e.values.len()).sum()
    }

    /// Whether the set holds no history at all.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The causal relation of this set's history to another's. Does not allocate.
    pub fn compare(&self, other: &DvvSet<V>) -> Causality {
        compare_sorted(self.history(), other.history())
    }

    /// The relation of this set's history to a version vector. Does not allocate.
    pub fn compare_context(&self, context: &VersionVector) -> Causality {
        compare_sorted(self.history(), context.iter())
    }

    /// Applies `f` to every live value, keeping dots and history.
    pub fn map<W>(self, mut f: impl FnMut(V) -> W) -> DvvSet<W> {
        DvvSet {
            entries: self
                .entries
                .into_iter()
                .map(|e| Entry {
                    actor: e.actor,
                    counter: e.counter,
                    values: e.values.into_iter().map(&mut f).collect(),
                })
                .collect(),
        }
    }

    fn history(&self) -> impl Iterator<Item = (&ActorId, u64)> + '_ {
        self.entries.iter().map(|e| (&e.actor, e.counter))
    }

    pub(crate) fn is_well_formed(&self) -> bool {
        self.entries.iter().all(Entry::valid)
            && self.entries.windows(2).all(|w| w[0].actor < w[1].actor)
    }

    fn debug_check(&self) {
        debug_assert!(self.is_well_formed(), "DVVSet invariant broken");
    }
}

/// Merges one actor's entries from two replicas. Values at or below a side's floor were
/// discarded by that side because a write superseded them, so they stay discarded.
fn merge_entry<V: Clone>(mine: Entry<V>, theirs: &Entry<V>) -> Entry<V> {
    debug_assert_eq!(mine.actor, theirs.actor);
    if mine.counter >= theirs.counter {
        let keep = mine.counter - theirs.floor().max(mine.floor());
        let mut mine = mine;
        mine.values.truncate(keep as usize);
        mine
    } else {
        let keep = theirs.counter - mine.floor().max(theirs.floor());
        Entry {
            actor: mine.actor,
            counter: theirs.counter,
            values: theirs.values[..keep as usize].to_vec(),
        }
    }
}
