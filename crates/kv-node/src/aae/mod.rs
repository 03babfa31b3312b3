//! Active anti-entropy on the node: the index (`index.rs`) that follows every write, the
//! exchanges that compare ranges with each peer and repair what differs (`exchange.rs`),
//! the periodic round and the tombstone reaper (`round.rs`), and what operators see of it
//! (here: per peer, the last exchange, keys repaired, and since when each range is known
//! to agree).
//!
//! Tombstone reaping rests on agreements: an exchange with a peer that ends with every
//! difference repaired proves the peer held, at the exchange's start, everything this
//! node held then. A tombstone is removed only once every other replica of its key
//! agreed with this node after the tombstone arrived here, and the grace period has
//! passed since. A replica that was away cannot agree, so while it is away nobody reaps,
//! and when it comes back with the deleted value the tombstone (whose history covers that
//! value) wins the merge.

mod exchange;
mod index;
mod rate;
mod round;

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use kv_aae::{ExchangeStats, HashRange};
use tokio::time::Instant;

pub use exchange::ExchangeReport;
pub(crate) use index::{Index, key_page, only_tombstones};
pub use index::{KeyPage, fingerprint_of};
pub(crate) use rate::RateLimiter;
pub(crate) use round::run_anti_entropy;

/// How long a node stays reserved for a peer's exchange after its last request, unless
/// the initiator frees it sooner (it does when the exchange ends): long enough for the
/// repairs between two requests (a one-sided range pushes a whole page of keys).
const RESPONDER_LEASE: Duration = Duration::from_secs(60);
/// Longest an exchange this node runs may hold it.
const INITIATOR_LEASE: Duration = Duration::from_secs(600);

/// Most ranges one digest request may ask for.
pub const MAX_DIGEST_RANGES: usize = 256;
/// Most keys one key-list request may ask for.
pub const MAX_KEY_PAGE: usize = 1024;

/// What this node knows of its exchanges with one peer.
#[derive(Debug, Default)]
struct PeerRecord {
    exchanges: u64,
    in_progress: bool,
    keys_repaired: u64,
    bytes_moved: u64,
    last: Option<LastExchange>,
    /// Ranges the last successful exchange compared, by first position: (last position,
    /// when that exchange started).
    agreed: BTreeMap<u64, (u64, Instant)>,
}

#[derive(Debug, Clone)]
struct LastExchange {
    started: Instant,
    duration: Duration,
    ranges: usize,
    outcome: Result<ExchangeReport, String>,
}

/// Which exchange this node takes part in now. One at a time: two peers repairing the
/// same node at once would move the same keys twice.
#[derive(Debug, Clone)]
struct Slot {
    partner: String,
    initiator: bool,
    /// When this node first answered or started the exchange.
    since: Instant,
    until: Instant,
}

/// The node's anti-entropy state.
#[derive(Debug)]
pub(crate) struct AntiEntropy {
    pub(crate) index: Index,
    slot: Mutex<Option<Slot>>,
    peers: Mutex<BTreeMap<String, PeerRecord>>,
    limiter: tokio::sync::Mutex<RateLimiter>,
    reaped: std::sync::atomic::AtomicU64,
    rebuild: Mutex<Option<(u64, Duration)>>,
}

impl AntiEntropy {
    pub(crate) fn new(max_keys_per_sec: u32) -> Self {
        Self {
            index: Index::new(),
            slot: Mutex::new(None),
            peers: Mutex::new(BTreeMap::new()),
            limiter: tokio::sync::Mutex::new(RateLimiter::new(max_keys_per_sec)),
            reaped: std::sync::atomic::AtomicU64::new(0),
            rebuild: Mutex::new(None),
        }
    }

    fn peers(&self) -> MutexGuard<'_, BTreeMap<String, PeerRecord>> {
        self.peers.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits until `count` more keys may be repaired.
    pub(crate) async fn pace(&self, count: u32) {
        let wait = self.limiter.lock().await.take(count);
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }

    pub(crate) fn record_rebuild(&self, items: u64, took: Duration) {
        *self.rebuild.lock().unwrap_or_else(PoisonError::into_inner) = Some((items, took));
    }

    fn slot(&self) -> MutexGuard<'_, Option<Slot>> {
        self.slot.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Reserves this node for an exchange it runs with `partner`; false if it takes part
    /// in another exchange.
    pub(crate) fn start_exchange(&self, partner: &str) -> bool {
        let mut slot = self.slot();
        if slot.as_ref().is_some_and(|s| s.until > Instant::now()) {
            return false;
        }
        *slot = Some(Slot {
            partner: partner.to_owned(),
            initiator: true,
            since: Instant::now(),
            until: Instant::now() + INITIATOR_LEASE,
        });
        true
    }

    /// Frees this node after an exchange it ran.
    pub(crate) fn end_exchange(&self) {
        *self.slot() = None;
    }

    /// Frees this node after `initiator`'s exchange, if it holds it. When the exchange
    /// repaired every difference, records the agreement on `ranges` here too, as of when
    /// this node first answered it (any state it held then took part in the comparison).
    pub(crate) fn release_exchange(&self, initiator: &str, completed: bool, ranges: &[HashRange]) {
        let held = {
            let mut slot = self.slot();
            match slot.as_ref() {
                Some(s) if s.partner == initiator && !s.initiator => slot.take(),
                _ => None,
            }
        };
        if let Some(held) = held
            && completed
        {
            self.peers().entry(initiator.to_owned()).or_default().agreed =
                agreements(ranges, held.since);
        }
    }

    /// Reserves this node (again) for `initiator`'s exchange, or names the exchange it
    /// takes part in instead.
    pub(crate) fn answer_exchange(&self, initiator: &str) -> Result<(), String> {
        let now = Instant::now();
        let mut slot = self.slot();
        if let Some(held) = slot.as_ref()
            && held.until > now
            && (held.partner != initiator || held.initiator)
        {
            return Err(held.partner.clone());
        }
        let since = match slot.as_ref() {
            Some(held) if held.until > now => held.since,
            _ => now,
        };
        *slot = Some(Slot {
            partner: initiator.to_owned(),
            initiator: false,
            since,
            until: now + RESPONDER_LEASE,
        });
        Ok(())
    }

    fn started(&self, peer: &str) {
        self.peers().entry(peer.to_owned()).or_default().in_progress = true;
    }

    fn finished(
        &self,
        peer: &str,
        ranges: &[HashRange],
        started: Instant,
        outcome: Result<ExchangeReport, String>,
    ) {
        let mut peers = self.peers();
        let record = peers.entry(peer.to_owned()).or_default();
        record.in_progress = false;
        record.exchanges += 1;
        if let Ok(report) = &outcome {
            record.keys_repaired += report.keys_repaired;
            record.bytes_moved += report.bytes_moved;
            record.agreed = agreements(ranges, started);
        }
        record.last = Some(LastExchange {
            started,
            duration: started.elapsed(),
            ranges: ranges.len(),
            outcome,
        });
    }

    /// When `peer` last agreed with this node on the range holding `position`.
    pub(crate) fn agreed_at(&self, peer: &str, position: u64) -> Option<Instant> {
        let peers = self.peers();
        let (_, (last, at)) = peers.get(peer)?.agreed.range(..=position).next_back()?;
        (position <= *last).then_some(*at)
    }

    fn count_reaped(&self, count: u64) {
        self.reaped
            .fetch_add(count, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Agreement on each of `ranges` as of `at`, by first position.
fn agreements(ranges: &[HashRange], at: Instant) -> BTreeMap<u64, (u64, Instant)> {
    ranges.iter().map(|r| (r.first(), (r.last(), at))).collect()
}

/// What operators see of one peer's exchanges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerExchangeStatus {
    /// The peer.
    pub peer: String,
    /// Exchanges finished (successful or not).
    pub exchanges: u64,
    /// Whether one is running now.
    pub in_progress: bool,
    /// Keys repaired in either direction, all exchanges together.
    pub keys_repaired: u64,
    /// Key and value bytes moved, all exchanges together.
    pub bytes_moved: u64,
    /// How long ago the last exchange started.
    pub last_started_ago: Option<Duration>,
    /// How long it took.
    pub last_duration: Option<Duration>,
    /// Ranges it compared.
    pub last_ranges: usize,
    /// Its work counts, if it succeeded.
    pub last_stats: Option<ExchangeStats>,
    /// Keys it repaired, if it succeeded.
    pub last_keys_repaired: u64,
    /// Why it failed, if it did.
    pub last_error: Option<String>,
}

/// One range this node replicates and how long ago each other replica agreed on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RangeAgreement {
    /// The range.
    pub range: HashRange,
    /// Its replicas, primary first.
    pub replicas: Vec<String>,
    /// For each other replica, how long ago it last agreed (None: never).
    pub agreed_ago: Vec<(String, Option<Duration>)>,
}

/// The node's anti-entropy, as `kvstore aae status` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AntiEntropyStatus {
    /// Whether exchanges run.
    pub enabled: bool,
    /// Time between rounds.
    pub interval: Duration,
    /// Keys the index counts.
    pub tree_items: u64,
    /// The XOR of every key's fingerprint: replicas holding the same keys in the same
    /// states have equal roots (a cluster whose nodes all replicate everything, like three
    /// nodes with N=3, is in agreement exactly when every root is equal).
    pub tree_root: u64,
    /// Keys holding only tombstones, waiting to be reaped.
    pub tombstones_pending: u64,
    /// Tombstones reaped since the node started.
    pub tombstones_reaped: u64,
    /// Keys the start-up rebuild of the index read, and how long it took.
    pub rebuild: Option<(u64, Duration)>,
    /// Per peer.
    pub peers: Vec<PeerExchangeStatus>,
}

impl AntiEntropy {
    pub(crate) fn peer_statuses(&self) -> Vec<PeerExchangeStatus> {
        self.peers()
            .iter()
            .map(|(peer, record)| {
                let last = record.last.as_ref();
                let report = last.and_then(|l| l.outcome.as_ref().ok());
                PeerExchangeStatus {
                    peer: peer.clone(),
                    exchanges: record.exchanges,
                    in_progress: record.in_progress,
                    keys_repaired: record.keys_repaired,
                    bytes_moved: record.bytes_moved,
                    last_started_ago: last.map(|l| l.started.elapsed()),
                    last_duration: last.map(|l| l.duration),
                    last_ranges: last.map_or(0, |l| l.ranges),
                    last_stats: report.map(|r| r.stats),
                    last_keys_repaired: report.map_or(0, |r| r.keys_repaired),
                    last_error: last.and_then(|l| l.outcome.as_ref().err().cloned()),
                }
            })
            .collect()
    }

    pub(crate) fn reaped(&self) -> u64 {
        self.reaped.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub(crate) fn rebuild(&self) -> Option<(u64, Duration)> {
        *self.rebuild.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl<T: crate::PeerTransport> crate::Node<T> {
    /// This node's anti-entropy, as operators see it.
    pub fn anti_entropy_status(&self) -> AntiEntropyStatus {
        let config = &self.config().anti_entropy;
        AntiEntropyStatus {
            enabled: config.enabled(),
            interval: config.interval,
            tree_items: self.aae.index.items(),
            tree_root: self.aae.index.root_hash(),
            tombstones_pending: self.aae.index.tombstones_pending(),
            tombstones_reaped: self.aae.reaped(),
            rebuild: self.aae.rebuild(),
            peers: self.aae.peer_statuses(),
        }
    }

    /// Every range this node replicates, grouped by replica set, with how long ago each
    /// other replica agreed on it.
    pub fn range_agreements(&self) -> Vec<RangeAgreement> {
        let Some(routing) = self.routing() else {
            return Vec::new();
        };
        let ring = routing.newest();
        let me = self.config().node_id.clone();
        let mut groups: Vec<(HashRange, Vec<String>)> = Vec::new();
        let tokens: Vec<u64> = ring.tokens().map(|(token, _)| token).collect();
        let Some(&last) = tokens.last() else {
            return Vec::new();
        };
        let mut previous = last;
        for &token in &tokens {
            let replicas: Vec<String> = ring
                .preference_list_for_hash(token)
                .iter()
                .map(str::to_owned)
                .collect();
            if replicas.contains(&me) {
                for piece in kv_aae::arc(previous, token) {
                    match groups.last_mut() {
                        Some((range, group))
                            if *group == replicas
                                && range.last().checked_add(1) == Some(piece.first()) =>
                        {
                            *range = HashRange::new(range.first(), piece.last()).expect("ordered");
                        }
                        _ => groups.push((piece, replicas.clone())),
                    }
                }
            }
            previous = token;
        }
        groups.sort_by_key(|(range, _)| *range);
        groups
            .into_iter()
            .map(|(range, replicas)| {
                let agreed_ago = replicas
                    .iter()
                    .filter(|r| **r != me)
                    .map(|peer| {
                        let ago = self
                            .aae
                            .agreed_at(peer, range.first())
                            .map(|at| at.elapsed());
                        (peer.clone(), ago)
                    })
                    .collect();
                RangeAgreement {
                    range,
                    replicas,
                    agreed_ago,
                }
            })
            .collect()
    }
}
