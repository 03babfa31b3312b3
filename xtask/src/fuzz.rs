//! `cargo xtask fuzz`: runs every libFuzzer target of `fuzz/` (cargo fuzz, installed if
//! missing) for `--seconds` each, starting from the committed corpus `fuzz/corpus/<t>/`
//! and keeping what it finds under `target/fuzz-corpus/` (copy an input into the
//! committed corpus to make it a regression test), then prints executions per target.
//! A crash stops the run with the target's output and the path of the crashing input.
//! `--write-seeds` rewrites the committed seeds from the encoders (`kv_fuzz::seeds`).

use std::path::Path;
use std::process::Command;

use clap::Args;
use kv_fuzz::Target;

use crate::workspace_root;

#[derive(Args, Debug)]
pub(crate) struct FuzzArgs {
    /// How long each target runs.
    #[arg(long, default_value_t = 60)]
    seconds: u64,
    /// Run only these targets (default: all).
    #[arg(long, value_delimiter = ',')]
    targets: Vec<String>,
    /// Rewrite the committed seed inputs and stop.
    #[arg(long)]
    write_seeds: bool,
}

pub(crate) fn run(args: &FuzzArgs) -> Result<(), String> {
    if args.write_seeds {
        return write_seeds();
    }
    let targets = chosen(&args.targets)?;
    ensure_cargo_fuzz()?;
    let mut total = 0_u64;
    let mut rows = Vec::new();
    for target in targets {
        let executions = run_target(target, args.seconds)?;
        total += executions;
        rows.push((target.name(), executions));
    }
    println!("\n| target | seconds | executions | crashes |\n|---|---|---|---|");
    for (name, executions) in rows {
        println!("| {name} | {} | {executions} | 0 |", args.seconds);
    }
    println!("| all | | {total} | 0 |");
    Ok(())
}

fn chosen(names: &[String]) -> Result<Vec<Target>, String> {
    if names.is_empty() {
        return Ok(Target::ALL.to_vec());
    }
    names
        .iter()
        .map(|name| {
            Target::from_name(name).ok_or_else(|| {
                let known: Vec<&str> = Target::ALL.iter().map(|t| t.name()).collect();
                format!("no fuzz target {name:?} (targets: {})", known.join(", "))
            })
        })
        .collect()
}

fn ensure_cargo_fuzz() -> Result<(), String> {
    let installed = Command::new("cargo")
        .args(["fuzz", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if installed {
        return Ok(());
    }
    println!("==> installing cargo-fuzz");
    let status = Command::new("cargo")
        .args(["install", "--locked", "cargo-fuzz@0.13.2"])
        .status()
        .map_err(|e| format!("cannot run cargo install: {e}"))?;
    status
        .success()
        .then_some(())
        .ok_or_else(|| "installing cargo-fuzz failed".into())
}

/// Runs one target; returns how many inputs it executed.
fn run_target(target: Target, seconds: u64) -> Result<u64, String> {
    let root = workspace_root();
    let name = target.name();
    let found = root.join("target").join("fuzz-corpus").join(name);
    let artifacts = root.join("target").join("fuzz-artifacts").join(name);
    for dir in [&found, &artifacts] {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    println!("==> fuzz {name} for {seconds} s");
    // Stable toolchain: no sanitizer (it needs nightly); libFuzzer's coverage guidance and
    // Rust's own checks (overflow, bounds, debug assertions) still apply.
    let output = Command::new("cargo")
        .current_dir(root.join("fuzz"))
        .env("RUSTC_BOOTSTRAP", "1")
        .args([
            "fuzz",
            "run",
            "--sanitizer=none",
            "--debug-assertions",
            name,
        ])
        .arg(&found)
        .arg(root.join("fuzz").join("corpus").join(name))
        .arg("--")
        .arg(format!("-max_total_time={seconds}"))
        .arg(format!("-artifact_prefix={}/", artifacts.display()))
        .arg("-print_final_stats=1")
        .output()
        .map_err(|e| format!("cannot run cargo fuzz: {e}"))?;
    let log = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() {
        let tail: Vec<&str> = log.lines().rev().take(40).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        return Err(format!(
            "fuzz target {name} failed (inputs in {}):\n{}",
            artifacts.display(),
            tail.join("\n")
        ));
    }
    executions(&log).ok_or_else(|| format!("{name}: no execution count in libFuzzer's output"))
}

/// libFuzzer's `stat::number_of_executed_units`.
fn executions(log: &str) -> Option<u64> {
    log.lines()
        .find_map(|line| line.strip_prefix("stat::number_of_executed_units:"))
        .and_then(|n| n.trim().parse().ok())
}

fn write_seeds() -> Result<(), String> {
    let corpus = workspace_root().join("fuzz").join("corpus");
    for (target, name, data) in kv_fuzz::seeds() {
        let dir = corpus.join(target.name());
        std::fs::create_dir_all(&dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        write(&dir.join(format!("seed-{name}")), &data)?;
    }
    println!("seeds written under {}", corpus.display());
    Ok(())
}

fn write(path: &Path, data: &[u8]) -> Result<(), String> {
    std::fs::write(path, data).map_err(|e| format!("cannot write {}: {e}", path.display()))
}
