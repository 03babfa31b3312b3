//! `cargo xtask`: the project's automation, in Rust instead of shell scripts.
//!
//! `cargo xtask ci` runs the same quality gate as `.ci/run`: formatting, clippy with
//! warnings denied, the whole test suite, a build of every benchmark, and cargo-deny.

use std::path::PathBuf;
use std::process::{Command, ExitCode};
use std::time::Instant;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "kvstore project automation")]
struct Cli {
    #[command(subcommand)]
    command: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Run the full quality gate: fmt, clippy, tests, bench build, cargo-deny.
    Ci {
        /// Skip `cargo deny` (for machines without cargo-deny installed).
        #[arg(long)]
        skip_deny: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Task::Ci { skip_deny } => ci(skip_deny),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("xtask: {message}");
            ExitCode::FAILURE
        }
    }
}

/// The steps of the quality gate, in the order a failure is cheapest to find.
fn ci_steps(skip_deny: bool) -> Vec<(&'static str, Vec<&'static str>)> {
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
        ("bench build", vec!["bench", "--workspace", "--no-run"]),
    ];
    if !skip_deny {
        steps.push((
            "cargo deny",
            vec!["deny", "check", "licenses", "bans", "sources"],
        ));
    }
    steps
}

fn ci(skip_deny: bool) -> Result<(), String> {
    let root = workspace_root();
    for (name, args) in ci_steps(skip_deny) {
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

fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned())
}

fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one level below the workspace root")
        .to_path_buf()
}
