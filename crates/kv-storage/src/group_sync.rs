//! Group commit for `Durability::Sync`: writers that finish close together share one
//! fdatasync instead of queueing for one each.
//!
//! A writer inserts its record, then takes a ticket. The ticket is numbered after the
//! insert, so any sync that starts once the ticket exists covers the record. A writer
//! whose ticket no finished sync covers either becomes the syncing thread (recording how
//! many tickets exist when it starts) or waits for the sync in progress, then checks again.

use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};

#[derive(Debug, Default)]
struct State {
    /// Tickets handed out.
    issued: u64,
    /// Every ticket up to this one is durable.
    synced: u64,
    /// A thread is syncing right now.
    syncing: bool,
}

/// Shared by every writer of one store.
#[derive(Debug, Default)]
pub(crate) struct GroupSync {
    state: Mutex<State>,
    finished: Condvar,
}

impl GroupSync {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A ticket for a record already written (but not yet synced).
    pub(crate) fn ticket(&self) -> u64 {
        let mut state = self.lock();
        state.issued += 1;
        state.issued
    }

    /// Returns once a sync that started after `ticket` was issued has succeeded, running
    /// `sync` on this thread if no other thread is syncing. A failed sync is reported to
    /// the thread that ran it; the others retry with a sync of their own.
    pub(crate) fn wait_durable<E>(
        &self,
        ticket: u64,
        sync: impl Fn() -> Result<(), E>,
    ) -> Result<(), E> {
        let mut state = self.lock();
        loop {
            if state.synced >= ticket {
                return Ok(());
            }
            if state.syncing {
                state = self
                    .finished
                    .wait(state)
                    .unwrap_or_else(PoisonError::into_inner);
                continue;
            }
            state.syncing = true;
            let covers = state.issued;
            drop(state);
            let outcome = sync();
            state = self.lock();
            state.syncing = false;
            if outcome.is_ok() {
                debug_assert!(covers >= ticket, "a sync must cover the ticket it ran for");
                state.synced = state.synced.max(covers);
            }
            self.finished.notify_all();
            outcome?;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};

    use super::GroupSync;

    #[test]
    fn concurrent_writers_all_become_durable() {
        let group = Arc::new(GroupSync::default());
        let syncs = Arc::new(AtomicU64::new(0));
        let writers: Vec<_> = (0..16)
            .map(|_| {
                let (group, syncs) = (Arc::clone(&group), Arc::clone(&syncs));
                std::thread::spawn(move || {
                    for _ in 0..50 {
                        let ticket = group.ticket();
                        group
                            .wait_durable(ticket, || {
                                syncs.fetch_add(1, Ordering::SeqCst);
                                std::thread::sleep(std::time::Duration::from_micros(200));
                                Ok::<(), ()>(())
                            })
                            .unwrap();
                        assert!(group.lock().synced >= ticket);
                    }
                })
            })
            .collect();
        for writer in writers {
            writer.join().unwrap();
        }
        assert!(syncs.load(Ordering::SeqCst) >= 1);
        assert_eq!(group.lock().synced, 800, "every ticket ends up durable");
    }

    #[test]
    fn one_sync_covers_every_ticket_issued_before_it_began() {
        let group = GroupSync::default();
        let syncs = AtomicU64::new(0);
        let count = || {
            syncs.fetch_add(1, Ordering::SeqCst);
            Ok::<(), ()>(())
        };
        let tickets: Vec<u64> = (0..3).map(|_| group.ticket()).collect();
        group.wait_durable(tickets[2], count).unwrap();
        for &ticket in &tickets[..2] {
            group.wait_durable(ticket, count).unwrap();
        }
        assert_eq!(syncs.load(Ordering::SeqCst), 1, "three writes, one sync");
        let later = group.ticket();
        group.wait_durable(later, count).unwrap();
        assert_eq!(
            syncs.load(Ordering::SeqCst),
            2,
            "a later write needs a new sync"
        );
    }

    #[test]
    fn a_failed_sync_is_reported_and_the_next_one_retries() {
        let group = GroupSync::default();
        let ticket = group.ticket();
        assert_eq!(
            group.wait_durable(ticket, || Err("disk full")),
            Err("disk full")
        );
        assert_eq!(group.lock().synced, 0, "a failed sync covers nothing");
        assert_eq!(group.wait_durable(ticket, || Ok::<(), &str>(())), Ok(()));
        assert_eq!(group.lock().synced, 1);
    }
}
