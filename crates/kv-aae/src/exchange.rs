//! `Exchange`: the comparison of some ranges between two replicas, level by level, as a
//! plain state machine. It says what to ask next ([`Step`]): digests of a batch of ranges,
//! or the key list of one small range. The caller computes the same thing locally, asks
//! the peer, and feeds both answers back. Equal digests end a range; a differing range is
//! split into at most `fanout` aligned pieces, until it holds few enough keys to list, and
//! the two key lists name exactly the keys that differ. The work, and so the bandwidth,
//! follows the differences, not the size of the ranges.

use std::collections::VecDeque;

use thiserror::Error;

use crate::range::HashRange;
use crate::tree::Digest;

/// Bounds on one exchange's messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExchangeLimits {
    /// Ranges whose digests one request asks for.
    pub ranges_per_request: usize,
    /// Keys one key list may hold when both sides hold keys in the range; a differing
    /// range with more is split instead.
    pub keys_per_list: usize,
    /// Keys one key list may hold when only one side holds keys in the range (every key
    /// differs, so nothing is gained by splitting finer).
    pub keys_per_page: usize,
    /// Pieces a differing range is split into (at least 2).
    pub fanout: usize,
}

impl Default for ExchangeLimits {
    fn default() -> Self {
        Self {
            ranges_per_request: 64,
            keys_per_list: 256,
            keys_per_page: 1024,
            fanout: 16,
        }
    }
}

/// What to compare next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step<K> {
    /// Compute these ranges' digests locally and ask the peer for its.
    Digests(Vec<HashRange>),
    /// List the keys of `range` (after `after`, if given) with their fingerprints locally
    /// and ask the peer for its list: at most `limit` each, in ascending key order within
    /// a position, saying whether a list was cut short. A side whose digest counted no key
    /// in the range need not be asked: its list is empty and complete.
    Keys {
        /// The range.
        range: HashRange,
        /// Only keys greater than this one (a later page of a single crowded position).
        after: Option<K>,
        /// Most keys per list.
        limit: usize,
        /// Keys this side's digest counted in the range.
        local_count: u64,
        /// Keys the peer's digest counted in the range.
        remote_count: u64,
    },
    /// Every range is compared.
    Done,
}

/// Counts of one exchange's work.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExchangeStats {
    /// Digest requests made.
    pub digest_requests: u64,
    /// Ranges whose digests were compared.
    pub ranges_compared: u64,
    /// Of those, ranges that differed.
    pub ranges_differing: u64,
    /// Key lists compared.
    pub key_lists: u64,
    /// Keys listed on either side.
    pub keys_listed: u64,
    /// Keys found to differ.
    pub keys_differing: u64,
}

/// An answer that does not fit the step it answers.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ExchangeError {
    /// Answers arrived for no step, or for another kind of step.
    #[error("an answer arrived for no pending {0} step")]
    Unexpected(&'static str),
    /// The number of digests does not match the ranges asked for.
    #[error("{got} digests answered {asked} ranges")]
    DigestCount {
        /// Ranges asked for.
        asked: usize,
        /// Digests received.
        got: usize,
    },
    /// A list cut short is empty (a list that stops must hold at least one key).
    #[error("a key list was cut short without holding any key")]
    EmptyPage,
}

/// Which keys differ between the two sides of one key list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyDiff<K> {
    /// Keys only this side holds.
    pub only_local: Vec<K>,
    /// Keys only the peer holds.
    pub only_remote: Vec<K>,
    /// Keys both hold with different fingerprints.
    pub differing: Vec<K>,
}

impl<K> Default for KeyDiff<K> {
    fn default() -> Self {
        Self {
            only_local: Vec::new(),
            only_remote: Vec::new(),
            differing: Vec::new(),
        }
    }
}

impl<K> KeyDiff<K> {
    /// Number of keys that differ in any way.
    pub fn len(&self) -> usize {
        self.only_local.len() + self.only_remote.len() + self.differing.len()
    }

    /// Whether both sides agree.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Compares `local` and `remote` key lists (key, fingerprint), in any order.
pub fn diff_keys<K: Ord>(mut local: Vec<(K, u64)>, mut remote: Vec<(K, u64)>) -> KeyDiff<K> {
    local.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    remote.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    let mut diff = KeyDiff::default();
    let mut remote = remote.into_iter().peekable();
    for (key, fingerprint) in local {
        while remote.peek().is_some_and(|(r, _)| *r < key) {
            diff.only_remote.push(remote.next().expect("peeked").0);
        }
        match remote.peek() {
            Some((r, f)) if *r == key => {
                if *f != fingerprint {
                    diff.differing.push(key);
                }
                remote.next();
            }
            _ => diff.only_local.push(key),
        }
    }
    diff.only_remote.extend(remote.map(|(k, _)| k));
    diff
}

/// A range to list: where, from which key, how many per list, and the counts the
/// digests found on each side.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Listing<K> {
    range: HashRange,
    after: Option<K>,
    limit: usize,
    counts: (u64, u64),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Pending<K> {
    Nothing,
    Digests(Vec<HashRange>),
    Keys(Listing<K>),
}

/// One comparison of ranges with one peer; `K` is the key type.
#[derive(Debug, Clone)]
pub struct Exchange<K> {
    limits: ExchangeLimits,
    to_digest: VecDeque<HashRange>,
    to_list: VecDeque<Listing<K>>,
    pending: Pending<K>,
    stats: ExchangeStats,
}

impl<K: Ord + Clone> Exchange<K> {
    /// An exchange of `ranges` within `limits`.
    pub fn new(ranges: impl IntoIterator<Item = HashRange>, limits: ExchangeLimits) -> Self {
        assert!(
            limits.fanout >= 2,
            "a range must split into at least two pieces"
        );
        assert!(limits.ranges_per_request >= 1 && limits.keys_per_list >= 1);
        Self {
            limits,
            to_digest: ranges.into_iter().collect(),
            to_list: VecDeque::new(),
            pending: Pending::Nothing,
            stats: ExchangeStats::default(),
        }
    }

    /// What this exchange did so far.
    pub fn stats(&self) -> ExchangeStats {
        self.stats
    }

    /// The next comparison to make. Key lists come first, so the ranges in waiting stay
    /// few; a step's answers must be fed back before the next step is taken.
    pub fn next_step(&mut self) -> Step<K> {
        debug_assert!(
            matches!(self.pending, Pending::Nothing),
            "the previous step is unanswered"
        );
        if let Some(listing) = self.to_list.pop_front() {
            let step = Step::Keys {
                range: listing.range,
                after: listing.after.clone(),
                limit: listing.limit,
                local_count: listing.counts.0,
                remote_count: listing.counts.1,
            };
            self.pending = Pending::Keys(listing);
            return step;
        }
        if self.to_digest.is_empty() {
            return Step::Done;
        }
        let count = self.to_digest.len().min(self.limits.ranges_per_request);
        let batch: Vec<HashRange> = self.to_digest.drain(..count).collect();
        self.stats.digest_requests += 1;
        self.pending = Pending::Digests(batch.clone());
        Step::Digests(batch)
    }

    /// Feeds the digests of the pending [`Step::Digests`], in the same order.
    pub fn digests(&mut self, local: &[Digest], remote: &[Digest]) -> Result<(), ExchangeError> {
        let Pending::Digests(ranges) = std::mem::replace(&mut self.pending, Pending::Nothing)
        else {
            return Err(ExchangeError::Unexpected("digests"));
        };
        for got in [local.len(), remote.len()] {
            if got != ranges.len() {
                return Err(ExchangeError::DigestCount {
                    asked: ranges.len(),
                    got,
                });
            }
        }
        for ((range, mine), theirs) in ranges.into_iter().zip(local).zip(remote) {
            self.stats.ranges_compared += 1;
            if mine == theirs {
                continue;
            }
            self.stats.ranges_differing += 1;
            let most = mine.count.max(theirs.count);
            let one_sided = mine.count.min(theirs.count) == 0;
            let limit = if one_sided {
                self.limits.keys_per_page
            } else {
                self.limits.keys_per_list
            };
            if most <= limit as u64 || range.len() == 1 {
                self.to_list.push_back(Listing {
                    range,
                    after: None,
                    limit,
                    counts: (mine.count, theirs.count),
                });
            } else {
                self.to_digest.extend(split(range, self.limits.fanout));
            }
        }
        Ok(())
    }

    /// Feeds the key lists of the pending [`Step::Keys`]; `*_complete` says whether a
    /// list holds every key asked for (not cut short at `keys_per_list`). A range of many
    /// positions whose list was cut short goes back to be split and yields no differences
    /// yet; a single crowded position is paged instead: the keys up to the last one both
    /// lists surely cover are compared now, the rest on the next page.
    pub fn keys(
        &mut self,
        local: Vec<(K, u64)>,
        local_complete: bool,
        remote: Vec<(K, u64)>,
        remote_complete: bool,
    ) -> Result<KeyDiff<K>, ExchangeError> {
        let Pending::Keys(listing) = std::mem::replace(&mut self.pending, Pending::Nothing) else {
            return Err(ExchangeError::Unexpected("keys"));
        };
        let range = listing.range;
        if local_complete && remote_complete {
            return Ok(self.compare(local, remote));
        }
        if range.len() > 1 {
            self.to_digest.extend(split(range, self.limits.fanout));
            return Ok(KeyDiff::default());
        }
        let cut = [(&local, local_complete), (&remote, remote_complete)]
            .into_iter()
            .filter(|(_, complete)| !complete)
            .map(|(list, _)| list.iter().map(|(k, _)| k).max().cloned())
            .collect::<Option<Vec<K>>>()
            .and_then(|lasts| lasts.into_iter().min())
            .ok_or(ExchangeError::EmptyPage)?;
        let within = |list: Vec<(K, u64)>| -> Vec<(K, u64)> {
            list.into_iter().filter(|(k, _)| *k <= cut).collect()
        };
        let diff = self.compare(within(local), within(remote));
        self.to_list.push_front(Listing {
            after: Some(cut),
            ..listing
        });
        Ok(diff)
    }

    fn compare(&mut self, local: Vec<(K, u64)>, remote: Vec<(K, u64)>) -> KeyDiff<K> {
        self.stats.key_lists += 1;
        self.stats.keys_listed += (local.len() + remote.len()) as u64;
        let diff = diff_keys(local, remote);
        self.stats.keys_differing += diff.len() as u64;
        diff
    }
}

/// Splits `range` into at most `fanout` pieces aligned to the largest power-of-two block
/// size that allows it (so the pieces fall on whole tree leaves whenever they can), and
/// that cover the range exactly. A range of more than one position always yields at
/// least two pieces.
pub fn split(range: HashRange, fanout: usize) -> Vec<HashRange> {
    debug_assert!(fanout >= 2 && range.len() > 1);
    let first = u128::from(range.first());
    let last = u128::from(range.last());
    let blocks = |size: u128| (last / size - first / size + 1) as usize;
    // The smallest power-of-two block size that cuts the range into at most `fanout`
    // pieces; smaller blocks give more, finer pieces.
    let mut size = 1u128 << 64;
    while size > 1 && blocks(size / 2) <= fanout {
        size /= 2;
    }
    // Halving a block at most doubles the pieces, so the loop stops at two or more.
    debug_assert!(blocks(size) >= 2);
    let mut pieces = Vec::with_capacity(blocks(size));
    let mut start = first;
    while start <= last {
        let block_end = (start / size + 1) * size - 1;
        let end = block_end.min(last);
        pieces.push(HashRange::new(start as u64, end as u64).expect("ordered"));
        start = end + 1;
    }
    pieces
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_lists_name_exactly_the_differing_keys() {
        let local = vec![("a", 1), ("c", 3), ("d", 4)];
        let remote = vec![("d", 5), ("b", 2), ("a", 1)];
        let diff = diff_keys(local, remote);
        assert_eq!(diff.only_local, ["c"]);
        assert_eq!(diff.only_remote, ["b"]);
        assert_eq!(diff.differing, ["d"]);
    }

    #[test]
    fn splits_cover_the_range_in_aligned_pieces() {
        let range = HashRange::new(10, 1000).unwrap();
        let pieces = split(range, 16);
        assert!(pieces.len() >= 2 && pieces.len() <= 16, "{pieces:?}");
        assert_eq!(pieces[0].first(), 10);
        assert_eq!(pieces.last().unwrap().last(), 1000);
        for pair in pieces.windows(2) {
            assert_eq!(pair[0].last() + 1, pair[1].first());
        }
        let full = split(HashRange::FULL, 16);
        assert_eq!(full.len(), 16);
        assert_eq!(full[1].first(), 1 << 60);
        assert_eq!(split(HashRange::new(4, 5).unwrap(), 16).len(), 2);
    }

    #[test]
    fn answers_must_fit_their_step() {
        let mut exchange: Exchange<u8> =
            Exchange::new([HashRange::FULL], ExchangeLimits::default());
        assert_eq!(
            exchange.digests(&[], &[]),
            Err(ExchangeError::Unexpected("digests"))
        );
        assert_eq!(exchange.next_step(), Step::Digests(vec![HashRange::FULL]));
        assert_eq!(
            exchange.digests(&[Digest::EMPTY], &[]),
            Err(ExchangeError::DigestCount { asked: 1, got: 0 })
        );
    }
}
