//! Group commit for `Durability::Sync`: one syncer thread per store fdatasyncs the
//! journal while writes keep arriving, and every write waiting when a sync starts is
//! covered by it.
//!
//! A writer inserts its record, then takes a ticket. The ticket is numbered after the
//! insert, so any sync that starts once the ticket exists covers the record. The writer
//! then waits for a sync covering its ticket, either as a future ([`Durable`], woken by
//! the syncer, no thread of its own) or by blocking. A failed sync leaves the journal in
//! an unknown state (the kernel may have dropped the unwritten pages), so it fails every
//! write it covered and every later one: the store refuses durable writes until reopened.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};
use std::thread::JoinHandle;

use crate::StorageError;

#[derive(Debug, Default)]
struct State {
    /// Tickets handed out.
    issued: u64,
    /// Every ticket up to this one is durable.
    synced: u64,
    /// Why a sync failed; once set, no ticket after `synced` ever becomes durable.
    failed: Option<Arc<str>>,
    /// Futures waiting for a ticket beyond `synced`, as (ticket, waiter id, waker);
    /// woken and dropped by the sync that covers them.
    wakers: Vec<(u64, u64, Waker)>,
    /// The id of the next future to leave a waker.
    next_waiter: u64,
    /// The store is closing: the syncer finishes what was issued, then exits.
    closing: bool,
}

impl State {
    fn outcome(&self, ticket: u64) -> Option<Result<(), StorageError>> {
        if ticket <= self.synced {
            return Some(Ok(()));
        }
        self.failed.as_ref().map(|why| Err(sync_failed(why)))
    }
}

/// The shared state of one store's group commit.
#[derive(Debug, Default)]
struct Shared {
    state: Mutex<State>,
    /// Signalled when a ticket is issued or the store closes (the syncer waits on it).
    work: Condvar,
    /// Signalled after every sync (blocking waiters wait on it).
    finished: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// One store's group commit: the syncer thread and the tickets it covers.
#[derive(Debug)]
pub(crate) struct GroupSync {
    shared: Arc<Shared>,
    syncer: Option<JoinHandle<()>>,
}

impl GroupSync {
    /// Starts the syncer thread; `sync` makes every record written so far durable.
    pub(crate) fn start(
        sync: impl Fn() -> Result<(), StorageError> + Send + 'static,
    ) -> Result<Self, StorageError> {
        let shared = Arc::new(Shared::default());
        let syncer = std::thread::Builder::new()
            .name("kv-storage-sync".into())
            .spawn({
                let shared = Arc::clone(&shared);
                move || run_syncer(&shared, &sync)
            })
            .map_err(|e| StorageError::Engine {
                action: "starting the journal's sync thread",
                source: Box::new(e),
            })?;
        Ok(Self {
            shared,
            syncer: Some(syncer),
        })
    }

    /// A ticket for a record already written (but not yet synced).
    pub(crate) fn ticket(&self) -> Durable {
        let ticket = {
            let mut state = self.shared.lock();
            state.issued += 1;
            state.issued
        };
        self.shared.work.notify_one();
        Durable(Some(Waiting {
            shared: Arc::clone(&self.shared),
            ticket,
            waiter: None,
        }))
    }

    /// Waits for every record written so far: for a caller that read a record which may
    /// not be durable yet. Already durable when no sync is pending.
    pub(crate) fn written_so_far(&self) -> Durable {
        let state = self.shared.lock();
        if state.issued == state.synced {
            return Durable::now();
        }
        Durable(Some(Waiting {
            shared: Arc::clone(&self.shared),
            ticket: state.issued,
            waiter: None,
        }))
    }
}

impl Drop for GroupSync {
    fn drop(&mut self) {
        self.shared.lock().closing = true;
        self.shared.work.notify_one();
        if let Some(syncer) = self.syncer.take() {
            let _ = syncer.join();
        }
    }
}

/// The syncer: whenever tickets wait, one sync for all of them; writes that arrive during
/// a sync wait for the next one (that is the group).
fn run_syncer(shared: &Shared, sync: &dyn Fn() -> Result<(), StorageError>) {
    let mut state = shared.lock();
    loop {
        let pending = state.issued > state.synced && state.failed.is_none();
        if !pending {
            if state.closing {
                return;
            }
            state = shared
                .work
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
            continue;
        }
        let covers = state.issued;
        drop(state);
        let outcome = sync();
        state = shared.lock();
        match outcome {
            Ok(()) => {
                debug_assert!(covers > state.synced, "a sync must cover new tickets");
                state.synced = covers;
            }
            Err(error) => state.failed = Some(error.to_string().into()),
        }
        let synced = state.synced;
        let all = state.failed.is_some();
        let (ready, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut state.wakers)
            .into_iter()
            .partition(|(ticket, _, _)| all || *ticket <= synced);
        state.wakers = waiting;
        shared.finished.notify_all();
        drop(state);
        for (_, _, waker) in ready {
            waker.wake();
        }
        state = shared.lock();
    }
}

fn sync_failed(why: &str) -> StorageError {
    StorageError::Engine {
        action: "syncing the journal (durable writes are refused until the store is reopened)",
        source: why.to_owned().into(),
    }
}

/// What remains before a write is durable: nothing (already durable), or a sync of the
/// journal. Await it, or [`wait`](Durable::wait) on a thread that may block. A caller
/// must not acknowledge the write, nor send a version it minted to another node, before
/// it completes.
#[derive(Debug)]
#[must_use = "a write is not durable until its Durable completes"]
pub struct Durable(Option<Waiting>);

#[derive(Debug)]
struct Waiting {
    shared: Arc<Shared>,
    ticket: u64,
    /// The id under which a waker was left with the syncer (a later poll replaces it).
    waiter: Option<u64>,
}

impl Durable {
    /// A write that is durable already (an engine without a journal to sync, or one
    /// that synced it itself).
    pub fn now() -> Self {
        Self(None)
    }

    /// Whether the write is durable already (nothing left to wait for).
    pub fn is_done(&self) -> bool {
        self.0.is_none()
    }

    /// Blocks this thread until the write is durable.
    pub fn wait(self) -> Result<(), StorageError> {
        let Some(waiting) = self.0 else {
            return Ok(());
        };
        let mut state = waiting.shared.lock();
        loop {
            if let Some(outcome) = state.outcome(waiting.ticket) {
                return outcome;
            }
            state = waiting
                .shared
                .finished
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }
}

impl Future for Durable {
    type Output = Result<(), StorageError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let Some(waiting) = &mut self.get_mut().0 else {
            return Poll::Ready(Ok(()));
        };
        let mut state = waiting.shared.lock();
        if let Some(outcome) = state.outcome(waiting.ticket) {
            return Poll::Ready(outcome);
        }
        let waker = cx.waker();
        let left = waiting
            .waiter
            .and_then(|id| state.wakers.iter_mut().find(|(_, w, _)| *w == id));
        if let Some((_, _, stored)) = left {
            stored.clone_from(waker);
        } else {
            let id = state.next_waiter;
            state.next_waiter += 1;
            state.wakers.push((waiting.ticket, id, waker.clone()));
            waiting.waiter = Some(id);
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::time::Duration;

    use super::GroupSync;
    use crate::StorageError;

    fn counting(syncs: &Arc<AtomicU64>, pause: Duration) -> GroupSync {
        let syncs = Arc::clone(syncs);
        GroupSync::start(move || {
            syncs.fetch_add(1, Ordering::SeqCst);
            std::thread::sleep(pause);
            Ok(())
        })
        .unwrap()
    }

    #[test]
    fn concurrent_blocking_writers_all_become_durable() {
        let syncs = Arc::new(AtomicU64::new(0));
        let group = Arc::new(counting(&syncs, Duration::from_micros(200)));
        let writers: Vec<_> = (0..16)
            .map(|_| {
                let group = Arc::clone(&group);
                std::thread::spawn(move || {
                    for _ in 0..50 {
                        group.ticket().wait().unwrap();
                    }
                })
            })
            .collect();
        for writer in writers {
            writer.join().unwrap();
        }
        assert_eq!(
            group.shared.lock().synced,
            800,
            "every ticket ends up durable"
        );
    }

    #[test]
    fn futures_issued_during_a_sync_share_the_next_one() {
        let syncs = Arc::new(AtomicU64::new(0));
        let (entered, release) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicBool::new(false)),
        );
        let group = {
            let (syncs, entered, release) = (
                Arc::clone(&syncs),
                Arc::clone(&entered),
                Arc::clone(&release),
            );
            GroupSync::start(move || {
                entered.store(true, Ordering::SeqCst);
                // The first sync holds until the test lets it go.
                while !release.load(Ordering::SeqCst) {
                    std::thread::yield_now();
                }
                syncs.fetch_add(1, Ordering::SeqCst);
                Ok(())
            })
            .unwrap()
        };
        let mut waits = vec![group.ticket()];
        while !entered.load(Ordering::SeqCst) {
            std::thread::yield_now();
        }
        waits.extend((0..3).map(|_| group.ticket()));
        release.store(true, Ordering::SeqCst);
        let results = block_on_all(waits);
        assert!(results.iter().all(Result::is_ok));
        assert_eq!(
            syncs.load(Ordering::SeqCst),
            2,
            "the first write's sync, then one for the three issued while it ran"
        );
        assert_eq!(group.shared.lock().synced, 4);
    }

    #[test]
    fn a_failed_sync_fails_its_writes_and_every_later_one() {
        let group = GroupSync::start(|| {
            Err(StorageError::Engine {
                action: "test",
                source: "disk full".into(),
            })
        })
        .unwrap();
        let error = group.ticket().wait().unwrap_err().to_string();
        assert!(
            error.contains("refused until the store is reopened"),
            "{error}"
        );
        let later = block_on_all(vec![group.ticket()]);
        assert!(
            later[0].is_err(),
            "a later write must not be reported durable"
        );
        assert_eq!(
            group.shared.lock().synced,
            0,
            "a failed sync covers nothing"
        );
    }

    #[test]
    fn closing_finishes_the_tickets_already_issued() {
        let syncs = Arc::new(AtomicU64::new(0));
        let group = counting(&syncs, Duration::from_millis(5));
        let pending = group.ticket();
        let shared = Arc::clone(&group.shared);
        drop(group);
        assert_eq!(shared.lock().synced, 1);
        pending.wait().unwrap();
    }

    /// Polls every future on this thread until all are ready (a minimal executor: the
    /// waker unparks the test thread).
    fn block_on_all(mut futures: Vec<super::Durable>) -> Vec<Result<(), StorageError>> {
        use std::future::Future;
        use std::pin::Pin;
        use std::task::{Context, Poll, Wake, Waker};

        struct Unpark(std::thread::Thread);
        impl Wake for Unpark {
            fn wake(self: Arc<Self>) {
                self.0.unpark();
            }
        }
        let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
        let mut cx = Context::from_waker(&waker);
        let mut results: Vec<Option<Result<(), StorageError>>> =
            futures.iter().map(|_| None).collect();
        for _ in 0..10_000 {
            for (future, result) in futures.iter_mut().zip(&mut results) {
                if result.is_none()
                    && let Poll::Ready(outcome) = Pin::new(future).poll(&mut cx)
                {
                    *result = Some(outcome);
                }
            }
            if results.iter().all(Option::is_some) {
                return results.into_iter().map(Option::unwrap).collect();
            }
            std::thread::park_timeout(Duration::from_millis(10));
        }
        panic!("futures did not complete within 10,000 polls");
    }
}
