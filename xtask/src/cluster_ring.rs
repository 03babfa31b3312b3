//! `cargo xtask cluster join|leave|remove`: ring changes on the local cluster, as an
//! operator makes them with `kvstore join|leave|remove`: the change goes to a running
//! member, its plan is printed, and the command waits until the data moved and the ring
//! settled. A node that left is stopped and never started again.

use std::time::Duration;

use kv_client::{ChangeRingResponse, RingChangeKind};

use crate::cluster::{Cluster, keeps_across_nodes, node_spec};

/// Longest a change may take to move its data on a local cluster.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(300);

impl Cluster {
    /// Starts `node` (the next node id, e.g. n4) and joins it to the ring.
    pub(crate) async fn join(&mut self, node: &str) -> Result<(), String> {
        self.add_node(node).await?;
        self.change(RingChangeKind::Join, node).await
    }

    /// Starts `node` (the next node id) with the first node's settings, not yet in the
    /// ring, and waits until the members see it.
    pub(crate) async fn add_node(&mut self, node: &str) -> Result<(), String> {
        let next = self.nodes.len() + 1;
        if node != format!("n{next}") {
            return Err(format!(
                "the next node of this cluster is n{next}; got {node:?}"
            ));
        }
        let template = self.nodes.first().ok_or("empty cluster")?.clone();
        let mut spec = node_spec(next, next, &self.dir);
        spec.release = template.release;
        spec.args.extend(
            template
                .args
                .iter()
                .filter(|a| keeps_across_nodes(a))
                .cloned(),
        );
        if let Some(pki) = self.pki() {
            spec.args.extend(
                pki.serve_args(node)
                    .into_iter()
                    .filter(|a| !a.starts_with("--tls-ca=")),
            );
        }
        self.nodes.push(spec);
        self.save()?;
        self.start(node)?;
        self.wait_healthy(node).await?;
        self.wait_converged().await
    }

    /// Takes running `node` out of the ring, waits until it handed its data off, then
    /// stops it.
    pub(crate) async fn leave(&mut self, node: &str) -> Result<(), String> {
        if !self.is_running(node) {
            return Err(format!(
                "{node} is not running: a node that cannot hand its data off is removed \
                 instead (cargo xtask cluster remove {node})"
            ));
        }
        self.change(RingChangeKind::Leave, node).await?;
        self.stop(node);
        self.mark_left(node)
    }

    /// Takes stopped `node` out of the ring.
    pub(crate) async fn remove(&mut self, node: &str) -> Result<(), String> {
        if self.is_running(node) {
            return Err(format!(
                "{node} is running: use leave, so it hands its data off first"
            ));
        }
        self.change(RingChangeKind::Remove, node).await?;
        self.mark_left(node)
    }

    /// Proposes the change and waits until every running member settled on it.
    async fn change(&mut self, kind: RingChangeKind, node: &str) -> Result<(), String> {
        self.propose(kind, node).await?;
        self.wait_settled().await
    }

    /// Sends the change through a running member other than `node` and prints its plan.
    pub(crate) async fn propose(
        &mut self,
        kind: RingChangeKind,
        node: &str,
    ) -> Result<ChangeRingResponse, String> {
        let via = self.member_other_than(node)?;
        let address = self.address(&via)?;
        let plan = self
            .dialer()?
            .change_ring(&address, kind, &[node.to_owned()])
            .await?;
        print_plan(&via, &plan);
        Ok(plan)
    }

    /// Waits until every running node that has not left serves one settled ring.
    pub(crate) async fn wait_settled(&mut self) -> Result<(), String> {
        let mut addresses = Vec::new();
        for spec in self.nodes.clone() {
            if !spec.left && self.is_running(&spec.id) {
                addresses.push(spec.grpc.clone());
            }
        }
        let version = self
            .dialer()?
            .wait_settled(&addresses, SETTLE_TIMEOUT)
            .await?;
        println!("ring settled at version {version}");
        Ok(())
    }

    fn member_other_than(&mut self, node: &str) -> Result<String, String> {
        let ids: Vec<String> = self
            .nodes
            .iter()
            .filter(|n| !n.left && n.id != node)
            .map(|n| n.id.clone())
            .collect();
        ids.into_iter()
            .find(|id| self.is_running(id))
            .ok_or_else(|| format!("no running node besides {node} to send the change to"))
    }

    fn mark_left(&mut self, node: &str) -> Result<(), String> {
        let spec = self
            .nodes
            .iter_mut()
            .find(|n| n.id == node)
            .ok_or_else(|| format!("no node {node}"))?;
        spec.left = true;
        self.save()
    }
}

fn print_plan(via: &str, plan: &ChangeRingResponse) {
    println!(
        "ring version {} ({}) made via {via}; members: {}",
        plan.version,
        plan.change,
        plan.members.join(", ")
    );
    for m in &plan.moves {
        println!(
            "  {:<4} gains {:>5.1}% of the ring ({} ranges, ~{} keys) from {}",
            m.to,
            m.share * 100.0,
            m.ranges,
            m.keys_estimate,
            m.from.join(",")
        );
    }
}
