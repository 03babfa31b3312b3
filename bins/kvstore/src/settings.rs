//! `kvstore serve` settings: one struct read from flags and from a TOML file (the same
//! names, with `_` in TOML and `-` on the command line); flags override the file.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;
use kv_node::{GossipConfig, GossipSettings, Limits, NodeConfig, PeerSpec};
use serde::Deserialize;

/// Every setting of a node. `None` means "not given here".
#[derive(Debug, Clone, Default, Args, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct ServeSettings {
    /// This node's id (e.g. n1).
    #[arg(long)]
    pub(crate) node_id: Option<String>,
    /// Address to serve gRPC on (e.g. 127.0.0.1:50051).
    #[arg(long)]
    pub(crate) listen: Option<SocketAddr>,
    /// Other members as id=host:port, comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub(crate) peers: Vec<String>,
    /// Gossip (UDP) address; turns on SWIM membership instead of a static --peers list.
    #[arg(long)]
    pub(crate) gossip_listen: Option<SocketAddr>,
    /// Gossip addresses of nodes to join through, comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub(crate) seeds: Vec<SocketAddr>,
    /// Found a new cluster: serve with the ring this node sees instead of waiting for a
    /// synced member's ring. Give it to one node when creating a cluster, or to one node
    /// after every node was restarted; never to a node rejoining a running cluster.
    #[arg(long)]
    pub(crate) bootstrap: bool,
    /// Gossip: how often each node probes another, ms (default 1000).
    #[arg(long)]
    pub(crate) probe_period_ms: Option<u64>,
    /// Gossip: how long a probe may take before indirect probes, ms (default 300).
    #[arg(long)]
    pub(crate) probe_rtt_ms: Option<u64>,
    /// Gossip: how long a SUSPECT node has before it is DEAD, ms (default 3000).
    #[arg(long)]
    pub(crate) suspect_timeout_ms: Option<u64>,
    /// Storage engine: fjall (persistent, default) or memory.
    #[arg(long)]
    pub(crate) storage: Option<String>,
    /// Directory for the fjall store (default: data/<node-id>).
    #[arg(long)]
    pub(crate) data_dir: Option<PathBuf>,
    /// When a write is acknowledged: buffer (survives a crash, default) or sync (fdatasync).
    #[arg(long)]
    pub(crate) durability: Option<String>,
    /// Replicas per key, N (default 3).
    #[arg(long = "n")]
    pub(crate) replication_factor: Option<usize>,
    /// Default read quorum, R (default 2).
    #[arg(long = "r")]
    pub(crate) read_quorum: Option<usize>,
    /// Default write quorum, W (default 2).
    #[arg(long = "w")]
    pub(crate) write_quorum: Option<usize>,
    /// Virtual nodes per member (default 256).
    #[arg(long)]
    pub(crate) vnodes: Option<u32>,
    /// Largest key accepted, bytes (default 1024).
    #[arg(long)]
    pub(crate) max_key_bytes: Option<usize>,
    /// Largest value accepted, bytes (default 1048576).
    #[arg(long)]
    pub(crate) max_value_bytes: Option<usize>,
    /// Most sibling values per key before writes are refused (default 64).
    #[arg(long)]
    pub(crate) max_siblings: Option<usize>,
    /// Client request deadline, ms (default 5000).
    #[arg(long)]
    pub(crate) request_timeout_ms: Option<u64>,
    /// Deadline of one call to a peer, ms (default 2000).
    #[arg(long)]
    pub(crate) peer_timeout_ms: Option<u64>,
    /// Log format: text (default) or json.
    #[arg(long)]
    pub(crate) log_format: Option<String>,
}

/// The storage a node runs on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum StorageChoice {
    Memory,
    Fjall {
        data_dir: PathBuf,
        durability: kv_storage::Durability,
    },
}

impl ServeSettings {
    /// Reads a TOML settings file.
    pub(crate) fn from_file(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read config file {}: {e}", path.display()))?;
        toml::from_str(&text).map_err(|e| format!("invalid config file {}: {e}", path.display()))
    }

    /// These settings, with gaps filled from `fallback`.
    pub(crate) fn or(self, fallback: Self) -> Self {
        Self {
            node_id: self.node_id.or(fallback.node_id),
            listen: self.listen.or(fallback.listen),
            peers: if self.peers.is_empty() {
                fallback.peers
            } else {
                self.peers
            },
            gossip_listen: self.gossip_listen.or(fallback.gossip_listen),
            seeds: if self.seeds.is_empty() {
                fallback.seeds
            } else {
                self.seeds
            },
            bootstrap: self.bootstrap || fallback.bootstrap,
            probe_period_ms: self.probe_period_ms.or(fallback.probe_period_ms),
            probe_rtt_ms: self.probe_rtt_ms.or(fallback.probe_rtt_ms),
            suspect_timeout_ms: self.suspect_timeout_ms.or(fallback.suspect_timeout_ms),
            storage: self.storage.or(fallback.storage),
            data_dir: self.data_dir.or(fallback.data_dir),
            durability: self.durability.or(fallback.durability),
            replication_factor: self.replication_factor.or(fallback.replication_factor),
            read_quorum: self.read_quorum.or(fallback.read_quorum),
            write_quorum: self.write_quorum.or(fallback.write_quorum),
            vnodes: self.vnodes.or(fallback.vnodes),
            max_key_bytes: self.max_key_bytes.or(fallback.max_key_bytes),
            max_value_bytes: self.max_value_bytes.or(fallback.max_value_bytes),
            max_siblings: self.max_siblings.or(fallback.max_siblings),
            request_timeout_ms: self.request_timeout_ms.or(fallback.request_timeout_ms),
            peer_timeout_ms: self.peer_timeout_ms.or(fallback.peer_timeout_ms),
            log_format: self.log_format.or(fallback.log_format),
        }
    }

    /// The storage engine these settings ask for.
    pub(crate) fn storage(&self, node_id: &str) -> Result<StorageChoice, String> {
        match self.storage.as_deref().unwrap_or("fjall") {
            "memory" => Ok(StorageChoice::Memory),
            "fjall" => Ok(StorageChoice::Fjall {
                data_dir: self
                    .data_dir
                    .clone()
                    .unwrap_or_else(|| PathBuf::from("data").join(node_id)),
                durability: self.durability.as_deref().unwrap_or("buffer").parse()?,
            }),
            other => Err(format!("unknown storage {other:?}; use fjall or memory")),
        }
    }

    /// Gossip settings, when gossip is on (`--gossip-listen`).
    pub(crate) fn gossip(&self) -> Result<Option<GossipSettings>, String> {
        let Some(listen) = self.gossip_listen else {
            if !self.seeds.is_empty() {
                return Err("--seeds needs --gossip-listen".into());
            }
            if self.bootstrap {
                return Err("--bootstrap needs --gossip-listen".into());
            }
            return Ok(None);
        };
        if !self.peers.is_empty() {
            return Err(
                "use either --peers (static membership) or --gossip-listen with --seeds, not both"
                    .into(),
            );
        }
        let mut config = GossipConfig::lan();
        if let Some(ms) = self.probe_period_ms {
            config.probe_period = Duration::from_millis(ms);
        }
        if let Some(ms) = self.probe_rtt_ms {
            config.probe_rtt = Duration::from_millis(ms);
        }
        if let Some(ms) = self.suspect_timeout_ms {
            config.suspect_to_down = Duration::from_millis(ms);
        }
        config
            .validate()
            .map_err(|e| format!("gossip settings: {e}"))?;
        Ok(Some(GossipSettings {
            listen,
            seeds: self.seeds.clone(),
            config,
            identity_bump: None,
            bootstrap: self.bootstrap,
        }))
    }

    /// The node configuration these settings describe.
    pub(crate) fn node_config(&self) -> Result<NodeConfig, String> {
        let node_id = self.node_id.clone().ok_or("--node-id is required")?;
        let listen = self
            .listen
            .ok_or("--listen is required (e.g. 127.0.0.1:50051)")?;
        let mut config = NodeConfig::new(node_id, listen);
        config.peers = self
            .peers
            .iter()
            .map(|p| parse_peer(p))
            .collect::<Result<_, _>>()?;
        let defaults = Limits::default();
        config.limits = Limits {
            max_key_bytes: self.max_key_bytes.unwrap_or(defaults.max_key_bytes),
            max_value_bytes: self.max_value_bytes.unwrap_or(defaults.max_value_bytes),
            max_siblings: self.max_siblings.unwrap_or(defaults.max_siblings),
            ..defaults
        };
        if let Some(n) = self.replication_factor {
            config.replication_factor = n;
        }
        if let Some(r) = self.read_quorum {
            config.read_quorum = r;
        }
        if let Some(w) = self.write_quorum {
            config.write_quorum = w;
        }
        if let Some(vnodes) = self.vnodes {
            config.vnodes = vnodes;
        }
        if let Some(ms) = self.request_timeout_ms {
            config.request_timeout = Duration::from_millis(ms);
        }
        if let Some(ms) = self.peer_timeout_ms {
            config.peer_timeout = Duration::from_millis(ms);
        }
        config.validate().map_err(|e| e.to_string())?;
        Ok(config)
    }
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

    #[test]
    fn flags_override_the_file_and_fill_from_it() {
        let file: ServeSettings = toml::from_str(
            r#"
            node_id = "n1"
            listen = "127.0.0.1:50051"
            peers = ["n2=127.0.0.1:50052"]
            write_quorum = 3
            storage = "memory"
            "#,
        )
        .unwrap();
        let flags = ServeSettings {
            write_quorum: Some(1),
            ..ServeSettings::default()
        };
        let config = flags.or(file.clone()).node_config().unwrap();
        assert_eq!(config.node_id, "n1");
        assert_eq!(config.write_quorum, 1);
        assert_eq!(config.peers.len(), 1);
        assert_eq!(file.storage("n1").unwrap(), StorageChoice::Memory);
    }

    #[test]
    fn bad_settings_are_explained() {
        let unknown = toml::from_str::<ServeSettings>("nodes = 3");
        assert!(unknown.unwrap_err().to_string().contains("unknown field"));
        let bad_peer = ServeSettings {
            node_id: Some("n1".into()),
            listen: Some("127.0.0.1:1".parse().unwrap()),
            peers: vec!["n2".into()],
            ..ServeSettings::default()
        };
        assert!(bad_peer.node_config().unwrap_err().contains("id=host:port"));
        let bad_quorum = ServeSettings {
            node_id: Some("n1".into()),
            listen: Some("127.0.0.1:1".parse().unwrap()),
            write_quorum: Some(4),
            ..ServeSettings::default()
        };
        assert!(bad_quorum.node_config().unwrap_err().contains("W=4"));
        let both = ServeSettings {
            gossip_listen: Some("127.0.0.1:7946".parse().unwrap()),
            peers: vec!["n2=127.0.0.1:2".into()],
            ..ServeSettings::default()
        };
        assert!(both.gossip().unwrap_err().contains("not both"));
        let bad_timing = ServeSettings {
            gossip_listen: Some("127.0.0.1:7946".parse().unwrap()),
            probe_rtt_ms: Some(5000),
            ..ServeSettings::default()
        };
        assert!(bad_timing.gossip().unwrap_err().contains("probe RTT"));
    }
}
