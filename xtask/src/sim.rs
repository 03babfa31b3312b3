//! `cargo xtask sim`: builds the simulator in release mode and runs a campaign with it.
//! Every option goes to `kv-sim` (`cargo xtask sim --help` lists them): `--seeds N`,
//! `--first S`, `--seed S` (replay one), `--nodes`, `--threads`, `--dump-key`, `--log`.

pub(crate) fn run(args: &[String]) -> Result<(), String> {
    crate::run_package("kv-sim", true, args, "the simulation campaign")
}
