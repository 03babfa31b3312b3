//! `cargo xtask ci`: the quality gate, step by step, stopping at the first failure.

use std::process::Command;
use std::time::Instant;

use crate::{cargo, workspace_root};

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
        (
            "bench build",
            vec!["bench", "--package", "kv-benches", "--no-run"],
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
    for (name, args) in steps(skip_deny) {
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
