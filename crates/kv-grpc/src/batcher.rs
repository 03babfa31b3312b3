//! Per-peer batching of replica reads and writes.
//!
//! Every replica call to a peer joins that peer's queue. A task per peer sends what is
//! queued as one `Replica/Batch` call, with at most `MAX_BATCHES_IN_FLIGHT` calls
//! outstanding. An idle peer's call leaves at once, alone; under load, calls pile up while
//! the batch before them is in flight and leave together, so the per-RPC cost (HTTP/2
//! frames, syscalls, task wake-ups) is paid once per batch instead of once per call.

use std::sync::Arc;
use std::time::Duration;

use kv_node::TransportError;
use kv_proto::internal as proto;
use tokio::sync::{Semaphore, mpsc, oneshot};

use crate::channel::ReplicaChannel;
use crate::peer_metrics::PeerMetrics;
use crate::status::{bad_reply, classify};
use crate::wire::{MAX_BATCH_ITEMS, check_batch_response};

/// Batch calls outstanding per peer: the next batch fills while this one travels.
/// Measured with `cargo xtask bench` (put / get vs the floor): 1 → 0.32–0.34× / 0.35–0.36×,
/// 2 → 0.30–0.34× / 0.31×, 4 → 0.24× / 0.35×, with the lowest tails at 1.
const MAX_BATCHES_IN_FLIGHT: usize = 1;
/// Calls waiting per peer before callers wait for room.
const QUEUE_ITEMS: usize = 4 * MAX_BATCH_ITEMS;

type Reply = oneshot::Sender<Result<proto::BatchResult, TransportError>>;

struct Pending {
    item: proto::BatchItem,
    reply: Reply,
}

/// The queue in front of one peer.
#[derive(Debug, Clone)]
pub(crate) struct PeerBatcher {
    queue: mpsc::Sender<Pending>,
    call_timeout: Duration,
}

impl PeerBatcher {
    /// Starts the batching task for `peer`; it ends when the last handle is dropped.
    pub(crate) fn start<C: ReplicaChannel>(
        peer: String,
        channel: C,
        call_timeout: Duration,
        metrics: PeerMetrics,
    ) -> Self {
        let (queue, receiver) = mpsc::channel(QUEUE_ITEMS);
        tokio::spawn(send_batches(peer, channel, receiver, metrics));
        Self {
            queue,
            call_timeout,
        }
    }

    /// Sends `item` in the next batch and waits for its result, at most the call timeout
    /// (queueing included).
    pub(crate) async fn call(
        &self,
        peer: &str,
        item: proto::BatchItem,
    ) -> Result<proto::BatchResult, TransportError> {
        let (reply, answer) = oneshot::channel();
        let exchange = async {
            self.queue
                .send(Pending { item, reply })
                .await
                .map_err(|_| TransportError::Unreachable {
                    peer: peer.to_owned(),
                    reason: "the peer's batch queue is closed".into(),
                })?;
            answer.await.map_err(|_| TransportError::Timeout {
                peer: peer.to_owned(),
            })?
        };
        tokio::time::timeout(self.call_timeout, exchange)
            .await
            .unwrap_or_else(|_| {
                Err(TransportError::Timeout {
                    peer: peer.to_owned(),
                })
            })
    }
}

async fn send_batches<C: ReplicaChannel>(
    peer: String,
    channel: C,
    mut receiver: mpsc::Receiver<Pending>,
    metrics: PeerMetrics,
) {
    let in_flight = Arc::new(Semaphore::new(MAX_BATCHES_IN_FLIGHT));
    while let Some(first) = receiver.recv().await {
        // Wait for room before draining the queue: what arrives meanwhile joins this batch.
        let permit = Arc::clone(&in_flight)
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH_ITEMS {
            match receiver.try_recv() {
                Ok(pending) => batch.push(pending),
                Err(_) => break,
            }
        }
        debug_assert!(batch.len() <= MAX_BATCH_ITEMS);
        let (channel, peer, metrics) = (channel.clone(), peer.clone(), metrics.clone());
        tokio::spawn(async move {
            let _permit = permit;
            send_one(&peer, &channel, batch, &metrics).await;
        });
    }
}

async fn send_one<C: ReplicaChannel>(
    peer: &str,
    channel: &C,
    batch: Vec<Pending>,
    metrics: &PeerMetrics,
) {
    let (items, replies): (Vec<_>, Vec<_>) = batch.into_iter().map(|p| (p.item, p.reply)).unzip();
    let count = items.len();
    let started = tokio::time::Instant::now();
    let results = match channel.batch(proto::BatchRequest { items }).await {
        Ok(response) => check_batch_response(response, count).map_err(|e| bad_reply(peer, &e)),
        Err(status) => Err(classify(peer, &status)),
    };
    let seconds = started.elapsed().as_secs_f64();
    metrics.record_batch(peer, count, seconds, results.is_err());
    match results {
        Ok(results) => {
            for (reply, result) in replies.into_iter().zip(results) {
                let _ = reply.send(Ok(result));
            }
        }
        Err(error) => {
            for reply in replies {
                let _ = reply.send(Err(error.clone()));
            }
        }
    }
}
