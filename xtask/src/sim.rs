//! `cargo xtask sim`: builds the simulator in release mode and runs a campaign with it.
//! Every option goes to `kv-sim` (`cargo xtask sim --help` lists them): `--seeds N`,
//! `--first S`, `--seed S` (replay one), `--nodes`, `--threads`, `--dump-key`, `--log`.

use std::process::Command;

use crate::{cargo, workspace_root};

pub(crate) fn run(args: &[String]) -> Result<(), String> {
    let status = Command::new(cargo())
        .args(["run", "--release", "--quiet", "--package", "kv-sim", "--"])
        .args(args)
        .current_dir(workspace_root())
        .status()
        .map_err(|e| format!("could not start cargo: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("the simulation campaign failed ({status})"))
    }
}
