//! A cluster on a real network: each node in a network namespace of its own, wired to a
//! bridge, bound to 0.0.0.0 and announcing the address peers reach it at
//! (`--advertise-addr`, `--gossip-advertise-addr`), as containers do. Three nodes form a
//! ring, a fourth joins and the first leaves under a write load, then every acknowledged
//! key is read back. The namespaces are removed at the end, pass or fail; where they
//! cannot be created (not root, no `ip`), the test says so and passes without running.
//!
//! The test runs twice in one: the outer run builds the namespaces and re-runs this test
//! binary inside the client's namespace (`KV_NETNS_INNER` set), where the scenario runs.

use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use kv_client::{Client, ReadResult, RingChangeKind, WriteOptions};

const TEST_NAME: &str = "four_namespaces_join_and_leave_under_load";
const INNER: &str = "KV_NETNS_INNER";
const NODES: usize = 4;
/// Longest the inner run may take before the outer run kills it.
const INNER_LIMIT: Duration = Duration::from_secs(240);
const SETTLE_LIMIT: Duration = Duration::from_secs(90);
const LOAD_KEYS: usize = 600;

/// The namespaces and addresses of one run, named after the outer process.
struct Net {
    tag: u32,
}

impl Net {
    fn subnet(&self) -> String {
        format!("10.77.{}", self.tag % 250)
    }
    fn node_ns(&self, i: usize) -> String {
        format!("kv{}n{i}", self.tag)
    }
    fn client_ns(&self) -> String {
        format!("kv{}c", self.tag)
    }
    fn switch_ns(&self) -> String {
        format!("kv{}s", self.tag)
    }
    fn node_ip(&self, i: usize) -> String {
        format!("{}.{}", self.subnet(), i)
    }
    fn all_ns(&self) -> Vec<String> {
        let mut all: Vec<String> = (1..=NODES).map(|i| self.node_ns(i)).collect();
        all.push(self.client_ns());
        all.push(self.switch_ns());
        all
    }
}

fn ip(args: &[&str]) -> Result<(), String> {
    let output = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("cannot run ip: {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

/// Builds the namespaces: a switch holding a bridge, and one namespace per node and for
/// the client, each joined to the bridge by a veth pair.
fn build(net: &Net) -> Result<(), String> {
    let switch = net.switch_ns();
    ip(&["netns", "add", &switch])?;
    ip(&["-n", &switch, "link", "add", "br0", "type", "bridge"])?;
    ip(&["-n", &switch, "link", "set", "br0", "up"])?;
    let mut ends: Vec<(String, String)> = (1..=NODES)
        .map(|i| (net.node_ns(i), net.node_ip(i)))
        .collect();
    ends.push((net.client_ns(), format!("{}.200", net.subnet())));
    for (index, (ns, address)) in ends.iter().enumerate() {
        ip(&["netns", "add", ns])?;
        let (inside, outside) = (
            format!("kv{}i{index}", net.tag),
            format!("kv{}o{index}", net.tag),
        );
        ip(&[
            "-n", &switch, "link", "add", &outside, "type", "veth", "peer", "name", &inside,
            "netns", ns,
        ])?;
        ip(&[
            "-n", &switch, "link", "set", &outside, "master", "br0", "up",
        ])?;
        ip(&[
            "-n",
            ns,
            "addr",
            "add",
            &format!("{address}/24"),
            "dev",
            &inside,
        ])?;
        ip(&["-n", ns, "link", "set", &inside, "up"])?;
        ip(&["-n", ns, "link", "set", "lo", "up"])?;
    }
    Ok(())
}

/// Removes every namespace of the run (their veth ends go with them).
fn tear_down(net: &Net) {
    for ns in net.all_ns() {
        let _ = ip(&["netns", "del", &ns]);
    }
}

#[test]
fn four_namespaces_join_and_leave_under_load() {
    if let Ok(tag) = std::env::var(INNER) {
        let tag = tag.parse().expect("a numeric tag");
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(scenario(&Net { tag }));
        return;
    }
    let net = Net {
        tag: std::process::id() % 10_000,
    };
    if let Err(why) = build(&net) {
        tear_down(&net);
        println!("skipped: cannot create network namespaces here ({why})");
        return;
    }
    let outcome = run_inner(&net);
    tear_down(&net);
    if let Err(why) = outcome {
        panic!("{why}");
    }
}

/// Re-runs this test inside the client namespace and waits for it (bounded).
fn run_inner(net: &Net) -> Result<(), String> {
    let me = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut child = Command::new("ip")
        .args(["netns", "exec", &net.client_ns()])
        .arg(me)
        .args([TEST_NAME, "--exact", "--nocapture", "--test-threads=1"])
        .env(INNER, net.tag.to_string())
        .spawn()
        .map_err(|e| format!("cannot start the inner run: {e}"))?;
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            return if status.success() {
                Ok(())
            } else {
                Err(format!(
                    "the scenario inside the namespaces failed: {status}"
                ))
            };
        }
        if started.elapsed() > INNER_LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!(
                "the scenario did not finish within {INNER_LIMIT:?}"
            ));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Server processes, killed on drop.
struct Servers(Vec<Child>);

impl Drop for Servers {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn serve(net: &Net, i: usize, data: &std::path::Path, bootstrap: bool) -> Child {
    let address = net.node_ip(i);
    let mut command = Command::new("ip");
    command
        .args(["netns", "exec", &net.node_ns(i)])
        .arg(env!("CARGO_BIN_EXE_kvstore-under-test"))
        .args([
            "serve".to_owned(),
            format!("--node-id=n{i}"),
            "--listen=0.0.0.0:50051".into(),
            format!("--advertise-addr={address}:50051"),
            "--gossip-listen=0.0.0.0:7946".into(),
            format!("--gossip-advertise-addr={address}:7946"),
            format!("--seeds={}:7946", net.node_ip(1)),
            format!("--data-dir={}", data.join(format!("n{i}")).display()),
            "--layout-interval-ms=200".into(),
            "--request-timeout-ms=2000".into(),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if bootstrap {
        command.arg("--bootstrap");
    }
    command.spawn().expect("start kvstore in its namespace")
}

fn grpc(net: &Net, i: usize) -> String {
    format!("{}:50051", net.node_ip(i))
}

async fn wait_serving(address: &str) {
    kv_harness::Dialer::default()
        .wait_serving(address, Duration::from_secs(30), || true)
        .await
        .unwrap_or_else(|why| panic!("{why}"));
}

async fn scenario(net: &Net) {
    let data = tempfile::tempdir().expect("temp dir");
    let mut servers = Servers(Vec::new());
    for i in 1..=3 {
        servers.0.push(serve(net, i, data.path(), i == 1));
    }
    for i in 1..=3 {
        wait_serving(&grpc(net, i)).await;
    }
    let joiners = vec!["n2".to_owned(), "n3".to_owned()];
    kv_harness::Dialer::default()
        .join_when_alive(&grpc(net, 1), &joiners, SETTLE_LIMIT)
        .await
        .unwrap_or_else(|why| panic!("{why}"));
    let members = |from: usize, to: usize| (from..=to).map(|i| grpc(net, i)).collect::<Vec<_>>();
    kv_harness::Dialer::default()
        .wait_settled(&members(1, 3), SETTLE_LIMIT)
        .await
        .unwrap();
    let membership = Client::connect(&grpc(net, 2))
        .await
        .unwrap()
        .membership()
        .await
        .unwrap();
    for member in &membership.members {
        assert!(
            member.grpc_address.starts_with(&net.subnet()),
            "{member:?} announces {}",
            member.grpc_address
        );
    }

    let acked: Arc<Mutex<Vec<String>>> = Arc::default();
    let load = {
        let (address, acked) = (grpc(net, 2), Arc::clone(&acked));
        tokio::spawn(async move {
            let mut client = Client::connect(&address).await.unwrap();
            for i in 0..LOAD_KEYS {
                let key = format!("k{i}");
                if client
                    .put(&key, format!("v{i}"), &WriteOptions::default())
                    .await
                    .is_ok()
                {
                    acked
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .push(key);
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };
    servers.0.push(serve(net, 4, data.path(), false));
    wait_serving(&grpc(net, 4)).await;
    kv_harness::Dialer::default()
        .join_when_alive(&grpc(net, 2), &["n4".to_owned()], SETTLE_LIMIT)
        .await
        .unwrap();
    kv_harness::Dialer::default()
        .wait_settled(&members(1, 4), SETTLE_LIMIT)
        .await
        .unwrap();
    kv_harness::Dialer::default()
        .change_ring(&grpc(net, 2), RingChangeKind::Leave, &["n1".to_owned()])
        .await
        .unwrap();
    kv_harness::Dialer::default()
        .wait_settled(&members(2, 4), SETTLE_LIMIT)
        .await
        .unwrap();
    load.await.unwrap();

    let keys = acked.lock().unwrap_or_else(PoisonError::into_inner).clone();
    assert!(
        keys.len() > LOAD_KEYS / 2,
        "only {} of {LOAD_KEYS} writes acknowledged",
        keys.len()
    );
    let mut client = Client::connect(&grpc(net, 4)).await.unwrap();
    for key in &keys {
        let read = client.get(key, Some(2)).await.unwrap();
        let value = format!("v{}", &key[1..]);
        assert!(
            matches!(&read, ReadResult::Value { value: v, .. } if *v == value.as_bytes()),
            "{key}: {read:?}"
        );
    }
    println!(
        "{} acknowledged keys read back after n4 joined and n1 left",
        keys.len()
    );
}
