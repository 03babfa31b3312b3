//! Property tests of `Fanout` on tokio's paused clock: deterministic, no real time.

use std::time::Duration;

use kv_quorum::{Fanout, Outcome};
use proptest::prelude::*;
use tokio::time::Instant;

/// Replica answers: (delay in ms, succeeds). Delays are even and deadlines odd, so no
/// answer lands on the deadline instant itself (where either may win the race).
fn answers() -> impl Strategy<Value = Vec<(u64, bool)>> {
    proptest::collection::vec((1..100u64, any::<bool>()), 1..8)
        .prop_map(|v| v.into_iter().map(|(d, ok)| (d * 2, ok)).collect())
}

/// What must happen, worked out from the answers directly: the first instant at which
/// `required` successes or `n - required + 1` failures have arrived, if before the deadline.
fn expected(answers: &[(u64, bool)], required: usize, deadline_ms: u64) -> (Outcome, u64) {
    let mut sorted = answers.to_vec();
    sorted.sort_by_key(|&(delay, _)| delay);
    let (mut ok, mut failed) = (0, 0);
    for &(delay, success) in &sorted {
        if delay >= deadline_ms {
            break;
        }
        if success {
            ok += 1;
        } else {
            failed += 1;
        }
        if ok >= required {
            return (Outcome::Reached, delay);
        }
        if failed > answers.len() - required {
            return (Outcome::Impossible, delay);
        }
    }
    (Outcome::DeadlineExceeded, deadline_ms)
}

fn run(answers: &[(u64, bool)], required: usize, deadline_ms: u64) -> (Outcome, u64, usize, usize) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    runtime.block_on(async {
        let start = Instant::now();
        let calls = answers.iter().copied().enumerate().map(|(i, (delay, ok))| {
            (i, async move {
                tokio::time::sleep(Duration::from_millis(delay)).await;
                if ok { Ok(()) } else { Err(()) }
            })
        });
        let mut fanout = Fanout::start(calls, required, answers.len()).unwrap();
        let outcome = fanout
            .wait(start + Duration::from_millis(deadline_ms))
            .await;
        let elapsed_ms = start.elapsed().as_millis() as u64;
        let tracker = fanout.quorum().groups()[0].clone();
        let everything = fanout.finish(start + Duration::from_secs(10)).await;
        assert_eq!(everything.len(), answers.len(), "late replies were lost");
        (outcome, elapsed_ms, tracker.successes(), tracker.failures())
    })
}

proptest! {
    #[test]
    fn fanout_decides_at_the_first_possible_instant(
        answers in answers(),
        required_seed in any::<usize>(),
        deadline_half in 0..125u64,
    ) {
        let deadline_ms = deadline_half * 2 + 1;
        let required = required_seed % answers.len() + 1;
        let (outcome, elapsed_ms, successes, failures) = run(&answers, required, deadline_ms);
        match outcome {
            Outcome::Reached => prop_assert!(successes >= required, "success with {successes} of {required}"),
            Outcome::Impossible => prop_assert!(failures > answers.len() - required, "gave up while success was possible"),
            Outcome::DeadlineExceeded => prop_assert!(successes < required && failures <= answers.len() - required),
        }
        let (expected_outcome, expected_ms) = expected(&answers, required, deadline_ms);
        prop_assert_eq!((outcome, elapsed_ms), (expected_outcome, expected_ms));
    }
}

#[tokio::test(start_paused = true)]
async fn local_answers_count_toward_the_quorum() {
    let calls = [(1usize, async {
        tokio::time::sleep(Duration::from_millis(5)).await;
        Ok::<_, ()>(())
    })];
    let mut fanout = Fanout::start(calls, 2, 2).unwrap();
    fanout.record(kv_quorum::Reply {
        replica: 0,
        result: Ok(()),
    });
    let outcome = fanout.wait(Instant::now() + Duration::from_secs(1)).await;
    assert_eq!(outcome, Outcome::Reached);
    assert_eq!(fanout.replies().len(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_panicking_call_fails_its_replica_and_late_replies_are_collected() {
    let call = |replica: usize, delay_ms: u64| {
        (replica, async move {
            tokio::time::sleep(Duration::from_millis(delay_ms)).await;
            assert!(replica != 1, "replica 1's call panics");
            if replica == 0 { Err(()) } else { Ok(replica) }
        })
    };
    let calls = [call(0, 2), call(1, 4), call(2, 50), call(3, 60)];
    let mut fanout = Fanout::start(calls, 3, 4).unwrap();
    let start = Instant::now();
    let outcome = fanout.wait(start + Duration::from_secs(1)).await;
    // 3 of 4 allow one failure: replica 0's error and replica 1's panic make two, so the
    // quorum is impossible at the panic, not when the others answer.
    assert_eq!(outcome, Outcome::Impossible);
    assert_eq!(start.elapsed(), Duration::from_millis(4));
    assert_eq!(fanout.pending(), 2);
    let replies = fanout.finish(start + Duration::from_secs(1)).await;
    let answered: Vec<(usize, bool)> = replies
        .iter()
        .map(|r| (r.replica, r.result.is_ok()))
        .collect();
    assert_eq!(answered, [(0, false), (2, true), (3, true)]);
}
