//! `kvstore serve` settings: every setting is declared once, below, with its help and the
//! field it sets. Flags and the TOML file (the same names, `_` in TOML and `-` on the
//! command line) only override; defaults come from where the node takes them
//! (`NodeConfig::new`, `GossipConfig::lan`, [`ServeOptions::default`]) and `--help`
//! prints them from there.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use kv_node::{GossipConfig, GossipSettings, NodeConfig, PeerSpec, StorageChoice};

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
plain_knob!(usize, u32, String);

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
pub(crate) struct ServeOptions {
    node_id: Option<String>,
    listen: Option<SocketAddr>,
    peers: Vec<String>,
    gossip_listen: Option<SocketAddr>,
    seeds: Vec<SocketAddr>,
    bootstrap: bool,
    storage: String,
    data_dir: Option<PathBuf>,
    durability: String,
    pub(crate) log_format: String,
}

impl Default for ServeOptions {
    fn default() -> Self {
        Self {
            node_id: None,
            listen: None,
            peers: Vec::new(),
            gossip_listen: None,
            seeds: Vec::new(),
            bootstrap: false,
            storage: "fjall".into(),
            data_dir: None,
            durability: "buffer".into(),
            log_format: "text".into(),
        }
    }
}

/// Everything `kvstore serve` configures: the node, its gossip, and how it is served.
#[derive(Debug, Clone)]
pub(crate) struct Resolved {
    node: NodeConfig,
    gossip: GossipConfig,
    pub(crate) serve: ServeOptions,
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
        pub(crate) struct ServeSettings {
            $(
                $(#[doc = $doc])+
                #[arg($($arg)*)]
                pub(crate) $field: Option<$ty>,
            )+
        }

        impl ServeSettings {
            /// These settings, with gaps filled from `fallback`.
            pub(crate) fn or(self, fallback: Self) -> Self {
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
        pub(crate) fn defaults() -> Vec<(&'static str, String)> {
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
    /// Address to serve gRPC on (e.g. 127.0.0.1:50051); required.
    #[arg(long)]
    listen: SocketAddr => serve.listen;
    /// Other members as id=host:port, comma-separated (static membership).
    #[arg(long, value_delimiter = ',')]
    peers: Vec<String> => serve.peers;
    /// Gossip (UDP) address; turns on SWIM membership instead of a static --peers list.
    #[arg(long)]
    gossip_listen: SocketAddr => serve.gossip_listen;
    /// Gossip addresses of nodes to join through, comma-separated.
    #[arg(long, value_delimiter = ',')]
    seeds: Vec<SocketAddr> => serve.seeds;
    /// Found a new cluster: serve with the ring this node sees instead of waiting for a
    /// synced member's ring. Give it to one node when creating a cluster, or to one node
    /// after every node was restarted; never to a node rejoining a running cluster.
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
    /// Log format: text or json.
    #[arg(long)]
    log_format: String => serve.log_format;
}

/// How a node built from these settings runs.
#[derive(Debug)]
pub(crate) struct Plan {
    pub(crate) node: NodeConfig,
    pub(crate) gossip: Option<GossipSettings>,
    pub(crate) storage: StorageChoice,
}

impl ServeSettings {
    /// Reads a TOML settings file; unknown keys are an error that names them.
    pub(crate) fn from_file(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read config file {}: {e}", path.display()))?;
        toml::from_str(&text).map_err(|e| format!("invalid config file {}: {e}", path.display()))
    }

    /// The defaults with these settings applied.
    pub(crate) fn resolve(self) -> Resolved {
        self.apply(Resolved::default())
    }
}

impl Resolved {
    /// Checks the settings together and turns them into what the node is built from.
    pub(crate) fn plan(self) -> Result<Plan, String> {
        let Self {
            mut node,
            gossip,
            serve,
        } = self;
        node.node_id = serve.node_id.clone().ok_or("--node-id is required")?;
        node.grpc_address = serve
            .listen
            .ok_or("--listen is required (e.g. 127.0.0.1:50051)")?;
        node.peers = serve
            .peers
            .iter()
            .map(|p| parse_peer(p))
            .collect::<Result<_, _>>()?;
        node.validate().map_err(|e| e.to_string())?;
        let storage = storage_choice(&serve, &node.node_id)?;
        let gossip = gossip_settings(&serve, gossip)?;
        Ok(Plan {
            node,
            gossip,
            storage,
        })
    }
}

fn storage_choice(serve: &ServeOptions, node_id: &str) -> Result<StorageChoice, String> {
    match serve.storage.as_str() {
        "memory" => Ok(StorageChoice::Memory),
        "fjall" => Ok(StorageChoice::Fjall {
            data_dir: serve
                .data_dir
                .clone()
                .unwrap_or_else(|| PathBuf::from("data").join(node_id)),
            durability: serve.durability.parse()?,
        }),
        other => Err(format!("unknown storage {other:?}; use fjall or memory")),
    }
}

fn gossip_settings(
    serve: &ServeOptions,
    config: GossipConfig,
) -> Result<Option<GossipSettings>, String> {
    let Some(listen) = serve.gossip_listen else {
        if !serve.seeds.is_empty() {
            return Err("--seeds needs --gossip-listen".into());
        }
        if serve.bootstrap {
            return Err("--bootstrap needs --gossip-listen".into());
        }
        return Ok(None);
    };
    if !serve.peers.is_empty() {
        return Err(
            "use either --peers (static membership) or --gossip-listen with --seeds, not both"
                .into(),
        );
    }
    config
        .validate()
        .map_err(|e| format!("gossip settings: {e}"))?;
    Ok(Some(GossipSettings {
        listen,
        seeds: serve.seeds.clone(),
        config,
        bootstrap: serve.bootstrap,
    }))
}

fn parse_peer(spec: &str) -> Result<PeerSpec, String> {
    let (node_id, address) = spec.split_once('=').ok_or_else(|| {
        format!("peer {spec:?} must look like id=host:port (e.g. n2=127.0.0.1:50052)")
    })?;
    let grpc_address = address
        .parse()
        .map_err(|e| format!("peer {spec:?}: bad address {address:?}: {e}"))?;
    Ok(PeerSpec {
        node_id: node_id.to_owned(),
        grpc_address,
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

    #[test]
    fn bad_settings_are_explained() {
        let unknown = toml::from_str::<ServeSettings>("nodes = 3");
        let message = unknown.unwrap_err().to_string();
        assert!(message.contains("unknown field `nodes`"), "{message}");
        let bad_peer = ServeSettings {
            peers: Some(vec!["n2".into()]),
            ..named("n1")
        };
        assert!(
            bad_peer
                .resolve()
                .plan()
                .unwrap_err()
                .contains("id=host:port")
        );
        let bad_quorum = ServeSettings {
            write_quorum: Some(4),
            ..named("n1")
        };
        assert!(bad_quorum.resolve().plan().unwrap_err().contains("W=4"));
        let both = ServeSettings {
            gossip_listen: Some("127.0.0.1:7946".parse().unwrap()),
            peers: Some(vec!["n2=127.0.0.1:2".into()]),
            ..named("n1")
        };
        assert!(both.resolve().plan().unwrap_err().contains("not both"));
        let bad_timing = ServeSettings {
            gossip_listen: Some("127.0.0.1:7946".parse().unwrap()),
            probe_rtt_ms: Some(5000),
            ..named("n1")
        };
        assert!(
            bad_timing
                .resolve()
                .plan()
                .unwrap_err()
                .contains("probe RTT")
        );
        let missing = ServeSettings::default().resolve().plan().unwrap_err();
        assert!(missing.contains("--node-id is required"), "{missing}");
    }
}
