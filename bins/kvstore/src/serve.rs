//! `kvstore serve`: read the settings, start logging, build the node with
//! `kv_node::NodeBuilder`, serve it with `kv_grpc::serve` until SIGINT or SIGTERM, then
//! shut down gracefully.

use std::time::Duration;

use kv_grpc::GrpcTransport;
use kv_node::NodeBuilder;
use tracing_subscriber::EnvFilter;

use crate::cli::ServeArgs;
use kv_config::ServeSettings;

/// How long shutdown waits for gossip to tell peers this node is leaving.
const GOSSIP_LEAVE_GRACE: Duration = Duration::from_secs(2);

pub(crate) async fn run(args: ServeArgs) -> Result<(), String> {
    let file = match &args.config {
        Some(path) => ServeSettings::from_file(path).map_err(|e| e.to_string())?,
        None => ServeSettings::default(),
    };
    let resolved = args.settings.or(file).resolve();
    init_logging(
        &resolved.serve.log_format,
        resolved.serve.log_filter.as_deref(),
    )?;
    let plan = resolved.plan().map_err(|e| e.to_string())?;
    let transport = GrpcTransport::new(&plan.node.peers, plan.node.peer_timeout);
    let address = plan.listen;
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .map_err(|e| format!("cannot listen on {address}: {e}"))?;
    let mut builder = NodeBuilder::new(plan.node, transport)
        .storage(plan.storage.open().map_err(|e| e.to_string())?);
    if let Some(gossip) = plan.gossip {
        tracing::info!(
            gossip = %gossip.listen,
            advertised = %gossip.advertise,
            seeds = ?gossip.seeds,
            "gossip on"
        );
        builder = builder.gossip(gossip);
    }
    let running = builder.start().await.map_err(|e| e.to_string())?;
    let config = running.node().config();
    tracing::info!(
        node_id = %config.node_id,
        listen = %address,
        advertised = %config.grpc_address,
        peers = config.peers.len(),
        n = config.replication_factor,
        r = config.read_quorum,
        w = config.write_quorum,
        "serving"
    );
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let admin = match plan.admin_listen {
        Some(address) => Some(start_admin(&running, address, stopped).await?),
        None => None,
    };
    let served = kv_grpc::serve(
        std::sync::Arc::clone(running.node()),
        listener,
        shutdown_signal(),
    )
    .await;
    let _ = stop.send(true);
    if let Some(admin) = admin {
        let _ = admin.await;
    }
    running.shut_down(GOSSIP_LEAVE_GRACE).await;
    served.map_err(|e| e.to_string())?;
    tracing::info!("stopped");
    Ok(())
}

/// Serves the admin endpoints on `address` until `stopped` turns true.
async fn start_admin(
    running: &kv_node::RunningNode<GrpcTransport>,
    address: std::net::SocketAddr,
    mut stopped: tokio::sync::watch::Receiver<bool>,
) -> Result<tokio::task::JoinHandle<()>, String> {
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .map_err(|e| format!("cannot listen on {address} (--admin-listen): {e}"))?;
    tracing::info!(admin = %address, "admin endpoints: /healthz /readyz /metrics");
    let node = std::sync::Arc::clone(running.node());
    Ok(tokio::spawn(async move {
        let stop = async move {
            let _ = stopped.wait_for(|stop| *stop).await;
        };
        if let Err(error) = kv_admin::serve_admin(node, listener, stop).await {
            tracing::warn!(%error, "the admin listener failed");
        }
    }))
}

fn init_logging(format: &str, filter: Option<&str>) -> Result<(), String> {
    let filter = match filter {
        Some(directives) => EnvFilter::try_new(directives)
            .map_err(|e| format!("bad --log-filter {directives:?}: {e}"))?,
        None => EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()));
    let result = match format {
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
