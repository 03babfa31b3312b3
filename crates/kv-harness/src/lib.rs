//! Starting, watching and stopping `kvstore serve` processes on one machine.
//!
//! The local cluster (`cargo xtask cluster`, which keeps its state under `.local/`) and
//! the end-to-end tests (which keep theirs in a temporary directory) start nodes the same
//! way through this crate:
//! - [`NodeLayout`] and [`serve_args`]: a node's identity, addresses and data directory,
//!   and the `kvstore serve` command line that follows from them and the membership mode;
//! - [`spawn`]: starts a server with its output appended to a log file;
//! - [`wait_serving`] and [`wait_members_alive`]: poll the health call until a node serves
//!   (it has a confirmed ring layout) or sees every member ALIVE, with a bound on the wait;
//! - [`join_when_alive`], [`change_ring`] and [`wait_settled`]: join nodes to the ring once
//!   a member sees them, change the ring as an operator does, and wait until no data is moving;
//! - [`kill`] and [`terminate`]: SIGKILL (a crash) or SIGTERM with a grace period;
//! - [`tls`]: a throwaway CA and node certificates for TLS clusters.

#![warn(missing_docs)]

pub mod tls;

use std::fs::OpenOptions;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kv_client::{ChangeRingResponse, Client, RingChangeKind};

/// How often health is polled while waiting.
const POLL_EVERY: Duration = Duration::from_millis(50);

/// How nodes learn about each other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Membership {
    /// A full `--peers` list on every node.
    Static,
    /// SWIM gossip: `--gossip-listen`, with the first `seeds` nodes as seeds.
    Gossip {
        /// How many of the first nodes every node announces to.
        seeds: usize,
    },
}

/// Where one node lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeLayout {
    /// Its id (`n1`, ...).
    pub id: String,
    /// Its client gRPC address.
    pub grpc: SocketAddr,
    /// Its node-to-node gRPC address (`--internal-listen`).
    pub internal: SocketAddr,
    /// Its gossip (UDP) address.
    pub gossip: SocketAddr,
    /// Its fjall data directory.
    pub data_dir: PathBuf,
}

impl NodeLayout {
    /// Node `n<index>` (1-based) at the given addresses, with data under `data_root/<id>`.
    pub fn new(
        index: usize,
        grpc: SocketAddr,
        internal: SocketAddr,
        gossip: SocketAddr,
        data_root: &Path,
    ) -> Self {
        let id = format!("n{index}");
        Self {
            data_dir: data_root.join(&id),
            id,
            grpc,
            internal,
            gossip,
        }
    }
}

/// The `kvstore serve` arguments of `node` in a cluster of `all` (which includes it).
pub fn serve_args(node: &NodeLayout, all: &[NodeLayout], membership: Membership) -> Vec<String> {
    let mut args = vec![
        "serve".to_owned(),
        format!("--node-id={}", node.id),
        format!("--listen={}", node.grpc),
        format!("--internal-listen={}", node.internal),
        format!("--data-dir={}", node.data_dir.display()),
    ];
    match membership {
        Membership::Static => {
            let peers: Vec<String> = all
                .iter()
                .filter(|other| other.id != node.id)
                .map(|other| format!("{}={}", other.id, other.internal))
                .collect();
            if !peers.is_empty() {
                args.push(format!("--peers={}", peers.join(",")));
            }
        }
        Membership::Gossip { seeds } => {
            let seeds: Vec<String> = all
                .iter()
                .take(seeds)
                .map(|n| n.gossip.to_string())
                .collect();
            args.push(format!("--gossip-listen={}", node.gossip));
            args.push(format!("--seeds={}", seeds.join(",")));
        }
    }
    args
}

/// Starts `binary` with `args`, appending its output to `log` (created if missing).
pub fn spawn(binary: &Path, args: &[String], log: &Path) -> Result<Child, String> {
    let open = || {
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .map_err(|e| format!("cannot open log {}: {e}", log.display()))
    };
    Command::new(binary)
        .args(args)
        .stdin(Stdio::null())
        .stdout(open()?)
        .stderr(open()?)
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", binary.display()))
}

/// How the harness reaches nodes: plain gRPC by default, TLS with a CA, and a bearer
/// token for nodes that require one.
#[derive(Debug, Clone, Default)]
pub struct Dialer {
    tls: Option<kv_client::ClientTls>,
    token: Option<String>,
}

impl Dialer {
    /// Dials over TLS, trusting `tls`'s CA.
    #[must_use]
    pub fn with_tls(mut self, tls: kv_client::ClientTls) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Sends `token` with every call.
    #[must_use]
    pub fn with_token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// A client of the node at `address`.
    pub async fn connect(&self, address: &str) -> Result<Client, String> {
        let client = Client::connect_with(address, self.tls.as_ref())
            .await
            .map_err(|e| format!("{address}: {e}"))?;
        match &self.token {
            Some(token) => client.with_token(token).map_err(|e| e.to_string()),
            None => Ok(client),
        }
    }

    /// Waits until the node at `address` answers health with SERVING. `running` is asked
    /// between polls; when it says the process exited, waiting stops with an error.
    pub async fn wait_serving(
        &self,
        address: &str,
        timeout: Duration,
        running: impl FnMut() -> bool,
    ) -> Result<(), String> {
        self.wait_health(address, timeout, running, |h| h.status == "SERVING")
            .await
    }

    /// Waits until the node at `address` answers its health call, serving or not (a node
    /// restarted alone waits for a peer to confirm its ring before it serves).
    pub async fn wait_answering(
        &self,
        address: &str,
        timeout: Duration,
        running: impl FnMut() -> bool,
    ) -> Result<(), String> {
        self.wait_health(address, timeout, running, |_| true).await
    }

    /// Polls `address`'s health until an answer passes `accept`.
    async fn wait_health(
        &self,
        address: &str,
        timeout: Duration,
        mut running: impl FnMut() -> bool,
        accept: impl Fn(&kv_client::HealthResponse) -> bool,
    ) -> Result<(), String> {
        poll_until(timeout, &mut running, || async {
            let health = self.connect(address).await.ok()?.health().await.ok()?;
            accept(&health).then_some(())
        })
        .await
        .map_err(|why| format!("{address} {why}"))
    }

    /// Waits until the node at `address` serves and sees `expected` members ALIVE (itself
    /// included).
    pub async fn wait_members_alive(
        &self,
        address: &str,
        expected: u32,
        timeout: Duration,
    ) -> Result<(), String> {
        let started = Instant::now();
        loop {
            let alive = match self.connect(address).await {
                Ok(mut client) => client.health().await.map_or(0, |h| {
                    if h.status == "SERVING" {
                        h.members_alive
                    } else {
                        0
                    }
                }),
                Err(_) => 0,
            };
            if alive == expected {
                return Ok(());
            }
            if started.elapsed() > timeout {
                return Err(format!(
                    "{address} sees {alive} of {expected} members alive after {timeout:?}"
                ));
            }
            tokio::time::sleep(POLL_EVERY).await;
        }
    }

    /// Asks the node at `address` (a member) for a ring change; the error says why it was
    /// refused.
    pub async fn change_ring(
        &self,
        address: &str,
        kind: RingChangeKind,
        nodes: &[String],
    ) -> Result<ChangeRingResponse, String> {
        let mut client = self.connect(address).await?;
        client
            .change_ring(kind, nodes, false)
            .await
            .map_err(|e| format!("{kind:?} {} via {address}: {e}", nodes.join(",")))
    }

    /// Joins `joiners` (running, seeded with a member) to the ring through the member at
    /// `via`, retrying until that member sees them ALIVE, within `timeout`.
    pub async fn join_when_alive(
        &self,
        via: &str,
        joiners: &[String],
        timeout: Duration,
    ) -> Result<(), String> {
        if joiners.is_empty() {
            return Ok(());
        }
        let started = Instant::now();
        loop {
            match self.change_ring(via, RingChangeKind::Join, joiners).await {
                Ok(_) => return Ok(()),
                Err(why) if started.elapsed() > timeout => {
                    return Err(format!("the ring did not form within {timeout:?}: {why}"));
                }
                Err(_) => tokio::time::sleep(POLL_EVERY * 4).await,
            }
        }
    }

    /// Waits until every node in `addresses` serves with the same newest ring version and a
    /// single live version (no data moving), within `timeout`; returns that version.
    pub async fn wait_settled(
        &self,
        addresses: &[String],
        timeout: Duration,
    ) -> Result<u64, String> {
        let started = Instant::now();
        loop {
            let mut versions = Vec::new();
            for address in addresses {
                let health = match self.connect(address).await {
                    Ok(mut client) => client.health().await.ok(),
                    Err(_) => None,
                };
                versions.push(
                    health
                        .filter(|h| h.status == "SERVING" && h.live_versions == 1)
                        .map(|h| h.ring_version),
                );
            }
            if let Some(Some(first)) = versions.first()
                && versions.iter().all(|v| *v == Some(*first))
            {
                return Ok(*first);
            }
            if started.elapsed() > timeout {
                return Err(format!(
                    "the ring did not settle within {timeout:?} (settled version per node: {versions:?})"
                ));
            }
            tokio::time::sleep(POLL_EVERY * 2).await;
        }
    }
}

async fn poll_until<F: Future<Output = Option<()>>>(
    timeout: Duration,
    running: &mut impl FnMut() -> bool,
    mut check: impl FnMut() -> F,
) -> Result<(), String> {
    let started = Instant::now();
    loop {
        if !running() {
            return Err("exited during start-up".into());
        }
        if check().await.is_some() {
            return Ok(());
        }
        if started.elapsed() > timeout {
            return Err(format!("did not become ready within {timeout:?}"));
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
}

/// Whether `child` is still running.
pub fn is_running(child: &mut Child) -> bool {
    matches!(child.try_wait(), Ok(None))
}

/// SIGKILLs `child` (a crash: no shutdown, no flush beyond what was acknowledged) and
/// reaps it.
pub fn kill(mut child: Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// Sends `signal` (e.g. `TERM`, `KILL`, `0` to probe) to process `pid`; returns whether
/// it was delivered.
pub fn signal(pid: u32, signal: &str) -> bool {
    Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// SIGTERMs process `pid` and waits up to `grace` for `stopped` to say it ended; then
/// SIGKILLs it.
pub fn terminate(pid: u32, grace: Duration, mut stopped: impl FnMut() -> bool) {
    signal(pid, "TERM");
    let deadline = Instant::now() + grace;
    while !stopped() && Instant::now() < deadline {
        std::thread::sleep(POLL_EVERY);
    }
    if !stopped() {
        signal(pid, "KILL");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(count: usize) -> Vec<NodeLayout> {
        (1..=count)
            .map(|i| {
                NodeLayout::new(
                    i,
                    format!("127.0.0.1:{}", 50050 + i).parse().unwrap(),
                    format!("127.0.0.1:{}", 50150 + i).parse().unwrap(),
                    format!("127.0.0.1:{}", 7945 + i).parse().unwrap(),
                    Path::new("/data"),
                )
            })
            .collect()
    }

    #[test]
    fn static_and_gossip_command_lines() {
        let nodes = layout(3);
        let static_args = serve_args(&nodes[1], &nodes, Membership::Static);
        assert_eq!(
            static_args,
            [
                "serve",
                "--node-id=n2",
                "--listen=127.0.0.1:50052",
                "--internal-listen=127.0.0.1:50152",
                "--data-dir=/data/n2",
                "--peers=n1=127.0.0.1:50151,n3=127.0.0.1:50153",
            ]
        );
        let gossip_args = serve_args(&nodes[2], &nodes, Membership::Gossip { seeds: 2 });
        assert!(gossip_args.contains(&"--gossip-listen=127.0.0.1:7948".to_owned()));
        assert!(gossip_args.contains(&"--seeds=127.0.0.1:7946,127.0.0.1:7947".to_owned()));
        let alone = serve_args(&nodes[0], &nodes[..1], Membership::Static);
        assert!(!alone.iter().any(|a| a.starts_with("--peers")));
    }
}
