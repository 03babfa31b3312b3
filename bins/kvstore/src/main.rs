//! The `kvstore` binary: everything lives in the library so tests can run the same code.

fn main() -> std::process::ExitCode {
    kvstore::run()
}
