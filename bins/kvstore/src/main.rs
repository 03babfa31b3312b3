//! The `kvstore` binary: everything lives in the library so tests can run the same code.

/// mimalloc instead of the system allocator: under load glibc's malloc and free were a
/// fifth of a node's CPU (see BENCHMARKS.md, "Profile").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    kvstore::run()
}
