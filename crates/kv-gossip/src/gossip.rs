//! `Gossip`: foca driven by explicit inputs (datagrams, the current time) and producing
//! outputs (datagrams to send, membership events). No sockets, no clock, no tasks: the
//! caller owns those, which is what makes seeded simulation possible.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use foca::{AccumulatingRuntime, Foca, NoCustomBroadcast, OwnedNotification, PostcardCodec, Timer};
use rand::SeedableRng;
use rand::rngs::SmallRng;

use crate::config::GossipConfigError;
use crate::{GossipConfig, NodeIdentity};

/// First byte of every datagram: what follows. Only foca's packets exist today; the tag
/// leaves room for other messages on the same socket.
const FRAME_FOCA: u8 = 0;

/// Most datagrams queued for sending; beyond it new ones are dropped and counted.
pub const MAX_OUTGOING: usize = 4096;
/// Most membership events queued for the caller; beyond it the oldest are dropped.
pub const MAX_EVENTS: usize = 1024;

/// A member's liveness as this node sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum MemberState {
    /// Answering probes.
    Alive,
    /// Missed a probe; will be declared dead unless it refutes the suspicion in time.
    Suspect,
    /// Declared down by the cluster. Liveness never changes the ring: only an explicit
    /// ring change does.
    Dead,
}

/// What this node knows about one member (the newest incarnation of its node id).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberView {
    /// The member's identity.
    pub identity: NodeIdentity,
    /// Its liveness.
    pub state: MemberState,
    /// Its SWIM incarnation (raised to refute suspicion).
    pub incarnation: u16,
    /// When `state` last changed, on the caller's clock.
    pub since: Duration,
}

/// A change worth reacting to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GossipEvent {
    /// A member's state changed (including its first appearance).
    StateChanged {
        /// The member.
        identity: NodeIdentity,
        /// Its new state.
        state: MemberState,
    },
    /// This node was declared down and rejoined under a renewed identity.
    Rejoined {
        /// The new identity.
        identity: NodeIdentity,
    },
}

/// Counters for operators and tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GossipStats {
    /// Datagrams handled.
    pub packets_in: u64,
    /// Datagrams rejected as malformed, foreign or from ourselves.
    pub packets_rejected: u64,
    /// Datagrams larger than the configured maximum, dropped unread.
    pub packets_oversized: u64,
    /// Outgoing datagrams dropped because the queue was full.
    pub outgoing_dropped: u64,
    /// foca refused an operation (an announce, timer, broadcast or leave).
    pub protocol_errors: u64,
    /// Suspicions that outlived foca's timers and were turned into DEAD here.
    pub suspicions_expired: u64,
    /// Times this node announced itself to every known member because foca had stopped
    /// probing (after renewing its identity).
    pub idle_rejoins: u64,
}

type Inner = Foca<NodeIdentity, PostcardCodec, SmallRng, NoCustomBroadcast>;

/// One node's SWIM state machine.
pub struct Gossip {
    foca: Inner,
    runtime: AccumulatingRuntime<NodeIdentity>,
    config: GossipConfig,
    now: Duration,
    timers: BinaryHeap<Reverse<(Duration, u64)>>,
    timer_events: HashMap<u64, Timer<NodeIdentity>>,
    next_timer: u64,
    members: BTreeMap<String, MemberView>,
    outgoing: VecDeque<(SocketAddr, Bytes)>,
    events: VecDeque<GossipEvent>,
    stats: GossipStats,
    /// When to announce to every known member again while foca is not probing.
    rejoin_at: Option<Duration>,
}

impl std::fmt::Debug for Gossip {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gossip")
            .field("identity", self.foca.identity())
            .field("members", &self.members.len())
            .finish_non_exhaustive()
    }
}

impl Gossip {
    /// A node with `identity`, alone until it announces itself; `seed` drives foca's
    /// random choices so a simulation replays exactly.
    pub fn new(
        identity: NodeIdentity,
        config: GossipConfig,
        seed: u64,
    ) -> Result<Self, GossipConfigError> {
        config.validate()?;
        let foca = Foca::new(
            identity,
            config.to_foca(),
            SmallRng::seed_from_u64(seed),
            PostcardCodec,
        );
        Ok(Self {
            foca,
            runtime: AccumulatingRuntime::new(),
            config,
            now: Duration::ZERO,
            timers: BinaryHeap::new(),
            timer_events: HashMap::new(),
            next_timer: 0,
            members: BTreeMap::new(),
            outgoing: VecDeque::new(),
            events: VecDeque::new(),
            stats: GossipStats::default(),
            rejoin_at: None,
        })
    }

    /// This node's current identity (it changes when foca renews it).
    pub fn identity(&self) -> &NodeIdentity {
        self.foca.identity()
    }

    /// Asks the node at `seed` to let us in.
    pub fn announce(&mut self, seed: SocketAddr, now: Duration) {
        self.now = self.now.max(now);
        if seed == self.identity().gossip_addr {
            return;
        }
        let result = self
            .foca
            .announce(NodeIdentity::seed(seed), &mut self.runtime);
        self.count_error(result.is_err());
        self.drain_runtime();
    }

    /// Feeds one received datagram. Malformed, oversized or foreign ones are counted and
    /// dropped; nothing a peer sends can make this panic.
    pub fn handle_datagram(&mut self, data: &[u8], now: Duration) {
        self.now = self.now.max(now);
        self.stats.packets_in += 1;
        if data.len() > self.config.max_packet_bytes {
            self.stats.packets_oversized += 1;
            return;
        }
        let accepted = match data.split_first() {
            Some((&FRAME_FOCA, packet)) => self.foca.handle_data(packet, &mut self.runtime).is_ok(),
            _ => false,
        };
        if !accepted {
            self.stats.packets_rejected += 1;
        }
        self.drain_runtime();
        self.rejoin_if_idle();
    }

    /// Fires every timer due at `now`, in deadline order.
    pub fn advance(&mut self, now: Duration) {
        self.now = self.now.max(now);
        while let Some(&Reverse((deadline, seq))) = self.timers.peek() {
            if deadline > self.now {
                break;
            }
            self.timers.pop();
            if let Some(timer) = self.timer_events.remove(&seq) {
                let result = self.foca.handle_timer(timer, &mut self.runtime);
                self.count_error(result.is_err());
            }
            self.drain_runtime();
        }
        self.refresh_members();
        self.expire_stuck_suspicions();
        self.rejoin_if_idle();
    }

    /// When the next timer is due, if any.
    pub fn next_deadline(&self) -> Option<Duration> {
        let foca = self.timers.peek().map(|Reverse((deadline, _))| *deadline);
        [foca, self.rejoin_at].into_iter().flatten().min()
    }

    /// Takes the datagrams waiting to be sent.
    pub fn take_outgoing(&mut self) -> impl Iterator<Item = (SocketAddr, Bytes)> + '_ {
        self.outgoing.drain(..)
    }

    /// Takes the membership events since the last call.
    pub fn take_events(&mut self) -> impl Iterator<Item = GossipEvent> + '_ {
        self.events.drain(..)
    }

    /// Every other member known, newest incarnation per node id, by node id.
    pub fn members(&self) -> impl Iterator<Item = &MemberView> + '_ {
        self.members.values()
    }

    /// Counters.
    pub fn stats(&self) -> &GossipStats {
        &self.stats
    }

    /// Leaves the cluster gracefully (peers mark this node down at once).
    pub fn shut_down(&mut self) {
        let result = self.foca.leave_cluster(&mut self.runtime);
        self.count_error(result.is_err());
        self.drain_runtime();
    }

    fn drain_runtime(&mut self) {
        while let Some((to, data)) = self.runtime.to_send() {
            if self.outgoing.len() >= MAX_OUTGOING {
                self.stats.outgoing_dropped += 1;
            } else {
                let mut framed = Vec::with_capacity(data.len() + 1);
                framed.push(FRAME_FOCA);
                framed.extend_from_slice(&data);
                self.outgoing
                    .push_back((to.gossip_addr, Bytes::from(framed)));
            }
        }
        while let Some((after, timer)) = self.runtime.to_schedule() {
            let seq = self.next_timer;
            self.next_timer += 1;
            self.timers.push(Reverse((self.now + after, seq)));
            self.timer_events.insert(seq, timer);
        }
        while let Some(notification) = self.runtime.to_notify() {
            if let OwnedNotification::Rejoin(identity) = notification {
                self.push_event(GossipEvent::Rejoined { identity });
            }
        }
        self.refresh_members();
    }

    /// Brings the member table in line with foca's membership state (the only source of
    /// SUSPECT), emitting an event for every change. Runs after every input, so it only
    /// clones what changed: a datagram costs one pass over the members, not a rebuild.
    fn refresh_members(&mut self) {
        let me = &self.foca.identity().node_id;
        // Ordered by node id, so events come out in the same order on every replay.
        let mut newest: BTreeMap<&str, (&NodeIdentity, MemberState, u16)> = BTreeMap::new();
        for member in self.foca.iter_membership_state() {
            let identity = member.id();
            if identity.node_id.is_empty() || identity.node_id == *me {
                continue;
            }
            let state = match member.state() {
                foca::State::Alive => MemberState::Alive,
                foca::State::Suspect => MemberState::Suspect,
                foca::State::Down => MemberState::Dead,
            };
            let slot = newest.entry(identity.node_id.as_str());
            match slot {
                std::collections::btree_map::Entry::Occupied(mut known)
                    if identity.bump > known.get().0.bump =>
                {
                    known.insert((identity, state, member.incarnation()));
                }
                std::collections::btree_map::Entry::Occupied(_) => {}
                std::collections::btree_map::Entry::Vacant(empty) => {
                    empty.insert((identity, state, member.incarnation()));
                }
            }
        }
        let mut changes = Vec::new();
        for (node_id, (identity, state, incarnation)) in newest {
            if let Some(entry) = self.members.get_mut(node_id) {
                if entry.state != state || entry.identity != *identity {
                    changes.push(GossipEvent::StateChanged {
                        identity: identity.clone(),
                        state,
                    });
                    entry.since = self.now;
                    entry.identity = identity.clone();
                    entry.state = state;
                }
                entry.incarnation = incarnation;
            } else {
                changes.push(GossipEvent::StateChanged {
                    identity: identity.clone(),
                    state,
                });
                let view = MemberView {
                    identity: identity.clone(),
                    state,
                    incarnation,
                    since: self.now,
                };
                self.members.insert(node_id.to_owned(), view);
            }
        }
        for event in changes {
            self.push_event(event);
        }
    }

    /// Announces this node to every known member's address, once per probe period, while
    /// foca has no probe scheduled. foca stops probing when it renews its identity (after
    /// being declared down) and waits to hear from someone; if every member it knows holds
    /// a stale identity of it (or it of them), nobody ever writes, and the node stays cut
    /// off with live peers around it. An announce is accepted by address, so it reaches
    /// the members' current incarnations and their answers reconnect foca.
    fn rejoin_if_idle(&mut self) {
        let probing = self
            .timer_events
            .values()
            .any(|timer| matches!(timer, Timer::ProbeRandomMember(_)));
        if probing || self.members.is_empty() {
            self.rejoin_at = None;
            return;
        }
        if self.rejoin_at.is_some_and(|at| at > self.now) {
            return;
        }
        let addresses: std::collections::BTreeSet<SocketAddr> = self
            .members
            .values()
            .map(|m| m.identity.gossip_addr)
            .collect();
        for address in addresses {
            let result = self
                .foca
                .announce(NodeIdentity::seed(address), &mut self.runtime);
            self.count_error(result.is_err());
        }
        self.stats.idle_rejoins += 1;
        self.rejoin_at = Some(self.now + self.config.probe_period);
        self.drain_runtime();
    }

    /// Declares DEAD every member SUSPECT for much longer than `suspect_to_down`.
    ///
    /// Only the member that raised a suspicion holds the timer that turns it into DEAD,
    /// and foca drops that timer when its own identity changes. After a partition heals,
    /// the nodes that suspected an isolated member are often exactly the ones it declared
    /// dead, so they renew their identities and the suspicion outlives every timer; the
    /// suspect, whose update has long been disseminated, never hears of it to refute it.
    /// Declaring it DEAD here resolves that: it learns of it on its next message, renews
    /// its identity and rejoins ALIVE.
    fn expire_stuck_suspicions(&mut self) {
        let limit = self.config.suspect_to_down * 2 + self.config.probe_period;
        let stuck: Vec<(NodeIdentity, u16)> = self
            .members
            .values()
            .filter(|m| m.state == MemberState::Suspect && self.now >= m.since + limit)
            .map(|m| (m.identity.clone(), m.incarnation))
            .collect();
        for (identity, incarnation) in stuck {
            let down = foca::Member::new(identity, incarnation, foca::State::Down);
            let result = self
                .foca
                .apply_many(std::iter::once(down), true, &mut self.runtime);
            self.count_error(result.is_err());
            self.stats.suspicions_expired += 1;
            self.drain_runtime();
        }
    }

    fn count_error(&mut self, failed: bool) {
        self.stats.protocol_errors += u64::from(failed);
    }

    fn push_event(&mut self, event: GossipEvent) {
        if self.events.len() >= MAX_EVENTS {
            self.events.pop_front();
        }
        self.events.push_back(event);
    }
}
