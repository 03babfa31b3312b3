//! `cargo xtask cluster`: start, inspect and break a local cluster of `kvstore serve`
//! processes. State lives under `.local/`: `cluster.json` (how each node was started),
//! `pids/`, `logs/` and `data/`.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command as Process, Stdio};
use std::time::{Duration, Instant};

use clap::{Args, Subcommand};
use serde::{Deserialize, Serialize};

use crate::{cargo, workspace_root};

const BASE_GRPC_PORT: u16 = 50051;
const BASE_GOSSIP_PORT: u16 = 7946;
/// Nodes whose gossip addresses every node uses as seeds.
const SEED_NODES: usize = 2;
const CONVERGE_TIMEOUT: Duration = Duration::from_secs(20);
const HEALTHY_TIMEOUT: Duration = Duration::from_secs(20);
const STOP_TIMEOUT: Duration = Duration::from_secs(5);

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
    /// Start a stopped node again with its data, and wait until everyone sees it ALIVE.
    Restart { node: String },
    /// Start one more node (e.g. n4) and join it to the running cluster via the seeds.
    Join { node: String },
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
        }
    }
}

/// How each node was started, so it can be restarted the same way.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub(crate) struct NodeSpec {
    pub(crate) id: String,
    pub(crate) grpc: String,
    args: Vec<String>,
    #[serde(default)]
    release: bool,
}

/// A local cluster. Processes started by this xtask run are kept as children so they can
/// be reaped; others are found through their pid files.
pub(crate) struct Cluster {
    dir: PathBuf,
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
            cluster.start(&node)?;
            cluster.wait_healthy(&node).await?;
            cluster.wait_converged().await?;
            println!("{node} restarted");
            cluster.detach();
            Ok(())
        }
        Command::Logs { node, lines } => Cluster::load()?.logs(&node, lines),
        Command::Join { node } => {
            let mut cluster = Cluster::load()?;
            cluster.join(&node).await?;
            println!("{node} joined; ring and membership now include it");
            cluster.detach();
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
        if !(1..=9).contains(&args.nodes) {
            return Err(format!("--nodes {} is outside 1..=9", args.nodes));
        }
        build_server(args.release)?;
        if !args.keep_data {
            let _ = fs::remove_dir_all(dir.join("data"));
        }
        for sub in ["logs", "pids", "data"] {
            fs::create_dir_all(dir.join(sub))
                .map_err(|e| format!("cannot create .local/{sub}: {e}"))?;
        }
        let nodes = node_specs(args, &dir);
        let state = serde_json::to_string_pretty(&nodes).expect("specs serialise");
        fs::write(Self::state_file(&dir), state)
            .map_err(|e| format!("cannot write cluster state: {e}"))?;
        let mut cluster = Self {
            binary: server_binary(args.release),
            dir,
            nodes,
            children: HashMap::new(),
        };
        let ids: Vec<String> = cluster.nodes.iter().map(|n| n.id.clone()).collect();
        for (i, id) in ids.iter().enumerate() {
            // Every node starts here, so one of them founds the cluster; a later restart
            // of any node rejoins through the others instead.
            let extra: &[&str] = if i == 0 { &["--bootstrap"] } else { &[] };
            cluster.start_with(id, extra)?;
        }
        for id in &ids {
            cluster.wait_healthy(id).await?;
        }
        cluster.wait_converged().await?;
        Ok(cluster)
    }

    /// Waits until every running node sees every node ALIVE.
    pub(crate) async fn wait_converged(&mut self) -> Result<(), String> {
        let expected = self.nodes.len() as u32;
        let started = Instant::now();
        let specs = self.nodes.clone();
        for spec in &specs {
            if !self.is_running(&spec.id) {
                continue;
            }
            loop {
                let alive = match kv_client::Client::connect(&spec.grpc).await {
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
                    break;
                }
                if started.elapsed() > CONVERGE_TIMEOUT {
                    return Err(format!(
                        "{} sees {alive} of {expected} members alive after {CONVERGE_TIMEOUT:?}",
                        spec.id
                    ));
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        Ok(())
    }

    /// Adds `node` (the next node id, e.g. n4) to the running cluster.
    async fn join(&mut self, node: &str) -> Result<(), String> {
        let next = self.nodes.len() + 1;
        if node != format!("n{next}") {
            return Err(format!(
                "the next node of this cluster is n{next}; got {node:?}"
            ));
        }
        let template = self.nodes.first().ok_or("empty cluster")?.clone();
        let mut spec = node_spec(next, &self.dir);
        spec.release = template.release;
        spec.args.extend(
            template
                .args
                .iter()
                .filter(|a| keeps_across_nodes(a))
                .cloned(),
        );
        self.nodes.push(spec);
        let state = serde_json::to_string_pretty(&self.nodes).expect("specs serialise");
        fs::write(Self::state_file(&self.dir), state)
            .map_err(|e| format!("cannot write cluster state: {e}"))?;
        self.start(node)?;
        self.wait_healthy(node).await?;
        self.wait_converged().await
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

    fn spec(&self, node: &str) -> Result<&NodeSpec, String> {
        self.nodes.iter().find(|n| n.id == node).ok_or_else(|| {
            let known: Vec<&str> = self.nodes.iter().map(|n| n.id.as_str()).collect();
            format!(
                "no node {node:?} in this cluster (nodes: {})",
                known.join(", ")
            )
        })
    }

    pub(crate) fn address(&self, node: &str) -> Result<String, String> {
        Ok(self.spec(node)?.grpc.clone())
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
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_file(node))
            .map_err(|e| format!("cannot open log for {node}: {e}"))?;
        let log_err = log.try_clone().map_err(|e| e.to_string())?;
        let child = Process::new(&self.binary)
            .args(&spec.args)
            .args(extra)
            .current_dir(workspace_root())
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", self.binary.display()))?;
        fs::write(self.pid_file(node), child.id().to_string()).map_err(|e| e.to_string())?;
        self.children.insert(node.to_owned(), child);
        Ok(())
    }

    /// Waits until `node` answers its health check as SERVING (it knows the whole ring).
    pub(crate) async fn wait_healthy(&mut self, node: &str) -> Result<(), String> {
        let address = self.address(node)?;
        let started = Instant::now();
        while started.elapsed() < HEALTHY_TIMEOUT {
            if !self.is_running(node) {
                return Err(format!(
                    "{node} exited during start-up; see {}",
                    self.log_file(node).display()
                ));
            }
            if let Ok(mut client) = kv_client::Client::connect(&address).await
                && client.health().await.is_ok_and(|h| h.status == "SERVING")
            {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(format!(
            "{node} did not become healthy within {HEALTHY_TIMEOUT:?}"
        ))
    }

    fn running_nodes(&mut self) -> usize {
        let ids: Vec<String> = self.nodes.iter().map(|n| n.id.clone()).collect();
        ids.iter().filter(|id| self.is_running(id)).count()
    }

    pub(crate) fn is_running(&mut self, node: &str) -> bool {
        if let Some(child) = self.children.get_mut(node) {
            return matches!(child.try_wait(), Ok(None));
        }
        self.pid(node).is_some_and(|pid| signal(pid, "0"))
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
        signal(pid, "KILL");
        if let Some(mut child) = self.children.remove(node) {
            let _ = child.wait();
        }
        let _ = fs::remove_file(self.pid_file(node));
        println!("{node} killed (pid {pid})");
        Ok(())
    }

    /// SIGTERM every node, SIGKILL those still running after the grace period.
    pub(crate) fn down(&mut self) {
        let ids: Vec<String> = self.nodes.iter().map(|n| n.id.clone()).collect();
        for id in &ids {
            if let Some(pid) = self.pid(id)
                && self.is_running(id)
            {
                signal(pid, "TERM");
            }
        }
        let deadline = Instant::now() + STOP_TIMEOUT;
        for id in &ids {
            while self.is_running(id) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            if self.is_running(id)
                && let Some(pid) = self.pid(id)
            {
                signal(pid, "KILL");
            }
            if let Some(mut child) = self.children.remove(id) {
                let _ = child.wait();
            }
            let _ = fs::remove_file(self.pid_file(id));
        }
        println!("cluster stopped");
    }

    async fn status(&mut self) -> Result<(), String> {
        println!("{:<6} {:<22} {:<9} HEALTH", "NODE", "GRPC", "PROCESS");
        for spec in self.nodes.clone() {
            let process = if self.is_running(&spec.id) {
                "running"
            } else {
                "stopped"
            };
            let health = match kv_client::Client::connect(&spec.grpc).await {
                Ok(mut client) => match client.health().await {
                    Ok(h) => format!(
                        "{} ({} of {} members alive)",
                        h.status, h.members_alive, h.members_total
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

    /// Leaves the processes running after this xtask exits.
    fn detach(mut self) {
        self.children.clear();
    }
}

fn node_specs(args: &UpArgs, dir: &Path) -> Vec<NodeSpec> {
    (1..=args.nodes)
        .map(|i| {
            let mut spec = node_spec(i, dir);
            spec.release = args.release;
            spec.args.extend([
                format!("--n={}", args.rf.min(args.nodes)),
                format!("--r={}", args.r.min(args.nodes)),
                format!("--w={}", args.w.min(args.nodes)),
                format!("--vnodes={}", args.vnodes),
                format!("--storage={}", args.storage),
                format!("--durability={}", args.durability),
            ]);
            spec
        })
        .collect()
}

/// The per-node part of a node's command line: identity, addresses, seeds, data dir.
fn node_spec(i: usize, dir: &Path) -> NodeSpec {
    let grpc = |i: usize| format!("127.0.0.1:{}", BASE_GRPC_PORT + i as u16 - 1);
    let gossip = |i: usize| format!("127.0.0.1:{}", BASE_GOSSIP_PORT + i as u16 - 1);
    let id = format!("n{i}");
    let seeds: Vec<String> = (1..=SEED_NODES).map(gossip).collect();
    NodeSpec {
        release: false,
        grpc: grpc(i),
        args: vec![
            "serve".to_owned(),
            format!("--node-id={id}"),
            format!("--listen={}", grpc(i)),
            format!("--gossip-listen={}", gossip(i)),
            format!("--seeds={}", seeds.join(",")),
            format!("--data-dir={}", dir.join("data").join(&id).display()),
        ],
        id,
    }
}

/// Settings a joining node copies from the cluster's first node.
fn keeps_across_nodes(arg: &str) -> bool {
    [
        "--n=",
        "--r=",
        "--w=",
        "--vnodes=",
        "--storage=",
        "--durability=",
    ]
    .iter()
    .any(|prefix| arg.starts_with(prefix))
}

/// Sends a signal with `kill`; returns whether it was delivered.
fn signal(pid: u32, name: &str) -> bool {
    Process::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
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

pub(crate) fn build_server(release: bool) -> Result<(), String> {
    println!(
        "building kvstore{}...",
        if release { " (release)" } else { "" }
    );
    let mut args = vec![
        "build",
        "--quiet",
        "--package",
        "kvstore",
        "--bin",
        "kvstore",
    ];
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
        Err("building kvstore failed".into())
    }
}
