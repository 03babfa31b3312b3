//! `kv-scale`: prints the scale tables of SCALING.md (`cargo xtask scale` runs it in
//! release mode); `--quick` runs the small sizes and fails if a bound CI holds is broken.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;
use kv_scale::{gossip, metadata, movement, ring};

#[derive(Parser, Debug)]
#[command(
    name = "kv-scale",
    about = "Scale figures for gossip, the ring and data movement"
)]
struct Args {
    /// Small sizes only (ring and movement at 10 and 100 nodes, gossip at 100 members),
    /// checked against the bounds; exits non-zero if one is broken.
    #[arg(long)]
    quick: bool,
    /// Seed of the gossip simulations.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Gossip cluster sizes (full run).
    #[arg(long, value_delimiter = ',', default_values_t = [100, 500, 1000])]
    gossip_sizes: Vec<usize>,
    /// Simulated seconds of steady state per gossip run.
    #[arg(long, default_value_t = 120)]
    steady_secs: u64,
    /// Gossip announce period, ms (default: kv-gossip's LAN setting, 10 s).
    #[arg(long)]
    announce_period_ms: Option<u64>,
    /// Packet loss levels of the gossip runs, per mille (full run).
    #[arg(long, value_delimiter = ',', default_values_t = [0, 10, 50])]
    losses: Vec<u32>,
}

const VNODES: u32 = 256;
const REPLICAS: usize = 3;
/// CI's bounds: ownership max/mean at 100 nodes, and keys moved by a join or leave
/// against the ideal.
const MAX_OWNERSHIP_SKEW: f64 = 1.15;
const MAX_MOVE_OVER_IDEAL: f64 = 1.20;
/// Largest gossip cluster that must reach full views within the formation limit.
const MUST_FORM_MEMBERS: usize = 200;

fn main() -> ExitCode {
    let args = Args::parse();
    let started = Instant::now();
    let sizes: &[usize] = if args.quick {
        &[10, 100]
    } else {
        &[10, 100, 1000]
    };
    let mut broken = Vec::new();
    ring_table(sizes, &mut broken);
    movement_table(sizes, &mut broken);
    metadata_table(sizes);
    let gossip_sizes = if args.quick {
        vec![100]
    } else {
        args.gossip_sizes.clone()
    };
    let steady = Duration::from_secs(if args.quick { 60 } else { args.steady_secs });
    let losses = if args.quick {
        vec![0]
    } else {
        args.losses.clone()
    };
    let mut config = kv_gossip_config();
    if let Some(ms) = args.announce_period_ms {
        config.announce_period = Duration::from_millis(ms);
    }
    gossip_table(
        &config,
        &gossip_sizes,
        &losses,
        steady,
        args.seed,
        &mut broken,
    );
    println!(
        "\nwall-clock time: {:.1} s",
        started.elapsed().as_secs_f64()
    );
    if broken.is_empty() {
        return ExitCode::SUCCESS;
    }
    for problem in &broken {
        println!("BOUND BROKEN: {problem}");
    }
    ExitCode::FAILURE
}

fn ring_table(sizes: &[usize], broken: &mut Vec<String>) {
    println!("## Ring ({VNODES} vnodes per node, N={REPLICAS})\n");
    println!(
        "| nodes | replica share max/mean | replica share CV | primary share max/mean | memory | lookup | bare hash | lookup/hash |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for &n in sizes {
        let f = ring::measure(n, VNODES, REPLICAS);
        println!(
            "| {n} | {:.3} | {:.3} | {:.3} | {:.1} KiB | {:.1} ns | {:.1} ns | {:.1}× |",
            f.replica_max_over_mean,
            f.replica_cv,
            f.primary_max_over_mean,
            f.memory_bytes as f64 / 1024.0,
            f.lookup_ns,
            f.hash_ns,
            f.lookup_ns / f.hash_ns
        );
        if n == 100 && f.replica_max_over_mean > MAX_OWNERSHIP_SKEW {
            broken.push(format!(
                "ownership max/mean {:.3} at 100 nodes (bound {MAX_OWNERSHIP_SKEW})",
                f.replica_max_over_mean
            ));
        }
    }
}

fn movement_table(sizes: &[usize], broken: &mut Vec<String>) {
    println!("\n## Data moved by one change (share of all key copies)\n");
    println!(
        "| nodes | change | planned | sampled (100,000 keys) | ideal | sampled/ideal | ranges | peers |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for &n in sizes {
        for f in [
            movement::join(n, VNODES, REPLICAS),
            movement::leave(n, VNODES, REPLICAS),
        ] {
            println!(
                "| {n} | {} | {:.4} | {:.4} | {:.4} | {:.3} | {} | {} |",
                f.change,
                f.planned_share,
                f.sampled_share,
                f.ideal_share,
                f.ratio(),
                f.ranges,
                f.peers
            );
            if f.ratio() > MAX_MOVE_OVER_IDEAL || f.ratio() < 1.0 / MAX_MOVE_OVER_IDEAL {
                broken.push(format!(
                    "a {} at {n} nodes moved {:.3}× the ideal (bound within 20%)",
                    f.change,
                    f.ratio()
                ));
            }
        }
    }
}

fn metadata_table(sizes: &[usize]) {
    println!("\n## Ring layout (persisted and exchanged by every node)\n");
    println!("| nodes | encoded, settled | encoded, during a join | rings built from it |");
    println!("|---|---|---|---|");
    for &n in sizes {
        let f = metadata::measure(n, VNODES, REPLICAS);
        println!(
            "| {n} | {:.1} KiB | {:.1} KiB | {:.1} ms |",
            f.settled_bytes as f64 / 1024.0,
            f.changing_bytes as f64 / 1024.0,
            f.ring_build_ms
        );
    }
}

fn kv_gossip_config() -> kv_scale::gossip::GossipConfig {
    kv_scale::gossip::GossipConfig::lan()
}

fn gossip_table(
    config: &kv_scale::gossip::GossipConfig,
    sizes: &[usize],
    losses: &[u32],
    steady: Duration,
    seed: u64,
    broken: &mut Vec<String>,
) {
    let secs = |d: Option<Duration>| {
        d.map_or("not reached".to_owned(), |d| {
            format!("{:.1} s", d.as_secs_f64())
        })
    };
    println!(
        "\n## Gossip (foca SWIM, probe {} ms, suspect-to-DEAD {} ms, announce every {} ms, 1-5 ms latency; {} s steady state, seed {seed})\n",
        config.probe_period.as_millis(),
        config.suspect_to_down.as_millis(),
        config.announce_period.as_millis(),
        steady.as_secs()
    );
    println!(
        "| members | loss | formed | join reaches all | bytes/member/s | false SUSPECT views per member-hour | false DEAD | crash SUSPECT everywhere | crash DEAD everywhere |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for &n in sizes {
        for &loss in losses {
            let f = gossip::run_with(config.clone(), n, loss, steady, seed);
            println!(
                "| {n} | {:.0}% | {} | {} | {:.0} | {:.2} | {} | {} | {} |",
                f64::from(loss) / 10.0,
                secs(f.formed),
                secs(f.join_spread),
                f.bytes_per_member_per_sec,
                f.false_suspicions_per_member_hour,
                f.false_deaths,
                secs(f.crash_suspected),
                secs(f.crash_dead)
            );
            // Full views may not form at large sizes within the limit (a finding, see
            // SCALING.md); a join or a crash that never spreads is a broken protocol.
            let must_form = n <= MUST_FORM_MEMBERS;
            if (must_form && f.formed.is_none())
                || f.join_spread.is_none()
                || f.crash_dead.is_none()
            {
                broken.push(format!("gossip at {n} members, {loss}‰ loss: {f:?}"));
            }
        }
    }
}
