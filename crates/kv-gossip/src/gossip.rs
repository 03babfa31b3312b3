//! `Gossip`: foca driven by explicit inputs (datagrams, the current time) and producing
//! outputs (datagrams to send, membership events). No sockets, no clock, no tasks: the
//! caller owns those, which is what makes seeded simulation possible.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use foca::{AccumulatingRuntime, Foca, NoCustomBroadcast, OwnedNotification, PostcardCodec, Timer};
use rand::SeedableRng;
use rand::rngs::SmallRng;

use crate::config::GossipConfigError;
use crate::members::{MemberTable, SeenSlot, SlotEntry};
use crate::{GossipConfig, MemberState, MemberView, NodeIdentity};

/// First byte of every datagram: what follows. Only foca's packets exist today; the tag
/// leaves room for other messages on the same socket.
const FRAME_FOCA: u8 = 0;

/// Most datagrams queued for sending; beyond it new ones are dropped and counted.
pub const MAX_OUTGOING: usize = 4096;
/// Most membership events queued for the caller; beyond it the oldest are dropped.
pub const MAX_EVENTS: usize = 1024;

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
    table: MemberTable,
    /// What was last seen in each slot of foca's membership list (see `refresh_members`).
    seen: Vec<SeenSlot>,
    /// foca renamed a member since the last refresh (see `SeenSlot::matches`).
    renamed: bool,
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
            .field("members", &self.table.len())
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
            table: MemberTable::default(),
            seen: Vec::new(),
            renamed: false,
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
        self.absorb();
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
        self.absorb();
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
        self.table.views()
    }

    /// Counters.
    pub fn stats(&self) -> &GossipStats {
        &self.stats
    }

    /// Leaves the cluster gracefully (peers mark this node down at once).
    pub fn shut_down(&mut self) {
        let result = self.foca.leave_cluster(&mut self.runtime);
        self.count_error(result.is_err());
        self.absorb();
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
            match notification {
                OwnedNotification::Rejoin(identity) => {
                    self.push_event(GossipEvent::Rejoined { identity });
                }
                OwnedNotification::Rename(..) => self.renamed = true,
                _ => {}
            }
        }
    }

    /// Takes foca's outputs and brings the member table up to date: once per input, not
    /// once per foca call, since the refresh walks foca's whole list.
    fn absorb(&mut self) {
        self.drain_runtime();
        self.refresh_members();
    }

    /// Brings the member table in line with foca's membership state (the only source of
    /// SUSPECT), emitting an event for every change. Runs after every input, so it must
    /// be cheap: foca keeps its list in place between inputs (it appends, swaps a
    /// newcomer into a random slot, renames in place, and shuffles once per probe round),
    /// so comparing each slot's integers with what was seen there last time finds the
    /// few entries that changed, and only those touch the table.
    fn refresh_members(&mut self) {
        let me = &self.foca.identity().node_id;
        let renamed = std::mem::take(&mut self.renamed);
        let membership = self.foca.iter_membership_state();
        self.seen.truncate(membership.len());
        // Keyed by node id: events come out in the same order on every replay, one per
        // member even if several of its incarnations changed.
        let mut changes: BTreeMap<String, GossipEvent> = BTreeMap::new();
        for (slot, member) in membership.enumerate() {
            let entry = SlotEntry::from(member);
            if self
                .seen
                .get(slot)
                .is_some_and(|seen| seen.matches(&entry, renamed))
            {
                continue;
            }
            let owned = SeenSlot::from(entry);
            if slot < self.seen.len() {
                self.seen[slot] = owned;
            } else {
                debug_assert_eq!(slot, self.seen.len());
                self.seen.push(owned);
            }
            if entry.identity.node_id.is_empty() || entry.identity.node_id == *me {
                continue;
            }
            if self.table.apply(&entry, self.now) {
                let event = GossipEvent::StateChanged {
                    identity: entry.identity.clone(),
                    state: entry.state,
                };
                changes.insert(entry.identity.node_id.clone(), event);
            }
        }
        for event in changes.into_values() {
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
        if probing || self.table.is_empty() {
            self.rejoin_at = None;
            return;
        }
        if self.rejoin_at.is_some_and(|at| at > self.now) {
            return;
        }
        let addresses: BTreeSet<SocketAddr> =
            self.table.views().map(|m| m.identity.gossip_addr).collect();
        for address in addresses {
            let result = self
                .foca
                .announce(NodeIdentity::seed(address), &mut self.runtime);
            self.count_error(result.is_err());
        }
        self.stats.idle_rejoins += 1;
        self.rejoin_at = Some(self.now + self.config.probe_period);
        self.absorb();
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
        if self.table.suspects() == 0 {
            return;
        }
        let limit = self.config.suspect_to_down * 2 + self.config.probe_period;
        let stuck: Vec<(NodeIdentity, u16)> = self
            .table
            .views()
            .filter(|m| m.state == MemberState::Suspect && self.now >= m.since + limit)
            .map(|m| (m.identity.clone(), m.incarnation))
            .collect();
        if stuck.is_empty() {
            return;
        }
        for (identity, incarnation) in stuck {
            let down = foca::Member::new(identity, incarnation, foca::State::Down);
            let result = self
                .foca
                .apply_many(std::iter::once(down), true, &mut self.runtime);
            self.count_error(result.is_err());
            self.stats.suspicions_expired += 1;
        }
        self.absorb();
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
