//! `cargo xtask pytest`: the Python client's tests (`clients/python/tests`) against real
//! server processes: a virtual environment under `target/pyvenv` with the package and
//! pytest installed from the package registry, then pytest with `KVSTORE_BIN` naming the
//! debug server binary. Collecting no test is a failure (pytest's exit code 5).

use std::process::Command;

use crate::cluster::{build_server, server_binary};
use crate::workspace_root;

/// pytest's exit code when it collected no test.
const PYTEST_NO_TESTS: i32 = 5;

pub(crate) fn run() -> Result<(), String> {
    build_server(false)?;
    let root = workspace_root();
    let venv = root.join("target").join("pyvenv");
    let python = venv.join("bin").join("python");
    if !python.is_file() {
        println!("creating {}", venv.display());
        command(
            Command::new("python3").args(["-m", "venv"]).arg(&venv),
            "python3 -m venv",
        )?;
    }
    let package = format!("{}[test]", root.join("clients").join("python").display());
    command(
        Command::new(&python).args(["-m", "pip", "install", "--quiet", "--upgrade", &package]),
        "pip install",
    )?;
    let status = Command::new(&python)
        .args(["-m", "pytest", "-q", "clients/python/tests"])
        .env("KVSTORE_BIN", server_binary(false))
        .current_dir(&root)
        .status()
        .map_err(|e| format!("cannot run pytest: {e}"))?;
    match status.code() {
        Some(0) => Ok(()),
        Some(PYTEST_NO_TESTS) => Err("pytest collected no tests in clients/python/tests".into()),
        _ => Err(format!("the Python client's tests failed ({status})")),
    }
}

fn command(command: &mut Command, what: &str) -> Result<(), String> {
    let status = command
        .current_dir(workspace_root())
        .status()
        .map_err(|e| format!("cannot run {what}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{what} failed ({status})"))
    }
}
