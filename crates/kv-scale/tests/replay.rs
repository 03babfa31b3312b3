//! The scale runs are reproducible and measure what they say, on sizes small enough for
//! a debug build: the same seed gives the same gossip figures, a crash is detected, and a
//! join's movement matches its plan.

use std::time::Duration;

use kv_scale::{gossip, metadata, movement};

#[test]
fn a_gossip_run_replays_from_its_seed_and_detects_a_crash() {
    let first = gossip::run(20, 0, Duration::from_secs(10), 7);
    let again = gossip::run(20, 0, Duration::from_secs(10), 7);
    assert_eq!(first, again);
    assert!(first.formed.is_some(), "{first:?}");
    assert!(first.join_spread.is_some(), "{first:?}");
    let (suspected, dead) = (first.crash_suspected.unwrap(), first.crash_dead.unwrap());
    assert!(suspected <= dead, "{first:?}");
    // SUSPECT turns DEAD after suspect_to_down (3 s).
    assert!(dead >= Duration::from_secs(3), "{first:?}");
    assert_eq!(first.false_deaths, 0, "{first:?}");
}

#[test]
fn movement_plan_and_sample_agree_and_only_the_newcomer_gains() {
    let join = movement::join(20, 64, 3);
    assert!(
        (join.planned_share - join.sampled_share).abs() < 0.01,
        "{join:?}"
    );
    assert!(join.ratio() > 0.8 && join.ratio() < 1.2, "{join:?}");
    let leave = movement::leave(20, 64, 3);
    assert!(leave.ratio() > 0.8 && leave.ratio() < 1.2, "{leave:?}");
}

#[test]
fn a_layout_grows_with_its_members() {
    let small = metadata::measure(10, 16, 3);
    let large = metadata::measure(40, 16, 3);
    assert!(large.settled_bytes > small.settled_bytes);
    assert!(small.changing_bytes > small.settled_bytes);
}
