//! `kv-sim`: runs simulation campaigns (`cargo xtask sim` wraps it in release mode).
//! Exits non-zero if any seed broke a promise, after printing how to replay it.

use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use clap::Parser;
use kv_sim::{QuorumMode, SeedReport, SimConfig, Summary, replay_command, run_seed};

/// Most violations printed per failing seed.
const VIOLATIONS_SHOWN: usize = 10;

#[derive(Parser, Debug)]
#[command(
    name = "kv-sim",
    about = "Seeded simulation campaigns against a kvstore cluster"
)]
struct Args {
    /// Number of seeds to run, starting at --first.
    #[arg(long, default_value_t = 100)]
    seeds: u64,
    /// First seed of the campaign.
    #[arg(long, default_value_t = 0)]
    first: u64,
    /// Run only this seed and print its schedule and result in detail.
    #[arg(long)]
    seed: Option<u64>,
    /// Nodes per cluster.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(3..=7))]
    nodes: u64,
    /// Concurrent clients.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..=64))]
    clients: u64,
    /// Keys the clients share.
    #[arg(long, default_value_t = 6, value_parser = clap::value_parser!(u64).range(1..=1000))]
    keys: u64,
    /// Simulated seconds of workload per seed.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(2..=3600))]
    workload_secs: u64,
    /// Most faults per seed.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..=32))]
    max_faults: u64,
    /// Print membership events and node logs (filter as in RUST_LOG, e.g. `debug`);
    /// meant for replaying one seed.
    #[arg(long)]
    log: Option<String>,
    /// Print one key's requests, minted versions and final replica states to stderr.
    #[arg(long)]
    dump_key: Option<String>,
    /// Which quorum writes ask for: strict, sloppy (a fallback's hint counts toward W),
    /// or mixed (each write chooses at random; the checker knows which it chose).
    #[arg(long, default_value = "mixed")]
    quorum_mode: QuorumMode,
    /// Worker threads (each seed runs single-threaded).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..=64))]
    threads: u64,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(filter) = &args.log {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_writer(std::io::stderr)
            .init();
    }
    let config = SimConfig {
        nodes: args.nodes as usize,
        clients: args.clients as usize,
        keys: args.keys as usize,
        workload: Duration::from_secs(args.workload_secs),
        max_faults: args.max_faults,
        dump_key: args.dump_key.clone(),
        mode: args.quorum_mode,
    };
    let started = Instant::now();
    let (first, count) = match args.seed {
        Some(seed) => (seed, 1),
        None => (args.first, args.seeds),
    };
    let summary = campaign(first, count, args.threads, &config, args.seed.is_some());
    println!("{summary}");
    println!(
        "wall-clock time:     {:.1} s",
        started.elapsed().as_secs_f64()
    );
    if summary.failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        println!("failing seeds (replay one with the command shown):");
        for (seed, first_violation) in &summary.failed {
            println!(
                "  {}\n    {first_violation}",
                replay_command(*seed, &config)
            );
        }
        ExitCode::FAILURE
    }
}

fn campaign(first: u64, count: u64, threads: u64, config: &SimConfig, detailed: bool) -> Summary {
    let next = AtomicU64::new(first);
    let end = first.saturating_add(count);
    let summary = Mutex::new(Summary::default());
    let progress_every = (count / 20).max(1);
    std::thread::scope(|scope| {
        for _ in 0..threads.min(count) {
            scope.spawn(|| {
                loop {
                    let seed = next.fetch_add(1, Ordering::Relaxed);
                    if seed >= end {
                        return;
                    }
                    let report = run_guarded(seed, config);
                    if detailed || !report.violations.is_empty() {
                        print_seed(&report, config);
                    }
                    let mut summary = summary.lock().unwrap_or_else(PoisonError::into_inner);
                    summary.add(&report);
                    if !detailed && summary.seeds % progress_every == 0 {
                        eprintln!(
                            "  {} of {count} seeds, {} failed",
                            summary.seeds,
                            summary.failed.len()
                        );
                    }
                }
            });
        }
    });
    summary.into_inner().unwrap_or_else(PoisonError::into_inner)
}

/// Runs one seed; a panic inside the simulation counts as a violation of that seed.
fn run_guarded(seed: u64, config: &SimConfig) -> SeedReport {
    std::panic::catch_unwind(|| run_seed(seed, config)).unwrap_or_else(|panic| {
        let message = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
            .unwrap_or_else(|| "unknown panic".to_owned());
        SeedReport {
            seed,
            trace_hash: 0,
            simulated: Duration::ZERO,
            ops: 0,
            acknowledged_writes: 0,
            reads_with_siblings: 0,
            faults: Vec::new(),
            schedule: Vec::new(),
            ring_changes: Vec::new(),
            availability: kv_sim::Availability::default(),
            writes_w2: kv_sim::WriteAvailability::default(),
            violations: vec![format!("the simulation panicked: {message}")],
        }
    })
}

fn print_seed(report: &SeedReport, config: &SimConfig) {
    println!(
        "seed {}: {} requests, {} acknowledged writes, {:.1} s simulated, trace {:016x}",
        report.seed,
        report.ops,
        report.acknowledged_writes,
        report.simulated.as_secs_f64(),
        report.trace_hash
    );
    for fault in &report.schedule {
        println!("  fault: {fault}");
    }
    for change in &report.ring_changes {
        println!("  ring change: {change}");
    }
    for violation in report.violations.iter().take(VIOLATIONS_SHOWN) {
        println!("  VIOLATION {violation}");
    }
    if report.violations.len() > VIOLATIONS_SHOWN {
        println!(
            "  ... and {} more",
            report.violations.len() - VIOLATIONS_SHOWN
        );
    }
    if !report.violations.is_empty() {
        println!("  replay: {}", replay_command(report.seed, config));
    }
}
