//! `cargo xtask scale`: the scale figures of SCALING.md (gossip at 100/500/1,000 members,
//! ring balance and cost, data moved by a join or leave, layout sizes), from `kv-scale`
//! built in release mode. `--quick` runs the small sizes in the test profile (the
//! artifacts CI already built) and fails if a bound is broken; every other option goes to
//! `kv-scale` (`--seed`, `--gossip-sizes`, `--steady-secs`).

use std::process::Command;

use crate::{cargo, workspace_root};

pub(crate) fn run(args: &[String]) -> Result<(), String> {
    let quick = args.iter().any(|a| a == "--quick");
    let mut command = Command::new(cargo());
    command.args(["run", "--quiet", "--package", "kv-scale"]);
    if !quick {
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
        Err(format!("kv-scale failed ({status})"))
    }
}
