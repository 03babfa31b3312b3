//! `cargo xtask demo`: the original system's demos on a fresh local cluster. Each step
//! prints what it does and what it saw, and any unexpected behaviour fails the demo.

use std::time::{Duration, Instant};

use kv_client::{Client, ReadResult, WriteOptions};

use crate::cluster::{Cluster, UpArgs};

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub(crate) enum Demo {
    /// With R=W=2 the cluster keeps serving with one node down; W=3 cannot.
    Quorum,
    /// Concurrent writes come back as siblings and a context-carrying write resolves them.
    Conflict,
    /// A node that missed a write is repaired by a read.
    Repair,
    /// Gossip failure detection: ALIVE, killed → SUSPECT → DEAD, restarted → ALIVE.
    Membership,
    /// Hinted handoff on 5 nodes: two of a key's replicas down, a sloppy W=2 write
    /// succeeds through a fallback and reaches them when they return, with no read.
    Handoff,
}

const REPAIR_WAIT: Duration = Duration::from_secs(10);

pub(crate) async fn run(demo: Demo) -> Result<(), String> {
    let args = match demo {
        Demo::Handoff => crate::demo_handoff::cluster_args(),
        // Hints off: n1's hint would bring n3 up to date within a second of its restart,
        // before the stale read the demo shows.
        Demo::Repair => UpArgs {
            node_args: vec!["--hint-max-bytes=0".into()],
            ..UpArgs::default()
        },
        _ => UpArgs::default(),
    };
    let mut cluster = Cluster::up(&args).await?;
    println!(
        "cluster up: {} nodes, N={} R={} W={}\n",
        args.nodes, args.rf, args.r, args.w
    );
    let result = match demo {
        Demo::Handoff => crate::demo_handoff::handoff(&mut cluster).await,
        Demo::Quorum => quorum(&mut cluster).await,
        Demo::Conflict => conflict(&cluster).await,
        Demo::Repair => repair(&mut cluster).await,
        Demo::Membership => membership(&mut cluster).await,
    };
    cluster.down();
    match &result {
        Ok(()) => println!("\ndemo passed"),
        Err(e) => println!("\ndemo FAILED: {e}"),
    }
    result
}

async fn client(cluster: &Cluster, node: &str) -> Result<Client, String> {
    let address = cluster.address(node)?;
    Client::connect(&address).await.map_err(|e| e.to_string())
}

fn show(read: &ReadResult) -> String {
    let text = |b: &bytes::Bytes| String::from_utf8_lossy(b).into_owned();
    match read {
        ReadResult::NotFound { .. } => "not found".into(),
        ReadResult::Value { value, context } => format!("{:?} (context {context})", text(value)),
        ReadResult::Siblings { siblings, context } => {
            let values: Vec<String> = siblings
                .iter()
                .map(|s| format!("{:?}", text(&s.value)))
                .collect();
            format!(
                "{} siblings [{}] (context {context})",
                siblings.len(),
                values.join(", ")
            )
        }
    }
}

fn expect_value(read: &ReadResult, expected: &str) -> Result<(), String> {
    match read {
        ReadResult::Value { value, .. } if value.as_ref() == expected.as_bytes() => Ok(()),
        other => Err(format!(
            "expected the single value {expected:?}, got {}",
            show(other)
        )),
    }
}

async fn quorum(cluster: &mut Cluster) -> Result<(), String> {
    let mut n1 = client(cluster, "n1").await?;
    println!("1. put demo:quorum = v1 through n1");
    let context = n1
        .put("demo:quorum", "v1", &WriteOptions::default())
        .await
        .map_err(|e| e.to_string())?;
    println!("   ok, context {context}");
    let read = n1
        .get("demo:quorum", None)
        .await
        .map_err(|e| e.to_string())?;
    println!("2. get through n1: {}", show(&read));
    expect_value(&read, "v1")?;

    println!("3. kill n3 (SIGKILL)");
    cluster.kill("n3")?;

    println!("4. put demo:quorum = v2 through n1 with W=2");
    let mut n2 = client(cluster, "n2").await?;
    let written = n1
        .put("demo:quorum", "v2", &WriteOptions::with_context(context))
        .await
        .map_err(|e| format!("W=2 write failed with one node down: {e}"))?;
    println!("   ok, context {written}");
    let read = n2
        .get("demo:quorum", None)
        .await
        .map_err(|e| format!("R=2 read failed with one node down: {e}"))?;
    println!("5. get through n2 with R=2: {}", show(&read));
    expect_value(&read, "v2")?;

    println!("6. put with W=3 must fail: only 2 of 3 replicas are up");
    let options = WriteOptions {
        w: Some(3),
        context: Some(written),
        ..WriteOptions::default()
    };
    match n1.put("demo:quorum", "v3", &options).await {
        Err(e) if e.code() == Some(tonic_code_unavailable()) => {
            println!("   refused as expected: {e}")
        }
        Err(e) => return Err(format!("W=3 failed with the wrong error: {e}")),
        Ok(_) => return Err("W=3 succeeded with a node down".into()),
    }
    Ok(())
}

async fn conflict(cluster: &Cluster) -> Result<(), String> {
    let mut n1 = client(cluster, "n1").await?;
    let mut n2 = client(cluster, "n2").await?;
    println!("1. two clients write demo:conflict without reading first (blind, concurrent)");
    n1.put("demo:conflict", "value1", &WriteOptions::default())
        .await
        .map_err(|e| e.to_string())?;
    println!("   client A wrote value1 through n1");
    n2.put("demo:conflict", "value2", &WriteOptions::default())
        .await
        .map_err(|e| e.to_string())?;
    println!("   client B wrote value2 through n2");

    let read = n1
        .get("demo:conflict", None)
        .await
        .map_err(|e| e.to_string())?;
    println!("2. get: {}", show(&read));
    let mut values = read.values();
    values.sort();
    if values != ["value1", "value2"] {
        return Err(format!(
            "expected siblings value1 and value2, got {}",
            show(&read)
        ));
    }

    println!(
        "3. the client resolves them (here: joins the values) and writes back with the context"
    );
    let (merged, context) = read.resolve(|values| {
        let texts: Vec<String> = values
            .iter()
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .collect();
        texts.join("+").into()
    });
    n1.put(
        "demo:conflict",
        merged.clone(),
        &WriteOptions::with_context(context),
    )
    .await
    .map_err(|e| e.to_string())?;
    let read = n2
        .get("demo:conflict", None)
        .await
        .map_err(|e| e.to_string())?;
    println!("4. get: {}", show(&read));
    expect_value(&read, &String::from_utf8_lossy(&merged))
}

async fn repair(cluster: &mut Cluster) -> Result<(), String> {
    let mut n1 = client(cluster, "n1").await?;
    println!("1. put demo:repair = v1 with W=3 (all replicas have it)");
    let options = WriteOptions {
        w: Some(3),
        context: None,
        ..WriteOptions::default()
    };
    let context = n1
        .put("demo:repair", "v1", &options)
        .await
        .map_err(|e| e.to_string())?;

    println!("2. kill n3");
    cluster.kill("n3")?;
    println!("3. put demo:repair = v2 through n1 (W=2): n3 misses it");
    n1.put("demo:repair", "v2", &WriteOptions::with_context(context))
        .await
        .map_err(|e| e.to_string())?;

    println!("4. restart n3 (its fjall data survived the kill)");
    cluster.start("n3")?;
    cluster.wait_healthy("n3").await?;
    cluster.wait_converged().await?;
    let mut n3 = client(cluster, "n3").await?;

    let read = n3
        .get("demo:repair", Some(1))
        .await
        .map_err(|e| e.to_string())?;
    println!(
        "5. get through n3 with R=1 answers from n3's own stale copy: {}",
        show(&read)
    );
    expect_value(&read, "v1")?;
    println!("   ...and that read compared all replies in the background and repaired n3");

    let started = Instant::now();
    loop {
        let read = n3
            .get("demo:repair", Some(1))
            .await
            .map_err(|e| e.to_string())?;
        if matches!(&read, ReadResult::Value { value, .. } if value.as_ref() == b"v2") {
            println!(
                "6. get through n3 with R=1 after {:?}: {} — converged",
                started.elapsed(),
                show(&read)
            );
            return Ok(());
        }
        if started.elapsed() > REPAIR_WAIT {
            return Err(format!(
                "n3 still stale after {REPAIR_WAIT:?}: {}",
                show(&read)
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// How long each membership transition may take before the demo fails.
const TRANSITION_LIMIT: Duration = Duration::from_secs(15);

async fn state_seen_by(observer: &mut Client, node: &str) -> Result<&'static str, String> {
    let view = observer.membership().await.map_err(|e| e.to_string())?;
    let member = view.members.iter().find(|m| m.node_id == node);
    Ok(
        match member.map(|m| kv_client::MemberState::try_from(m.state)) {
            Some(Ok(kv_client::MemberState::Alive)) => "ALIVE",
            Some(Ok(kv_client::MemberState::Suspect)) => "SUSPECT",
            Some(Ok(kv_client::MemberState::Dead)) => "DEAD",
            _ => "UNKNOWN",
        },
    )
}

/// Polls n1's view of `node` until it is `wanted`; returns how long that took.
async fn wait_for_state(
    observer: &mut Client,
    node: &str,
    wanted: &str,
    since: Instant,
) -> Result<Duration, String> {
    loop {
        let state = state_seen_by(observer, node).await?;
        if state == wanted {
            return Ok(since.elapsed());
        }
        if since.elapsed() > TRANSITION_LIMIT {
            return Err(format!(
                "{node} still {state} after {TRANSITION_LIMIT:?}; expected {wanted}"
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn membership(cluster: &mut Cluster) -> Result<(), String> {
    let mut n1 = client(cluster, "n1").await?;
    let view = n1.membership().await.map_err(|e| e.to_string())?;
    println!("1. membership seen by n1:");
    for member in &view.members {
        println!(
            "   {:<4} {}",
            member.node_id,
            state_seen_by(&mut n1, &member.node_id).await?
        );
    }
    if view.members.len() != 3 {
        return Err(format!("expected 3 members, saw {}", view.members.len()));
    }
    println!("2. kill n2 (SIGKILL)");
    cluster.kill("n2")?;
    let killed = Instant::now();
    let suspect = wait_for_state(&mut n1, "n2", "SUSPECT", killed).await?;
    println!("3. n1 sees n2 SUSPECT after {suspect:.1?}");
    let dead = wait_for_state(&mut n1, "n2", "DEAD", killed).await?;
    println!("4. n1 sees n2 DEAD after {dead:.1?} (suspect timeout passed)");
    if dead > Duration::from_secs(10) {
        return Err(format!("detection took {dead:?}, over the 10 s bound"));
    }
    println!("5. restart n2");
    let restarted = Instant::now();
    cluster.start("n2")?;
    let alive = wait_for_state(&mut n1, "n2", "ALIVE", restarted).await?;
    println!("6. n1 sees n2 ALIVE again {alive:.1?} after the restart (process start included)");
    let ring = n1.ring(None).await.map_err(|e| e.to_string())?;
    println!(
        "7. ring still has {} nodes: a DEAD node never left it",
        ring.nodes.len()
    );
    Ok(())
}

fn tonic_code_unavailable() -> kv_client::Code {
    kv_client::Code::Unavailable
}
