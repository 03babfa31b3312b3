//! `cargo xtask measure ring`: what a ring change costs, on a fresh release cluster of
//! real processes (3 nodes, N=3). With `--keys` keys of 100 B loaded with W=3:
//!
//! 1. a `kvbench load` (mixed) against n1–n3 gives the throughput before any change;
//! 2. n4 joins while the same load runs: keys and bytes the gaining nodes copied, as a
//!    share of every key's copies (ideal 1/(n+1): a fair ring moves a quarter of the
//!    copies to a fourth node), the copy rate, and the load's throughput during it;
//! 3. n1 leaves under the same load: the same figures for a departure.
//!
//! The transfers' own counters (`kvstore ring --transfers`) are read: no client read
//! repairs anything while the figures are taken.

use std::time::{Duration, Instant};

use clap::Args;
use kv_client::{ChangeRingResponse, RingChangeKind};
use serde_json::Value;

use crate::bench::{finish_load, spawn_load};
use crate::cluster::{Cluster, UpArgs, build_binaries};
use crate::measure::{client, mb, write};

const WAIT_LIMIT: Duration = Duration::from_secs(900);
/// Keys `kvbench load` preloads and then works on (its default).
const BENCH_KEYS: u64 = 10_000;
const BENCH_CONCURRENCY: usize = 64;

#[derive(Args, Debug)]
pub(crate) struct RingArgs {
    /// Keys loaded before the changes.
    #[arg(long, default_value_t = 200_000)]
    keys: usize,
    /// Seconds of load for each throughput figure.
    #[arg(long, default_value_t = 10)]
    bench_secs: u64,
    /// The nodes' `--aae-max-keys-per-sec` (transfers share this limit with anti-entropy).
    #[arg(long, default_value_t = 10_000)]
    max_keys_per_sec: u32,
}

pub(crate) async fn ring(args: RingArgs) -> Result<(), String> {
    build_binaries(true, &["kvstore", "kvbench"])?;
    let up = UpArgs {
        release: true,
        node_args: vec![format!("--aae-max-keys-per-sec={}", args.max_keys_per_sec)],
        ..UpArgs::default()
    };
    let mut cluster = Cluster::up(&up).await?;
    let result = measure(&mut cluster, &args).await;
    cluster.down();
    result
}

async fn measure(cluster: &mut Cluster, args: &RingArgs) -> Result<(), String> {
    println!(
        "3 nodes, N=3, transfers limited to {} keys/s per node, values of 100 B",
        args.max_keys_per_sec
    );
    let started = Instant::now();
    write(cluster, "n1", "base", 0..args.keys, 3).await?;
    println!("loaded {} keys in {:.1?}", args.keys, started.elapsed());
    let duration = format!("{}s", args.bench_secs);
    let before = bench(cluster, &["n1", "n2", "n3"], &duration).await?;
    println!("load before any change: {}", describe(&before));

    cluster.add_node("n4").await?;
    let join = measured_change(
        cluster,
        RingChangeKind::Join,
        "n4",
        &["n1", "n2", "n3"],
        args,
    )
    .await?;
    join.report("n4 joined (3 -> 4 members)", args.keys, 4, &before);
    report_cleanup(&wait_cleaned(cluster, &["n1", "n2", "n3", "n4"], join.version).await?);

    let leave = measured_change(
        cluster,
        RingChangeKind::Leave,
        "n1",
        &["n2", "n3", "n4"],
        args,
    )
    .await?;
    cluster.stop("n1");
    leave.report("n1 left (4 -> 3 members)", args.keys, 4, &before);
    report_cleanup(&wait_cleaned(cluster, &["n2", "n3", "n4"], leave.version).await?);
    Ok(())
}

/// What one change moved, and the load's report while it ran.
struct ChangeFigures {
    version: u64,
    keys_moved: u64,
    bytes_moved: u64,
    /// The longest copying time over the gaining nodes.
    copying: Duration,
    /// Proposal to every gaining node done.
    total: Duration,
    load: Value,
    /// Whether the load's window ended before the transfer did (it ran inside the transfer).
    load_inside_transfer: bool,
}

/// Proposes `kind` of `node` while a load runs against `targets`, and waits until every
/// gaining node finished copying and the ring settled.
async fn measured_change(
    cluster: &mut Cluster,
    kind: RingChangeKind,
    node: &str,
    targets: &[&str],
    args: &RingArgs,
) -> Result<ChangeFigures, String> {
    let load = spawn_load(
        &addresses(cluster, targets)?,
        "mixed",
        &format!("{}s", args.bench_secs),
        BENCH_CONCURRENCY,
        None,
    )?;
    let load = tokio::task::spawn_blocking(move || (finish_load(load), Instant::now()));
    let proposed = Instant::now();
    let plan = cluster.propose(kind, node).await?;
    let (keys_moved, bytes_moved, copying) = wait_transfers(cluster, &plan).await?;
    let total = proposed.elapsed();
    let transfer_done = Instant::now();
    let (report, load_done) = load.await.map_err(|e| e.to_string())?;
    cluster.wait_settled().await?;
    Ok(ChangeFigures {
        version: plan.version,
        keys_moved,
        bytes_moved,
        copying,
        total,
        load: report?,
        load_inside_transfer: load_done < transfer_done,
    })
}

/// Polls every gaining node until its transfer of the plan's version is done; returns
/// the keys and bytes they moved and the longest copying time.
async fn wait_transfers(
    cluster: &Cluster,
    plan: &ChangeRingResponse,
) -> Result<(u64, u64, Duration), String> {
    let limit = Instant::now() + WAIT_LIMIT;
    loop {
        let mut done = 0;
        let (mut keys, mut bytes, mut copying) = (0, 0, Duration::ZERO);
        for gaining in &plan.moves {
            let status = client(cluster, &gaining.to).await?.ring_transfers().await;
            let status = status.map_err(|e| format!("{}: {e}", gaining.to))?;
            let Some(transfer) = status.transfers.iter().find(|t| t.version == plan.version) else {
                continue;
            };
            keys += transfer.keys_moved;
            bytes += transfer.bytes_moved;
            copying = copying.max(Duration::from_millis(transfer.elapsed_ms));
            done += usize::from(transfer.state == "DONE");
        }
        if done == plan.moves.len() {
            return Ok((keys, bytes, copying));
        }
        if Instant::now() > limit {
            return Err(format!(
                "version {}: {done} of {} gaining nodes done after {WAIT_LIMIT:?}",
                plan.version,
                plan.moves.len()
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until every node of `nodes` finished its cleanup pass for `version`; returns
/// the keys each dropped and how long the wait took.
async fn wait_cleaned(
    cluster: &Cluster,
    nodes: &[&str],
    version: u64,
) -> Result<(Vec<(String, u64)>, Duration), String> {
    let started = Instant::now();
    loop {
        let mut dropped = Vec::new();
        for node in nodes {
            let status = client(cluster, node).await?.ring_transfers().await;
            let status = status.map_err(|e| format!("{node}: {e}"))?;
            if let Some(c) = status.cleanup.filter(|c| c.done && c.version == version) {
                dropped.push(((*node).to_owned(), c.keys_dropped));
            }
        }
        if dropped.len() == nodes.len() {
            return Ok((dropped, started.elapsed()));
        }
        if started.elapsed() > WAIT_LIMIT {
            return Err(format!(
                "cleanup for version {version} unfinished after {WAIT_LIMIT:?}"
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn report_cleanup((dropped, took): &(Vec<(String, u64)>, Duration)) {
    let each: Vec<String> = dropped.iter().map(|(n, k)| format!("{n} {k}")).collect();
    println!(
        "  cleanup: keys no longer replicated dropped ({}), every pass done {took:.1?} after \
         the ring settled",
        each.join(", ")
    );
}

impl ChangeFigures {
    /// `members` is the larger member count of the change (the ring a key's copies
    /// spread over): a fair ring moves 1/members of all copies.
    fn report(&self, what: &str, loaded: usize, members: u32, before: &Value) {
        let keys = loaded as u64 + BENCH_KEYS;
        let copies = keys * 3;
        let seconds = self.copying.as_secs_f64().max(f64::EPSILON);
        println!(
            "{what}: {} keys copied = {:.1}% of the {copies} copies of {keys} keys (ideal \
             1/{members} = {:.1}%), {:.2} MB; copying took {:.1?} ({:.0} keys/s, {:.2} MB/s), \
             {:.1?} from the proposal to the last gaining node done",
            self.keys_moved,
            self.keys_moved as f64 / copies as f64 * 100.0,
            100.0 / f64::from(members),
            mb(self.bytes_moved),
            self.copying,
            self.keys_moved as f64 / seconds,
            mb(self.bytes_moved) / seconds,
            self.total,
        );
        let ratio = number(&self.load, "ops_per_s") / number(before, "ops_per_s");
        println!(
            "  load during the change: {} = {ratio:.2}x the throughput before{}",
            describe(&self.load),
            if self.load_inside_transfer {
                ""
            } else {
                " (the transfer finished before the load did: part of its window had no transfer)"
            }
        );
    }
}

async fn bench(cluster: &Cluster, targets: &[&str], duration: &str) -> Result<Value, String> {
    let load = spawn_load(
        &addresses(cluster, targets)?,
        "mixed",
        duration,
        BENCH_CONCURRENCY,
        None,
    )?;
    tokio::task::spawn_blocking(move || finish_load(load))
        .await
        .map_err(|e| e.to_string())?
}

fn addresses(cluster: &Cluster, nodes: &[&str]) -> Result<Vec<String>, String> {
    nodes.iter().map(|n| cluster.address(n)).collect()
}

fn number(report: &Value, field: &str) -> f64 {
    report[field].as_f64().unwrap_or(f64::NAN)
}

fn describe(report: &Value) -> String {
    format!(
        "{:.0} ops/s, p50 {:.2} ms, p99 {:.2} ms, errors {}",
        number(report, "ops_per_s"),
        number(report, "p50_ms"),
        number(report, "p99_ms"),
        report["errors"]
    )
}
