//! Gossip membership with real processes: join through seeds, failure detection after a
//! kill, and a restarted node coming back ALIVE, all watched through GetMembership.

use std::time::{Duration, Instant};

use kv_client::{Client, Code, MemberState, WriteOptions};
use kv_e2e::{GOSSIP, TestCluster};

/// Generous bound for each transition: detection itself takes about 5 s.
const TRANSITION_LIMIT: Duration = Duration::from_secs(20);

async fn state_of(observer: &mut Client, node: &str) -> Option<MemberState> {
    let view = observer.membership().await.ok()?;
    let member = view.members.into_iter().find(|m| m.node_id == node)?;
    MemberState::try_from(member.state).ok()
}

async fn wait_for(observer: &mut Client, node: &str, wanted: MemberState) -> Duration {
    let started = Instant::now();
    loop {
        let state = state_of(observer, node).await;
        if state == Some(wanted) {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < TRANSITION_LIMIT,
            "{node} is {state:?}, not {wanted:?}, after {TRANSITION_LIMIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn kill_and_restart_are_seen_through_get_membership() {
    let mut cluster = TestCluster::start_with(
        env!("CARGO_BIN_EXE_kvstore-under-test"),
        env!("CARGO_TARGET_TMPDIR"),
        "gossip_kill_restart",
        3,
        &[],
        GOSSIP,
    )
    .await;
    let mut n1 = cluster.client("n1").await;
    for node in ["n2", "n3"] {
        wait_for(&mut n1, node, MemberState::Alive).await;
    }
    assert_eq!(
        n1.ring(None).await.unwrap().nodes.len(),
        3,
        "the ring holds every member"
    );
    let context = n1.put("k", "v", &WriteOptions::default()).await.unwrap();

    cluster.kill("n3");
    let suspect = wait_for(&mut n1, "n3", MemberState::Suspect).await;
    let dead = suspect + wait_for(&mut n1, "n3", MemberState::Dead).await;
    println!("n3 killed: SUSPECT after {suspect:?}, DEAD after {dead:?}");
    assert!(dead <= Duration::from_secs(10), "detection took {dead:?}");
    assert_eq!(
        n1.ring(None).await.unwrap().nodes.len(),
        3,
        "a DEAD node stays in the ring"
    );

    let all_three = WriteOptions {
        w: Some(3),
        context: Some(context.clone()),
        ..WriteOptions::default()
    };
    let error = n1.put("k", "w", &all_three).await.unwrap_err();
    assert_eq!(error.code(), Some(Code::Unavailable));
    assert!(
        error.to_string().contains("declared DEAD"),
        "coordinator should fail fast: {error}"
    );
    n1.put("k", "w", &WriteOptions::with_context(context))
        .await
        .unwrap();

    cluster.restart("n3").await;
    let back = wait_for(&mut n1, "n3", MemberState::Alive).await;
    println!("n3 restarted: ALIVE again after {back:?}");
    let mut n3 = cluster.client("n3").await;
    wait_for(&mut n3, "n1", MemberState::Alive).await;
    let read = n3.get("k", Some(3)).await.unwrap();
    assert!(!read.values().is_empty(), "{read:?}");
}
