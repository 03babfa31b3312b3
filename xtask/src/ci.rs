//! `cargo xtask ci`: the quality gate, step by step, stopping at the first failure (the
//! demos and the Python client's tests run after the Rust tests).

use std::process::Command;
use std::time::Instant;

use crate::demo::Demo;
use crate::{cargo, workspace_root};

/// The demos run right after the step with this index (the tests).
const DEMOS_AFTER_STEP: usize = 3;

/// Runs every demo against a fresh local cluster (ports 50051-50053), then the Python
/// client's tests.
fn run_demos() -> Result<(), String> {
    for demo in [
        Demo::Quorum,
        Demo::Conflict,
        Demo::Repair,
        Demo::Membership,
        Demo::Handoff,
    ] {
        let started = Instant::now();
        println!("==> demo {demo:?}");
        crate::block_on(crate::demo::run(demo))
            .map_err(|e| format!("demo {demo:?} failed: {e}"))?;
        println!(
            "==> demo {demo:?}: ok in {:.0}s",
            started.elapsed().as_secs_f64()
        );
    }
    let started = Instant::now();
    println!("==> python client tests");
    crate::pytest::run().map_err(|e| format!("python client tests: {e}"))?;
    println!(
        "==> python client tests: ok in {:.0}s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The steps, in the order a failure is cheapest to find.
fn steps(skip_deny: bool) -> Vec<(&'static str, Vec<&'static str>)> {
    let mut steps = vec![
        ("format", vec!["fmt", "--all", "--", "--check"]),
        (
            "clippy",
            vec![
                "clippy",
                "--workspace",
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ],
        ),
        ("tests", vec!["test", "--workspace"]),
        // Gossip, ring and movement bounds at small sizes, on the tests' artifacts.
        ("scale (quick)", vec!["xtask", "scale", "--quick"]),
        // The benches compile in the test profile, on the artifacts the tests built: a
        // release build here would compile the whole workspace a second time.
        (
            "bench build",
            vec!["test", "--package", "kv-benches", "--benches", "--no-run"],
        ),
    ];
    if !skip_deny {
        steps.push((
            "cargo deny",
            vec!["deny", "check", "licenses", "bans", "sources"],
        ));
    }
    steps
}

pub(crate) fn run(skip_deny: bool) -> Result<(), String> {
    let root = workspace_root();
    for (index, (name, args)) in steps(skip_deny).into_iter().enumerate() {
        if index == DEMOS_AFTER_STEP {
            run_demos()?;
        }
        let started = Instant::now();
        println!("==> {name}: cargo {}", args.join(" "));
        let status = Command::new(cargo())
            .args(&args)
            .current_dir(&root)
            .status()
            .map_err(|e| format!("could not start cargo for {name}: {e}"))?;
        let elapsed_s = started.elapsed().as_secs_f64();
        if !status.success() {
            return Err(format!("{name} failed ({status}) after {elapsed_s:.0}s"));
        }
        println!("==> {name}: ok in {elapsed_s:.0}s");
    }
    println!("==> ci: all steps passed");
    Ok(())
}
