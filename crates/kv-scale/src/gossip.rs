//! Gossip at scale: `n` kv-gossip state machines (foca SWIM, the production settings)
//! on a simulated network with 1-5 ms latency and optional loss, driven event by event
//! in time order (one heap for datagrams, one for timers): no sockets, no clock, same
//! seed, same run.
//!
//! A run forms the cluster (members join one after another, 20 ms apart, each through a
//! random earlier member), then measures: how long a new
//! member's join takes to reach every member; bytes sent per member per second in steady
//! state; false suspicions (SUSPECT raised about a member that is up) per member-hour;
//! and, after a crash, how long until every other member sees it SUSPECT and DEAD.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

pub use kv_gossip::GossipConfig;
use kv_gossip::{Gossip, GossipEvent, MemberState, NodeIdentity};
use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};

const MS: Duration = Duration::from_millis(1);
/// How long the cluster may take to form before the run gives up.
const FORM_LIMIT: Duration = Duration::from_secs(600);
/// Time between two members' first announces while the cluster forms.
const JOIN_GAP: Duration = Duration::from_millis(20);
/// Longest any single measurement may take (simulated).
const MEASURE_LIMIT: Duration = Duration::from_secs(300);

/// A datagram in flight: (delivery time, sequence, destination, bytes).
type InFlight = Reverse<(Duration, u64, usize, Vec<u8>)>;

fn identity(i: usize) -> NodeIdentity {
    let ip = Ipv4Addr::new(10, 0, (i / 250) as u8, (i % 250 + 1) as u8);
    NodeIdentity {
        node_id: format!("n{}", i + 1),
        gossip_addr: SocketAddr::from((ip, 7946)),
        internal_addr: SocketAddr::from((ip, 50151)),
        client_addr: SocketAddr::from((ip, 50051)),
        bump: 1,
    }
}

/// The simulated cluster.
struct Net {
    config: GossipConfig,
    nodes: Vec<Option<Gossip>>,
    index: HashMap<SocketAddr, usize>,
    in_flight: BinaryHeap<InFlight>,
    timers: BinaryHeap<Reverse<(Duration, usize)>>,
    sequence: u64,
    now: Duration,
    rng: SmallRng,
    loss_per_mille: u32,
    bytes_sent: u64,
    /// Per subject: how many observers see it ALIVE now.
    alive_views: Vec<usize>,
    /// Per subject: how many observers have seen it SUSPECT or DEAD since the counter
    /// was last reset, and how many DEAD.
    suspected_by: Vec<usize>,
    dead_by: Vec<usize>,
    /// Per (observer, subject): its view.
    views: HashMap<(usize, usize), MemberState>,
}

impl Net {
    /// `count` nodes joining one after another, `JOIN_GAP` apart, each through a random
    /// member that joined before it (as an operator's rollout would), with room for
    /// `capacity` nodes in all.
    fn new(count: usize, seed: u64, capacity: usize, config: GossipConfig) -> Self {
        let mut net = Self {
            config,
            nodes: Vec::with_capacity(capacity),
            index: HashMap::new(),
            in_flight: BinaryHeap::new(),
            timers: BinaryHeap::new(),
            sequence: 0,
            now: Duration::ZERO,
            rng: SmallRng::seed_from_u64(seed),
            loss_per_mille: 0,
            bytes_sent: 0,
            alive_views: vec![0; capacity],
            suspected_by: vec![0; capacity],
            dead_by: vec![0; capacity],
            views: HashMap::new(),
        };
        for i in 0..count {
            let through = if i == 0 {
                0
            } else {
                net.rng.random_range(0..i)
            };
            net.add(i, through, seed);
            let next = net.now + JOIN_GAP;
            net.run_until(next);
        }
        net
    }

    /// Starts node `i`, announcing itself to node `through`.
    fn add(&mut self, i: usize, through: usize, seed: u64) {
        let me = identity(i);
        self.index.insert(me.gossip_addr, i);
        let node_seed = seed ^ (i as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let gossip = Gossip::new(me, self.config.clone(), node_seed).expect("a valid config");
        debug_assert_eq!(self.nodes.len(), i);
        self.nodes.push(Some(gossip));
        if i > 0 {
            let seed_addr = identity(through).gossip_addr;
            if let Some(node) = self.nodes[i].as_mut() {
                node.announce(seed_addr, self.now);
            }
        }
        self.collect(i);
    }

    fn crash(&mut self, i: usize) {
        self.nodes[i] = None;
    }

    /// Takes node `from`'s outgoing datagrams onto the network and its events into the
    /// view counters, and schedules its next timer.
    fn collect(&mut self, from: usize) {
        let Some(node) = self.nodes[from].as_mut() else {
            return;
        };
        let outgoing: Vec<(SocketAddr, bytes::Bytes)> = node.take_outgoing().collect();
        let events: Vec<GossipEvent> = node.take_events().collect();
        if let Some(deadline) = node.next_deadline() {
            self.timers.push(Reverse((deadline, from)));
        }
        for (to, data) in outgoing {
            self.bytes_sent += data.len() as u64;
            let Some(&to) = self.index.get(&to) else {
                continue;
            };
            if self.loss_per_mille > 0 && self.rng.random_range(0..1000) < self.loss_per_mille {
                continue;
            }
            let at = self.now + MS * self.rng.random_range(1..=5);
            self.in_flight
                .push(Reverse((at, self.sequence, to, data.to_vec())));
            self.sequence += 1;
        }
        for event in events {
            if let GossipEvent::StateChanged { identity, state } = event
                && let Some(&subject) = self.index.get(&identity.gossip_addr)
            {
                self.observe(from, subject, state);
            }
        }
    }

    fn observe(&mut self, observer: usize, subject: usize, state: MemberState) {
        let before = self.views.insert((observer, subject), state);
        if before == Some(state) {
            return;
        }
        if before == Some(MemberState::Alive) {
            self.alive_views[subject] -= 1;
        }
        match state {
            MemberState::Alive => self.alive_views[subject] += 1,
            MemberState::Suspect => self.suspected_by[subject] += 1,
            MemberState::Dead => {
                self.dead_by[subject] += 1;
                if before != Some(MemberState::Suspect) {
                    self.suspected_by[subject] += 1;
                }
            }
        }
    }

    /// Delivers datagrams and fires timers in time order until `until`.
    fn run_until(&mut self, until: Duration) {
        loop {
            let next_message = self.in_flight.peek().map(|Reverse((at, ..))| *at);
            let next_timer = self.timers.peek().map(|Reverse((at, _))| *at);
            let next = match (next_message, next_timer) {
                (Some(m), Some(t)) => m.min(t),
                (Some(m), None) => m,
                (None, Some(t)) => t,
                (None, None) => break,
            };
            if next > until {
                break;
            }
            self.now = next;
            if next_message == Some(next) {
                let Reverse((_, _, to, data)) = self.in_flight.pop().expect("peeked");
                if let Some(node) = self.nodes[to].as_mut() {
                    node.handle_datagram(&data, self.now);
                    self.collect(to);
                }
            } else {
                let Reverse((at, i)) = self.timers.pop().expect("peeked");
                // A stale entry (the node rescheduled, or crashed) is skipped.
                let due = self.nodes[i]
                    .as_ref()
                    .and_then(Gossip::next_deadline)
                    .is_some_and(|d| d <= at);
                if due {
                    if let Some(node) = self.nodes[i].as_mut() {
                        node.advance(self.now);
                    }
                    self.collect(i);
                }
            }
        }
        self.now = self.now.max(until);
    }

    /// Runs until `done` holds, checking every `step`; the time it took, if within `limit`.
    fn run_until_true(
        &mut self,
        step: Duration,
        limit: Duration,
        done: impl Fn(&Self) -> bool,
    ) -> Option<Duration> {
        let start = self.now;
        while self.now.saturating_sub(start) <= limit {
            if done(self) {
                return Some(self.now.saturating_sub(start));
            }
            let next = self.now + step;
            self.run_until(next);
        }
        None
    }

    fn running(&self) -> usize {
        self.nodes.iter().filter(|n| n.is_some()).count()
    }

    /// Whether every running node other than `subject` has a view of it that passes.
    fn all_others_see(
        &self,
        subject: usize,
        passes: impl Fn(Option<&MemberState>) -> bool,
    ) -> bool {
        (0..self.nodes.len())
            .filter(|&o| o != subject && self.nodes[o].is_some())
            .all(|o| passes(self.views.get(&(o, subject))))
    }

    /// Whether every running node other than `subject` sees it ALIVE.
    fn all_see_alive(&self, subject: usize) -> bool {
        self.alive_views[subject] + 1 >= self.running()
    }
}

/// What one gossip run measured.
#[derive(Debug, Clone, PartialEq)]
pub struct GossipFigures {
    /// Members.
    pub members: usize,
    /// Packet loss, per mille.
    pub loss_per_mille: u32,
    /// Time until every member saw every other ALIVE, counted from the last member's
    /// announce.
    pub formed: Option<Duration>,
    /// Time until every member saw a newcomer ALIVE.
    pub join_spread: Option<Duration>,
    /// Datagram bytes sent per member per second in steady state.
    pub bytes_per_member_per_sec: f64,
    /// Views of a member that was up turning SUSPECT (each observer counts: a suspicion
    /// 50 members heard of counts 50), per member-hour of steady state.
    pub false_suspicions_per_member_hour: f64,
    /// Views of a member that was up turning DEAD (counted like suspicions), during
    /// steady state.
    pub false_deaths: usize,
    /// After a crash: time until every other member saw it SUSPECT (or already DEAD).
    pub crash_suspected: Option<Duration>,
    /// After a crash: time until every other member saw it DEAD.
    pub crash_dead: Option<Duration>,
}

/// Forms an `n`-member cluster with `loss_per_mille` loss, then joins one more member,
/// watches `steady` of steady state, and crashes one member.
pub fn run(n: usize, loss_per_mille: u32, steady: Duration, seed: u64) -> GossipFigures {
    run_with(GossipConfig::lan(), n, loss_per_mille, steady, seed)
}

/// [`run`] with another failure-detector configuration.
pub fn run_with(
    config: GossipConfig,
    n: usize,
    loss_per_mille: u32,
    steady: Duration,
    seed: u64,
) -> GossipFigures {
    let mut net = Net::new(n, seed, n + 1, config);
    net.loss_per_mille = loss_per_mille;
    let step = 100 * MS;
    let formed = net.run_until_true(step, FORM_LIMIT, |net| {
        (0..n).all(|subject| net.all_see_alive(subject))
    });

    net.add(n, 0, seed);
    let join_spread = net.run_until_true(10 * MS, MEASURE_LIMIT, |net| net.all_see_alive(n));

    let members = n + 1;
    net.suspected_by.iter_mut().for_each(|c| *c = 0);
    net.dead_by.iter_mut().for_each(|c| *c = 0);
    let bytes_before = net.bytes_sent;
    let steady_until = net.now + steady;
    net.run_until(steady_until);
    let bytes = net.bytes_sent - bytes_before;
    let false_suspicions: usize = net.suspected_by.iter().sum();
    let false_deaths: usize = net.dead_by.iter().sum();
    let member_hours = members as f64 * steady.as_secs_f64() / 3600.0;

    let victim = members / 2;
    net.crash(victim);
    let suspected = |state: Option<&MemberState>| {
        matches!(state, Some(MemberState::Suspect | MemberState::Dead))
    };
    let crash_suspected = net.run_until_true(10 * MS, MEASURE_LIMIT, |net| {
        net.all_others_see(victim, suspected)
    });
    let crash_dead = crash_suspected.and_then(|suspected| {
        net.run_until_true(10 * MS, MEASURE_LIMIT, |net| {
            net.all_others_see(victim, |s| s == Some(&MemberState::Dead))
        })
        .map(|more| suspected + more)
    });
    GossipFigures {
        members: n,
        loss_per_mille,
        formed,
        join_spread,
        bytes_per_member_per_sec: bytes as f64 / members as f64 / steady.as_secs_f64(),
        false_suspicions_per_member_hour: false_suspicions as f64 / member_hours,
        false_deaths,
        crash_suspected,
        crash_dead,
    }
}
