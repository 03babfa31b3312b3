//! `Fanout`: runs one call per replica and reports as soon as the quorum is decided,
//! without cancelling the calls still in flight.
//!
//! The calls are polled inside the caller's task (no task per call: under load the
//! spawns, and the moves of each call's future into its task, were a visible share of a
//! node's CPU). They therefore make progress only while someone polls the fanout:
//! [`Fanout::wait`] until the quorum is decided, then [`Fanout::finish`] for the late
//! replies. A call that panics counts as a failure of its replica.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;

use futures_util::FutureExt;
use futures_util::stream::{FuturesUnordered, StreamExt};
use tokio::time::Instant;

use crate::{GroupQuorum, Progress, QuorumError};

/// A call and the replica it is for; `None` as the result if it panicked.
type Call<T, E> = Pin<Box<dyn Future<Output = (usize, Option<Result<T, E>>)> + Send>>;

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
/// Dropping a `Fanout` drops the calls still running; call [`Fanout::finish`] (typically
/// in a spawned task) to let them complete and collect their late replies.
pub struct Fanout<T, E> {
    calls: FuturesUnordered<Call<T, E>>,
    quorum: GroupQuorum,
    replies: Vec<Reply<T, E>>,
}

impl<T, E> std::fmt::Debug for Fanout<T, E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fanout")
            .field("pending", &self.calls.len())
            .field("replies", &self.replies.len())
            .finish_non_exhaustive()
    }
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
        Ok(Self::start_grouped(
            calls,
            GroupQuorum::single(required, total)?,
        ))
    }

    /// Starts `calls` (replica indices below `quorum.replicas()`) and waits on `quorum`:
    /// every group must reach its own count of successes. The calls run once the fanout
    /// is first polled.
    pub fn start_grouped<F>(
        calls: impl IntoIterator<Item = (usize, F)>,
        quorum: GroupQuorum,
    ) -> Self
    where
        F: Future<Output = Result<T, E>> + Send + 'static,
    {
        let calls = calls
            .into_iter()
            .map(|(replica, call)| {
                debug_assert!(replica < quorum.replicas(), "a call for an unknown replica");
                let call: Call<T, E> = Box::pin(
                    AssertUnwindSafe(call)
                        .catch_unwind()
                        .map(move |outcome| (replica, outcome.ok())),
                );
                call
            })
            .collect();
        Self {
            calls,
            replies: Vec::with_capacity(quorum.replicas()),
            quorum,
        }
    }

    /// Adds an answer obtained without a call (e.g. the coordinator's own local write).
    pub fn record(&mut self, reply: Reply<T, E>) -> Progress {
        let progress = self.quorum.record(reply.replica, reply.result.is_ok());
        self.replies.push(reply);
        progress
    }

    /// Records a finished call: its reply, or a failure of its replica if it panicked.
    fn absorb(&mut self, (replica, result): (usize, Option<Result<T, E>>)) {
        match result {
            Some(result) => {
                self.record(Reply { replica, result });
            }
            None => {
                self.quorum.record(replica, false);
            }
        }
    }

    /// Waits until the quorum is reached or impossible, or `deadline` passes.
    pub async fn wait(&mut self, deadline: Instant) -> Outcome {
        loop {
            match self.quorum.progress() {
                Progress::Reached => return Outcome::Reached,
                Progress::Impossible => return Outcome::Impossible,
                Progress::Pending => {}
            }
            match tokio::time::timeout_at(deadline, self.calls.next()).await {
                Err(_elapsed) => return Outcome::DeadlineExceeded,
                Ok(None) => return Outcome::Impossible, // no calls left and still pending
                Ok(Some(finished)) => self.absorb(finished),
            }
        }
    }

    /// Answers received so far, in arrival order.
    pub fn replies(&self) -> &[Reply<T, E>] {
        &self.replies
    }

    /// Calls still running.
    pub fn pending(&self) -> usize {
        self.calls.len()
    }

    /// The quorum counts so far.
    pub fn quorum(&self) -> &GroupQuorum {
        &self.quorum
    }

    /// Lets the remaining calls finish (until `deadline`) and returns every answer,
    /// early and late. Calls still running at the deadline are dropped.
    pub async fn finish(mut self, deadline: Instant) -> Vec<Reply<T, E>> {
        while !self.calls.is_empty() {
            match tokio::time::timeout_at(deadline, self.calls.next()).await {
                Ok(Some(finished)) => self.absorb(finished),
                Ok(None) | Err(_) => break,
            }
        }
        self.replies
    }
}
