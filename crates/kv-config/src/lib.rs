//! A kvstore node's settings, as `kvstore serve` takes them from flags and a TOML file.
//!
//! Every setting is declared once, in the `settings!` table below, with its help and the
//! field it sets. Flags and the file (the same names: `_` in TOML, `-` on the command
//! line) only override; defaults come from where the node takes them (`NodeConfig::new`,
//! `GossipConfig::lan`, [`ServeOptions::default`]), and [`with_defaults_in_help`] prints
//! them from there. Unknown TOML keys are an error that names the key.
//!
//! ```
//! let file: kv_config::ServeSettings = toml::from_str("node_id = \"n1\"\nlisten = \"127.0.0.1:50051\"").unwrap();
//! let flags = kv_config::ServeSettings { write_quorum: Some(1), ..Default::default() };
//! let plan = flags.or(file).resolve().plan().unwrap();
//! assert_eq!((plan.node.node_id.as_str(), plan.node.write_quorum), ("n1", 1));
//! assert_eq!(plan.node.read_quorum, kv_node::NodeConfig::new("n1", plan.node.internal_address).read_quorum);
//! ```

#![warn(missing_docs)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use kv_node::{
    ConfigError, GossipConfig, GossipConfigError, GossipSettings, KeyringFile, NodeConfig,
    PeerSpec, StorageChoice,
};
use thiserror::Error;

/// Settings that cannot run a node; each message names the setting to fix.
#[derive(Debug, Error)]
pub enum SettingsError {
    /// The settings file cannot be read.
    #[error("cannot read config file {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The settings file is not valid TOML or names an unknown setting.
    #[error("invalid config file {}: {source}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong, with the key.
        source: Box<toml::de::Error>,
    },
    /// A required setting is missing.
    #[error("--{flag} is required{example}")]
    Missing {
        /// The flag.
        flag: &'static str,
        /// An example value.
        example: &'static str,
    },
    /// A peer is not `id=host:port`.
    #[error(
        "peer {spec:?} must look like id=host:port of its internal listener (e.g. n2=127.0.0.1:50152)"
    )]
    BadPeer {
        /// What was given.
        spec: String,
    },
    /// A limit was set to zero, which would refuse everything.
    #[error("--{flag} must be at least 1")]
    Zero {
        /// The flag.
        flag: &'static str,
    },
    /// Two settings exclude each other, or one needs another.
    #[error("{0}")]
    Conflict(&'static str),
    /// Peers could not reach this node at the address it would announce.
    #[error(
        "peers cannot reach this node at {address}: --{listen_flag} binds to all interfaces \
         (or port 0); add --{advertise_flag} with the address peers should use \
         (e.g. 10.0.0.5:{port})",
        port = address.port()
    )]
    NotAdvertisable {
        /// The listen flag.
        listen_flag: &'static str,
        /// The flag to add.
        advertise_flag: &'static str,
        /// The address that cannot be announced.
        address: SocketAddr,
    },
    /// A choice among names got an unknown one.
    #[error("unknown {setting} {given:?}; use {allowed}")]
    Unknown {
        /// The setting.
        setting: &'static str,
        /// What was given.
        given: String,
        /// The names allowed.
        allowed: &'static str,
    },
    /// The node configuration contradicts itself.
    #[error(transparent)]
    Node(#[from] ConfigError),
    /// The gossip keyring cannot be used.
    #[error("--gossip-keyring: {0}")]
    Keyring(String),
    /// The gossip timings cannot work.
    #[error("gossip settings: {0}")]
    Gossip(#[from] GossipConfigError),
}

/// A setting's target: how a given value lands in it, and how its default reads.
trait Knob<V> {
    fn set(&mut self, value: V);
    fn show(&self) -> Option<String>;
}

macro_rules! plain_knob {
    ($($ty:ty),*) => {$(
        impl Knob<$ty> for $ty {
            fn set(&mut self, value: $ty) {
                *self = value;
            }
            fn show(&self) -> Option<String> {
                Some(self.to_string())
            }
        }
    )*};
}
plain_knob!(usize, u32, u64, String);

/// A duration given in whole seconds (for settings counted in hours).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(transparent)]
pub struct Seconds(pub u64);

impl std::str::FromStr for Seconds {
    type Err = std::num::ParseIntError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.parse().map(Self)
    }
}

impl Knob<Seconds> for Duration {
    fn set(&mut self, value: Seconds) {
        *self = Duration::from_secs(value.0);
    }
    fn show(&self) -> Option<String> {
        Some(self.as_secs().to_string())
    }
}

/// A duration set in milliseconds.
impl Knob<u64> for Duration {
    fn set(&mut self, value: u64) {
        *self = Duration::from_millis(value);
    }
    fn show(&self) -> Option<String> {
        Some(self.as_millis().to_string())
    }
}

/// A flag: given means on.
impl Knob<bool> for bool {
    fn set(&mut self, value: bool) {
        *self = value;
    }
    fn show(&self) -> Option<String> {
        None
    }
}

/// A setting with no default.
impl<T> Knob<T> for Option<T> {
    fn set(&mut self, value: T) {
        *self = Some(value);
    }
    fn show(&self) -> Option<String> {
        None
    }
}

/// A list, empty unless given.
impl<T> Knob<Vec<T>> for Vec<T> {
    fn set(&mut self, value: Vec<T>) {
        *self = value;
    }
    fn show(&self) -> Option<String> {
        None
    }
}

/// The settings of `kvstore serve` that are not the node's own configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServeOptions {
    node_id: Option<String>,
    listen: Option<SocketAddr>,
    advertise_addr: Option<SocketAddr>,
    internal_listen: Option<SocketAddr>,
    internal_advertise_addr: Option<SocketAddr>,
    auth_tokens: Option<PathBuf>,
    gossip_keyring: Option<PathBuf>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    tls_ca: Option<PathBuf>,
    max_concurrent_client_calls: usize,
    max_concurrent_internal_calls: usize,
    max_concurrent_internal_calls_per_peer: usize,
    peers: Vec<String>,
    gossip_listen: Option<SocketAddr>,
    gossip_advertise_addr: Option<SocketAddr>,
    admin_listen: Option<SocketAddr>,
    seeds: Vec<SocketAddr>,
    bootstrap: bool,
    storage: String,
    data_dir: Option<PathBuf>,
    durability: String,
    /// Log format: `text` or `json`.
    pub log_format: String,
    /// Which logs to keep, as `RUST_LOG` says it (e.g. `info,kv_grpc=debug`); `RUST_LOG`
    /// or `info` when unset.
    pub log_filter: Option<String>,
}

impl Default for ServeOptions {
    fn default() -> Self {
        Self {
            node_id: None,
            listen: None,
            advertise_addr: None,
            internal_listen: None,
            internal_advertise_addr: None,
            auth_tokens: None,
            gossip_keyring: None,
            tls_cert: None,
            tls_key: None,
            tls_ca: None,
            max_concurrent_client_calls: DEFAULT_MAX_CONCURRENT_CALLS,
            max_concurrent_internal_calls: DEFAULT_MAX_CONCURRENT_CALLS,
            max_concurrent_internal_calls_per_peer: DEFAULT_MAX_CONCURRENT_CALLS_PER_PEER,
            peers: Vec::new(),
            gossip_listen: None,
            gossip_advertise_addr: None,
            admin_listen: None,
            seeds: Vec::new(),
            bootstrap: false,
            storage: "fjall".into(),
            data_dir: None,
            durability: "buffer".into(),
            log_format: "text".into(),
            log_filter: None,
        }
    }
}

/// Everything `kvstore serve` configures: the node, its gossip, and how it is served.
#[derive(Debug, Clone)]
pub struct Resolved {
    node: NodeConfig,
    gossip: GossipConfig,
    /// How the node is served.
    pub serve: ServeOptions,
}

impl Default for Resolved {
    fn default() -> Self {
        let unset: SocketAddr = ([0, 0, 0, 0], 0).into();
        Self {
            node: NodeConfig::new(String::new(), unset),
            gossip: GossipConfig::lan(),
            serve: ServeOptions::default(),
        }
    }
}

/// Declares the settings: each field once, with its help, its clap attributes and the
/// field of [`Resolved`] it sets. Generates [`ServeSettings`] (flags and TOML, every field
/// optional), its merge, its application to the defaults, and the defaults for `--help`.
macro_rules! settings {
    ($(
        $(#[doc = $doc:literal])+
        #[arg($($arg:tt)*)]
        $field:ident: $ty:ty => $($target:ident).+;
    )+) => {
        /// Every setting of a node. `None` means "not given here".
        #[derive(Debug, Clone, Default, clap::Args, serde::Deserialize)]
        #[serde(default, deny_unknown_fields)]
        pub struct ServeSettings {
            $(
                $(#[doc = $doc])+
                #[arg($($arg)*)]
                pub $field: Option<$ty>,
            )+
        }

        impl ServeSettings {
            /// These settings, with gaps filled from `fallback`.
            #[must_use]
            pub fn or(self, fallback: Self) -> Self {
                Self { $($field: self.$field.or(fallback.$field),)+ }
            }

            /// The defaults with these settings applied.
            fn apply(self, mut resolved: Resolved) -> Resolved {
                $(
                    if let Some(value) = self.$field {
                        Knob::<$ty>::set(&mut resolved.$($target).+, value);
                    }
                )+
                resolved
            }
        }

        /// Each setting's default, as `--help` shows it (settings without one are absent).
        pub fn defaults() -> Vec<(&'static str, String)> {
            let defaults = Resolved::default();
            let mut shown = Vec::new();
            $(
                if let Some(text) = Knob::<$ty>::show(&defaults.$($target).+) {
                    shown.push((stringify!($field), text));
                }
            )+
            shown
        }
    };
}

settings! {
    /// This node's id (e.g. n1); required.
    #[arg(long)]
    node_id: String => serve.node_id;
    /// Address to serve the client gRPC API on (e.g. 127.0.0.1:50051, or 0.0.0.0:50051
    /// with --advertise-addr); required.
    #[arg(long)]
    listen: SocketAddr => serve.listen;
    /// The client address shown to clients and operators, when it is not --listen
    /// (needed when --listen binds to all interfaces, e.g. 10.0.0.5:50051).
    #[arg(long)]
    advertise_addr: SocketAddr => serve.advertise_addr;
    /// Address to serve the node-to-node service on; never the client port. Default:
    /// --listen's address with the port plus 100 (127.0.0.1:50051 -> 127.0.0.1:50151).
    #[arg(long)]
    internal_listen: SocketAddr => serve.internal_listen;
    /// The internal address other nodes dial, when it is not --internal-listen. Default:
    /// --advertise-addr's host with --internal-listen's port, else --internal-listen.
    #[arg(long)]
    internal_advertise_addr: SocketAddr => serve.internal_advertise_addr;
    /// A token file (`role name token` per line; roles read < write < admin): client
    /// calls then need `authorization: Bearer <token>` whose role allows them. Without
    /// it every client may do everything: the dev default, not for production.
    #[arg(long)]
    auth_tokens: PathBuf => serve.auth_tokens;
    /// This node's TLS certificate (PEM; it must name the node's IP addresses and allow
    /// server and client authentication). With --tls-key and --tls-ca, both listeners
    /// serve TLS, the internal one requires a client certificate from the CA, and peers
    /// are dialled over mutual TLS. The files are re-read when they change.
    #[arg(long)]
    tls_cert: PathBuf => serve.tls_cert;
    /// The private key of --tls-cert (PEM).
    #[arg(long)]
    tls_key: PathBuf => serve.tls_key;
    /// The CA certificate that signs every node's certificate (PEM).
    #[arg(long)]
    tls_ca: PathBuf => serve.tls_ca;
    /// Most client calls run at once; more are refused with RESOURCE_EXHAUSTED and a
    /// retry pushback rather than queued.
    #[arg(long)]
    max_concurrent_client_calls: usize => serve.max_concurrent_client_calls;
    /// Most node-to-node calls run at once (a batch of replica operations is one call);
    /// more are refused with RESOURCE_EXHAUSTED.
    #[arg(long)]
    max_concurrent_internal_calls: usize => serve.max_concurrent_internal_calls;
    /// Most node-to-node calls one peer runs at once (a peer is its client certificate
    /// under TLS, else its IP address); more are refused with RESOURCE_EXHAUSTED.
    #[arg(long)]
    max_concurrent_internal_calls_per_peer: usize => serve.max_concurrent_internal_calls_per_peer;
    /// Other members as id=host:port of their internal listener, comma-separated (static
    /// membership).
    #[arg(long, value_delimiter = ',')]
    peers: Vec<String> => serve.peers;
    /// Gossip (UDP) address; turns on SWIM membership instead of a static --peers list.
    #[arg(long)]
    gossip_listen: SocketAddr => serve.gossip_listen;
    /// The gossip address other nodes reach this one at, when it is not --gossip-listen
    /// (needed when --gossip-listen binds to all interfaces).
    #[arg(long)]
    gossip_advertise_addr: SocketAddr => serve.gossip_advertise_addr;
    /// Seal gossip with XChaCha20-Poly1305 under the keys in this file (64 hex digits a
    /// line; the first seals, all open; re-read every second, so keys rotate without a
    /// restart). Datagrams that do not open are dropped and counted. Node clocks must
    /// agree within 30 s (replayed datagrams are refused by their stamp).
    #[arg(long)]
    gossip_keyring: PathBuf => serve.gossip_keyring;
    /// Address of the admin HTTP listener (/healthz, /readyz, /metrics), e.g.
    /// 127.0.0.1:9091; none without it.
    #[arg(long)]
    admin_listen: SocketAddr => serve.admin_listen;
    /// Gossip addresses of nodes to join through, comma-separated.
    #[arg(long, value_delimiter = ',')]
    seeds: Vec<SocketAddr> => serve.seeds;
    /// Found a new cluster whose ring holds this node alone (others join it with
    /// `kvstore join`). Refused if the store belongs to a cluster already: a restarted
    /// node comes back with the ring its store holds, no flag needed.
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    bootstrap: bool => serve.bootstrap;
    /// Gossip: how often each node probes another, ms.
    #[arg(long)]
    probe_period_ms: u64 => gossip.probe_period;
    /// Gossip: how long a probe may take before indirect probes, ms.
    #[arg(long)]
    probe_rtt_ms: u64 => gossip.probe_rtt;
    /// Gossip: how long a SUSPECT node has before it is DEAD, ms.
    #[arg(long)]
    suspect_timeout_ms: u64 => gossip.suspect_to_down;
    /// Gossip: how often a member announces itself to a random other member (whose answer
    /// feeds it members it may not know), ms; lower it in large clusters (SCALING.md).
    #[arg(long)]
    announce_period_ms: u64 => gossip.announce_period;
    /// Storage engine: fjall (persistent) or memory.
    #[arg(long)]
    storage: String => serve.storage;
    /// Directory for the fjall store [default: data/<node-id>].
    #[arg(long)]
    data_dir: PathBuf => serve.data_dir;
    /// When a write is acknowledged: buffer (survives a crash) or sync (fdatasync).
    #[arg(long)]
    durability: String => serve.durability;
    /// Replicas per key, N.
    #[arg(long = "n")]
    replication_factor: usize => node.replication_factor;
    /// Default read quorum, R.
    #[arg(long = "r")]
    read_quorum: usize => node.read_quorum;
    /// Default write quorum, W.
    #[arg(long = "w")]
    write_quorum: usize => node.write_quorum;
    /// Virtual nodes per member.
    #[arg(long)]
    vnodes: u32 => node.vnodes;
    /// Largest key accepted, bytes.
    #[arg(long)]
    max_key_bytes: usize => node.limits.max_key_bytes;
    /// Largest value accepted, bytes.
    #[arg(long)]
    max_value_bytes: usize => node.limits.max_value_bytes;
    /// Most sibling values per key before writes are refused.
    #[arg(long)]
    max_siblings: usize => node.limits.max_siblings;
    /// Client request deadline, ms.
    #[arg(long)]
    request_timeout_ms: u64 => node.request_timeout;
    /// Deadline of one call to a peer, ms.
    #[arg(long)]
    peer_timeout_ms: u64 => node.peer_timeout;
    /// Requests whose follow-up (waiting up to 2 s for late replica replies, then hinting
    /// a write's silent replicas or repairing a read's stale ones) may wait at once;
    /// beyond it a request skips its follow-up (counted in `kvstore_follow_ups_shed`)
    /// and its replicas are left to anti-entropy.
    #[arg(long)]
    max_follow_ups: usize => node.max_follow_ups;
    /// Anti-entropy: time between rounds of exchanges with every peer, ms; 0 turns
    /// anti-entropy (and tombstone reaping) off.
    #[arg(long)]
    aae_interval_ms: u64 => node.anti_entropy.interval;
    /// Anti-entropy: most keys this node repairs per second.
    #[arg(long)]
    aae_max_keys_per_sec: u32 => node.anti_entropy.max_keys_per_sec;
    /// How long a tombstone is kept once every replica holds it, ms.
    #[arg(long)]
    tombstone_grace_ms: u64 => node.anti_entropy.tombstone_grace;
    /// Hinted handoff: most bytes of hints this node holds for replicas that missed
    /// writes; 0 turns hints off (missed writes then wait for anti-entropy).
    #[arg(long)]
    hint_max_bytes: u64 => node.hints.max_bytes;
    /// Hinted handoff: most bytes of hints held for one target node.
    #[arg(long)]
    hint_max_target_bytes: u64 => node.hints.max_target_bytes;
    /// Hinted handoff: a hint not updated for this many seconds is dropped undelivered
    /// (anti-entropy repairs the replica instead).
    #[arg(long)]
    hint_max_age_secs: Seconds => node.hints.max_age;
    /// Hinted handoff: most hints delivered per second, all targets together.
    #[arg(long)]
    hint_delivery_keys_per_sec: u32 => node.hints.delivery_keys_per_sec;
    /// Count a fallback's hint for a replica that is down toward W (sloppy quorum) for
    /// writes that do not choose: writes succeed while W nodes are reachable, but a read
    /// may miss one until its hints are delivered. Default: strict.
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    sloppy_quorum: bool => node.hints.sloppy_quorum;
    /// How often the ring layout is exchanged with a peer (and acks and transfers move
    /// on), ms.
    #[arg(long)]
    layout_interval_ms: u64 => node.layout_interval;
    /// Log format: text or json.
    #[arg(long)]
    log_format: String => serve.log_format;
    /// Which logs to keep, in `RUST_LOG` syntax (e.g. `info,kv_grpc=debug` to follow each
    /// request to its replicas); default: `RUST_LOG`, else `info`.
    #[arg(long)]
    log_filter: String => serve.log_filter;
}

/// A node's TLS material (PEM files), given as `--tls-cert`, `--tls-key`, `--tls-ca`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsPaths {
    /// The node's certificate chain.
    pub cert: PathBuf,
    /// Its private key.
    pub key: PathBuf,
    /// The CA that signs every node's certificate.
    pub ca: PathBuf,
}

/// What a node is built from.
#[derive(Debug)]
pub struct Plan {
    /// Where the client gRPC API binds (the node's configuration holds the address it is
    /// shown at).
    pub listen: SocketAddr,
    /// Where the node-to-node service binds (the node's configuration holds the address
    /// peers dial).
    pub internal_listen: SocketAddr,
    /// Where the admin HTTP listener binds, if anywhere.
    pub admin_listen: Option<SocketAddr>,
    /// The client token file, if client calls need tokens.
    pub auth_tokens: Option<PathBuf>,
    /// The node's TLS files, if it serves and dials over TLS.
    pub tls: Option<TlsPaths>,
    /// Most client calls run at once.
    pub max_concurrent_client_calls: usize,
    /// Most node-to-node calls run at once.
    pub max_concurrent_internal_calls: usize,
    /// Most node-to-node calls one peer runs at once.
    pub max_concurrent_internal_calls_per_peer: usize,
    /// The node's configuration.
    pub node: NodeConfig,
    /// Its gossip, unless its peers are a static list.
    pub gossip: Option<GossipSettings>,
    /// Its store.
    pub storage: StorageChoice,
}

impl ServeSettings {
    /// Reads a TOML settings file; unknown keys are an error that names them.
    pub fn from_file(path: &Path) -> Result<Self, SettingsError> {
        let text = std::fs::read_to_string(path).map_err(|source| SettingsError::Read {
            path: path.to_owned(),
            source,
        })?;
        toml::from_str(&text).map_err(|source| SettingsError::Parse {
            path: path.to_owned(),
            source: Box::new(source),
        })
    }

    /// The defaults with these settings applied.
    pub fn resolve(self) -> Resolved {
        self.apply(Resolved::default())
    }
}

impl Resolved {
    /// Checks the settings together and turns them into what the node is built from.
    pub fn plan(self) -> Result<Plan, SettingsError> {
        let Self {
            mut node,
            gossip,
            serve,
        } = self;
        node.node_id = serve.node_id.clone().ok_or(SettingsError::Missing {
            flag: "node-id",
            example: " (e.g. n1)",
        })?;
        let listen = serve.listen.ok_or(SettingsError::Missing {
            flag: "listen",
            example: " (e.g. 127.0.0.1:50051)",
        })?;
        node.client_address = advertised(listen, serve.advertise_addr, "listen", "advertise-addr")?;
        let internal_listen = internal_listen(&serve, listen)?;
        let internal_advertise = serve.internal_advertise_addr.or_else(|| {
            serve
                .advertise_addr
                .map(|a| SocketAddr::new(a.ip(), internal_listen.port()))
        });
        node.internal_address = advertised(
            internal_listen,
            internal_advertise,
            "internal-listen",
            "internal-advertise-addr",
        )?;
        node.peers = serve
            .peers
            .iter()
            .map(|p| parse_peer(p))
            .collect::<Result<_, _>>()?;
        node.validate()?;
        let storage = storage_choice(&serve, &node.node_id)?;
        let gossip = gossip_settings(&serve, gossip)?;
        for (flag, limit) in [
            (
                "max-concurrent-client-calls",
                serve.max_concurrent_client_calls,
            ),
            (
                "max-concurrent-internal-calls",
                serve.max_concurrent_internal_calls,
            ),
            (
                "max-concurrent-internal-calls-per-peer",
                serve.max_concurrent_internal_calls_per_peer,
            ),
        ] {
            if limit == 0 {
                return Err(SettingsError::Zero { flag });
            }
        }
        Ok(Plan {
            listen,
            internal_listen,
            admin_listen: serve.admin_listen,
            tls: tls_files(&serve)?,
            auth_tokens: serve.auth_tokens,
            max_concurrent_client_calls: serve.max_concurrent_client_calls,
            max_concurrent_internal_calls: serve.max_concurrent_internal_calls,
            max_concurrent_internal_calls_per_peer: serve.max_concurrent_internal_calls_per_peer,
            node,
            gossip,
            storage,
        })
    }
}

/// The TLS files, when all three are given; an error naming the missing ones when only
/// some are.
fn tls_files(serve: &ServeOptions) -> Result<Option<TlsPaths>, SettingsError> {
    match (&serve.tls_cert, &serve.tls_key, &serve.tls_ca) {
        (Some(cert), Some(key), Some(ca)) => Ok(Some(TlsPaths {
            cert: cert.clone(),
            key: key.clone(),
            ca: ca.clone(),
        })),
        (None, None, None) => Ok(None),
        _ => Err(SettingsError::Conflict(
            "TLS needs all of --tls-cert, --tls-key and --tls-ca",
        )),
    }
}

/// The default bound on client calls, and on node-to-node calls, a node runs at once.
pub const DEFAULT_MAX_CONCURRENT_CALLS: usize = 1024;
/// The default bound on node-to-node calls one peer runs at once: a quarter of the
/// listener's, so that a single peer cannot take it all.
pub const DEFAULT_MAX_CONCURRENT_CALLS_PER_PEER: usize = 256;

/// How far the default internal port is from the client port.
pub const INTERNAL_PORT_OFFSET: u16 = 100;

/// `--internal-listen`, or the client listener's address with the port plus
/// [`INTERNAL_PORT_OFFSET`]; never the client listener itself.
fn internal_listen(serve: &ServeOptions, listen: SocketAddr) -> Result<SocketAddr, SettingsError> {
    let internal = if let Some(address) = serve.internal_listen {
        address
    } else {
        let port = listen
            .port()
            .checked_add(INTERNAL_PORT_OFFSET)
            .ok_or(SettingsError::Conflict(
                "--listen's port is too high to derive the internal port from; set --internal-listen",
            ))?;
        SocketAddr::new(listen.ip(), port)
    };
    if internal == listen {
        return Err(SettingsError::Conflict(
            "--internal-listen must differ from --listen: the node-to-node service is never served on the client port",
        ));
    }
    Ok(internal)
}

/// The address peers reach a socket bound to `listen` at: `advertise` if given, else
/// `listen` itself, which must then name one interface.
fn advertised(
    listen: SocketAddr,
    advertise: Option<SocketAddr>,
    listen_flag: &'static str,
    advertise_flag: &'static str,
) -> Result<SocketAddr, SettingsError> {
    let address = advertise.unwrap_or(listen);
    if address.ip().is_unspecified() || address.port() == 0 {
        return Err(SettingsError::NotAdvertisable {
            listen_flag,
            advertise_flag,
            address,
        });
    }
    Ok(address)
}

fn storage_choice(serve: &ServeOptions, node_id: &str) -> Result<StorageChoice, SettingsError> {
    let unknown = |setting, given: &str, allowed| SettingsError::Unknown {
        setting,
        given: given.to_owned(),
        allowed,
    };
    match serve.storage.as_str() {
        "memory" => Ok(StorageChoice::Memory),
        "fjall" => Ok(StorageChoice::Fjall {
            data_dir: serve
                .data_dir
                .clone()
                .unwrap_or_else(|| PathBuf::from("data").join(node_id)),
            durability: serve
                .durability
                .parse()
                .map_err(|_| unknown("durability", &serve.durability, "buffer or sync"))?,
        }),
        other => Err(unknown("storage", other, "fjall or memory")),
    }
}

fn gossip_settings(
    serve: &ServeOptions,
    config: GossipConfig,
) -> Result<Option<GossipSettings>, SettingsError> {
    let Some(listen) = serve.gossip_listen else {
        if !serve.seeds.is_empty() {
            return Err(SettingsError::Conflict("--seeds needs --gossip-listen"));
        }
        if serve.bootstrap {
            return Err(SettingsError::Conflict("--bootstrap needs --gossip-listen"));
        }
        if serve.gossip_advertise_addr.is_some() {
            return Err(SettingsError::Conflict(
                "--gossip-advertise-addr needs --gossip-listen",
            ));
        }
        if serve.gossip_keyring.is_some() {
            return Err(SettingsError::Conflict(
                "--gossip-keyring needs --gossip-listen",
            ));
        }
        return Ok(None);
    };
    if !serve.peers.is_empty() {
        return Err(SettingsError::Conflict(
            "use either --peers (static membership) or --gossip-listen with --seeds, not both",
        ));
    }
    config.validate()?;
    let advertise = advertised(
        listen,
        serve.gossip_advertise_addr,
        "gossip-listen",
        "gossip-advertise-addr",
    )?;
    let keyring = serve
        .gossip_keyring
        .as_deref()
        .map(KeyringFile::load)
        .transpose()
        .map_err(|e| SettingsError::Keyring(e.to_string()))?;
    Ok(Some(GossipSettings {
        listen,
        advertise,
        seeds: serve.seeds.clone(),
        config,
        bootstrap: serve.bootstrap,
        keyring,
    }))
}

fn parse_peer(spec: &str) -> Result<PeerSpec, SettingsError> {
    let bad = || SettingsError::BadPeer {
        spec: spec.to_owned(),
    };
    let (node_id, address) = spec.split_once('=').ok_or_else(bad)?;
    if node_id.is_empty() {
        return Err(bad());
    }
    Ok(PeerSpec {
        node_id: node_id.to_owned(),
        internal_address: address.parse().map_err(|_| bad())?,
    })
}

/// `command` with each setting's default appended to its help, as the node defines it.
pub fn with_defaults_in_help(command: clap::Command) -> clap::Command {
    defaults()
        .into_iter()
        .fold(command, |command, (id, default)| {
            command.mut_arg(id, |arg| {
                let help = arg.get_help().map(ToString::to_string).unwrap_or_default();
                arg.help(format!("{help} [default: {default}]"))
            })
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn named(node: &str) -> ServeSettings {
        ServeSettings {
            node_id: Some(node.into()),
            listen: Some("127.0.0.1:1".parse().unwrap()),
            ..ServeSettings::default()
        }
    }

    #[test]
    fn flags_override_the_file_and_fill_from_it() {
        let file: ServeSettings = toml::from_str(
            r#"
            node_id = "n1"
            listen = "127.0.0.1:50051"
            peers = ["n2=127.0.0.1:50052"]
            write_quorum = 3
            storage = "memory"
            request_timeout_ms = 1500
            "#,
        )
        .unwrap();
        let flags = ServeSettings {
            write_quorum: Some(1),
            ..ServeSettings::default()
        };
        let plan = flags.or(file).resolve().plan().unwrap();
        assert_eq!(plan.node.node_id, "n1");
        assert_eq!(plan.node.write_quorum, 1);
        assert_eq!(plan.node.request_timeout, Duration::from_millis(1500));
        assert_eq!(plan.node.peers.len(), 1);
        assert_eq!(plan.storage, StorageChoice::Memory);
    }

    #[test]
    fn defaults_are_the_nodes_own() {
        let plan = named("n1").resolve().plan().unwrap();
        let node = NodeConfig::new("n1", "127.0.0.1:1".parse().unwrap());
        assert_eq!(plan.node.read_quorum, node.read_quorum);
        assert_eq!(plan.node.limits, node.limits);
        assert_eq!(plan.node.peer_timeout, node.peer_timeout);
        let shown: std::collections::BTreeMap<_, _> = defaults().into_iter().collect();
        assert_eq!(shown["read_quorum"], node.read_quorum.to_string());
        assert_eq!(
            shown["probe_period_ms"],
            GossipConfig::lan().probe_period.as_millis().to_string()
        );
        assert!(
            !shown.contains_key("node_id"),
            "a required setting has no default"
        );
    }

    fn plan_error(settings: ServeSettings) -> String {
        settings.resolve().plan().unwrap_err().to_string()
    }

    #[test]
    fn bad_settings_are_explained() {
        let unknown = toml::from_str::<ServeSettings>("nodes = 3");
        let message = unknown.unwrap_err().to_string();
        assert!(message.contains("unknown field `nodes`"), "{message}");
        let bad_peer = ServeSettings {
            peers: Some(vec!["n2".into()]),
            ..named("n1")
        };
        assert!(plan_error(bad_peer).contains("id=host:port"));
        let bad_quorum = ServeSettings {
            write_quorum: Some(4),
            ..named("n1")
        };
        assert!(plan_error(bad_quorum).contains("W=4"));
        let both = ServeSettings {
            gossip_listen: Some("127.0.0.1:7946".parse().unwrap()),
            peers: Some(vec!["n2=127.0.0.1:2".into()]),
            ..named("n1")
        };
        assert!(plan_error(both).contains("not both"));
        let bad_timing = ServeSettings {
            gossip_listen: Some("127.0.0.1:7946".parse().unwrap()),
            probe_rtt_ms: Some(5000),
            ..named("n1")
        };
        assert!(plan_error(bad_timing).contains("probe RTT"));
        let missing = plan_error(ServeSettings::default());
        assert!(missing.contains("--node-id is required"), "{missing}");
        let storage = plan_error(ServeSettings {
            durability: Some("fast".into()),
            ..named("n1")
        });
        assert!(
            storage.contains("unknown durability \"fast\"; use buffer or sync"),
            "{storage}"
        );
    }

    #[test]
    fn the_internal_listener_is_its_own_port() {
        let plan = ServeSettings {
            listen: Some("127.0.0.1:50051".parse().unwrap()),
            ..named("n1")
        }
        .resolve()
        .plan()
        .unwrap();
        assert_eq!(plan.internal_listen, "127.0.0.1:50151".parse().unwrap());
        assert_eq!(plan.node.internal_address, plan.internal_listen);
        let chosen = ServeSettings {
            internal_listen: Some("127.0.0.1:7000".parse().unwrap()),
            ..named("n1")
        };
        let plan = chosen.resolve().plan().unwrap();
        assert_eq!(
            plan.node.internal_address,
            "127.0.0.1:7000".parse().unwrap()
        );
        let same = ServeSettings {
            internal_listen: Some("127.0.0.1:1".parse().unwrap()),
            ..named("n1")
        };
        assert!(plan_error(same).contains("never served on the client port"));
        let too_high = ServeSettings {
            listen: Some("127.0.0.1:65500".parse().unwrap()),
            ..named("n1")
        };
        assert!(plan_error(too_high).contains("set --internal-listen"));
    }

    #[test]
    fn all_interfaces_need_an_advertised_address() {
        let everywhere = ServeSettings {
            listen: Some("0.0.0.0:50051".parse().unwrap()),
            ..named("n1")
        };
        let message = plan_error(everywhere.clone());
        assert!(message.contains("add --advertise-addr"), "{message}");
        let advertised = ServeSettings {
            advertise_addr: Some("10.0.0.5:50051".parse().unwrap()),
            ..everywhere
        };
        let plan = advertised.clone().resolve().plan().unwrap();
        assert_eq!(plan.listen, "0.0.0.0:50051".parse().unwrap());
        assert_eq!(plan.node.client_address, "10.0.0.5:50051".parse().unwrap());
        assert_eq!(plan.internal_listen, "0.0.0.0:50151".parse().unwrap());
        assert_eq!(
            plan.node.internal_address,
            "10.0.0.5:50151".parse().unwrap()
        );
        let gossip = ServeSettings {
            gossip_listen: Some("0.0.0.0:7946".parse().unwrap()),
            ..advertised
        };
        let message = plan_error(gossip.clone());
        assert!(message.contains("add --gossip-advertise-addr"), "{message}");
        let plan = ServeSettings {
            gossip_advertise_addr: Some("10.0.0.5:7946".parse().unwrap()),
            ..gossip
        }
        .resolve()
        .plan()
        .unwrap();
        let gossip = plan.gossip.unwrap();
        assert_eq!(gossip.advertise, "10.0.0.5:7946".parse().unwrap());
        assert_eq!(gossip.listen, "0.0.0.0:7946".parse().unwrap());
    }
}
