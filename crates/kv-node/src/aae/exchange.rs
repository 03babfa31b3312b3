//! One exchange with one peer: drive kv-aae's `Exchange` with local answers (the index and
//! a scan of the store) and the peer's (over the transport), then repair every key it
//! names through the normal merge path, so causality rules are the same as read repair's.

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use kv_aae::{Exchange, ExchangeError, ExchangeLimits, ExchangeStats, HashRange, KeyDiff, Step};
use kv_repair::reconcile;
use kv_storage::{Siblings, StorageError};
use tokio::task::JoinSet;

use super::{KeyPage, MAX_DIGEST_RANGES, MAX_KEY_PAGE, key_page, only_tombstones};
use crate::node::Node;
use crate::{NodeError, PeerTransport, SharedVersions, TransportError};

/// Keys repaired at once within one exchange.
const CONCURRENT_REPAIRS: usize = 32;
/// Keys one key list carries when both sides hold keys in its range. Small lists cost
/// more digests but list fewer keys that agree (`cargo xtask measure aae`).
const KEYS_PER_LIST: usize = 8;
/// Pieces a differing range splits into.
const FANOUT: usize = 4;

/// What one successful exchange did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExchangeReport {
    /// The comparison's work.
    pub stats: ExchangeStats,
    /// Keys repaired here, at the peer, or both.
    pub keys_repaired: u64,
    /// Bytes of keys, key lists and values moved in either direction.
    pub bytes_moved: u64,
}

/// Why an exchange stopped.
#[derive(Debug)]
pub(crate) enum ExchangeFailure {
    Peer(TransportError),
    Local(NodeError),
    Protocol(ExchangeError),
}

impl fmt::Display for ExchangeFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Peer(error) => write!(f, "{error}"),
            Self::Local(error) => write!(f, "local: {error}"),
            Self::Protocol(error) => write!(f, "protocol: {error}"),
        }
    }
}

impl From<TransportError> for ExchangeFailure {
    fn from(error: TransportError) -> Self {
        Self::Peer(error)
    }
}

impl From<NodeError> for ExchangeFailure {
    fn from(error: NodeError) -> Self {
        Self::Local(error)
    }
}

impl From<StorageError> for ExchangeFailure {
    fn from(error: StorageError) -> Self {
        Self::Local(NodeError::Storage(error))
    }
}

impl From<ExchangeError> for ExchangeFailure {
    fn from(error: ExchangeError) -> Self {
        Self::Protocol(error)
    }
}

/// What repairing one key did.
#[derive(Debug, Clone, Copy, Default)]
struct Repaired {
    /// Whether either side changed.
    changed: bool,
    /// Bytes moved to find out and to repair.
    bytes: u64,
}

/// Which side lacks a key, or whether both hold it differently.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    OnlyHere,
    Elsewhere,
}

impl<T: PeerTransport> Node<T> {
    /// Compares `ranges` with `peer` and repairs every key that differs, both ways.
    pub(crate) async fn exchange(
        self: &Arc<Self>,
        peer: &Arc<str>,
        ranges: Vec<HashRange>,
    ) -> Result<ExchangeReport, ExchangeFailure> {
        let limits = ExchangeLimits {
            keys_per_list: KEYS_PER_LIST,
            keys_per_page: MAX_KEY_PAGE,
            ranges_per_request: MAX_DIGEST_RANGES,
            fanout: FANOUT,
        };
        let mut exchange: Exchange<Bytes> = Exchange::new(ranges, limits);
        let mut report = ExchangeReport::default();
        loop {
            match exchange.next_step() {
                Step::Digests(ranges) => {
                    let local = self.aae.index.digests(self.storage.as_ref(), &ranges)?;
                    let asked = ranges.len() as u64;
                    let remote = self
                        .transport
                        .aae_digests(peer, &self.config().node_id, ranges)
                        .await?;
                    // 16 bytes per range asked, 16 per digest answered.
                    report.bytes_moved += 16 * asked + 16 * remote.len() as u64;
                    exchange.digests(&local, &remote)?;
                }
                Step::Keys {
                    range,
                    after,
                    limit,
                    remote_count,
                    ..
                } => {
                    let local = key_page(self.storage.as_ref(), range, after.as_deref(), limit)?;
                    let remote = if remote_count == 0 {
                        KeyPage {
                            keys: Vec::new(),
                            complete: true,
                        }
                    } else {
                        let page = self
                            .transport
                            .aae_keys(peer, &self.config().node_id, range, after, limit)
                            .await?;
                        report.bytes_moved += 16
                            + page
                                .keys
                                .iter()
                                .map(|(key, _)| key.len() as u64 + 8)
                                .sum::<u64>();
                        page
                    };
                    let diff =
                        exchange.keys(local.keys, local.complete, remote.keys, remote.complete)?;
                    self.repair_all(peer, diff, &mut report).await?;
                }
                Step::Done => break,
            }
        }
        report.stats = exchange.stats();
        Ok(report)
    }

    /// Repairs every key of `diff`, a bounded number at a time.
    async fn repair_all(
        self: &Arc<Self>,
        peer: &Arc<str>,
        diff: KeyDiff<Bytes>,
        report: &mut ExchangeReport,
    ) -> Result<(), ExchangeFailure> {
        let keys = diff
            .only_local
            .into_iter()
            .map(|key| (key, Side::OnlyHere))
            .chain(
                diff.only_remote
                    .into_iter()
                    .chain(diff.differing)
                    .map(|key| (key, Side::Elsewhere)),
            );
        let mut running = JoinSet::new();
        for (key, side) in keys {
            if running.len() >= CONCURRENT_REPAIRS {
                Self::collect_one(&mut running, report).await?;
            }
            self.aae.pace(1).await;
            let (node, peer) = (Arc::clone(self), Arc::clone(peer));
            running.spawn(async move { node.repair_key(&peer, key, side).await });
        }
        while !running.is_empty() {
            Self::collect_one(&mut running, report).await?;
        }
        Ok(())
    }

    async fn collect_one(
        running: &mut JoinSet<Result<Repaired, ExchangeFailure>>,
        report: &mut ExchangeReport,
    ) -> Result<(), ExchangeFailure> {
        match running.join_next().await {
            Some(Ok(Ok(repaired))) => {
                report.keys_repaired += u64::from(repaired.changed);
                report.bytes_moved += repaired.bytes;
                Ok(())
            }
            Some(Ok(Err(failure))) => Err(failure),
            Some(Err(join_error)) => Err(ExchangeFailure::Local(NodeError::Storage(
                StorageError::Engine {
                    action: "repairing a key",
                    source: Box::new(join_error),
                },
            ))),
            None => Ok(()),
        }
    }

    /// Brings `key` to the same state here and at `peer`; returns the bytes moved (zero
    /// when nothing needed to move after all).
    ///
    /// A key that holds only tombstones on one side and nothing on the other is left
    /// alone when the tombstone is past its grace period (or its age is unknown, on the
    /// peer): the empty side most likely reaped it already, and an empty replica holds no
    /// value the tombstone must cover. Moving it would restart its grace period on the
    /// empty side, and replicas would hand it back and forth forever.
    async fn repair_key(
        &self,
        peer: &str,
        key: Bytes,
        side: Side,
    ) -> Result<Repaired, ExchangeFailure> {
        let local = self.storage.get(&key)?;
        let mut done = Repaired::default();
        if side == Side::OnlyHere
            && let Some(versions) = &local
            && only_tombstones(versions)
            && self.tombstone_past_grace(&key)
        {
            return Ok(done);
        }
        let remote = match side {
            Side::OnlyHere => None,
            Side::Elsewhere => {
                let remote = self.transport.read(peer, key.clone(), "").await?;
                done.bytes += key.len() as u64 + remote.as_ref().map_or(0, payload_bytes);
                remote
            }
        };
        if local.is_none() && remote.as_ref().is_some_and(only_tombstones) {
            return Ok(done);
        }
        let plan = reconcile(&[(true, local), (false, remote)]);
        for repair in plan.repairs {
            done.changed = true;
            if repair.replica {
                self.replica_write(key.clone(), repair.versions).await?;
            } else {
                done.bytes += key.len() as u64 + payload_bytes(&repair.versions);
                self.transport
                    .write(peer, key.clone(), SharedVersions::new(repair.versions), "")
                    .await?;
            }
        }
        Ok(done)
    }

    /// Whether `key` has held only tombstones here for the whole grace period.
    fn tombstone_past_grace(&self, key: &[u8]) -> bool {
        self.aae
            .index
            .tombstone_since(key)
            .is_some_and(|since| since.elapsed() >= self.config().anti_entropy.tombstone_grace)
    }
}

/// Bytes of the values a set of versions carries, plus a little per dot.
fn payload_bytes(versions: &Siblings) -> u64 {
    versions
        .values()
        .map(|value| value.as_ref().map_or(0, |v| v.len() as u64) + 16)
        .sum()
}
