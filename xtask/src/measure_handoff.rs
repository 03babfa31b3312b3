//! `cargo xtask measure handoff`: how fast a replica that was stopped under write load
//! gets every write it missed once it restarts, with no read: by hinted handoff (anti-
//! entropy off) against anti-entropy alone (hints off, its default 30 s interval). Each
//! run uses a fresh release cluster of 3 nodes (N=3, W=2): n3 is killed, n1 takes a paced
//! write load for `--down-secs`, n3 restarts, and the time until n3 stores as many keys
//! as n1 is printed. Only the nodes' health is polled while waiting.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Args;
use kv_client::WriteOptions;

use crate::cluster::{Cluster, UpArgs};
use crate::measure::client;

const VALUE_BYTES: usize = 100;
const WAIT_LIMIT: Duration = Duration::from_secs(600);

#[derive(Args, Debug)]
pub(crate) struct HandoffArgs {
    /// How long n3 stays stopped while n1 takes writes, seconds.
    #[arg(long, default_value_t = 60)]
    down_secs: u64,
    /// Writes per second of the load (W=2, through n1).
    #[arg(long, default_value_t = 500)]
    rate: u64,
}

pub(crate) async fn handoff(args: HandoffArgs) -> Result<(), String> {
    let runs: [(&str, &[&str]); 2] = [
        (
            "hinted handoff (anti-entropy off)",
            &["--aae-interval-ms=0"],
        ),
        (
            "anti-entropy alone (hints off, default 30 s interval)",
            &["--hint-max-bytes=0"],
        ),
    ];
    for (label, node_args) in runs {
        let up = UpArgs {
            release: true,
            node_args: node_args.iter().map(|a| (*a).to_owned()).collect(),
            ..UpArgs::default()
        };
        let mut cluster = Cluster::up(&up).await?;
        let result = catch_up(&mut cluster, &args).await;
        cluster.down();
        let (written, took) = result?;
        println!(
            "{label}: n3 missed {written} writes in {} s; it held all of them {:.1} s after its restart",
            args.down_secs,
            took.as_secs_f64()
        );
    }
    Ok(())
}

/// Stops n3, writes for `down_secs`, restarts it, and times its catch-up.
async fn catch_up(cluster: &mut Cluster, args: &HandoffArgs) -> Result<(u64, Duration), String> {
    cluster.kill("n3")?;
    let written = paced_load(cluster, args).await?;
    let expected = storage_keys(cluster, "n1").await?;
    cluster.start("n3")?;
    cluster.wait_healthy("n3").await?;
    let restarted = Instant::now();
    loop {
        let held = storage_keys(cluster, "n3").await?;
        if held >= expected {
            return Ok((written, restarted.elapsed()));
        }
        if restarted.elapsed() > WAIT_LIMIT {
            return Err(format!(
                "n3 holds {held} of {expected} keys {WAIT_LIMIT:?} after its restart"
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Puts `args.rate` keys a second through n1 for `args.down_secs`; returns how many
/// were acknowledged (a refused write fails the measurement).
async fn paced_load(cluster: &Cluster, args: &HandoffArgs) -> Result<u64, String> {
    let base = client(cluster, "n1").await?;
    let value = Bytes::from(vec![b'x'; VALUE_BYTES]);
    let acknowledged = Arc::new(AtomicU64::new(0));
    let total = args.rate * args.down_secs;
    let started = tokio::time::Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..total {
        let due = started + Duration::from_secs_f64(i as f64 / args.rate as f64);
        tokio::time::sleep_until(due).await;
        let (mut client, value) = (base.clone(), value.clone());
        let acknowledged = Arc::clone(&acknowledged);
        tasks.spawn(async move {
            let options = WriteOptions {
                w: Some(2),
                ..WriteOptions::default()
            };
            client
                .put(&format!("missed-{i:07}"), value, &options)
                .await?;
            acknowledged.fetch_add(1, Ordering::Relaxed);
            Ok::<(), kv_client::ClientError>(())
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
    Ok(acknowledged.load(Ordering::Relaxed))
}

async fn storage_keys(cluster: &Cluster, node: &str) -> Result<u64, String> {
    Ok(client(cluster, node)
        .await?
        .health()
        .await
        .map_err(|e| e.to_string())?
        .storage_keys)
}
