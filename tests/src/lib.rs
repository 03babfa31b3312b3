//! A harness for end-to-end tests: starts real `kvstore serve` processes on free
//! 127.0.0.1 ports, each with its own data directory and log file, and kills them when
//! the test ends. Logs go to `<target tmp>/e2e-logs/<test>/<node>.log` and their path is
//! printed when a node fails to start.

#![warn(missing_docs)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kv_client::Client;

const HEALTHY_TIMEOUT: Duration = Duration::from_secs(20);

/// One server process and how to start it again.
#[derive(Debug)]
struct NodeProcess {
    id: String,
    address: String,
    args: Vec<String>,
    child: Option<Child>,
}

/// How the nodes learn about each other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Membership {
    /// A full `--peers` list on every node.
    Static,
    /// SWIM gossip: `--gossip-listen` on a free UDP port, the first two nodes as seeds.
    Gossip,
}

/// A cluster of real server processes, killed on drop.
#[derive(Debug)]
pub struct TestCluster {
    binary: PathBuf,
    logs: PathBuf,
    _data: tempfile::TempDir,
    nodes: Vec<NodeProcess>,
}

impl TestCluster {
    /// Starts `count` nodes (N=3, R=2, W=2, fjall storage) of the server `binary` and
    /// waits until all answer. Logs go under `logs_base/e2e-logs/<test>/`.
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

    /// Like [`TestCluster::start`], choosing how nodes find each other.
    pub async fn start_with(
        binary: &str,
        logs_base: &str,
        test: &str,
        count: usize,
        extra_args: &[&str],
        membership: Membership,
    ) -> Self {
        let data = tempfile::tempdir().expect("temp dir");
        let logs = log_dir(Path::new(logs_base), test);
        let addresses: Vec<String> = (0..count).map(|_| free_address()).collect();
        let gossip: Vec<String> = (0..count).map(|_| free_udp_address()).collect();
        let nodes = (0..count)
            .map(|i| {
                let id = format!("n{}", i + 1);
                let peers: Vec<String> = (0..count)
                    .filter(|&j| j != i)
                    .map(|j| format!("n{}={}", j + 1, addresses[j]))
                    .collect();
                let mut args = vec![
                    "serve".to_owned(),
                    format!("--node-id={id}"),
                    format!("--listen={}", addresses[i]),
                    format!("--data-dir={}", data.path().join(&id).display()),
                    "--request-timeout-ms=3000".to_owned(),
                    "--peer-timeout-ms=1000".to_owned(),
                ];
                match membership {
                    Membership::Static if !peers.is_empty() => {
                        args.push(format!("--peers={}", peers.join(",")));
                    }
                    Membership::Static => {}
                    Membership::Gossip => {
                        args.push(format!("--gossip-listen={}", gossip[i]));
                        let seeds: Vec<&str> = gossip.iter().take(2).map(String::as_str).collect();
                        args.push(format!("--seeds={}", seeds.join(",")));
                    }
                }
                args.extend(extra_args.iter().map(|a| (*a).to_owned()));
                NodeProcess {
                    id,
                    address: addresses[i].clone(),
                    args,
                    child: None,
                }
            })
            .collect();
        let mut cluster = Self {
            binary: PathBuf::from(binary),
            logs,
            _data: data,
            nodes,
        };
        for i in 0..count {
            // One node founds the gossip cluster; restarts later rejoin through the others.
            let bootstrap = membership == Membership::Gossip && i == 0;
            cluster.spawn(i, if bootstrap { &["--bootstrap"] } else { &[] });
        }
        for i in 0..count {
            cluster.wait_healthy(i).await;
        }
        cluster
    }

    fn index(&self, node: &str) -> usize {
        self.nodes
            .iter()
            .position(|n| n.id == node)
            .unwrap_or_else(|| panic!("no node {node}"))
    }

    fn spawn(&mut self, i: usize, extra: &[&str]) {
        let node = &mut self.nodes[i];
        let log_path = self.logs.join(format!("{}.log", node.id));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .expect("log file");
        let child = Command::new(&self.binary)
            .args(&node.args)
            .args(extra)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .expect("start kvstore");
        node.child = Some(child);
    }

    async fn wait_healthy(&mut self, i: usize) {
        let started = Instant::now();
        let log = self.logs.join(format!("{}.log", self.nodes[i].id));
        loop {
            if let Some(child) = self.nodes[i].child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!(
                    "{} exited ({status}) during start-up; log: {}",
                    self.nodes[i].id,
                    log.display()
                );
            }
            if let Ok(mut client) = Client::connect(&self.nodes[i].address).await
                && client.health().await.is_ok_and(|h| h.status == "SERVING")
            {
                return;
            }
            assert!(
                started.elapsed() < HEALTHY_TIMEOUT,
                "{} not healthy after {HEALTHY_TIMEOUT:?}; log: {}",
                self.nodes[i].id,
                log.display()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// A client connected to `node`.
    pub async fn client(&self, node: &str) -> Client {
        let address = &self.nodes[self.index(node)].address;
        Client::connect(address).await.expect("connect")
    }

    /// The gRPC address of `node`.
    pub fn address(&self, node: &str) -> String {
        self.nodes[self.index(node)].address.clone()
    }

    /// Node ids, in order.
    pub fn node_ids(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.id.clone()).collect()
    }

    /// SIGKILLs `node` (no graceful shutdown) and reaps it.
    pub fn kill(&mut self, node: &str) {
        let i = self.index(node);
        if let Some(mut child) = self.nodes[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts `node` again with the same arguments and data, and waits until healthy.
    pub async fn restart(&mut self, node: &str) {
        let i = self.index(node);
        assert!(self.nodes[i].child.is_none(), "{node} is still running");
        self.spawn(i, &[]);
        self.wait_healthy(i).await;
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// A port the OS just handed out on 127.0.0.1. Another process could take it before the
/// server binds it; on this single-user test machine that has not been a problem.
fn free_address() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local addr").to_string()
}

fn free_udp_address() -> String {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind a free UDP port");
    socket.local_addr().expect("local addr").to_string()
}

fn log_dir(base: &Path, test: &str) -> PathBuf {
    let dir = base.join("e2e-logs").join(test);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("log dir");
    dir
}
