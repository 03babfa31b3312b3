//! `cargo xtask measure aae`: anti-entropy figures on a fresh release cluster of real
//! processes (3 nodes, N=3). With 100,000 keys of 100 B loaded:
//!
//! 1. stop n3, write 10,000 new keys with W=2, restart n3, read nothing: time until every
//!    node's digest tree is equal, keys repaired, bytes moved against the differing data;
//! 2. stop n3, delete its data directory, restart it: time until it is refilled;
//! 3. write 50,000 more keys, delete them, and once the grace period has passed and every
//!    tombstone is reaped, compare n1's data directory with its size before.
//!
//! Only the nodes' anti-entropy status is polled while waiting: no client read repairs
//! anything.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Args;
use kv_client::{AntiEntropyResponse, Client, WriteOptions};
use tokio::sync::Semaphore;

use crate::cluster::{Cluster, UpArgs};

const VALUE_BYTES: usize = 100;
const IN_FLIGHT: usize = 64;
const WAIT_LIMIT: Duration = Duration::from_secs(600);

#[derive(Args, Debug)]
pub(crate) struct AaeArgs {
    /// Keys loaded before the measurements.
    #[arg(long, default_value_t = 100_000)]
    keys: usize,
    /// Keys written while n3 is stopped.
    #[arg(long, default_value_t = 10_000)]
    missed: usize,
    /// Keys written and deleted for the reaping measurement.
    #[arg(long, default_value_t = 50_000)]
    deleted: usize,
    /// Anti-entropy interval of the nodes, ms.
    #[arg(long, default_value_t = 2_000)]
    interval_ms: u64,
    /// Tombstone grace period of the nodes, ms.
    #[arg(long, default_value_t = 5_000)]
    grace_ms: u64,
}

pub(crate) async fn aae(args: AaeArgs) -> Result<(), String> {
    let up = UpArgs {
        release: true,
        node_args: vec![
            format!("--aae-interval-ms={}", args.interval_ms),
            format!("--tombstone-grace-ms={}", args.grace_ms),
            // Anti-entropy alone: hints would deliver the missed writes first.
            "--hint-max-bytes=0".into(),
        ],
        ..UpArgs::default()
    };
    let mut cluster = Cluster::up(&up).await?;
    let result = measure(&mut cluster, &args).await;
    cluster.down();
    result
}

async fn measure(cluster: &mut Cluster, args: &AaeArgs) -> Result<(), String> {
    println!(
        "3 nodes, N=3, anti-entropy every {} ms, tombstone grace {} ms, values of {VALUE_BYTES} B",
        args.interval_ms, args.grace_ms
    );
    let started = Instant::now();
    write(cluster, "n1", "base", 0..args.keys, 2).await?;
    println!("loaded {} keys in {:.1?}", args.keys, started.elapsed());
    wait_equal(cluster).await?;

    cluster.kill("n3")?;
    write(cluster, "n1", "missed", 0..args.missed, 2).await?;
    let before = totals(cluster).await?;
    restart(cluster, "n3").await?;
    let took = wait_equal(cluster).await?;
    let after = settled_totals(cluster).await?;
    let differing = args.missed as u64 * (VALUE_BYTES as u64 + 12);
    report(
        "stopped n3 caught up",
        args.missed,
        took,
        &before,
        &after,
        differing,
    );

    cluster.kill("n3")?;
    let dir = cluster.data_dir("n3")?;
    std::fs::remove_dir_all(&dir).map_err(|e| format!("cannot wipe {}: {e}", dir.display()))?;
    let before = totals(cluster).await?;
    restart(cluster, "n3").await?;
    let took = wait_equal(cluster).await?;
    let after = settled_totals(cluster).await?;
    let all = args.keys + args.missed;
    report(
        "wiped n3 refilled",
        all,
        took,
        &before,
        &after,
        all as u64 * (VALUE_BYTES as u64 + 12),
    );

    reaping(cluster, args).await
}

/// n1's store: (keys, bytes its tables take on disk).
async fn store_size(cluster: &Cluster) -> Result<(u64, u64), String> {
    let health = client(cluster, "n1")
        .await?
        .health()
        .await
        .map_err(|e| e.to_string())?;
    Ok((health.storage_keys, health.storage_bytes))
}

async fn reaping(cluster: &mut Cluster, args: &AaeArgs) -> Result<(), String> {
    let size_before = store_size(cluster).await?;
    write(cluster, "n1", "doomed", 0..args.deleted, 3).await?;
    let size_written = store_size(cluster).await?;
    delete(cluster, "n1", "doomed", 0..args.deleted).await?;
    let deleted_at = Instant::now();
    let limit = Instant::now() + WAIT_LIMIT;
    loop {
        let mut pending = 0;
        for node in node_ids(cluster) {
            pending += status(cluster, &node).await?.tombstones_pending;
        }
        if pending == 0 {
            break;
        }
        if Instant::now() > limit {
            return Err(format!(
                "{pending} tombstones still held after {WAIT_LIMIT:?}"
            ));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let reaped_in = deleted_at.elapsed();
    let mut size_after = store_size(cluster).await?;
    // Space comes back as the store's background compaction runs: watch it for a while.
    let watch_until = Instant::now() + REAPED_SPACE_WATCH;
    while Instant::now() < watch_until && size_after.1 > size_before.1 * 11 / 10 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        size_after = store_size(cluster).await?;
    }
    println!(
        "reaping: {} keys deleted, every tombstone reaped {:.1?} after the deletes \
         (grace {} ms); n1's store: {} keys / {:.1} MB on disk before the writes, {} keys / \
         {:.1} MB with them, {} keys / {:.1} MB after reaping ({:+.1}% of the bytes before)",
        args.deleted,
        reaped_in,
        args.grace_ms,
        size_before.0,
        mb(size_before.1),
        size_written.0,
        mb(size_written.1),
        size_after.0,
        mb(size_after.1),
        (size_after.1 as f64 / size_before.1 as f64 - 1.0) * 100.0
    );
    Ok(())
}

/// How long the store's size is watched for compaction to return reaped space.
const REAPED_SPACE_WATCH: Duration = Duration::from_secs(60);

fn node_ids(cluster: &Cluster) -> Vec<String> {
    cluster.nodes.iter().map(|n| n.id.clone()).collect()
}

pub(crate) async fn client(cluster: &Cluster, node: &str) -> Result<Client, String> {
    Client::connect(&cluster.address(node)?)
        .await
        .map_err(|e| e.to_string())
}

async fn status(cluster: &Cluster, node: &str) -> Result<AntiEntropyResponse, String> {
    client(cluster, node)
        .await?
        .anti_entropy(false)
        .await
        .map_err(|e| e.to_string())
}

async fn restart(cluster: &mut Cluster, node: &str) -> Result<(), String> {
    cluster.start(node)?;
    cluster.wait_healthy(node).await
}

/// Keys repaired and bytes moved by every node's exchanges so far.
#[derive(Debug, Default)]
struct Totals {
    keys: u64,
    bytes: u64,
}

async fn totals(cluster: &Cluster) -> Result<Totals, String> {
    let mut totals = Totals::default();
    for node in node_ids(cluster) {
        if let Ok(status) = status(cluster, &node).await {
            for peer in status.peers {
                totals.keys += peer.keys_repaired;
                totals.bytes += peer.bytes_moved;
            }
        }
    }
    Ok(totals)
}

/// The totals once no exchange is running (a finished exchange reports its counts).
async fn settled_totals(cluster: &Cluster) -> Result<Totals, String> {
    let limit = Instant::now() + WAIT_LIMIT;
    loop {
        let mut running = false;
        for node in node_ids(cluster) {
            running |= status(cluster, &node)
                .await?
                .peers
                .iter()
                .any(|p| p.in_progress);
        }
        if !running || Instant::now() > limit {
            return totals(cluster).await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until every node's tree has the same root and key count.
async fn wait_equal(cluster: &Cluster) -> Result<Duration, String> {
    let started = Instant::now();
    loop {
        let mut trees = Vec::new();
        for node in node_ids(cluster) {
            let status = status(cluster, &node).await?;
            trees.push((status.tree_items, status.tree_root));
        }
        if trees.windows(2).all(|pair| pair[0] == pair[1]) {
            return Ok(started.elapsed());
        }
        if started.elapsed() > WAIT_LIMIT {
            return Err(format!(
                "trees still differ after {WAIT_LIMIT:?}: {trees:?}"
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn report(
    what: &str,
    keys: usize,
    took: Duration,
    before: &Totals,
    after: &Totals,
    differing: u64,
) {
    let repaired = after.keys - before.keys;
    let moved = after.bytes - before.bytes;
    println!(
        "{what}: {keys} keys differed; trees equal after {took:.1?}; {repaired} keys repaired \
         ({:.0} keys/s), {:.2} MB moved = {:.2}x the differing data ({:.2} MB)",
        repaired as f64 / took.as_secs_f64(),
        mb(moved),
        moved as f64 / differing as f64,
        mb(differing)
    );
}

pub(crate) fn mb(bytes: u64) -> f64 {
    bytes as f64 / 1_000_000.0
}

/// Puts `prefix-i` for every `i`, `IN_FLIGHT` at a time, with W=`w`.
pub(crate) async fn write(
    cluster: &Cluster,
    via: &str,
    prefix: &str,
    keys: std::ops::Range<usize>,
    w: u32,
) -> Result<(), String> {
    let value = Bytes::from(vec![b'x'; VALUE_BYTES]);
    for_each_key(cluster, via, prefix, keys, move |mut client, key| {
        let value = value.clone();
        async move {
            let options = WriteOptions {
                w: Some(w),
                context: None,
                ..WriteOptions::default()
            };
            client.put(&key, value, &options).await.map(|_| ())
        }
    })
    .await
}

/// Deletes `prefix-i` for every `i` with the context of a read, W=3.
async fn delete(
    cluster: &Cluster,
    via: &str,
    prefix: &str,
    keys: std::ops::Range<usize>,
) -> Result<(), String> {
    for_each_key(cluster, via, prefix, keys, |mut client, key| async move {
        let context = client.get(&key, Some(3)).await?.context().cloned();
        let options = WriteOptions {
            w: Some(3),
            context,
            ..WriteOptions::default()
        };
        client.delete(&key, &options).await.map(|_| ())
    })
    .await
}

async fn for_each_key<F, Fut>(
    cluster: &Cluster,
    via: &str,
    prefix: &str,
    keys: std::ops::Range<usize>,
    operation: F,
) -> Result<(), String>
where
    F: Fn(Client, String) -> Fut,
    Fut: std::future::Future<Output = Result<(), kv_client::ClientError>> + Send + 'static,
{
    let base = client(cluster, via).await?;
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    let mut tasks = tokio::task::JoinSet::new();
    for i in keys {
        let slot = Arc::clone(&slots)
            .acquire_owned()
            .await
            .map_err(|e| e.to_string())?;
        let call = operation(base.clone(), format!("{prefix}-{i:07}"));
        tasks.spawn(async move {
            let _slot = slot;
            call.await
        });
        while let Some(done) = tasks.try_join_next() {
            done.map_err(|e| e.to_string())?
                .map_err(|e| e.to_string())?;
        }
    }
    while let Some(done) = tasks.join_next().await {
        done.map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}
