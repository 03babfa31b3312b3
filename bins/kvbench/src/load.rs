//! `kvbench load`: closed-loop load. `concurrency` workers each issue one request at a
//! time for `duration`, over `connections` gRPC channels spread across the target nodes.
//! Latencies go into HDR histograms (merged at the end); errors are counted by status.
//!
//! Each worker owns the keys `k` with `k % concurrency == worker` and writes each one with
//! the context of its own previous write, so keys hold one live value, as they would for a
//! client that reads before it writes; gets pick any key.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write as _};
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};
use hdrhistogram::Histogram;
use kv_client::{Client, Context, WriteOptions};
use serde_json::json;

const MAX_CONCURRENCY: usize = 4096;
const MAX_CONNECTIONS: usize = 256;
const MAX_DURATION: Duration = Duration::from_secs(3600);
const MAX_VALUE_BYTES: usize = 1024 * 1024;
/// Latencies above this are clamped into the histogram's top bucket.
const MAX_LATENCY_US: u64 = 60_000_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Mix {
    /// Only writes.
    Put,
    /// Only reads (keys are written once first).
    Get,
    /// Half reads, half writes.
    Mixed,
}

#[derive(Debug, Args)]
pub(crate) struct LoadArgs {
    /// Nodes to spread connections over, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "127.0.0.1:50051")]
    targets: Vec<String>,
    /// Requests in flight at once (one per worker).
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Bearer token with the write role, for nodes started with --auth-tokens.
    #[arg(long, env = "KVSTORE_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// CA certificate (PEM) of nodes serving TLS.
    #[arg(long, env = "KVSTORE_TLS_CA")]
    tls_ca: Option<std::path::PathBuf>,
    /// gRPC connections shared by the workers.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// How long to run: e.g. 10s, 500ms, 1m.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    duration: Duration,
    /// Distinct keys.
    #[arg(long, default_value_t = 10_000)]
    keys: u64,
    /// Value size in bytes.
    #[arg(long, default_value_t = 100)]
    value_size: usize,
    /// Operation mix.
    #[arg(long, value_enum, default_value = "mixed")]
    mix: Mix,
    /// Read quorum per request (default: the node's R).
    #[arg(long)]
    r: Option<u32>,
    /// Write quorum per request (default: the node's W).
    #[arg(long)]
    w: Option<u32>,
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    let (number, unit) = text
        .find(|c: char| !c.is_ascii_digit())
        .map_or((text, "s"), |i| text.split_at(i));
    let value: u64 = number
        .parse()
        .map_err(|_| format!("bad duration {text:?}; use e.g. 10s, 500ms, 1m"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(value)),
        "s" => Ok(Duration::from_secs(value)),
        "m" => Ok(Duration::from_secs(value * 60)),
        _ => Err(format!("bad duration unit in {text:?}; use ms, s or m")),
    }
}

impl LoadArgs {
    fn validate(&self) -> Result<(), String> {
        if !(1..=MAX_CONCURRENCY).contains(&self.concurrency) {
            return Err(format!(
                "--concurrency must be within 1..={MAX_CONCURRENCY}"
            ));
        }
        if !(1..=MAX_CONNECTIONS).contains(&self.connections) {
            return Err(format!(
                "--connections must be within 1..={MAX_CONNECTIONS}"
            ));
        }
        if self.duration.is_zero() || self.duration > MAX_DURATION {
            return Err("--duration must be positive and at most 1h".into());
        }
        if self.keys == 0 {
            return Err("--keys must be at least 1".into());
        }
        if !(1..=MAX_VALUE_BYTES).contains(&self.value_size) {
            return Err(format!("--value-size must be within 1..={MAX_VALUE_BYTES}"));
        }
        Ok(())
    }
}

/// What one worker saw.
struct WorkerReport {
    latency_us: Histogram<u64>,
    errors: BTreeMap<String, u64>,
}

/// A tiny deterministic generator per worker: key choice must not cost a lock.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

pub(crate) async fn run(args: LoadArgs, as_json: bool) -> Result<(), String> {
    args.validate()?;
    let targets = args.targets.clone();
    let tls = match &args.tls_ca {
        Some(ca) => Some(kv_client::ClientTls::from_files(ca, None).map_err(|e| e.to_string())?),
        None => None,
    };
    let mut clients = Vec::with_capacity(args.connections);
    for i in 0..args.connections {
        let target = &targets[i % targets.len()];
        let client = Client::connect_with(target, tls.as_ref())
            .await
            .map_err(|e| e.to_string())?
            .with_client_id("kvbench");
        clients.push(match &args.token {
            Some(token) => client.with_token(token).map_err(|e| e.to_string())?,
            None => client,
        });
    }
    let value = bytes::Bytes::from(vec![b'v'; args.value_size]);
    let completed = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut prepared = Vec::with_capacity(args.concurrency);
    let mut preloads = tokio::task::JoinSet::new();
    for worker in 0..args.concurrency {
        let job = Worker {
            client: clients[worker % clients.len()].clone(),
            id: worker as u64,
            workers: args.concurrency as u64,
            keys: args.keys,
            value: value.clone(),
            mix: args.mix,
            r: args.r,
            w: args.w,
            completed: std::sync::Arc::clone(&completed),
            contexts: BTreeMap::new(),
        };
        preloads.spawn(job.preload());
    }
    while let Some(job) = preloads.join_next().await {
        prepared.push(job.map_err(|e| format!("a worker failed while preloading: {e}"))?);
    }
    // The clock starts once every key a reader may ask for exists.
    let started = Instant::now();
    let deadline = started + args.duration;
    let mut workers = tokio::task::JoinSet::new();
    for job in prepared {
        workers.spawn(job.run(deadline));
    }
    let progress = tokio::spawn(show_progress(
        std::sync::Arc::clone(&completed),
        started,
        args.duration,
    ));
    let mut latency_us =
        Histogram::<u64>::new_with_bounds(1, MAX_LATENCY_US, 3).expect("valid bounds");
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    while let Some(joined) = workers.join_next().await {
        let report = joined.map_err(|e| format!("a worker failed: {e}"))?;
        latency_us
            .add(&report.latency_us)
            .map_err(|e| e.to_string())?;
        for (code, count) in report.errors {
            *errors.entry(code).or_default() += count;
        }
    }
    progress.abort();
    let elapsed_s = started.elapsed().as_secs_f64();
    report(&args, &latency_us, &errors, elapsed_s, as_json);
    Ok(())
}

struct Worker {
    client: Client,
    id: u64,
    workers: u64,
    keys: u64,
    value: bytes::Bytes,
    mix: Mix,
    r: Option<u32>,
    w: Option<u32>,
    completed: std::sync::Arc<std::sync::atomic::AtomicU64>,
    /// The context of this worker's last write of each of its keys.
    contexts: BTreeMap<u64, Context>,
}

impl Worker {
    fn own_keys(&self) -> impl Iterator<Item = u64> + use<> {
        own_keys(self.id, self.workers, self.keys)
    }

    /// Before the clock: reads each of this worker's keys for its context, so writes
    /// replace what is stored (a key left by an earlier run must not gain a sibling), and,
    /// when the mix reads, writes each key once so every read finds a value.
    async fn preload(mut self) -> Self {
        let keys: Vec<u64> = self.own_keys().collect();
        for key in keys {
            let context = match self.client.get(&key_name(key), None).await {
                Ok(read) => read.context().cloned(),
                Err(_) => None,
            };
            let context = if self.mix == Mix::Put {
                context
            } else {
                self.put(key, context).await.ok()
            };
            if let Some(context) = context {
                self.contexts.insert(key, context);
            }
        }
        self
    }

    async fn run(mut self, deadline: Instant) -> WorkerReport {
        let mut report = WorkerReport {
            latency_us: Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("valid bounds"),
            errors: BTreeMap::new(),
        };
        let mut contexts = std::mem::take(&mut self.contexts);
        let own: Vec<u64> = self.own_keys().collect();
        let mut rng = XorShift(0x9e37_79b9_7f4a_7c15 ^ (self.id + 1));
        let mut turn = 0u64;
        while Instant::now() < deadline {
            turn += 1;
            let write = match self.mix {
                Mix::Put => true,
                Mix::Get => false,
                Mix::Mixed => turn.is_multiple_of(2),
            };
            let started = Instant::now();
            let outcome = if write && !own.is_empty() {
                let key = own[(rng.next() % own.len() as u64) as usize];
                let context = contexts.get(&key).cloned();
                self.put(key, context).await.map(|context| {
                    contexts.insert(key, context);
                })
            } else {
                let key = rng.next() % self.keys;
                self.client
                    .get(&key_name(key), self.r)
                    .await
                    .map(drop)
                    .map_err(|e| error_name(&e))
            };
            let micros = (started.elapsed().as_micros() as u64).clamp(1, MAX_LATENCY_US);
            report
                .latency_us
                .record(micros)
                .expect("clamped into bounds");
            if let Err(code) = outcome {
                *report.errors.entry(code).or_default() += 1;
            }
            self.completed
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        report
    }

    async fn put(&mut self, key: u64, context: Option<Context>) -> Result<Context, String> {
        let options = WriteOptions {
            w: self.w,
            context,
            ..WriteOptions::default()
        };
        self.client
            .put(&key_name(key), self.value.clone(), &options)
            .await
            .map_err(|e| error_name(&e))
    }
}

/// Keys worker `id` of `workers` writes: every `workers`-th key starting at its id.
fn own_keys(id: u64, workers: u64, keys: u64) -> impl Iterator<Item = u64> {
    (id..keys).step_by(workers as usize)
}

fn key_name(key: u64) -> String {
    format!("bench:{key:010}")
}

fn error_name(error: &kv_client::ClientError) -> String {
    match error.code() {
        Some(code) => format!("{code:?}"),
        None => "Connect".into(),
    }
}

async fn show_progress(
    completed: std::sync::Arc<std::sync::atomic::AtomicU64>,
    started: Instant,
    duration: Duration,
) {
    if !std::io::stderr().is_terminal() {
        return;
    }
    let mut ticker = tokio::time::interval(Duration::from_millis(500));
    loop {
        ticker.tick().await;
        let done = completed.load(std::sync::atomic::Ordering::Relaxed);
        let elapsed = started.elapsed();
        let width = 30usize;
        let filled = ((elapsed.as_secs_f64() / duration.as_secs_f64()) * width as f64)
            .min(width as f64) as usize;
        let rate = done as f64 / elapsed.as_secs_f64().max(0.001);
        eprint!(
            "\r[{}{}] {:>5.1}s {done:>9} ops {rate:>9.0} ops/s",
            "#".repeat(filled),
            " ".repeat(width - filled),
            elapsed.as_secs_f64()
        );
        let _ = std::io::stderr().flush();
    }
}

fn report(
    args: &LoadArgs,
    latency: &Histogram<u64>,
    errors: &BTreeMap<String, u64>,
    elapsed_s: f64,
    as_json: bool,
) {
    if std::io::stderr().is_terminal() {
        eprintln!();
    }
    let ops = latency.len();
    let ops_per_s = ops as f64 / elapsed_s;
    let quantile_ms = |q: f64| latency.value_at_quantile(q) as f64 / 1000.0;
    if as_json {
        let out = json!({
            "mix": format!("{:?}", args.mix).to_lowercase(),
            "concurrency": args.concurrency,
            "connections": args.connections,
            "duration_s": elapsed_s,
            "keys": args.keys,
            "value_size": args.value_size,
            "ops": ops,
            "ops_per_s": ops_per_s,
            "p50_ms": quantile_ms(0.5),
            "p99_ms": quantile_ms(0.99),
            "p999_ms": quantile_ms(0.999),
            "max_ms": latency.max() as f64 / 1000.0,
            "errors": errors,
        });
        crate::print_out(&format!("{out}\n"));
        return;
    }
    let errors = if errors.is_empty() {
        "none".to_owned()
    } else {
        let list: Vec<String> = errors
            .iter()
            .map(|(code, n)| format!("{code} {n}"))
            .collect();
        list.join(", ")
    };
    crate::print_out(&format!(
        "{:?}: {ops} ops in {elapsed_s:.1}s = {ops_per_s:.0} ops/s (concurrency {}, {} connections, {} keys, {} B values)\n\
         latency ms: p50 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2}\nerrors: {errors}\n",
        args.mix,
        args.concurrency,
        args.connections,
        args.keys,
        args.value_size,
        quantile_ms(0.5),
        quantile_ms(0.99),
        quantile_ms(0.999),
        latency.max() as f64 / 1000.0
    ));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("7"), Ok(Duration::from_secs(7)));
        assert!(parse_duration("fast").is_err());
        assert!(parse_duration("3h").is_err());
    }

    #[test]
    fn workers_split_the_keys_without_overlap() {
        let all: Vec<u64> = (0..3).flat_map(|id| own_keys(id, 3, 10)).collect();
        let mut sorted = all.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..10).collect::<Vec<_>>());
    }
}
