//! `kvbench`: load tools kept out of the server binary.
//!
//! - `kvbench load`: closed-loop load against one or more nodes, reporting throughput,
//!   HDR latency percentiles and errors by status (`--json` for machines).
//! - `kvbench floor`: a no-op `kvstore.KVStore` service with the same message shapes; load
//!   against it measures the gRPC and client cost alone, the floor every store figure is
//!   compared with (`cargo xtask bench` runs both).

#![warn(missing_docs)]

mod floor;
mod load;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// kvbench: load generator and transport floor for kvstore.
#[derive(Debug, Parser)]
#[command(name = "kvbench", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Print the report as one JSON object.
    #[arg(long, global = true)]
    json: bool,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Closed-loop load against one or more nodes.
    Load(load::LoadArgs),
    /// Serve a no-op KVStore with the same message shapes until SIGINT.
    Floor {
        /// Where to listen.
        #[arg(long, default_value = "127.0.0.1:50070")]
        listen: std::net::SocketAddr,
        /// Size of the values it answers with, bytes.
        #[arg(long, default_value_t = 100)]
        value_size: usize,
    },
}

/// Parses the command line and runs the chosen command.
pub fn run() -> ExitCode {
    let cli = Cli::parse();
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
            Command::Load(args) => load::run(args, cli.json).await,
            Command::Floor { listen, value_size } => floor::run(listen, value_size).await,
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

/// Writes to stdout, ignoring a closed pipe.
fn print_out(text: &str) {
    use std::io::Write as _;
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(text.as_bytes());
    let _ = stdout.flush();
}
