//! `cargo xtask scale`: the scale figures of SCALING.md (gossip at 100-1,000 members, ring
//! balance and cost, data moved by a join or leave, layout sizes), from `kv-scale` built
//! in release mode. `--quick` runs the small sizes in the test profile (the artifacts CI
//! already built) and fails if a bound is broken; every other option goes to `kv-scale`
//! (`--seed`, `--gossip-sizes`, `--losses`, `--steady-secs`, `--announce-period-ms`).

pub(crate) fn run(args: &[String]) -> Result<(), String> {
    let release = !args.iter().any(|a| a == "--quick");
    crate::run_package("kv-scale", release, args, "kv-scale")
}
