//! The kvbench binary, rebuilt in this package so the end-to-end tests can locate it.

fn main() -> std::process::ExitCode {
    kvbench::run()
}
