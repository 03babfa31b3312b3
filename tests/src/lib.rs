//! End-to-end tests' cluster: real `kvstore serve` processes on free 127.0.0.1 ports,
//! started through `kv-harness` (as `cargo xtask cluster` starts its nodes), each with its
//! own data directory and log file, killed when the test ends. Logs go to
//! `<target tmp>/e2e-logs/<test>/<node>.log` and their path is printed when a node fails
//! to start.

#![warn(missing_docs)]

pub mod scrape;

use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::Duration;

use kv_client::{ChangeRingResponse, Client, RingChangeKind};
pub use kv_harness::Membership;
use kv_harness::{NodeLayout, serve_args};

const HEALTHY_TIMEOUT: Duration = Duration::from_secs(20);
/// Longest a ring change may take to move its data in a test.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Seeds of a gossip cluster: its first two nodes.
pub const GOSSIP: Membership = Membership::Gossip { seeds: 2 };

/// One server process and how to start it again.
#[derive(Debug)]
struct NodeProcess {
    layout: NodeLayout,
    /// Its admin HTTP listener (/healthz, /readyz, /metrics, /status).
    admin: SocketAddr,
    args: Vec<String>,
    child: Option<Child>,
}

/// A cluster of real server processes, killed on drop.
#[derive(Debug)]
pub struct TestCluster {
    binary: PathBuf,
    logs: PathBuf,
    data: tempfile::TempDir,
    nodes: Vec<NodeProcess>,
    membership: Membership,
    extra_args: Vec<String>,
    /// How the test reaches the nodes (TLS for [`TestCluster::start_tls`]).
    dialer: kv_harness::Dialer,
    /// The throwaway CA and node certificates of a TLS cluster.
    pki: Option<kv_harness::tls::DevPki>,
}

impl TestCluster {
    /// Starts `count` statically configured nodes (N=3, R=2, W=2, fjall storage) of the
    /// server `binary` and waits until all serve. Logs go under `logs_base/e2e-logs/<test>/`.
    pub async fn start(
        binary: &str,
        logs_base: &str,
        test: &str,
        count: usize,
        extra_args: &[&str],
    ) -> Self {
        Self::start_with(
            binary,
            logs_base,
            test,
            count,
            extra_args,
            Membership::Static,
        )
        .await
    }

    /// Like [`TestCluster::start`], choosing how nodes find each other. With gossip the
    /// first node founds the cluster (`--bootstrap` on its first start only) and the
    /// others join its ring, as an operator would with `kvstore join`.
    pub async fn start_with(
        binary: &str,
        logs_base: &str,
        test: &str,
        count: usize,
        extra_args: &[&str],
        membership: Membership,
    ) -> Self {
        Self::launch(
            binary, logs_base, test, count, extra_args, membership, false,
        )
        .await
    }

    /// Like [`TestCluster::start`] (static membership), every node serving and dialling
    /// over mutual TLS with certificates from a throwaway CA; the cluster's clients trust
    /// that CA.
    pub async fn start_tls(
        binary: &str,
        logs_base: &str,
        test: &str,
        count: usize,
        extra_args: &[&str],
    ) -> Self {
        let membership = Membership::Static;
        Self::launch(binary, logs_base, test, count, extra_args, membership, true).await
    }

    async fn launch(
        binary: &str,
        logs_base: &str,
        test: &str,
        count: usize,
        extra_args: &[&str],
        membership: Membership,
        tls: bool,
    ) -> Self {
        let data = tempfile::tempdir().expect("temp dir");
        let (mut grpc, gossip) = (free_addresses(count * 3, &[]), free_addresses(count, &[]));
        let admin = grpc.split_off(count * 2);
        let internal = grpc.split_off(count);
        let layouts: Vec<NodeLayout> = (1..=count)
            .map(|i| {
                let at = i - 1;
                NodeLayout::new(i, grpc[at], internal[at], gossip[at], data.path())
            })
            .collect();
        // Test defaults, unless the test sets the flag itself.
        let flag = |arg: &str| arg.split('=').next().unwrap_or_default().to_owned();
        let extra_args: Vec<String> = ["--request-timeout-ms=3000", "--peer-timeout-ms=1000"]
            .iter()
            .filter(|default| !extra_args.iter().any(|a| flag(a) == flag(default)))
            .chain(extra_args)
            .map(|a| (*a).to_owned())
            .collect();
        let ids: Vec<String> = layouts.iter().map(|l| l.id.clone()).collect();
        let pki = tls.then(|| {
            kv_harness::tls::create_dev_pki(&data.path().join("tls"), "kvstore test CA", &ids)
                .unwrap_or_else(|why| panic!("{why}"))
        });
        let dialer = match &pki {
            Some(pki) => kv_harness::Dialer::default().with_tls(
                kv_client::ClientTls::from_files(&pki.ca, None).expect("read the test CA"),
            ),
            None => kv_harness::Dialer::default(),
        };
        let nodes = layouts
            .iter()
            .zip(admin)
            .map(|(layout, admin)| {
                let mut args = extra_args.clone();
                if let Some(pki) = &pki {
                    args.extend(pki.serve_args(&layout.id));
                }
                node_process(layout, admin, &layouts, membership, &args)
            })
            .collect();
        let mut cluster = Self {
            binary: PathBuf::from(binary),
            logs: log_dir(Path::new(logs_base), test),
            data,
            nodes,
            membership,
            extra_args,
            dialer,
            pki,
        };
        let gossip = matches!(membership, Membership::Gossip { .. });
        for i in 0..count {
            let founder = gossip && i == 0;
            cluster.spawn(i, if founder { &["--bootstrap"] } else { &[] });
        }
        for i in 0..count {
            cluster.wait_serving(i).await;
        }
        if gossip {
            let ids = cluster.node_ids();
            let founder = cluster.address(&ids[0]);
            cluster
                .dialer
                .join_when_alive(&founder, &ids[1..], SETTLE_TIMEOUT)
                .await
                .unwrap_or_else(|why| panic!("{why}"));
            cluster.wait_settled(&ids).await;
        }
        cluster
    }

    /// Starts one more node (the next id), seeded with the first nodes, and waits until
    /// it serves (it learned the ring's layout; it is not a member until it joins).
    pub async fn add_node(&mut self) -> String {
        let index = self.nodes.len() + 1;
        let taken_tcp: Vec<SocketAddr> = self
            .nodes
            .iter()
            .flat_map(|n| [n.layout.grpc, n.layout.internal, n.admin])
            .collect();
        let taken_gossip: Vec<SocketAddr> = self.nodes.iter().map(|n| n.layout.gossip).collect();
        let tcp = free_addresses(3, &taken_tcp);
        let layout = NodeLayout::new(
            index,
            tcp[0],
            tcp[2],
            free_addresses(1, &taken_gossip)[0],
            self.data.path(),
        );
        let mut layouts: Vec<NodeLayout> = self.nodes.iter().map(|n| n.layout.clone()).collect();
        layouts.push(layout.clone());
        self.nodes.push(node_process(
            &layout,
            tcp[1],
            &layouts,
            self.membership,
            &self.extra_args,
        ));
        self.spawn(index - 1, &[]);
        self.wait_serving(index - 1).await;
        layout.id
    }

    /// Asks `via` (a member) for a ring change; panics with the reason if it is refused.
    pub async fn change(
        &self,
        via: &str,
        kind: RingChangeKind,
        nodes: &[&str],
    ) -> ChangeRingResponse {
        let nodes: Vec<String> = nodes.iter().map(|n| (*n).to_owned()).collect();
        self.dialer
            .change_ring(&self.address(via), kind, &nodes)
            .await
            .unwrap_or_else(|why| panic!("{why}"))
    }

    /// Waits until `nodes` serve with the same settled ring (no data moving); returns
    /// its version.
    pub async fn wait_settled<S: AsRef<str>>(&self, nodes: &[S]) -> u64 {
        let addresses: Vec<String> = nodes.iter().map(|n| self.address(n.as_ref())).collect();
        self.dialer
            .wait_settled(&addresses, SETTLE_TIMEOUT)
            .await
            .unwrap_or_else(|why| panic!("{why}"))
    }

    fn index(&self, node: &str) -> usize {
        self.nodes
            .iter()
            .position(|n| n.layout.id == node)
            .unwrap_or_else(|| panic!("no node {node}"))
    }

    fn log_of(&self, i: usize) -> PathBuf {
        self.logs.join(format!("{}.log", self.nodes[i].layout.id))
    }

    fn spawn(&mut self, i: usize, extra: &[&str]) {
        let log = self.log_of(i);
        let node = &mut self.nodes[i];
        let mut args = node.args.clone();
        args.extend(extra.iter().map(|a| (*a).to_owned()));
        node.child = Some(kv_harness::spawn(&self.binary, &args, &log).expect("start kvstore"));
    }

    async fn wait_serving(&mut self, i: usize) {
        let log = self.log_of(i);
        let dialer = self.dialer.clone();
        let node = &mut self.nodes[i];
        let address = node.layout.grpc.to_string();
        let child = node.child.as_mut().expect("started");
        let running = || kv_harness::is_running(child);
        if let Err(why) = dialer
            .wait_serving(&address, HEALTHY_TIMEOUT, running)
            .await
        {
            panic!("{} {why}; log: {}", node.layout.id, log.display());
        }
    }

    /// A client connected to `node` (over TLS in a TLS cluster).
    pub async fn client(&self, node: &str) -> Client {
        self.dialer
            .connect(&self.address(node))
            .await
            .unwrap_or_else(|why| panic!("connect: {why}"))
    }

    /// The throwaway CA and certificates of a cluster from [`TestCluster::start_tls`].
    pub fn pki(&self) -> Option<&kv_harness::tls::DevPki> {
        self.pki.as_ref()
    }

    /// The client gRPC address of `node`.
    pub fn address(&self, node: &str) -> String {
        self.nodes[self.index(node)].layout.grpc.to_string()
    }

    /// The gossip (UDP) address of `node`.
    pub fn gossip_address(&self, node: &str) -> SocketAddr {
        self.nodes[self.index(node)].layout.gossip
    }

    /// The node-to-node (internal) gRPC address of `node`.
    pub fn internal_address(&self, node: &str) -> String {
        self.nodes[self.index(node)].layout.internal.to_string()
    }

    /// The admin HTTP address of `node` (/healthz, /readyz, /metrics, /status).
    pub fn admin_address(&self, node: &str) -> SocketAddr {
        self.nodes
            .iter()
            .find(|n| n.layout.id == node)
            .unwrap_or_else(|| panic!("no node {node}"))
            .admin
    }

    /// The log file of `node` (its standard output and error, appended across restarts).
    pub fn log_path(&self, node: &str) -> PathBuf {
        self.log_of(self.index(node))
    }

    /// Node ids, in order.
    pub fn node_ids(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.layout.id.clone()).collect()
    }

    /// SIGKILLs `node` (no graceful shutdown) and reaps it.
    pub fn kill(&mut self, node: &str) {
        let i = self.index(node);
        if let Some(child) = self.nodes[i].child.take() {
            kv_harness::kill(child);
        }
    }

    /// SIGTERMs `node` and waits (at most 20 s, then SIGKILL) for its graceful shutdown.
    pub fn stop(&mut self, node: &str) {
        let i = self.index(node);
        if let Some(mut child) = self.nodes[i].child.take() {
            kv_harness::terminate(child.id(), std::time::Duration::from_secs(20), || {
                !kv_harness::is_running(&mut child)
            });
            let _ = child.wait();
        }
    }

    /// Deletes `node`'s data directory (it must be stopped): a lost disk.
    pub fn wipe(&mut self, node: &str) {
        let i = self.index(node);
        assert!(self.nodes[i].child.is_none(), "{node} is still running");
        let _ = std::fs::remove_dir_all(&self.nodes[i].layout.data_dir);
    }

    /// Starts `node` again with the same arguments and data, and waits until it serves.
    pub async fn restart(&mut self, node: &str) {
        self.start_again(node);
        self.wait_serving(self.index(node)).await;
    }

    /// Starts `node` again with the same arguments and data, without waiting (a node
    /// restarted while every other one is down serves only once another one runs).
    pub fn start_again(&mut self, node: &str) {
        let i = self.index(node);
        assert!(self.nodes[i].child.is_none(), "{node} is still running");
        self.spawn(i, &[]);
    }

    /// Waits until `node` serves.
    pub async fn wait_serving_node(&mut self, node: &str) {
        self.wait_serving(self.index(node)).await;
    }

    /// Runs the server with `node`'s arguments plus `extra` to completion (the node must be
    /// stopped) and returns its exit status and output: for start-up refusals.
    pub fn run_to_exit(&self, node: &str, extra: &[&str]) -> std::process::Output {
        let i = self.index(node);
        assert!(self.nodes[i].child.is_none(), "{node} is still running");
        std::process::Command::new(&self.binary)
            .args(&self.nodes[i].args)
            .args(extra)
            .output()
            .expect("run kvstore")
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(child) = node.child.take() {
                kv_harness::kill(child);
            }
        }
    }
}

fn node_process(
    layout: &NodeLayout,
    admin: SocketAddr,
    all: &[NodeLayout],
    membership: Membership,
    extra_args: &[String],
) -> NodeProcess {
    let mut args = serve_args(layout, all, membership);
    args.push(format!("--admin-listen={admin}"));
    args.extend(extra_args.iter().cloned());
    NodeProcess {
        layout: layout.clone(),
        admin,
        args,
        child: None,
    }
}

/// The ports tests hand out: below Linux's ephemeral range (32768-60999), so that no
/// outgoing connection of a test, a node or a client can take one between the moment it
/// is chosen and the moment its server binds it.
const TEST_PORTS: std::ops::Range<u16> = 20_000..32_000;

/// The next test port to try; each test binary starts at its own offset (its pid), and
/// cargo runs test binaries one after another.
static NEXT_PORT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// A port of [`TEST_PORTS`] not handed out before in this process (cycling), and free
/// for both TCP and UDP right now.
fn next_free_port() -> u16 {
    use std::sync::atomic::Ordering;
    let span = u32::from(TEST_PORTS.end - TEST_PORTS.start);
    let offset = std::process::id() * 97 % span;
    for _ in 0..span {
        let n = NEXT_PORT.fetch_add(1, Ordering::Relaxed);
        let port = TEST_PORTS.start + ((offset + n) % span) as u16;
        let tcp = TcpListener::bind(("127.0.0.1", port)).is_ok();
        let udp = UdpSocket::bind(("127.0.0.1", port)).is_ok();
        if tcp && udp {
            return port;
        }
    }
    panic!("no free port in {TEST_PORTS:?}");
}

/// `count` distinct addresses on 127.0.0.1 whose port is free for TCP and UDP, none of
/// them in `taken`.
fn free_addresses(count: usize, taken: &[SocketAddr]) -> Vec<SocketAddr> {
    let mut addresses = Vec::with_capacity(count);
    while addresses.len() < count {
        let address = SocketAddr::from(([127, 0, 0, 1], next_free_port()));
        if !taken.contains(&address) && !addresses.contains(&address) {
            addresses.push(address);
        }
    }
    addresses
}

fn log_dir(base: &Path, test: &str) -> PathBuf {
    let dir = base.join("e2e-logs").join(test);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("log dir");
    dir
}
