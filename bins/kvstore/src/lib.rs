//! The `kvstore` command: `kvstore serve` runs a node; `put`, `get`, `delete`,
//! `membership`, `ring`, `health`, `aae`, and the ring changes `join`, `leave`, `remove`
//! and `replace` talk to one. This crate only parses,
//! configures and wires: the node is composed by `kv_node::NodeBuilder` and served by
//! `kv-grpc`; the client commands use `kv-client`.

#![warn(missing_docs)]

mod cli;
mod commands;
mod hint_commands;
mod ring_commands;
mod serve;

use std::process::ExitCode;

/// Parses the command line and runs the chosen command.
pub fn run() -> ExitCode {
    let cli = cli::Cli::parse_with_defaults();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            cli::Command::Serve(args) => Box::pin(serve::run(*args)).await,
            cli::Command::Client(command) => commands::run(command, &cli.client).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

/// Writes to stdout, ignoring a closed pipe (`kvstore get k | head -1` must not panic).
fn print_out(text: &str) {
    use std::io::Write as _;
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(text.as_bytes());
    let _ = stdout.flush();
}
