//! `kvstore serve`: configure logging and storage, build the node, serve until SIGINT or
//! SIGTERM, then shut down gracefully.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use kv_node::{GrpcTransport, Node};
use kv_storage::{FjallStore, MemoryStore, Storage};
use tracing_subscriber::EnvFilter;

use crate::cli::ServeArgs;
use crate::settings::{ServeSettings, StorageChoice};

pub(crate) async fn run(args: ServeArgs) -> Result<(), String> {
    let file = match &args.config {
        Some(path) => ServeSettings::from_file(path)?,
        None => ServeSettings::default(),
    };
    let settings = args.settings.or(file);
    init_logging(settings.log_format.as_deref())?;
    let mut config = settings.node_config()?;
    let storage: Arc<dyn Storage> = match settings.storage(&config.node_id)? {
        StorageChoice::Memory => {
            // A memory node forgets its versions on restart, so it must never mint a dot
            // it minted before: give each start its own actor id.
            let started_ms = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis());
            config.actor_id = format!("{}.{started_ms}", config.node_id);
            Arc::new(MemoryStore::new(kv_ring::key_hash))
        }
        StorageChoice::Fjall {
            data_dir,
            durability,
        } => {
            std::fs::create_dir_all(&data_dir)
                .map_err(|e| format!("cannot create data dir {}: {e}", data_dir.display()))?;
            let store = FjallStore::open(&data_dir, kv_ring::key_hash, durability)
                .map_err(|e| format!("cannot open store in {}: {e}", data_dir.display()))?;
            Arc::new(store)
        }
    };
    let gossip = settings.gossip()?;
    let transport = GrpcTransport::new(&config.peers, config.peer_timeout);
    let listener = tokio::net::TcpListener::bind(config.grpc_address)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", config.grpc_address))?;
    tracing::info!(
        node_id = %config.node_id,
        listen = %config.grpc_address,
        peers = config.peers.len(),
        n = config.replication_factor,
        r = config.read_quorum,
        w = config.write_quorum,
        "serving"
    );
    let (stop, stopped) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown_signal().await;
        let _ = stop.send(true);
    });
    let (node, gossip_task) = match gossip {
        None => (Node::new(config, storage, transport)?, None),
        Some(gossip) => {
            let node = Node::with_gossip(config, storage, transport)?;
            let task = start_gossip(&node, gossip, stopped.clone()).await?;
            (node, Some(task))
        }
    };
    kv_node::serve(node, listener, wait_for(stopped)).await?;
    if let Some(task) = gossip_task
        && tokio::time::timeout(GOSSIP_LEAVE_GRACE, task)
            .await
            .is_err()
    {
        tracing::warn!("gossip did not finish leaving the cluster in time");
    }
    tracing::info!("stopped");
    Ok(())
}

/// How long shutdown waits for gossip to tell peers this node is leaving.
const GOSSIP_LEAVE_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// Binds the gossip socket and runs the driver until shutdown; returns its task.
async fn start_gossip(
    node: &Arc<Node<GrpcTransport>>,
    settings: kv_node::GossipSettings,
    stopped: tokio::sync::watch::Receiver<bool>,
) -> Result<tokio::task::JoinHandle<()>, String> {
    let socket = tokio::net::UdpSocket::bind(settings.listen)
        .await
        .map_err(|e| format!("cannot bind gossip socket {}: {e}", settings.listen))?;
    let commands = node
        .attach_membership()
        .ok_or("membership already attached")?;
    tracing::info!(gossip = %settings.listen, seeds = ?settings.seeds, "gossip on");
    let node = Arc::clone(node);
    Ok(tokio::spawn(async move {
        let result = kv_node::run_gossip(node, socket, settings, commands, wait_for(stopped)).await;
        if let Err(error) = result {
            tracing::error!(%error, "gossip stopped");
        }
    }))
}

async fn wait_for(mut stopped: tokio::sync::watch::Receiver<bool>) {
    let _ = stopped.wait_for(|stop| *stop).await;
}

fn init_logging(format: Option<&str>) -> Result<(), String> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()));
    let result = match format.unwrap_or("text") {
        "text" => builder.try_init(),
        "json" => builder.json().try_init(),
        other => return Err(format!("unknown log format {other:?}; use text or json")),
    };
    result.map_err(|e| format!("cannot start logging: {e}"))
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(signal) => signal,
                Err(error) => {
                    tracing::warn!(%error, "cannot watch SIGTERM; stopping on SIGINT only");
                    let _ = interrupt.await;
                    return;
                }
            };
        tokio::select! {
            _ = interrupt => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
    tracing::info!("shutdown requested; draining in-flight requests");
}
