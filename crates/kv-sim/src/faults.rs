//! Fault schedules: which faults strike which nodes when, generated from the seed.
//! A schedule is plain data; `cluster.rs` applies it.

use std::fmt;
use std::time::Duration;

use crate::rng::SimRng;

/// One kind of fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FaultKind {
    /// The node's process dies and restarts when the fault ends; `lose_memory` decides
    /// whether its data survives (a memory-backed node that restarts starts empty).
    Crash {
        /// The node.
        node: usize,
        /// Whether the restart starts with empty storage.
        lose_memory: bool,
    },
    /// The nodes in `side` cannot reach the others and vice versa.
    Partition {
        /// One side (the rest is the other).
        side: Vec<usize>,
    },
    /// Messages from `from` to `to` are lost; the other direction works.
    OneWay {
        /// Senders whose messages are lost.
        from: Vec<usize>,
        /// Receivers.
        to: Vec<usize>,
    },
    /// Every message is lost with this probability (per mille).
    Loss {
        /// Loss rate.
        per_mille: u32,
    },
    /// Every message is delayed by a random 0..=`jitter_ms`, so messages overtake.
    Reorder {
        /// Largest extra delay.
        jitter_ms: u64,
    },
    /// Every message to or from the node takes `extra_ms` longer.
    Slow {
        /// The node.
        node: usize,
        /// Extra delay.
        extra_ms: u64,
    },
    /// An operator changes the ring at the fault's start (the nodes are picked then, from
    /// the cluster's state, with `pick`); the duration only labels the requests that
    /// overlap the data transfer that follows.
    RingChange {
        /// Which change.
        change: ChangeKind,
        /// Chooses among the candidate nodes.
        pick: u64,
    },
}

/// A ring change the simulated operator makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    /// A spare node joins.
    Join,
    /// A member leaves (handing its data off).
    Leave,
    /// A member crashes, stays down, and is removed once declared DEAD.
    Remove,
    /// A spare takes a member's place.
    Replace,
}

impl FaultKind {
    /// A short name for summaries.
    pub fn label(&self) -> &'static str {
        match self {
            FaultKind::Crash {
                lose_memory: false, ..
            } => "crash",
            FaultKind::Crash {
                lose_memory: true, ..
            } => "crash-amnesia",
            FaultKind::Partition { .. } => "partition",
            FaultKind::OneWay { .. } => "one-way",
            FaultKind::Loss { .. } => "loss",
            FaultKind::Reorder { .. } => "reorder",
            FaultKind::Slow { .. } => "slow",
            FaultKind::RingChange { change, .. } => match change {
                ChangeKind::Join => "join",
                ChangeKind::Leave => "leave",
                ChangeKind::Remove => "remove",
                ChangeKind::Replace => "replace",
            },
        }
    }

    /// Every label, in summary order.
    pub const LABELS: [&'static str; 11] = [
        "crash",
        "crash-amnesia",
        "partition",
        "one-way",
        "loss",
        "reorder",
        "slow",
        "join",
        "leave",
        "remove",
        "replace",
    ];
}

/// A fault active from `start` for `duration` (simulated time since the run began).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    /// What.
    pub kind: FaultKind,
    /// When it begins.
    pub start: Duration,
    /// How long it lasts.
    pub duration: Duration,
}

impl Fault {
    /// When it ends.
    pub fn end(&self) -> Duration {
        self.start + self.duration
    }

    /// Whether it is active at `at`.
    pub fn active_at(&self, at: Duration) -> bool {
        self.start <= at && at < self.end()
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:?} from {:.1}s for {:.1}s",
            self.kind,
            self.start.as_secs_f64(),
            self.duration.as_secs_f64()
        )
    }
}

/// Bounds for generated schedules.
#[derive(Debug, Clone)]
pub struct ScheduleLimits {
    /// Nodes in the cluster.
    pub nodes: usize,
    /// Faults start within `[start_after, workload_end - 1s)`.
    pub start_after: Duration,
    /// When the workload (and every fault) ends.
    pub workload_end: Duration,
    /// At most this many faults per run.
    pub max_faults: u64,
}

/// A seeded schedule. About one run in eight has no faults at all (a calm baseline);
/// at most one crash per run loses memory (or one removal or replacement drops a member's
/// copies), so an acknowledged write (W ≥ 2 in such runs) always keeps a surviving copy.
/// About one fault in four is a ring change.
pub fn generate(rng: &mut SimRng, limits: &ScheduleLimits) -> Vec<Fault> {
    if rng.chance(125) {
        return Vec::new();
    }
    let count = rng.between(1, limits.max_faults);
    let mut amnesia_used = false;
    let earliest_start_ms = limits.start_after.as_millis() as u64;
    let latest_start_ms = (limits
        .workload_end
        .saturating_sub(Duration::from_secs(1))
        .as_millis() as u64)
        .max(earliest_start_ms);
    (0..count)
        .map(|_| {
            let start_ms = rng.between(earliest_start_ms, latest_start_ms);
            let end_ms = limits.workload_end.as_millis() as u64;
            let duration_ms = rng.between(500, 8_000).min(end_ms.saturating_sub(start_ms));
            let kind = fault_kind(rng, limits.nodes, &mut amnesia_used);
            Fault {
                kind,
                start: Duration::from_millis(start_ms),
                duration: Duration::from_millis(duration_ms),
            }
        })
        .collect()
}

fn fault_kind(rng: &mut SimRng, nodes: usize, amnesia_used: &mut bool) -> FaultKind {
    let node = rng.below(nodes as u64) as usize;
    match rng.below(8) {
        0 => {
            let lose_memory = !*amnesia_used && rng.chance(300);
            *amnesia_used |= lose_memory;
            FaultKind::Crash { node, lose_memory }
        }
        1 => FaultKind::Partition {
            side: random_subset(rng, nodes),
        },
        2 => {
            let from = random_subset(rng, nodes);
            let to = (0..nodes).filter(|n| !from.contains(n)).collect();
            FaultKind::OneWay { from, to }
        }
        3 => FaultKind::Loss {
            per_mille: rng.between(20, 400) as u32,
        },
        4 => FaultKind::Reorder {
            jitter_ms: rng.between(5, 400),
        },
        5 => FaultKind::Slow {
            node,
            extra_ms: rng.between(50, 2_500),
        },
        _ => FaultKind::RingChange {
            change: ring_change(rng, amnesia_used),
            pick: rng.next_u64(),
        },
    }
}

/// A ring change. A removal or a replacement may drop a dead member's copies, like a
/// crash that loses memory: at most one of those per run, so an acknowledged write (W ≥ 2
/// in such runs) always keeps a copy.
fn ring_change(rng: &mut SimRng, copy_loss_used: &mut bool) -> ChangeKind {
    let kinds: &[ChangeKind] = if *copy_loss_used {
        &[ChangeKind::Join, ChangeKind::Leave]
    } else {
        &[
            ChangeKind::Join,
            ChangeKind::Leave,
            ChangeKind::Remove,
            ChangeKind::Replace,
        ]
    };
    let change = kinds[rng.below(kinds.len() as u64) as usize];
    *copy_loss_used |= matches!(change, ChangeKind::Remove | ChangeKind::Replace);
    change
}

/// A non-empty proper subset of `0..nodes`, at most half of them (the minority side).
fn random_subset(rng: &mut SimRng, nodes: usize) -> Vec<usize> {
    let size = rng.between(1, (nodes as u64 / 2).max(1)) as usize;
    let mut all: Vec<usize> = (0..nodes).collect();
    for i in 0..size {
        let j = i + rng.below((nodes - i) as u64) as usize;
        all.swap(i, j);
    }
    let mut side = all[..size].to_vec();
    side.sort_unstable();
    side
}
