//! `Fanout`: runs one call per replica on tokio and reports as soon as the quorum is
//! decided, without cancelling the calls still in flight.

use std::future::Future;

use tokio::task::JoinSet;
use tokio::time::Instant;

use std::collections::HashMap;

use tokio::task::Id;

use crate::{GroupQuorum, Progress, QuorumError};

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
    /// Which replica each running call is for (a call that panics still counts).
    call_replica: HashMap<Id, usize>,
    quorum: GroupQuorum,
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
        Ok(Self::start_grouped(
            calls,
            GroupQuorum::single(required, total)?,
        ))
    }

    /// Starts `calls` (replica indices below `quorum.replicas()`) and waits on `quorum`:
    /// every group must reach its own count of successes.
    pub fn start_grouped<F>(
        calls: impl IntoIterator<Item = (usize, F)>,
        quorum: GroupQuorum,
    ) -> Self
    where
        F: Future<Output = Result<T, E>> + Send + 'static,
    {
        let mut set = JoinSet::new();
        let mut call_replica = HashMap::new();
        for (replica, call) in calls {
            debug_assert!(replica < quorum.replicas(), "a call for an unknown replica");
            let handle = set.spawn(async move {
                Reply {
                    replica,
                    result: call.await,
                }
            });
            call_replica.insert(handle.id(), replica);
        }
        Self {
            calls: set,
            call_replica,
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

    /// Waits until the quorum is reached or impossible, or `deadline` passes.
    pub async fn wait(&mut self, deadline: Instant) -> Outcome {
        loop {
            match self.quorum.progress() {
                Progress::Reached => return Outcome::Reached,
                Progress::Impossible => return Outcome::Impossible,
                Progress::Pending => {}
            }
            match tokio::time::timeout_at(deadline, self.calls.join_next_with_id()).await {
                Err(_elapsed) => return Outcome::DeadlineExceeded,
                Ok(None) => return Outcome::Impossible, // no calls left and still pending
                Ok(Some(Ok((id, reply)))) => {
                    self.call_replica.remove(&id);
                    self.record(reply);
                }
                Ok(Some(Err(error))) => {
                    // The call panicked or was aborted: that replica failed.
                    if let Some(replica) = self.call_replica.remove(&error.id()) {
                        self.quorum.record(replica, false);
                    }
                }
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
