//! The layout driver: exchanges layouts with peers (one peer per interval, round-robin,
//! and every live peer at once after a change here), acks the newest version once every
//! request this node started with the older routing has ended, and read-acks the newest
//! version all of whose members synced it.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::node::Node;
use crate::{PeerState, PeerTransport};

/// Most peers one push reaches at once.
const MAX_PUSH_PEERS: usize = 64;
/// How often a node that does not serve yet (restarted, waiting for a member to confirm
/// its ring) tries an exchange: it refuses every request until one succeeds.
const JOINING_POLL: Duration = Duration::from_millis(100);

/// Runs layout exchanges and acks until `stop` turns true.
pub(crate) async fn run_layout_gossip<T: PeerTransport>(
    node: Arc<Node<T>>,
    mut stop: watch::Receiver<bool>,
) {
    let mut turn = 0usize;
    loop {
        let interval = if node.serving() {
            node.config().layout_interval
        } else {
            node.config().layout_interval.min(JOINING_POLL)
        };
        // `biased`: a fixed polling order keeps a seeded simulation reproducible.
        let push = tokio::select! {
            biased;
            _ = stop.wait_for(|stop| *stop) => return,
            () = node.membership.changed.notified() => true,
            () = tokio::time::sleep(interval) => false,
        };
        node.exchange_layouts(push, &mut turn).await;
        node.ack_newest_if_due();
        node.read_ack_if_synced();
    }
}

impl<T: PeerTransport> Node<T> {
    /// Sends this node's layout to every live peer (`push`) or to the next one in turn,
    /// and merges what they answer.
    async fn exchange_layouts(self: &Arc<Self>, push: bool, turn: &mut usize) {
        let alive: Vec<String> = self
            .peers
            .all()
            .into_iter()
            .filter(|p| p.state == PeerState::Alive)
            .map(|p| p.node_id)
            .collect();
        if alive.is_empty() {
            return;
        }
        let targets: Vec<String> = if push {
            alive.into_iter().take(MAX_PUSH_PEERS).collect()
        } else {
            *turn = turn.wrapping_add(1);
            vec![alive[*turn % alive.len()].clone()]
        };
        let mut calls = JoinSet::new();
        for peer in targets {
            let (node, layout) = (Arc::clone(self), self.encoded_layout());
            calls.spawn(async move {
                let timeout = node.config().peer_timeout;
                let call = node.transport.exchange_layout(&peer, layout);
                let answer = tokio::time::timeout(timeout, call).await;
                (peer, answer)
            });
        }
        while let Some(joined) = calls.join_next().await {
            let Ok((peer, answer)) = joined else { continue };
            match answer {
                Ok(Ok(bytes)) if !bytes.is_empty() => {
                    if let Err(error) = self.receive_layout(&bytes) {
                        tracing::warn!(%peer, %error, "layout from peer refused");
                    }
                }
                Ok(Ok(_)) => {}
                Ok(Err(error)) => tracing::debug!(%peer, %error, "layout exchange failed"),
                Err(_) => tracing::debug!(%peer, "layout exchange timed out"),
            }
        }
    }

    /// Read-acks the newest version every one of whose members synced it: from now on
    /// this node reads every key from it (or a newer one), so older versions may retire.
    pub(crate) fn read_ack_if_synced(&self) {
        let Some(routing) = self.routing() else {
            return;
        };
        let me = self.config().node_id.as_str();
        let layout = routing.layout();
        let readable = layout.readable();
        if !layout.newest().has(me) || layout.read_acked(me) >= readable {
            return;
        }
        let marked = self
            .update_layout(|layout| Ok(layout.as_mut().is_some_and(|l| l.mark_read(me, readable))));
        match marked {
            Ok(true) => tracing::info!(version = readable, "ring version read-acked"),
            Ok(false) => {}
            Err(error) => tracing::warn!(%error, "cannot read-ack the ring version"),
        }
    }

    /// Acks the newest version once this node has routed with it for longer than a
    /// request may last: from then on, no write of this node's goes to the older
    /// versions only, so copying their data to the new owners misses nothing.
    pub(crate) fn ack_newest_if_due(&self) {
        let Some(routing) = self.routing() else {
            return;
        };
        let me = self.config().node_id.as_str();
        let newest = routing.newest_number();
        if routing.layout().acked(me) >= newest || !routing.is_member(me) {
            return;
        }
        let grace: Duration = self.config().request_timeout;
        let due = self
            .membership
            .installed_at(newest)
            .is_some_and(|at| Instant::now() >= at + grace);
        if !due {
            return;
        }
        let acked =
            self.update_layout(|layout| Ok(layout.as_mut().is_some_and(|l| l.ack(me, newest))));
        match acked {
            Ok(true) => tracing::info!(version = newest, "ring version acked"),
            Ok(false) => {}
            Err(error) => tracing::warn!(%error, "cannot ack the ring version"),
        }
    }
}
