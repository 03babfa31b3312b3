//! `cargo xtask bench`: the floor and the store under the same closed-loop load, in one
//! run, reported as ratios to the floor. Starts the no-op floor service, then a fresh
//! release-built local cluster (N=3, R=W=2, fjall `buffer`), then one with `sync`
//! durability, and writes the table into BENCHMARKS.md between markers.

use std::fmt::Write as _;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use clap::Args;
use serde_json::Value;

use crate::cluster::{Cluster, UpArgs, build_binaries, release_binary};
use crate::workspace_root;

const FLOOR_ADDR: &str = "127.0.0.1:50070";
const BEGIN: &str = "<!-- xtask-bench:begin -->";
const END: &str = "<!-- xtask-bench:end -->";

#[derive(Args, Debug)]
pub(crate) struct BenchArgs {
    /// Duration of each run (e.g. 10s).
    #[arg(long, default_value = "10s")]
    duration: String,
    /// Clients in flight.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Print the table without touching BENCHMARKS.md.
    #[arg(long)]
    no_write: bool,
    /// Nodes in each cluster (N=3 whatever the count): 5 shows how throughput grows with
    /// nodes on this machine.
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// Also run put and get against a cluster serving mutual TLS (clients over TLS too),
    /// beside the plaintext runs: the table then shows what TLS costs.
    #[arg(long)]
    tls: bool,
}

/// One measured run.
struct Run {
    name: &'static str,
    result: Value,
}

pub(crate) async fn run(args: BenchArgs) -> Result<(), String> {
    build_binaries(true, &["kvstore", "kvbench"])?;
    let mut runs = Vec::new();
    let mut floor = Command::new(release_binary("kvbench"))
        .args(["floor", "--listen", FLOOR_ADDR, "--value-size", "100"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start the floor service: {e}"))?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let floor_runs = [("floor put", "put"), ("floor get", "get")]
        .into_iter()
        .map(|(name, mix)| {
            load(&args, &[FLOOR_ADDR.to_owned()], mix, None).map(|result| Run { name, result })
        })
        .collect::<Result<Vec<_>, _>>();
    let _ = floor.kill();
    let _ = floor.wait();
    runs.extend(floor_runs?);

    let mut clusters = vec![
        (
            "buffer",
            false,
            vec![("put", "put"), ("get", "get"), ("mixed", "mixed")],
        ),
        ("sync", false, vec![("put (sync)", "put")]),
    ];
    if args.tls {
        clusters.push((
            "buffer",
            true,
            vec![("put (tls)", "put"), ("get (tls)", "get")],
        ));
    }
    for (durability, tls, mixes) in clusters {
        let up = UpArgs {
            release: true,
            durability: durability.into(),
            tls,
            nodes: args.nodes,
            ..UpArgs::default()
        };
        let mut cluster = Cluster::up(&up).await?;
        let targets: Vec<String> = cluster.nodes.iter().map(|n| n.grpc.clone()).collect();
        let ca = cluster.pki().map(|pki| pki.ca);
        let measured = mixes
            .into_iter()
            .map(|(name, mix)| {
                load(&args, &targets, mix, ca.as_deref()).map(|result| Run { name, result })
            })
            .collect::<Result<Vec<_>, _>>();
        cluster.down();
        runs.extend(measured?);
    }
    let table = table(&args, &runs);
    println!("{table}");
    if !args.no_write {
        write_table(&table)?;
        println!("written to BENCHMARKS.md");
    }
    Ok(())
}

/// Runs `kvbench load` and returns its JSON report.
fn load(
    args: &BenchArgs,
    targets: &[String],
    mix: &str,
    tls_ca: Option<&std::path::Path>,
) -> Result<Value, String> {
    println!("==> {mix} against {}", targets.join(","));
    let load = spawn_load(targets, mix, &args.duration, args.concurrency, tls_ca)?;
    finish_load(load)
}

/// Starts `kvbench load --json` against `targets` (it preloads its keys, then runs for
/// `duration`); [`finish_load`] collects its report.
pub(crate) fn spawn_load(
    targets: &[String],
    mix: &str,
    duration: &str,
    concurrency: usize,
    tls_ca: Option<&std::path::Path>,
) -> Result<Child, String> {
    let mut command = Command::new(release_binary("kvbench"));
    if let Some(ca) = tls_ca {
        command.env("KVSTORE_TLS_CA", ca);
    } else {
        command.env_remove("KVSTORE_TLS_CA");
    }
    command
        .args([
            "--json",
            "load",
            "--targets",
            &targets.join(","),
            "--mix",
            mix,
            "--duration",
            duration,
            "--concurrency",
            &concurrency.to_string(),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run kvbench load: {e}"))
}

/// Waits for a load started by [`spawn_load`] and parses its JSON report.
pub(crate) fn finish_load(child: Child) -> Result<Value, String> {
    let output = child
        .wait_with_output()
        .map_err(|e| format!("kvbench load did not finish: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "kvbench load failed: {}",
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    serde_json::from_slice(&output.stdout).map_err(|e| format!("unreadable bench report: {e}"))
}

fn number(run: &Run, field: &str) -> f64 {
    run.result[field].as_f64().unwrap_or(f64::NAN)
}

fn table(args: &BenchArgs, runs: &[Run]) -> String {
    let floor = |mix: &str| {
        runs.iter()
            .find(|r| r.name == format!("floor {mix}"))
            .map_or(f64::NAN, |r| number(r, "ops_per_s"))
    };
    let mut out = format!(
        "Command: `cargo xtask bench --duration {} --concurrency {}{}` ({} local nodes, N=3, R=W=2, \
         fjall, 100-byte values, 10,000 keys, 4 connections spread over the nodes; the floor is a \
         no-op service with the same messages, measured in the same run).\n\n\
         | run | ops/s | vs floor | p50 ms | p99 ms | p99.9 ms | max ms | errors |\n\
         |---|---|---|---|---|---|---|---|\n",
        args.duration,
        args.concurrency,
        flags(args),
        args.nodes
    );
    for run in runs {
        let ops = number(run, "ops_per_s");
        let baseline = if run.name.contains("get") {
            floor("get")
        } else {
            floor("put")
        };
        let errors = match run.result["errors"].as_object() {
            Some(map) if !map.is_empty() => map
                .iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect::<Vec<_>>()
                .join(", "),
            _ => "0".into(),
        };
        let _ = writeln!(
            out,
            "| {} | {ops:.0} | {:.2}× | {:.2} | {:.2} | {:.2} | {:.2} | {errors} |",
            run.name,
            ops / baseline,
            number(run, "p50_ms"),
            number(run, "p99_ms"),
            number(run, "p999_ms"),
            number(run, "max_ms"),
        );
    }
    out
}

/// The options of this run that differ from the defaults, as typed.
fn flags(args: &BenchArgs) -> String {
    let mut flags = String::new();
    if args.nodes != 3 {
        let _ = write!(flags, " --nodes {}", args.nodes);
    }
    if args.tls {
        flags.push_str(" --tls");
    }
    flags
}

fn write_table(table: &str) -> Result<(), String> {
    let path = workspace_root().join("BENCHMARKS.md");
    let text =
        std::fs::read_to_string(&path).map_err(|e| format!("cannot read BENCHMARKS.md: {e}"))?;
    let section = format!("{BEGIN}\n{table}{END}");
    let updated = match (text.find(BEGIN), text.find(END)) {
        (Some(start), Some(end)) if end > start => {
            format!("{}{section}{}", &text[..start], &text[end + END.len()..])
        }
        _ => format!("{text}\n## End-to-end load (`cargo xtask bench`)\n\n{section}\n"),
    };
    std::fs::write(&path, updated).map_err(|e| format!("cannot write BENCHMARKS.md: {e}"))
}
