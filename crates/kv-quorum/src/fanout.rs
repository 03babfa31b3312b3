//! `Fanout`: runs one call per replica on tokio and reports as soon as the quorum is
//! decided, without cancelling the calls still in flight.

use std::future::Future;

use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::{Progress, QuorumError, QuorumTracker};

/// One replica's answer. `replica` is the call's index in the order calls were given.
#[derive(Debug)]
pub struct Reply<T, E> {
    /// Index of the replica's call.
    pub replica: usize,
    /// What it answered.
    pub result: Result<T, E>,
}

/// How waiting for a quorum ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Enough replicas succeeded.
    Reached,
    /// Too many replicas failed for the quorum to be reached.
    Impossible,
    /// The deadline passed first.
    DeadlineExceeded,
}

/// Calls in flight to a set of replicas, with their answers so far.
///
/// Dropping a `Fanout` aborts the calls still running; call [`Fanout::finish`] (typically
/// in a spawned task) to let them complete and collect their late replies.
#[derive(Debug)]
pub struct Fanout<T, E> {
    calls: JoinSet<Reply<T, E>>,
    tracker: QuorumTracker,
    replies: Vec<Reply<T, E>>,
}

impl<T: Send + 'static, E: Send + 'static> Fanout<T, E> {
    /// Starts `calls` (one per replica, all counted toward the quorum plus any answers
    /// added with [`Fanout::record`]) needing `required` successes out of `total` answers.
    pub fn start<F>(
        calls: impl IntoIterator<Item = (usize, F)>,
        required: usize,
        total: usize,
    ) -> Result<Self, QuorumError>
    where
        F: Future<Output = Result<T, E>> + Send + 'static,
    {
        let tracker = QuorumTracker::new(required, total)?;
        let mut set = JoinSet::new();
        let mut started = 0;
        for (replica, call) in calls {
            started += 1;
            set.spawn(async move {
                Reply {
                    replica,
                    result: call.await,
                }
            });
        }
        debug_assert!(started <= total, "more calls than replicas");
        Ok(Self {
            calls: set,
            tracker,
            replies: Vec::with_capacity(total),
        })
    }

    /// Adds an answer obtained without a call (e.g. the coordinator's own local write).
    pub fn record(&mut self, reply: Reply<T, E>) -> Progress {
        let progress = match reply.result {
            Ok(_) => self.tracker.record_success(),
            Err(_) => self.tracker.record_failure(),
        };
        self.replies.push(reply);
        progress
    }

    /// Waits until the quorum is reached or impossible, or `deadline` passes.
    pub async fn wait(&mut self, deadline: Instant) -> Outcome {
        loop {
            match self.tracker.progress() {
                Progress::Reached => return Outcome::Reached,
                Progress::Impossible => return Outcome::Impossible,
                Progress::Pending => {}
            }
            match tokio::time::timeout_at(deadline, self.calls.join_next()).await {
                Err(_elapsed) => return Outcome::DeadlineExceeded,
                Ok(None) => return Outcome::Impossible, // no calls left and still pending
                Ok(Some(joined)) => {
                    if let Ok(reply) = joined {
                        self.record(reply);
                    } else {
                        // The call panicked or was aborted: that replica failed.
                        self.tracker.record_failure();
                    }
                }
            }
        }
    }

    /// Answers received so far, in arrival order.
    pub fn replies(&self) -> &[Reply<T, E>] {
        &self.replies
    }

    /// The quorum counts so far.
    pub fn tracker(&self) -> &QuorumTracker {
        &self.tracker
    }

    /// Lets the remaining calls finish (until `deadline`) and returns every answer,
    /// early and late. Calls still running at the deadline are aborted.
    pub async fn finish(mut self, deadline: Instant) -> Vec<Reply<T, E>> {
        while !self.calls.is_empty() {
            match tokio::time::timeout_at(deadline, self.calls.join_next()).await {
                Ok(Some(Ok(reply))) => self.replies.push(reply),
                Ok(Some(Err(_))) => {}
                Ok(None) | Err(_) => break,
            }
        }
        self.calls.abort_all();
        self.replies
    }
}
