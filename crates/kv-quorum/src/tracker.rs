//! The quorum decision, separated from I/O so it can be tested exhaustively.

use thiserror::Error;

/// Where a quorum stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// Not enough answers yet, and success is still possible.
    Pending,
    /// At least `required` replicas succeeded.
    Reached,
    /// So many replicas failed that `required` successes can no longer happen.
    Impossible,
}

/// The quorum parameters were invalid.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum QuorumError {
    /// `required` was 0 or above the number of replicas.
    #[error("quorum of {required} is outside 1..={total} for {total} replicas")]
    OutOfRange {
        /// Requested quorum.
        required: usize,
        /// Replicas available.
        total: usize,
    },
    /// A group names a replica beyond those asked.
    #[error("a quorum group names replica {replica}, but only {replicas} are asked")]
    UnknownReplica {
        /// The index named.
        replica: usize,
        /// Replicas asked.
        replicas: usize,
    },
    /// A replica asked belongs to no group (or there is no group at all).
    #[error("every replica asked must count toward some quorum group")]
    UngroupedReplica,
}

/// Counts successes and failures among `total` replicas against a quorum of `required`.
///
/// Once decided, the decision never changes: further answers are still counted (they are
/// useful to callers) but the first decision stands.
#[derive(Debug, Clone)]
pub struct QuorumTracker {
    required: usize,
    total: usize,
    successes: usize,
    failures: usize,
    decided: Option<Progress>,
}

impl QuorumTracker {
    /// A tracker needing `required` successes out of `total` replicas.
    pub fn new(required: usize, total: usize) -> Result<Self, QuorumError> {
        if required == 0 || required > total {
            return Err(QuorumError::OutOfRange { required, total });
        }
        Ok(Self {
            required,
            total,
            successes: 0,
            failures: 0,
            decided: None,
        })
    }

    /// Records one replica's success.
    pub fn record_success(&mut self) -> Progress {
        self.successes += 1;
        self.settle()
    }

    /// Records one replica's failure.
    pub fn record_failure(&mut self) -> Progress {
        self.failures += 1;
        self.settle()
    }

    fn settle(&mut self) -> Progress {
        debug_assert!(
            self.successes + self.failures <= self.total,
            "more answers than replicas"
        );
        if self.decided.is_none() {
            if self.successes >= self.required {
                self.decided = Some(Progress::Reached);
            } else if self.failures > self.total - self.required {
                self.decided = Some(Progress::Impossible);
            }
        }
        self.progress()
    }

    /// The decision so far.
    pub fn progress(&self) -> Progress {
        self.decided.unwrap_or(Progress::Pending)
    }

    /// Successes recorded.
    pub fn successes(&self) -> usize {
        self.successes
    }

    /// Failures recorded.
    pub fn failures(&self) -> usize {
        self.failures
    }

    /// Successes needed.
    pub fn required(&self) -> usize {
        self.required
    }

    /// Replicas asked.
    pub fn total(&self) -> usize {
        self.total
    }

    /// Replicas that have not answered.
    pub fn outstanding(&self) -> usize {
        self.total - self.successes - self.failures
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_order_of_answers_decides_correctly() {
        for total in 1..=7usize {
            for required in 1..=total {
                for mask in 0u32..(1 << total) {
                    let mut tracker = QuorumTracker::new(required, total).unwrap();
                    let (mut ok, mut failed) = (0, 0);
                    for bit in 0..total {
                        let progress = if mask & (1 << bit) != 0 {
                            ok += 1;
                            tracker.record_success()
                        } else {
                            failed += 1;
                            tracker.record_failure()
                        };
                        match progress {
                            Progress::Reached => assert!(ok >= required),
                            Progress::Impossible => {
                                assert!(failed > total - required && ok < required)
                            }
                            Progress::Pending => {
                                assert!(ok < required && failed <= total - required)
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn out_of_range_quorums_are_rejected() {
        assert!(QuorumTracker::new(0, 3).is_err());
        assert!(QuorumTracker::new(4, 3).is_err());
        assert!(QuorumTracker::new(3, 3).is_ok());
    }
}
