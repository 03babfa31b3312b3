//! Command-line shape, parsed by clap.

use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};

use kv_config::{ServeSettings, with_defaults_in_help};

/// kvstore: a Dynamo-style replicated key-value store.
#[derive(Debug, Parser)]
#[command(name = "kvstore", version, about)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Command,
    #[command(flatten)]
    pub(crate) client: ClientArgs,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Run a node.
    Serve(Box<ServeArgs>),
    #[command(flatten)]
    Client(ClientCommand),
}

#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    /// TOML file with the same settings as the flags (flags win).
    #[arg(long)]
    pub(crate) config: Option<std::path::PathBuf>,
    #[command(flatten)]
    pub(crate) settings: ServeSettings,
}

/// Options shared by the client commands.
#[derive(Debug, Args)]
pub(crate) struct ClientArgs {
    /// Address of the node to talk to.
    #[arg(
        long,
        global = true,
        default_value = "127.0.0.1:50051",
        display_order = 1000
    )]
    pub(crate) addr: String,
    /// Print machine-readable JSON instead of text.
    #[arg(long, global = true, display_order = 1001)]
    pub(crate) json: bool,
    /// Bearer token for nodes started with --auth-tokens (prefer the environment
    /// variable: a flag shows in the process list).
    #[arg(
        long,
        global = true,
        env = "KVSTORE_TOKEN",
        hide_env_values = true,
        display_order = 1002
    )]
    pub(crate) token: Option<String>,
    /// CA certificate (PEM) to reach nodes serving TLS; connections then use https.
    #[arg(long, global = true, env = "KVSTORE_TLS_CA", display_order = 1003)]
    pub(crate) tls_ca: Option<std::path::PathBuf>,
}

impl ClientArgs {
    /// A client of the node at `address`, with the token when one is given.
    pub(crate) async fn connect(&self, address: &str) -> Result<kv_client::Client, String> {
        let tls = match &self.tls_ca {
            Some(ca) => {
                Some(kv_client::ClientTls::from_files(ca, None).map_err(|e| e.to_string())?)
            }
            None => None,
        };
        let client = kv_client::Client::connect_with(address, tls.as_ref())
            .await
            .map_err(|e| e.to_string())?
            .with_client_id("kvstore-cli");
        match &self.token {
            Some(token) => client.with_token(token).map_err(|e| e.to_string()),
            None => Ok(client),
        }
    }
}

#[derive(Debug, Subcommand)]
pub(crate) enum ClientCommand {
    /// Write a value.
    Put {
        key: String,
        value: String,
        /// Write quorum (default: the node's W).
        #[arg(long)]
        w: Option<u32>,
        /// Context from a previous get (e.g. n1:2,n2:1) to replace what it saw.
        #[arg(long)]
        context: Option<String>,
        #[command(flatten)]
        mode: ModeArgs,
    },
    /// Read a key, showing siblings and the context for the next write.
    Get {
        key: String,
        /// Read quorum (default: the node's R).
        #[arg(long)]
        r: Option<u32>,
    },
    /// Delete a key.
    Delete {
        key: String,
        #[arg(long)]
        w: Option<u32>,
        #[arg(long)]
        context: Option<String>,
        #[command(flatten)]
        mode: ModeArgs,
    },
    /// List cluster members and their states.
    Membership,
    /// Show ring ownership, and a key's replicas with --key.
    Ring {
        #[arg(long)]
        key: Option<String>,
        /// Show the live ring versions, every node's acks and syncs, and this node's
        /// transfers (per source: share copied, keys and bytes moved, rate, ETA).
        #[arg(long, conflicts_with = "key")]
        transfers: bool,
    },
    /// Show the node's health.
    Health,
    /// Add running nodes (started with --seeds, seen ALIVE) to the ring; they copy the
    /// ranges they gain from the current owners. Send it to a member (--addr).
    Join(ChangeArgs),
    /// Take nodes out of the ring once they handed their data off; they keep serving
    /// until then.
    Leave(ChangeArgs),
    /// Take dead nodes out of the ring; the surviving replicas re-replicate their ranges.
    Remove(ChangeArgs),
    /// Put NEW (running, not a member) in OLD's place.
    Replace {
        old: String,
        new: String,
        /// Show the plan without changing anything.
        #[arg(long)]
        dry_run: bool,
    },
    /// Hints held for replicas that missed writes: per target, how many, their age, the
    /// target's state and how delivery goes.
    Hints {
        /// Ask every member (found through --addr's membership list), not just --addr.
        #[arg(long)]
        all: bool,
    },
    /// Background anti-entropy (replica comparison and repair).
    Aae {
        #[command(subcommand)]
        command: AaeCommand,
    },
}

/// Which acknowledgements count toward a write's W (default: the node's setting).
#[derive(Debug, Args)]
pub(crate) struct ModeArgs {
    /// Count a fallback's hint for a replica that is down toward W: the write succeeds
    /// while W nodes are reachable; a read may miss it until the hint is delivered.
    #[arg(long, conflicts_with = "strict")]
    pub(crate) sloppy: bool,
    /// Count only the key's replicas toward W (a quorum read then sees the write).
    #[arg(long)]
    pub(crate) strict: bool,
}

impl ModeArgs {
    pub(crate) fn mode(&self) -> kv_client::WriteMode {
        match (self.sloppy, self.strict) {
            (true, _) => kv_client::WriteMode::Sloppy,
            (_, true) => kv_client::WriteMode::Strict,
            _ => kv_client::WriteMode::Default,
        }
    }
}

/// The nodes a ring change names.
#[derive(Debug, Args)]
pub(crate) struct ChangeArgs {
    #[arg(required = true)]
    pub(crate) nodes: Vec<String>,
    /// Show the plan without changing anything.
    #[arg(long)]
    pub(crate) dry_run: bool,
}

#[derive(Debug, Subcommand)]
pub(crate) enum AaeCommand {
    /// Per peer: the last exchange, keys repaired, bytes moved; tombstones waiting and reaped.
    Status {
        /// Also list every range this node replicates and since when each other replica
        /// agrees on it.
        #[arg(long)]
        ranges: bool,
    },
}

impl Cli {
    /// Parses the command line; `serve --help` shows each setting's default as the node
    /// itself defines it.
    pub(crate) fn parse_with_defaults() -> Self {
        let command = Self::command().mut_subcommand("serve", with_defaults_in_help);
        let matches = command.get_matches();
        Self::from_arg_matches(&matches).unwrap_or_else(|error| error.exit())
    }
}
