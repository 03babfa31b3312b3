//! `cargo xtask`: the project's automation, in Rust instead of shell scripts.
//!
//! - `ci`: the quality gate `.ci/run` runs (fmt, clippy, tests, scale bounds, demos,
//!   Python tests, bench build, cargo-deny).
//! - `cluster up|down|status|kill|restart|logs`: a local cluster under `.local/`.
//! - `demo quorum|conflict|repair|membership|handoff`: the demos, checked.
//! - `bench`: load against the no-op floor and a release cluster, as ratios to the floor.
//! - `sim`: seeded whole-cluster simulation campaigns with fault injection and a checker.
//! - `scale`: gossip, ring and data-movement figures at up to 1,000 nodes (SCALING.md).
//! - `pytest`: the Python client's tests against real server processes.
//! - `fuzz`: libFuzzer on every decoder of bytes from the network or the disk.
//! - `measure aae|ring|handoff`: anti-entropy and ring-change figures on a release cluster of real
//!   processes.

mod bench;
mod ci;
mod cluster;
mod cluster_ring;
mod demo;
mod demo_handoff;
mod fuzz;
mod measure;
mod measure_handoff;
mod measure_ring;
mod pytest;
mod scale;
mod sim;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "kvstore project automation")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Run the full quality gate: fmt, clippy, tests, bench build, cargo-deny.
    Ci {
        /// Skip `cargo deny` (for machines without cargo-deny installed).
        #[arg(long)]
        skip_deny: bool,
    },
    /// Manage a local cluster (state, logs and data under .local/).
    Cluster {
        #[command(subcommand)]
        command: cluster::Command,
    },
    /// Load-test the floor and a fresh release cluster; write the table to BENCHMARKS.md.
    Bench(bench::BenchArgs),
    /// Run seeded simulation campaigns (release build of kv-sim); `--help` lists options.
    #[command(disable_help_flag = true)]
    Sim {
        /// Options for kv-sim, e.g. `--seeds 10000` or `--seed 42`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Print the scale figures (gossip at up to 1,000 members, ring, data movement,
    /// layout sizes); `--quick` checks CI's bounds on small sizes.
    #[command(disable_help_flag = true)]
    Scale {
        /// Options for kv-scale, e.g. `--quick` or `--gossip-sizes 100,500`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Run a demo against a fresh local cluster; exits non-zero if it misbehaves.
    Demo {
        #[arg(value_enum)]
        name: demo::Demo,
    },
    /// Run the Python client's tests against real server processes.
    Pytest,
    /// Fuzz every decoder of network and disk bytes (cargo fuzz, libFuzzer).
    Fuzz(fuzz::FuzzArgs),
    /// Measure a mechanism on a fresh release cluster and print its figures.
    Measure {
        #[command(subcommand)]
        what: Measurement,
    },
}

#[derive(Subcommand)]
enum Measurement {
    /// Anti-entropy: catch-up of a stopped node, refill of a wiped one, reaping.
    Aae(measure::AaeArgs),
    /// Ring changes: keys and bytes moved by a join and a leave, copy rate, load during.
    Ring(measure_ring::RingArgs),
    /// Catch-up of a replica stopped under write load: hinted handoff against
    /// anti-entropy alone.
    Handoff(measure_handoff::HandoffArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.task {
        Task::Ci { skip_deny } => ci::run(skip_deny),
        Task::Cluster { command } => block_on(cluster::run(command)),
        Task::Demo { name } => block_on(demo::run(name)),
        Task::Bench(args) => block_on(bench::run(args)),
        Task::Sim { args } => sim::run(&args),
        Task::Scale { args } => scale::run(&args),
        Task::Pytest => pytest::run(),
        Task::Fuzz(args) => fuzz::run(&args),
        Task::Measure {
            what: Measurement::Aae(args),
        } => block_on(measure::aae(args)),
        Task::Measure {
            what: Measurement::Ring(args),
        } => block_on(measure_ring::ring(args)),
        Task::Measure {
            what: Measurement::Handoff(args),
        } => block_on(measure_handoff::handoff(args)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("xtask: {message}");
            ExitCode::FAILURE
        }
    }
}

fn block_on<F: std::future::Future<Output = Result<(), String>>>(future: F) -> Result<(), String> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?
        .block_on(future)
}

/// Runs `package`'s binary through `cargo run` (in release mode with `release`) with
/// `args`; on failure, says that `what` failed and how.
fn run_package(package: &str, release: bool, args: &[String], what: &str) -> Result<(), String> {
    let mut command = std::process::Command::new(cargo());
    command.args(["run", "--quiet", "--package", package]);
    if release {
        command.arg("--release");
    }
    let status = command
        .arg("--")
        .args(args)
        .current_dir(workspace_root())
        .status()
        .map_err(|e| format!("could not start cargo: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{what} failed ({status})"))
    }
}

fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one level below the workspace root")
        .to_path_buf()
}

fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned())
}
