//! `cargo xtask cluster`: start, inspect and break a local cluster of `kvstore serve`
//! processes. State lives under `.local/`: `cluster.json` (how each node was started),
//! `pids/`, `logs/` and `data/`. Ring changes (join, leave, remove) are in
//! `cluster_ring.rs`.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command as Process};
use std::time::Duration;

use clap::{Args, Subcommand};
use kv_harness::{Membership, NodeLayout, serve_args};
use serde::{Deserialize, Serialize};

use crate::{cargo, workspace_root};

const BASE_GRPC_PORT: u16 = 50051;
/// n1's node-to-node port; the client port plus 100, as `kvstore serve` defaults it.
const BASE_INTERNAL_PORT: u16 = 50151;
const BASE_GOSSIP_PORT: u16 = 7946;
/// n1's admin HTTP port (/healthz, /readyz, /metrics); n2's is the next, and so on.
const BASE_ADMIN_PORT: u16 = 9091;
/// Every node announces to the first two nodes' gossip addresses.
const MEMBERSHIP: Membership = Membership::Gossip { seeds: 2 };
const CONVERGE_TIMEOUT: Duration = Duration::from_secs(20);
const HEALTHY_TIMEOUT: Duration = Duration::from_secs(20);
/// Longer than a node's drain grace (5 s) plus its gossip leave (2 s), so a stop is clean.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// Most nodes a local cluster has (the fixed ports leave room for nine).
const MAX_NODES: usize = 9;

#[derive(Subcommand)]
pub(crate) enum Command {
    /// Start a fresh cluster (wipes .local/data unless --keep-data).
    Up(UpArgs),
    /// Stop every node (SIGTERM, then SIGKILL after 5 s).
    Down,
    /// Show each node's process and health.
    Status,
    /// Kill a node with SIGKILL, as a crash would.
    Kill { node: String },
    /// Start a stopped node again with its data (and the ring its store holds), and wait
    /// until everyone sees it ALIVE.
    Restart { node: String },
    /// Start one more node (e.g. n4), join it to the ring, and wait until it copied what
    /// it gained.
    Join { node: String },
    /// Take a node out of the ring: it hands its data off, then it is stopped.
    Leave { node: String },
    /// Take a stopped (killed) node out of the ring; the others re-replicate its ranges.
    Remove { node: String },
    /// Print the end of a node's log.
    Logs {
        node: String,
        #[arg(long, default_value_t = 50)]
        lines: usize,
    },
}

/// Cluster shape, as the original `cluster.sh up [nodes] [rf] [r] [w] [vnodes]`.
#[derive(Args, Clone, Debug)]
pub(crate) struct UpArgs {
    #[arg(long, default_value_t = 3)]
    pub(crate) nodes: usize,
    #[arg(long, default_value_t = 3)]
    pub(crate) rf: usize,
    #[arg(long, default_value_t = 2)]
    pub(crate) r: usize,
    #[arg(long, default_value_t = 2)]
    pub(crate) w: usize,
    #[arg(long, default_value_t = 256)]
    pub(crate) vnodes: u32,
    /// fjall (default) or memory.
    #[arg(long, default_value = "fjall")]
    pub(crate) storage: String,
    /// Keep data from a previous cluster.
    #[arg(long)]
    pub(crate) keep_data: bool,
    /// buffer (default) or sync.
    #[arg(long, default_value = "buffer")]
    pub(crate) durability: String,
    /// Run the optimised build (for benchmarks).
    #[arg(long)]
    pub(crate) release: bool,
    /// More `kvstore serve` flags for every node (e.g. `--node-arg=--aae-interval-ms=2000`).
    #[arg(long = "node-arg", allow_hyphen_values = true)]
    pub(crate) node_args: Vec<String>,
    /// Serve and dial over mutual TLS, with a throwaway CA and node certificates created
    /// under .local/tls (clients: `kvstore --tls-ca .local/tls/ca.pem ...`).
    #[arg(long)]
    pub(crate) tls: bool,
}

impl Default for UpArgs {
    fn default() -> Self {
        Self {
            nodes: 3,
            rf: 3,
            r: 2,
            w: 2,
            vnodes: 256,
            storage: "fjall".into(),
            keep_data: false,
            durability: "buffer".into(),
            release: false,
            node_args: Vec::new(),
            tls: false,
        }
    }
}

/// How each node was started, so it can be restarted the same way.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub(crate) struct NodeSpec {
    pub(crate) id: String,
    pub(crate) grpc: String,
    pub(crate) args: Vec<String>,
    #[serde(default)]
    pub(crate) release: bool,
    /// Left or was removed from the ring: never started again.
    #[serde(default)]
    pub(crate) left: bool,
}

/// A local cluster. Processes started by this xtask run are kept as children so they can
/// be reaped; others are found through their pid files.
pub(crate) struct Cluster {
    pub(crate) dir: PathBuf,
    binary: PathBuf,
    pub(crate) nodes: Vec<NodeSpec>,
    children: HashMap<String, Child>,
}

pub(crate) async fn run(command: Command) -> Result<(), String> {
    match command {
        Command::Up(args) => {
            let cluster = Cluster::up(&args).await?;
            for node in &cluster.nodes {
                println!("{} serving on {}", node.id, node.grpc);
            }
            println!(
                "logs in {}/logs; stop with: cargo xtask cluster down",
                cluster.dir.display()
            );
            cluster.detach();
            Ok(())
        }
        Command::Down => {
            Cluster::load()?.down();
            Ok(())
        }
        Command::Status => Cluster::load()?.status().await,
        Command::Kill { node } => Cluster::load()?.kill(&node),
        Command::Restart { node } => {
            let mut cluster = Cluster::load()?;
            cluster.restart(&node).await?;
            cluster.detach();
            Ok(())
        }
        Command::Logs { node, lines } => Cluster::load()?.logs(&node, lines),
        Command::Join { node } => {
            let mut cluster = Cluster::load()?;
            cluster.join(&node).await?;
            println!("{node} joined; its ranges are copied and the ring is settled");
            cluster.detach();
            Ok(())
        }
        Command::Leave { node } => {
            let mut cluster = Cluster::load()?;
            cluster.leave(&node).await?;
            println!("{node} handed its data off, left the ring and was stopped");
            Ok(())
        }
        Command::Remove { node } => {
            let mut cluster = Cluster::load()?;
            cluster.remove(&node).await?;
            println!("{node} removed; its ranges were re-replicated from the other replicas");
            Ok(())
        }
    }
}

impl Cluster {
    fn state_dir() -> PathBuf {
        workspace_root().join(".local")
    }

    fn state_file(dir: &Path) -> PathBuf {
        dir.join("cluster.json")
    }

    /// Builds the server, starts `args.nodes` nodes and waits until all answer.
    pub(crate) async fn up(args: &UpArgs) -> Result<Self, String> {
        let dir = Self::state_dir();
        if let Ok(mut existing) = Self::load()
            && existing.running_nodes() > 0
        {
            return Err(
                "a cluster is already running; run `cargo xtask cluster down` first".into(),
            );
        }
        if !(1..=MAX_NODES).contains(&args.nodes) {
            return Err(format!("--nodes {} is outside 1..={MAX_NODES}", args.nodes));
        }
        build_server(args.release)?;
        reserve_local_ports();
        if !args.keep_data {
            let _ = fs::remove_dir_all(dir.join("data"));
        }
        for sub in ["logs", "pids", "data"] {
            fs::create_dir_all(dir.join(sub))
                .map_err(|e| format!("cannot create .local/{sub}: {e}"))?;
        }
        let pki = if args.tls {
            let ids: Vec<String> = (1..=MAX_NODES).map(|i| format!("n{i}")).collect();
            let pki =
                kv_harness::tls::create_dev_pki(&dir.join("tls"), "kvstore local dev CA", &ids)?;
            println!(
                "TLS on: CA {} (certificates for n1..n{MAX_NODES})",
                pki.ca.display()
            );
            Some(pki)
        } else {
            None
        };
        let nodes = node_specs(args, &dir, pki.as_ref());
        let state = serde_json::to_string_pretty(&nodes).expect("specs serialise");
        fs::write(Self::state_file(&dir), state)
            .map_err(|e| format!("cannot write cluster state: {e}"))?;
        let mut cluster = Self {
            binary: server_binary(args.release),
            dir,
            nodes,
            children: HashMap::new(),
        };
        match cluster.form().await {
            Ok(()) => Ok(cluster),
            Err(why) => {
                // Nodes left running would hold the ports of the next attempt.
                cluster.down();
                Err(why)
            }
        }
    }

    /// Starts every node (the first founds the cluster), joins the others to its ring and
    /// waits until the ring settled and everyone sees everyone.
    async fn form(&mut self) -> Result<(), String> {
        let ids: Vec<String> = self.nodes.iter().map(|n| n.id.clone()).collect();
        for (i, id) in ids.iter().enumerate() {
            // Every node starts here, so one of them founds the cluster; a later restart
            // of any node rejoins through the others instead.
            let extra: &[&str] = if i == 0 { &["--bootstrap"] } else { &[] };
            self.start_with(id, extra)?;
        }
        for id in &ids {
            self.wait_healthy(id).await?;
        }
        let founder = self.address(&ids[0])?;
        self.dialer()?
            .join_when_alive(&founder, &ids[1..], CONVERGE_TIMEOUT)
            .await?;
        self.wait_settled().await?;
        self.wait_converged().await
    }

    /// Starts `node` again with its data. It serves once a running member confirms the
    /// ring its store holds: alone (every node was down), it waits for the next one.
    pub(crate) async fn restart(&mut self, node: &str) -> Result<(), String> {
        self.start(node)?;
        let others: Vec<String> = self
            .nodes
            .iter()
            .filter(|n| !n.left && n.id != node)
            .map(|n| n.id.clone())
            .collect();
        if !others.iter().any(|id| self.is_running(id)) {
            let address = self.address(node)?;
            let dialer = self.dialer()?;
            let running = || self.is_running(node);
            dialer
                .wait_answering(&address, HEALTHY_TIMEOUT, running)
                .await?;
            println!(
                "{node} restarted with the ring its store holds; it serves once another \
                 member runs and confirms it (restart the others)"
            );
            return Ok(());
        }
        self.wait_healthy(node).await?;
        self.wait_converged().await?;
        println!("{node} restarted");
        Ok(())
    }

    /// Waits until every running node sees every other running node ALIVE.
    pub(crate) async fn wait_converged(&mut self) -> Result<(), String> {
        let ids: Vec<String> = self
            .nodes
            .iter()
            .filter(|n| !n.left)
            .map(|n| n.id.clone())
            .collect();
        let expected = ids.iter().filter(|id| self.is_running(id)).count() as u32;
        let dialer = self.dialer()?;
        for spec in self.nodes.clone() {
            if !spec.left && self.is_running(&spec.id) {
                dialer
                    .wait_members_alive(&spec.grpc, expected, CONVERGE_TIMEOUT)
                    .await
                    .map_err(|why| format!("{}: {why}", spec.id))?;
            }
        }
        Ok(())
    }

    /// The cluster described by `.local/cluster.json`.
    pub(crate) fn load() -> Result<Self, String> {
        let dir = Self::state_dir();
        let text = fs::read_to_string(Self::state_file(&dir)).map_err(|_| {
            "no cluster state in .local/; start one with `cargo xtask cluster up`".to_owned()
        })?;
        let nodes: Vec<NodeSpec> =
            serde_json::from_str(&text).map_err(|e| format!("corrupt .local/cluster.json: {e}"))?;
        let release = nodes.first().is_some_and(|n: &NodeSpec| n.release);
        Ok(Self {
            binary: server_binary(release),
            dir,
            nodes,
            children: HashMap::new(),
        })
    }

    pub(crate) fn spec(&self, node: &str) -> Result<&NodeSpec, String> {
        self.nodes.iter().find(|n| n.id == node).ok_or_else(|| {
            let known: Vec<&str> = self.nodes.iter().map(|n| n.id.as_str()).collect();
            format!(
                "no node {node:?} in this cluster (nodes: {})",
                known.join(", ")
            )
        })
    }

    /// Where `node` keeps its data.
    pub(crate) fn data_dir(&self, node: &str) -> Result<PathBuf, String> {
        self.spec(node)?;
        Ok(self.dir.join("data").join(node))
    }

    pub(crate) fn address(&self, node: &str) -> Result<String, String> {
        Ok(self.spec(node)?.grpc.clone())
    }

    pub(crate) fn save(&self) -> Result<(), String> {
        let state = serde_json::to_string_pretty(&self.nodes).expect("specs serialise");
        fs::write(Self::state_file(&self.dir), state)
            .map_err(|e| format!("cannot write cluster state: {e}"))
    }

    fn pid_file(&self, node: &str) -> PathBuf {
        self.dir.join("pids").join(format!("{node}.pid"))
    }

    fn log_file(&self, node: &str) -> PathBuf {
        self.dir.join("logs").join(format!("{node}.log"))
    }

    fn pid(&self, node: &str) -> Option<u32> {
        fs::read_to_string(self.pid_file(node))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// Starts one node in the background, appending to its log.
    pub(crate) fn start(&mut self, node: &str) -> Result<(), String> {
        self.start_with(node, &[])
    }

    /// Starts `node` with its recorded arguments plus `extra` (for this start only).
    fn start_with(&mut self, node: &str, extra: &[&str]) -> Result<(), String> {
        if self.is_running(node) {
            return Err(format!("{node} is already running"));
        }
        let spec = self.spec(node)?.clone();
        if spec.left {
            return Err(format!(
                "{node} left the ring; its data dir is stale: join a new node instead"
            ));
        }
        let args: Vec<String> = spec
            .args
            .iter()
            .cloned()
            .chain(extra.iter().map(|a| (*a).to_owned()))
            .collect();
        let child = kv_harness::spawn(&self.binary, &args, &self.log_file(node))?;
        fs::write(self.pid_file(node), child.id().to_string()).map_err(|e| e.to_string())?;
        self.children.insert(node.to_owned(), child);
        Ok(())
    }

    /// Waits until `node` answers its health check as SERVING (it knows the whole ring).
    pub(crate) async fn wait_healthy(&mut self, node: &str) -> Result<(), String> {
        let address = self.address(node)?;
        let log = self.log_file(node);
        let dialer = self.dialer()?;
        let running = || self.is_running(node);
        let waited = dialer
            .wait_serving(&address, HEALTHY_TIMEOUT, running)
            .await;
        waited.map_err(|why| format!("{node} ({why}); see {}", log.display()))
    }

    fn running_nodes(&mut self) -> usize {
        let ids: Vec<String> = self.nodes.iter().map(|n| n.id.clone()).collect();
        ids.iter().filter(|id| self.is_running(id)).count()
    }

    pub(crate) fn is_running(&mut self, node: &str) -> bool {
        if let Some(child) = self.children.get_mut(node) {
            return matches!(child.try_wait(), Ok(None));
        }
        self.pid(node)
            .is_some_and(|pid| kv_harness::signal(pid, "0"))
    }

    /// SIGKILL, like a crash: no shutdown, no flush beyond what was acknowledged.
    pub(crate) fn kill(&mut self, node: &str) -> Result<(), String> {
        self.spec(node)?;
        let pid = self
            .pid(node)
            .ok_or_else(|| format!("{node} has no pid file"))?;
        if !self.is_running(node) {
            return Err(format!("{node} is not running"));
        }
        match self.children.remove(node) {
            Some(child) => kv_harness::kill(child),
            None => {
                kv_harness::signal(pid, "KILL");
            }
        }
        let _ = fs::remove_file(self.pid_file(node));
        println!("{node} killed (pid {pid})");
        Ok(())
    }

    /// SIGTERM every node, SIGKILL those still running after the grace period.
    pub(crate) fn down(&mut self) {
        let ids: Vec<String> = self.nodes.iter().map(|n| n.id.clone()).collect();
        for id in &ids {
            self.stop(id);
        }
        println!("cluster stopped");
    }

    /// SIGTERM `node`, SIGKILL it if it still runs after the grace period.
    pub(crate) fn stop(&mut self, node: &str) {
        if let Some(pid) = self.pid(node)
            && self.is_running(node)
        {
            kv_harness::terminate(pid, STOP_TIMEOUT, || !self.is_running(node));
        }
        if let Some(mut child) = self.children.remove(node) {
            let _ = child.wait();
        }
        let _ = fs::remove_file(self.pid_file(node));
    }

    async fn status(&mut self) -> Result<(), String> {
        println!("{:<6} {:<22} {:<9} HEALTH", "NODE", "GRPC", "PROCESS");
        let dialer = self.dialer()?;
        for spec in self.nodes.clone() {
            let process = if spec.left {
                "left"
            } else if self.is_running(&spec.id) {
                "running"
            } else {
                "stopped"
            };
            let health = match dialer.connect(&spec.grpc).await {
                Ok(mut client) => match client.health().await {
                    Ok(h) => format!(
                        "{} ({} of {} members alive; ring v{}, {} members{})",
                        h.status,
                        h.members_alive,
                        h.members_total,
                        h.ring_version,
                        h.ring_members,
                        if h.live_versions > 1 {
                            ", data moving"
                        } else {
                            ""
                        }
                    ),
                    Err(e) => e.to_string(),
                },
                Err(_) => "unreachable".into(),
            };
            println!("{:<6} {:<22} {process:<9} {health}", spec.id, spec.grpc);
        }
        Ok(())
    }

    fn logs(&self, node: &str, lines: usize) -> Result<(), String> {
        self.spec(node)?;
        let path = self.log_file(node);
        let text = fs::read_to_string(&path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let all: Vec<&str> = text.lines().collect();
        for line in &all[all.len().saturating_sub(lines)..] {
            println!("{line}");
        }
        Ok(())
    }

    /// How to reach the nodes: over TLS, trusting the cluster's CA, when it serves TLS.
    pub(crate) fn dialer(&self) -> Result<kv_harness::Dialer, String> {
        let ca = self
            .nodes
            .first()
            .and_then(|n| n.args.iter().find_map(|a| a.strip_prefix("--tls-ca=")));
        match ca {
            Some(ca) => {
                let tls = kv_client::ClientTls::from_files(Path::new(ca), None)
                    .map_err(|e| format!("the cluster's CA: {e}"))?;
                Ok(kv_harness::Dialer::default().with_tls(tls))
            }
            None => Ok(kv_harness::Dialer::default()),
        }
    }

    /// The throwaway PKI of a TLS cluster, if this is one.
    pub(crate) fn pki(&self) -> Option<kv_harness::tls::DevPki> {
        let ca = self
            .nodes
            .first()?
            .args
            .iter()
            .find_map(|a| a.strip_prefix("--tls-ca="))?;
        Some(kv_harness::tls::DevPki {
            dir: self.dir.join("tls"),
            ca: PathBuf::from(ca),
        })
    }

    /// Leaves the processes running after this xtask exits.
    fn detach(mut self) {
        self.children.clear();
    }
}

/// Asks Linux not to hand the cluster's fixed gRPC ports, which lie in its ephemeral
/// range (32768-60999), to outgoing connections: a node's connection to a peer that took
/// 127.0.0.1:50054 as its local port would keep n4 from binding it (seen in CI). Needs
/// root; elsewhere it says so and the cluster starts anyway.
fn reserve_local_ports() {
    const RESERVED: &str = "/proc/sys/net/ipv4/ip_local_reserved_ports";
    let Ok(current) = fs::read_to_string(RESERVED) else {
        return;
    };
    let last = |base: u16| base + MAX_NODES as u16 - 1;
    let wanted = format!(
        "{}-{},{}-{}",
        BASE_GRPC_PORT,
        last(BASE_GRPC_PORT),
        BASE_INTERNAL_PORT,
        last(BASE_INTERNAL_PORT)
    );
    let merged = match current.trim() {
        "" => wanted.clone(),
        held => format!("{held},{wanted}"),
    };
    if fs::write(RESERVED, merged).is_err() {
        println!(
            "note: could not reserve ports {wanted} from outgoing connections (needs root); \
             a node whose port an outgoing connection took will fail to start: start it again"
        );
    }
}

fn node_specs(args: &UpArgs, dir: &Path, pki: Option<&kv_harness::tls::DevPki>) -> Vec<NodeSpec> {
    (1..=args.nodes)
        .map(|i| {
            let mut spec = node_spec(i, args.nodes, dir);
            spec.release = args.release;
            spec.args.extend([
                format!("--n={}", args.rf.min(args.nodes)),
                format!("--r={}", args.r.min(args.nodes)),
                format!("--w={}", args.w.min(args.nodes)),
                format!("--vnodes={}", args.vnodes),
                format!("--storage={}", args.storage),
                format!("--durability={}", args.durability),
            ]);
            spec.args.extend(args.node_args.iter().cloned());
            if let Some(pki) = pki {
                spec.args.extend(pki.serve_args(&spec.id));
            }
            spec
        })
        .collect()
}

/// Node `n<i>` of a cluster of `count` on the fixed local ports (client gRPC 5005i,
/// internal gRPC 5015i, gossip 7946+i-1, admin HTTP 909i): its identity, addresses, seeds
/// and data dir.
pub(crate) fn node_spec(i: usize, count: usize, dir: &Path) -> NodeSpec {
    let layout: Vec<NodeLayout> = (1..=count.max(i))
        .map(|n| {
            let grpc = ([127, 0, 0, 1], BASE_GRPC_PORT + n as u16 - 1).into();
            let internal = ([127, 0, 0, 1], BASE_INTERNAL_PORT + n as u16 - 1).into();
            let gossip = ([127, 0, 0, 1], BASE_GOSSIP_PORT + n as u16 - 1).into();
            NodeLayout::new(n, grpc, internal, gossip, &dir.join("data"))
        })
        .collect();
    let node = &layout[i - 1];
    let mut args = serve_args(node, &layout, MEMBERSHIP);
    args.push(format!(
        "--admin-listen=127.0.0.1:{}",
        BASE_ADMIN_PORT + i as u16 - 1
    ));
    NodeSpec {
        release: false,
        left: false,
        grpc: node.grpc.to_string(),
        args,
        id: node.id.clone(),
    }
}

/// Whether a joining node copies `arg` from the cluster's first node: every setting but the
/// node's own identity, addresses and data dir.
pub(crate) fn keeps_across_nodes(arg: &str) -> bool {
    let own = [
        "--node-id=",
        "--listen=",
        "--internal-listen=",
        "--tls-cert=",
        "--tls-key=",
        "--gossip-listen=",
        "--admin-listen=",
        "--seeds=",
        "--data-dir=",
    ];
    arg != "serve" && !own.iter().any(|prefix| arg.starts_with(prefix))
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| workspace_root().join("target"), PathBuf::from)
}

pub(crate) fn server_binary(release: bool) -> PathBuf {
    target_dir()
        .join(if release { "release" } else { "debug" })
        .join("kvstore")
}

/// A binary of the optimised build.
pub(crate) fn release_binary(name: &str) -> PathBuf {
    target_dir().join("release").join(name)
}

pub(crate) fn build_server(release: bool) -> Result<(), String> {
    build_binaries(release, &["kvstore"])
}

/// Builds the named binaries (each the binary of the package of the same name).
pub(crate) fn build_binaries(release: bool, names: &[&str]) -> Result<(), String> {
    println!(
        "building {}{}...",
        names.join(", "),
        if release { " (release)" } else { "" }
    );
    let mut args = vec!["build", "--quiet"];
    for name in names {
        args.extend(["--package", name, "--bin", name]);
    }
    if release {
        args.push("--release");
    }
    let status = Process::new(cargo())
        .args(&args)
        .current_dir(workspace_root())
        .status()
        .map_err(|e| format!("cannot run cargo build: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("building {} failed", names.join(", ")))
    }
}
