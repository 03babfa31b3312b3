//! Seeded discrete-event simulation of gossip clusters: no sockets, no real clock. Every
//! test prints its seeds; rerun one with `KV_GOSSIP_SEED=<seed> cargo test -p kv-gossip`,
//! or run a campaign with `KV_GOSSIP_SEEDS=<count>` (add `--release -- --nocapture`).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashSet};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::time::Duration;

use bytes::Bytes;
use kv_gossip::{Gossip, GossipConfig, GossipEvent, MemberState, NodeIdentity};
use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};

const MS: Duration = Duration::from_millis(1);

fn identity(i: usize, bump: u64) -> NodeIdentity {
    NodeIdentity {
        node_id: format!("n{i}"),
        gossip_addr: format!("127.0.0.1:{}", 20_000 + i).parse().unwrap(),
        internal_addr: format!("127.0.0.1:{}", 31_000 + i).parse().unwrap(),
        client_addr: format!("127.0.0.1:{}", 30_000 + i).parse().unwrap(),
        bump,
    }
}

fn index_of(addr: std::net::SocketAddr) -> usize {
    usize::from(addr.port() - 20_000)
}

struct Node {
    gossip: Gossip,
    up: bool,
}

/// A cluster on a simulated network: per-message latency 1-5 ms, optional loss,
/// symmetric partitions, and crashes.
/// A datagram in flight: (delivery time, tie-breaking sequence, destination, bytes).
type InFlight = Reverse<(Duration, u64, usize, Vec<u8>)>;

struct Sim {
    nodes: Vec<Node>,
    in_flight: BinaryHeap<InFlight>,
    next_message: u64,
    now: Duration,
    rng: SmallRng,
    loss_per_mille: u32,
    cut: HashSet<(usize, usize)>,
    /// Every (time, observer, subject, state) seen: the run's trace.
    trace: Vec<(Duration, usize, String, MemberState)>,
    seed: u64,
}

impl Sim {
    fn new(count: usize, seed: u64) -> Self {
        let nodes = (0..count)
            .map(|i| Node {
                gossip: Gossip::new(
                    identity(i, 1),
                    GossipConfig::lan(),
                    seed ^ ((i as u64 + 1) * 0x9e37_79b9),
                )
                .unwrap(),
                up: true,
            })
            .collect();
        let mut sim = Self {
            nodes,
            in_flight: BinaryHeap::new(),
            next_message: 0,
            now: Duration::ZERO,
            rng: SmallRng::seed_from_u64(seed),
            loss_per_mille: 0,
            cut: HashSet::new(),
            trace: Vec::new(),
            seed,
        };
        // Every node joins through node 0.
        for i in 1..count {
            sim.nodes[i]
                .gossip
                .announce(identity(0, 1).gossip_addr, Duration::ZERO);
            sim.collect(i);
        }
        sim
    }

    fn collect(&mut self, from: usize) {
        let outgoing: Vec<(std::net::SocketAddr, Bytes)> =
            self.nodes[from].gossip.take_outgoing().collect();
        for (to, data) in outgoing {
            let to = index_of(to);
            if to >= self.nodes.len() || self.cut.contains(&(from, to)) {
                continue;
            }
            if self.loss_per_mille > 0 && self.rng.random_range(0..1000) < self.loss_per_mille {
                continue;
            }
            let at = self.now + MS * self.rng.random_range(1..=5);
            self.in_flight
                .push(Reverse((at, self.next_message, to, data.to_vec())));
            self.next_message += 1;
        }
        let events: Vec<GossipEvent> = self.nodes[from].gossip.take_events().collect();
        for event in events {
            if let GossipEvent::StateChanged { identity, state } = event {
                self.trace.push((self.now, from, identity.node_id, state));
            }
        }
    }

    /// Runs the cluster until `until`, delivering messages and timers in time order.
    fn run_until(&mut self, until: Duration) {
        loop {
            let next_message = self.in_flight.peek().map(|Reverse((at, ..))| *at);
            let next_timer = self
                .nodes
                .iter()
                .enumerate()
                .filter(|(_, n)| n.up)
                .filter_map(|(i, n)| n.gossip.next_deadline().map(|d| (d, i)))
                .min();
            let next = match (next_message, next_timer) {
                (Some(m), Some((t, _))) => m.min(t),
                (Some(m), None) => m,
                (None, Some((t, _))) => t,
                (None, None) => break,
            };
            if next > until {
                break;
            }
            self.now = next;
            if next_message == Some(next) {
                let Reverse((_, _, to, data)) = self.in_flight.pop().unwrap();
                if self.nodes[to].up {
                    self.nodes[to].gossip.handle_datagram(&data, self.now);
                    self.collect(to);
                }
            } else if let Some((_, i)) = next_timer {
                self.nodes[i].gossip.advance(self.now);
                self.collect(i);
            }
        }
        self.now = until;
    }

    fn state_of(&self, observer: usize, subject: usize) -> Option<MemberState> {
        let id = format!("n{subject}");
        self.nodes[observer]
            .gossip
            .members()
            .find(|m| m.identity.node_id == id)
            .map(|m| m.state)
    }

    fn all_see(&self, subject: usize, state: MemberState) -> bool {
        (0..self.nodes.len())
            .filter(|&o| o != subject && self.nodes[o].up)
            .all(|o| self.state_of(o, subject) == Some(state))
    }

    fn fully_alive(&self) -> bool {
        (0..self.nodes.len()).all(|s| self.all_see(s, MemberState::Alive))
    }

    fn crash(&mut self, i: usize) {
        self.nodes[i].up = false;
    }

    fn restart(&mut self, i: usize, bump: u64) {
        let seed = self.seed ^ bump;
        self.nodes[i] = Node {
            gossip: Gossip::new(identity(i, bump), GossipConfig::lan(), seed).unwrap(),
            up: true,
        };
        let seed_addr = identity(usize::from(i == 0), 1).gossip_addr;
        self.nodes[i].gossip.announce(seed_addr, self.now);
        self.collect(i);
    }

    fn partition(&mut self, side: &[usize]) {
        for &a in side {
            for b in 0..self.nodes.len() {
                if !side.contains(&b) {
                    self.cut.insert((a, b));
                    self.cut.insert((b, a));
                }
            }
        }
    }

    /// Runs in `step` increments until `done` holds or `limit` passes; returns the time.
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

    fn trace_hash(&self) -> u64 {
        let mut hasher = DefaultHasher::new();
        self.trace.hash(&mut hasher);
        hasher.finish()
    }
}

/// The seeds a test runs: `KV_GOSSIP_SEED=<s>` replays one, `KV_GOSSIP_SEEDS=<n>` runs a
/// campaign of n seeds starting at the first default, otherwise the defaults.
fn seeds(default: &[u64]) -> Vec<u64> {
    if let Ok(seed) = std::env::var("KV_GOSSIP_SEED") {
        return vec![seed.parse().expect("KV_GOSSIP_SEED must be a number")];
    }
    if let Ok(count) = std::env::var("KV_GOSSIP_SEEDS") {
        let count: u64 = count.parse().expect("KV_GOSSIP_SEEDS must be a number");
        return (default[0]..default[0] + count).collect();
    }
    default.to_vec()
}

#[test]
fn clusters_of_3_to_50_converge_to_the_same_view() {
    for (count, seed) in [(3, 11), (10, 12), (50, 13)] {
        for seed in seeds(&[seed]) {
            let mut sim = Sim::new(count, seed);
            let took = sim.run_until_true(100 * MS, Duration::from_secs(60), Sim::fully_alive);
            let took = took.unwrap_or_else(|| {
                panic!("{count} members did not converge in 60 s (seed {seed})")
            });
            println!("{count} members: everyone ALIVE everywhere after {took:?} (seed {seed})");
            for node in &sim.nodes {
                let stats = node.gossip.stats();
                assert_eq!(stats.protocol_errors, 0, "seed {seed}: {stats:?}");
            }
        }
    }
}

#[test]
fn a_crashed_member_is_dead_everywhere_within_ten_seconds() {
    let mut worst = Duration::ZERO;
    for seed in seeds(&[21, 22, 23, 24, 25, 26, 27, 28]) {
        let mut sim = Sim::new(5, seed);
        sim.run_until_true(100 * MS, Duration::from_secs(30), Sim::fully_alive)
            .expect("converged");
        sim.crash(3);
        let suspect = sim.run_until_true(10 * MS, Duration::from_secs(10), |s| {
            (0..5)
                .filter(|&o| o != 3)
                .any(|o| s.state_of(o, 3) != Some(MemberState::Alive))
        });
        let dead = sim.run_until_true(10 * MS, Duration::from_secs(10), |s| {
            s.all_see(3, MemberState::Dead)
        });
        let dead = dead
            .unwrap_or_else(|| panic!("crash not detected everywhere within 10 s (seed {seed})"));
        let total = suspect.unwrap_or_default() + dead;
        println!(
            "seed {seed}: first suspicion after {:?}, DEAD everywhere {total:?} after the crash",
            suspect.unwrap_or_default()
        );
        worst = worst.max(total);
    }
    println!("worst detection time: {worst:?}");
    assert!(worst <= Duration::from_secs(10));
}

#[test]
fn five_percent_loss_declares_no_live_member_dead() {
    let mut false_deaths = 0;
    let mut false_suspicions = 0;
    let runs = seeds(&[31, 32, 33, 34, 35, 36, 37, 38, 39, 40]);
    for &seed in &runs {
        let mut sim = Sim::new(5, seed);
        sim.run_until_true(100 * MS, Duration::from_secs(30), Sim::fully_alive)
            .expect("converged");
        sim.trace.clear();
        sim.loss_per_mille = 50;
        sim.run_until(sim.now + Duration::from_secs(600));
        let dead = sim
            .trace
            .iter()
            .filter(|(.., state)| *state == MemberState::Dead)
            .count();
        let suspect = sim
            .trace
            .iter()
            .filter(|(.., state)| *state == MemberState::Suspect)
            .count();
        println!(
            "seed {seed}: 10 simulated minutes at 5% loss: {suspect} suspicions, {dead} false DEAD"
        );
        false_deaths += dead;
        false_suspicions += suspect;
    }
    println!(
        "{} runs: {false_suspicions} suspicions, {false_deaths} false DEAD declarations",
        runs.len()
    );
    assert_eq!(false_deaths, 0, "live members were declared DEAD");
}

#[test]
fn a_restarted_member_is_alive_again_everywhere() {
    for seed in seeds(&[41, 42, 43]) {
        let mut sim = Sim::new(4, seed);
        sim.run_until_true(100 * MS, Duration::from_secs(30), Sim::fully_alive)
            .expect("converged");
        sim.crash(2);
        sim.run_until_true(100 * MS, Duration::from_secs(15), |s| {
            s.all_see(2, MemberState::Dead)
        })
        .expect("detected");
        sim.restart(2, 2);
        let back = sim.run_until_true(10 * MS, Duration::from_secs(15), Sim::fully_alive);
        let back =
            back.unwrap_or_else(|| panic!("restarted member not ALIVE everywhere (seed {seed})"));
        println!("seed {seed}: restarted member ALIVE everywhere after {back:?}");
        let bumps: Vec<u64> = (0..4)
            .filter(|&o| o != 2)
            .map(|o| {
                sim.nodes[o]
                    .gossip
                    .members()
                    .find(|m| m.identity.node_id == "n2")
                    .unwrap()
                    .identity
                    .bump
            })
            .collect();
        assert_eq!(bumps, [2, 2, 2], "peers still hold the old incarnation");
    }
}

#[test]
fn a_healed_partition_merges_back_into_one_view() {
    for seed in seeds(&[51, 52, 53]) {
        let mut sim = Sim::new(5, seed);
        sim.run_until_true(100 * MS, Duration::from_secs(30), Sim::fully_alive)
            .expect("converged");
        sim.partition(&[0, 1]);
        sim.run_until_true(100 * MS, Duration::from_secs(20), |s| {
            s.state_of(2, 0) == Some(MemberState::Dead)
                && s.state_of(0, 2) == Some(MemberState::Dead)
        })
        .unwrap_or_else(|| panic!("sides did not see each other down (seed {seed})"));
        sim.cut.clear();
        let healed = sim.run_until_true(100 * MS, Duration::from_secs(60), Sim::fully_alive);
        let healed =
            healed.unwrap_or_else(|| panic!("partition did not heal within 60 s (seed {seed})"));
        println!("seed {seed}: one view again {healed:?} after the heal");
    }
}

#[test]
fn the_same_seed_replays_the_same_trace() {
    let run = |seed| {
        let mut sim = Sim::new(6, seed);
        sim.loss_per_mille = 20;
        sim.run_until(Duration::from_secs(20));
        sim.crash(4);
        sim.run_until(Duration::from_secs(40));
        (sim.trace_hash(), sim.trace.len())
    };
    assert_eq!(run(61), run(61));
    assert_ne!(run(61).0, run(62).0, "different seeds should differ");
}

#[test]
fn garbage_datagrams_are_counted_not_fatal() {
    let mut gossip = Gossip::new(identity(0, 1), GossipConfig::lan(), 1).unwrap();
    let mut rng = SmallRng::seed_from_u64(81);
    let lengths: Vec<usize> = (0..2000usize).map(|i| i % 1500).chain([70_000]).collect();
    for &len in &lengths {
        let data: Vec<u8> = (0..len).map(|_| rng.random()).collect();
        gossip.handle_datagram(&data, Duration::ZERO);
    }
    let stats = gossip.stats();
    let oversized = lengths
        .iter()
        .filter(|&&len| len > GossipConfig::lan().max_packet_bytes)
        .count();
    assert_eq!(stats.packets_in, lengths.len() as u64);
    assert_eq!(stats.packets_oversized, oversized as u64);
    assert!(stats.packets_rejected > 1000, "{stats:?}");
    assert_eq!(gossip.members().count(), 0, "garbage created members");
}
