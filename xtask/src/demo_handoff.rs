//! `cargo xtask demo handoff`: hinted handoff and sloppy quorum on 5 nodes (N=3, so each
//! key has two nodes outside its replicas to fall back on). Two of a key's three
//! replicas are killed; a strict W=2 write is refused, a sloppy W=2 write succeeds with a
//! fallback's hint; the two come back and receive the value from the hints, with no read
//! and anti-entropy off.

use std::time::{Duration, Instant};

use kv_client::{Client, HintsResponse, WriteMode, WriteOptions};

use crate::cluster::{Cluster, UpArgs};

const KEY: &str = "demo:handoff";
const DELIVERY_WAIT: Duration = Duration::from_secs(30);

/// The cluster the demo needs: 5 nodes, anti-entropy off so only hints move data.
pub(crate) fn cluster_args() -> UpArgs {
    UpArgs {
        nodes: 5,
        node_args: vec!["--aae-interval-ms=0".into()],
        ..UpArgs::default()
    }
}

async fn client(cluster: &Cluster, node: &str) -> Result<Client, String> {
    Client::connect(&cluster.address(node)?)
        .await
        .map_err(|e| e.to_string())
}

async fn hints(cluster: &Cluster, node: &str) -> Result<HintsResponse, String> {
    client(cluster, node)
        .await?
        .hints()
        .await
        .map_err(|e| e.to_string())
}

fn held_for(view: &HintsResponse, target: &str) -> u64 {
    view.targets
        .iter()
        .filter(|t| t.target == target)
        .map(|t| t.hints)
        .sum()
}

pub(crate) async fn handoff(cluster: &mut Cluster) -> Result<(), String> {
    let ids: Vec<String> = (1..=5).map(|i| format!("n{i}")).collect();
    let replicas = client(cluster, "n1")
        .await?
        .ring(Some(KEY))
        .await
        .map_err(|e| e.to_string())?
        .preference_list;
    let (coordinator, down) = (replicas[0].clone(), replicas[1..].to_vec());
    let fallbacks: Vec<&String> = ids.iter().filter(|n| !replicas.contains(n)).collect();
    println!("1. {KEY} lives on {replicas:?}; its fallbacks are {fallbacks:?}");
    for node in &down {
        cluster.kill(node)?;
    }
    println!("2. killed {down:?}: one replica of three is up");

    let mut writer = client(cluster, &coordinator).await?;
    let strict = WriteOptions {
        w: Some(2),
        mode: WriteMode::Strict,
        ..WriteOptions::default()
    };
    match writer.put(KEY, "strict", &strict).await {
        Ok(_) => return Err("a strict W=2 write succeeded with one replica up".into()),
        Err(e) => println!("3. strict put W=2 through {coordinator}: refused as it must be ({e})"),
    }
    let sloppy = WriteOptions {
        w: Some(2),
        mode: WriteMode::Sloppy,
        ..WriteOptions::default()
    };
    let context = writer
        .put(KEY, "handed-off", &sloppy)
        .await
        .map_err(|e| format!("the sloppy W=2 write failed: {e}"))?;
    println!("4. sloppy put W=2 through {coordinator}: ok (context {context})");
    for fallback in &fallbacks {
        let view = hints(cluster, fallback).await?;
        let held: Vec<String> = down
            .iter()
            .map(|d| format!("{} for {d}", held_for(&view, d)))
            .collect();
        println!("   {fallback} holds hints: {}", held.join(", "));
    }

    for node in &down {
        cluster.restart(node).await?;
    }
    println!("5. restarted {down:?}; waiting for the hints to reach them (no reads)");
    let started = Instant::now();
    for node in &down {
        wait_delivered(cluster, node, &fallbacks, &coordinator, started).await?;
    }
    for node in &down {
        let read = client(cluster, node)
            .await?
            .get(KEY, Some(1))
            .await
            .map_err(|e| e.to_string())?;
        let values: Vec<String> = read
            .values()
            .iter()
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .collect();
        if !values.iter().any(|v| v == "handed-off") {
            return Err(format!("{node} holds {values:?}, not the sloppy write"));
        }
        println!("6. R=1 through {node} answers from its own copy: {values:?}");
    }
    println!(
        "   (the refused strict write was stored by {coordinator} and hinted too: a write \
         that misses its quorum may still land, as in Dynamo, so it shows up as a sibling)"
    );
    Ok(())
}

/// Waits until no node holds hints for `node` any more and `node` stores the key.
async fn wait_delivered(
    cluster: &Cluster,
    node: &str,
    holders: &[&String],
    coordinator: &str,
    started: Instant,
) -> Result<(), String> {
    loop {
        let mut pending = 0;
        for holder in holders.iter().map(|h| h.as_str()).chain([coordinator]) {
            pending += held_for(&hints(cluster, holder).await?, node);
        }
        let stored = client(cluster, node)
            .await?
            .health()
            .await
            .map_err(|e| e.to_string())?
            .storage_keys;
        if pending == 0 && stored >= 1 {
            println!(
                "   {node}: hints delivered, it stores the key ({:.1} s after the restarts)",
                started.elapsed().as_secs_f64()
            );
            return Ok(());
        }
        if started.elapsed() > DELIVERY_WAIT {
            return Err(format!(
                "after {DELIVERY_WAIT:?} {pending} hints for {node} are still held and it stores {stored} keys"
            ));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
