//! The gossip driver: owns a [`Gossip`] state machine and a datagram socket, feeds it
//! datagrams and timer ticks, sends what it produces, and installs each new membership
//! view into the node (peer liveness and addresses; the ring changes only by explicit
//! ring changes, see `membership/`).

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use kv_gossip::{Gossip, GossipConfig, GossipConfigError, MemberState, MemberView, NodeIdentity};
use tokio::time::Instant;

use crate::gossip_seal::{Envelope, KeyringFile};
use crate::{Node, PeerState, PeerStatus, PeerTransport};

/// Largest datagram read; gossip rejects anything above its own limit anyway.
const RECEIVE_BUFFER_BYTES: usize = 65_536;
/// How often a node that sees no live member re-announces itself to its seeds.
const REANNOUNCE_EVERY: Duration = Duration::from_secs(2);
/// How often the gossip keyring file is re-read for a rotation.
const KEYRING_RELOAD_EVERY: Duration = Duration::from_secs(1);

/// Datagram I/O for gossip: UDP in production; anything that moves bytes in tests.
pub trait Datagrams: Send + Sync + 'static {
    /// Sends one datagram.
    fn send_to(
        &self,
        data: &[u8],
        to: SocketAddr,
    ) -> impl Future<Output = io::Result<usize>> + Send;
    /// Receives one datagram into `buf`.
    fn recv_from(
        &self,
        buf: &mut [u8],
    ) -> impl Future<Output = io::Result<(usize, SocketAddr)>> + Send;
}

impl Datagrams for tokio::net::UdpSocket {
    fn send_to(
        &self,
        data: &[u8],
        to: SocketAddr,
    ) -> impl Future<Output = io::Result<usize>> + Send {
        tokio::net::UdpSocket::send_to(self, data, to)
    }
    fn recv_from(
        &self,
        buf: &mut [u8],
    ) -> impl Future<Output = io::Result<(usize, SocketAddr)>> + Send {
        tokio::net::UdpSocket::recv_from(self, buf)
    }
}

/// How a node gossips.
#[derive(Debug, Clone)]
pub struct GossipSettings {
    /// Where this node's gossip socket listens.
    pub listen: SocketAddr,
    /// The gossip address peers reach this node at (`listen` unless it binds to an
    /// unspecified address or sits behind a NAT).
    pub advertise: SocketAddr,
    /// Nodes to announce to when starting (and when alone).
    pub seeds: Vec<SocketAddr>,
    /// Failure-detector timing.
    pub config: GossipConfig,
    /// Found a new cluster on an empty store (refused if the store belongs to a cluster
    /// already). Without it, a node with a stored layout restarts with it, and a new node
    /// waits for a member to send it the layout (a node with no seed but itself on an
    /// empty store founds a cluster of one).
    pub bootstrap: bool,
    /// Seal every datagram under this keyring (re-read while running); plain without.
    pub keyring: Option<KeyringFile>,
}

/// Runs gossip for `node` until `shutdown` resolves, then leaves the cluster gracefully.
/// `bump` is this start's identity bump: it must grow from one start of the node to the
/// next (the builder passes its start token), and it seeds gossip's random choices.
pub(crate) async fn run_gossip<T: PeerTransport, D: Datagrams>(
    node: Arc<Node<T>>,
    socket: D,
    settings: GossipSettings,
    bump: u64,
    shutdown: impl Future<Output = ()>,
) -> Result<(), GossipConfigError> {
    let started = Instant::now();
    let config = node.config();
    let identity = NodeIdentity {
        node_id: config.node_id.clone(),
        gossip_addr: settings.advertise,
        internal_addr: config.internal_address,
        client_addr: config.client_address,
        bump,
    };
    let rng_seed = bump ^ kv_ring::key_hash(config.node_id.as_bytes());
    let mut gossip = Gossip::new(identity, settings.config.clone(), rng_seed)?;
    for seed in &settings.seeds {
        gossip.announce(*seed, started.elapsed());
    }
    install(&node, &gossip, started.elapsed());
    let mut envelope = Envelope::new(settings.keyring.as_ref(), &config.node_id, bump);
    let mut buffer = vec![0u8; RECEIVE_BUFFER_BYTES];
    let mut reannounce = tokio::time::interval(REANNOUNCE_EVERY);
    let mut reload_keyring = tokio::time::interval(KEYRING_RELOAD_EVERY);
    let sealed = settings.keyring.is_some();
    tokio::pin!(shutdown);
    loop {
        flush(&mut gossip, &mut envelope, &socket).await;
        let mut changed = false;
        for event in gossip.take_events() {
            tracing::debug!(node = %config.node_id, ?event, "membership event");
            node.stats().gossip.record_event(&event);
            changed = true;
        }
        node.stats().gossip.set_stats(gossip.stats());
        if changed {
            install(&node, &gossip, started.elapsed());
        }
        let next_timer = gossip
            .next_deadline()
            .map_or(started + Duration::from_secs(3600), |d| started + d);
        // `biased`: a fixed polling order keeps a seeded simulation reproducible, and
        // timers come before datagrams so a flood cannot starve the failure detector.
        tokio::select! {
            biased;
            () = &mut shutdown => break,
            () = tokio::time::sleep_until(next_timer) => gossip.advance(started.elapsed()),
            received = socket.recv_from(&mut buffer) => match received {
                Ok((len, from)) => match envelope.unwrap(&buffer[..len]) {
                    Ok(payload) => gossip.handle_datagram(&payload, started.elapsed()),
                    Err(error) => {
                        tracing::debug!(%from, reason = error.label(), "gossip datagram dropped");
                        node.stats().gossip.record_unsealed(error);
                    }
                },
                Err(error) => tracing::warn!(%error, "gossip receive failed"),
            },
            _ = reload_keyring.tick(), if sealed => envelope.reload(),
            _ = reannounce.tick() => {
                let alone = gossip.members().all(|m| m.state != MemberState::Alive);
                if alone {
                    for seed in &settings.seeds {
                        gossip.announce(*seed, started.elapsed());
                    }
                }
            }
        }
    }
    gossip.shut_down();
    flush(&mut gossip, &mut envelope, &socket).await;
    Ok(())
}

async fn flush<D: Datagrams>(gossip: &mut Gossip, envelope: &mut Envelope, socket: &D) {
    let outgoing: Vec<_> = gossip.take_outgoing().collect();
    for (to, data) in outgoing {
        let wire = envelope.wrap(&data);
        if let Err(error) = socket.send_to(&wire, to).await {
            tracing::debug!(%error, %to, "gossip send failed");
        }
    }
}

/// Installs gossip's current view into the node.
fn install<T: PeerTransport>(node: &Node<T>, gossip: &Gossip, now: Duration) {
    let wall_now = SystemTime::now();
    let peers = gossip
        .members()
        .map(|member| peer_status(member, wall_now, now))
        .collect();
    node.apply_peers(peers);
}

fn peer_status(member: &MemberView, wall_now: SystemTime, now: Duration) -> PeerStatus {
    let age = now.saturating_sub(member.since);
    PeerStatus {
        node_id: member.identity.node_id.clone(),
        internal_address: member.identity.internal_addr,
        client_address: Some(member.identity.client_addr),
        gossip_address: Some(member.identity.gossip_addr),
        state: match member.state {
            MemberState::Alive => PeerState::Alive,
            MemberState::Suspect => PeerState::Suspect,
            MemberState::Dead => PeerState::Dead,
        },
        incarnation: u64::from(member.incarnation),
        since: wall_now.checked_sub(age).unwrap_or(wall_now),
    }
}
