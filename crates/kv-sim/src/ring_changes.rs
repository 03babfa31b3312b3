//! Forming the simulated cluster's ring and changing it as an operator would: a spare
//! joins, a member leaves, a crashed member is removed, a spare replaces a member. Nodes
//! are picked from the cluster's state at the moment of the change (with the schedule's
//! `pick`), so a seed replays the same choices.

use std::sync::{Arc, PoisonError};
use std::time::Duration;

use kv_node::{PeerState, RingChange};
use tokio::time::Instant;

use crate::cluster::SimCluster;
use crate::faults::ChangeKind;
use crate::net::SimNode;

/// How often the state a change waits for is polled.
const POLL: Duration = Duration::from_millis(100);
/// Longest a removal waits for its victim to be declared DEAD.
const DEAD_LIMIT: Duration = Duration::from_secs(30);

impl SimCluster {
    /// Joins nodes 2..=`members` to the ring the first node founded (once the first sees
    /// them ALIVE), and waits until the ring settles; the other nodes stay spares.
    pub async fn form(&self, members: usize, limit: Duration) -> Result<(), String> {
        let started = Instant::now();
        let joiners: Vec<String> = (2..=members).map(|i| format!("n{i}")).collect();
        if !joiners.is_empty() {
            loop {
                if started.elapsed() > limit {
                    return Err(format!(
                        "the ring did not form within {limit:?}: {}",
                        self.describe_views()
                    ));
                }
                let founder = self.node(0).ok_or("the founder is down")?;
                let all_alive = joiners.iter().all(|id| {
                    founder
                        .peer_status(id)
                        .is_some_and(|p| p.state == PeerState::Alive)
                });
                if all_alive
                    && founder
                        .change_ring(&RingChange::Join(joiners.clone()), false)
                        .is_ok()
                {
                    break;
                }
                tokio::time::sleep(POLL).await;
            }
        }
        self.wait_converged(limit.saturating_sub(started.elapsed()))
            .await
            .map(|_| ())
    }

    /// Makes one ring change of kind `change`; logs what it did or why it made none.
    pub async fn change_ring(&self, change: ChangeKind, pick: u64) {
        let at = self.now();
        let outcome = self.try_change(change, pick).await;
        let line = match outcome {
            Ok(done) => format!("{:.1}s {done}", at.as_secs_f64()),
            Err(why) => format!("{:.1}s {change:?} skipped: {why}", at.as_secs_f64()),
        };
        self.change_log
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(line);
    }

    /// What every change so far did.
    pub fn ring_changes(&self) -> Vec<String> {
        self.change_log
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    async fn try_change(&self, change: ChangeKind, pick: u64) -> Result<String, String> {
        let (proposer, members) = self.proposer().ok_or("no member serves")?;
        let me = proposer.config().node_id.clone();
        let others: Vec<String> = members.iter().filter(|m| **m != me).cloned().collect();
        let shrinkable = members.len() > self.replication_factor();
        let chosen = |from: &[String], what: &str| {
            if from.is_empty() {
                Err(format!("no {what}"))
            } else {
                Ok(from[(pick % from.len() as u64) as usize].clone())
            }
        };
        let request = match change {
            ChangeKind::Join => RingChange::Join(vec![chosen(&self.spares(&proposer), "spare")?]),
            ChangeKind::Leave if shrinkable => {
                let running = self.running_of(&others);
                RingChange::Leave(vec![chosen(&running, "running member")?])
            }
            ChangeKind::Remove if shrinkable => {
                let victim = chosen(&self.running_of(&others), "running member")?;
                self.crash_for_removal(&proposer, &victim).await?;
                RingChange::Remove(vec![victim])
            }
            ChangeKind::Leave | ChangeKind::Remove => {
                return Err(format!(
                    "only {} members, N={}",
                    members.len(),
                    self.replication_factor()
                ));
            }
            ChangeKind::Replace => RingChange::Replace {
                old: chosen(&others, "member")?,
                new: chosen(&self.spares(&proposer), "spare")?,
            },
        };
        let plan = proposer
            .change_ring(&request, false)
            .map_err(|e| format!("{request:?} refused: {e}"))?;
        let retiring = match &request {
            RingChange::Leave(nodes) | RingChange::Remove(nodes) => nodes.clone(),
            RingChange::Replace { old, .. } => vec![old.clone()],
            RingChange::Join(_) => Vec::new(),
        };
        self.retired
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend(retiring);
        Ok(format!("{} via {me}: v{}", plan.change, plan.version))
    }

    /// The first running node that serves and is a member of its newest ring version,
    /// with those members.
    fn proposer(&self) -> Option<(Arc<SimNode>, Vec<String>)> {
        (0..self.size()).find_map(|index| {
            let node = self.node(index)?;
            let routing = node.routing()?;
            let newest = &routing.layout().newest().members;
            (node.serving() && newest.contains_key(&node.config().node_id))
                .then(|| (Arc::clone(&node), newest.keys().cloned().collect()))
        })
    }

    /// Running nodes outside every live version (as `proposer` sees it) that never left.
    fn spares(&self, proposer: &SimNode) -> Vec<String> {
        let Some(routing) = proposer.routing() else {
            return Vec::new();
        };
        let retired = self.retired.lock().unwrap_or_else(PoisonError::into_inner);
        self.nodes()
            .iter()
            .filter(|slot| slot.running.is_some())
            .map(|slot| slot.id.clone())
            .filter(|id| !routing.is_member(id) && !retired.contains(id))
            .collect()
    }

    fn running_of(&self, ids: &[String]) -> Vec<String> {
        let nodes = self.nodes();
        ids.iter()
            .filter(|id| nodes.iter().any(|s| s.id == **id && s.running.is_some()))
            .cloned()
            .collect()
    }

    /// Crashes `victim` for the rest of the run and waits until `observer` sees it DEAD.
    async fn crash_for_removal(&self, observer: &SimNode, victim: &str) -> Result<(), String> {
        let index = self
            .nodes()
            .iter()
            .position(|s| s.id == victim)
            .ok_or("unknown victim")?;
        self.held_down
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(index);
        self.crash(index, false);
        let started = Instant::now();
        while observer
            .peer_status(victim)
            .is_none_or(|p| p.state != PeerState::Dead)
        {
            if started.elapsed() > DEAD_LIMIT {
                return Err(format!("{victim} was not declared DEAD in {DEAD_LIMIT:?}"));
            }
            tokio::time::sleep(POLL).await;
        }
        Ok(())
    }
}
