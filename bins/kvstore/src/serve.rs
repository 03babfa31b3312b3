//! `kvstore serve`: read the settings, start logging, build the node with
//! `kv_node::NodeBuilder`, serve its client API (`kv_grpc::serve_clients`) and its
//! node-to-node service (`kv_grpc::serve_internal`) on their own listeners until SIGINT
//! or SIGTERM, then shut down gracefully.

use std::sync::Arc;
use std::time::Duration;

use kv_grpc::GrpcTransport;
use kv_node::NodeBuilder;
use tracing_subscriber::EnvFilter;

use crate::cli::ServeArgs;
use kv_config::ServeSettings;

/// How long shutdown waits for gossip to tell peers this node is leaving.
const GOSSIP_LEAVE_GRACE: Duration = Duration::from_secs(2);
/// How long shutdown waits for in-flight requests (and open connections) to finish.
const DRAIN_GRACE: Duration = Duration::from_secs(5);

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
    let (tls, transport) = transport(&plan)?;
    let access = client_access(&plan)?;
    let (client_listener, internal_listener) = bind_listeners(&plan).await?;
    let mut builder = NodeBuilder::new(plan.node, transport)
        .storage(plan.storage.open().map_err(|e| e.to_string())?);
    if let Some(gossip) = plan.gossip {
        tracing::info!(
            gossip = %gossip.listen,
            advertised = %gossip.advertise,
            seeds = ?gossip.seeds,
            sealed_with = ?gossip.keyring.as_ref().map(kv_node::KeyringFile::key_ids),
            "gossip on"
        );
        builder = builder.gossip(gossip);
    }
    let running = builder.start().await.map_err(|e| e.to_string())?;
    log_serving(
        plan.listen,
        plan.internal_listen,
        running.node().config(),
        tls.is_some(),
    );
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let stop = std::sync::Arc::new(stop);
    let admin = match plan.admin_listen {
        Some(address) => Some(start_admin(&running, address, stopped.clone()).await?),
        None => None,
    };
    let reloader = tls.clone().map(|tls| {
        tokio::spawn(kv_grpc::tls::reload_periodically(
            tls,
            stopped_signal(stopped.clone()),
        ))
    });
    let signal = tokio::spawn({
        let stop = std::sync::Arc::clone(&stop);
        async move {
            shutdown_signal().await;
            stop.send_replace(true);
        }
    });
    // Either server failing stops the other: a node reachable by clients but not by its
    // peers (or the reverse) must not linger.
    let node = running.node();
    let drain_deadline = stopped_signal(stopped.clone());
    let servers = async {
        tokio::join!(
            stop_all_after(
                &stop,
                kv_grpc::serve_clients(
                    std::sync::Arc::clone(node),
                    client_listener,
                    tls.clone(),
                    access,
                    stopped_signal(stopped.clone())
                )
            ),
            stop_all_after(
                &stop,
                kv_grpc::serve_internal(
                    std::sync::Arc::clone(node),
                    internal_listener,
                    tls.clone(),
                    kv_grpc::InternalLimits {
                        max_concurrent_calls: plan.max_concurrent_internal_calls,
                        max_per_peer: plan.max_concurrent_internal_calls_per_peer,
                    },
                    stopped_signal(stopped)
                )
            ),
        )
    };
    let (clients, internal) = Box::pin(drained_within_grace(servers, drain_deadline)).await;
    signal.abort();
    if let Some(reloader) = reloader {
        reloader.abort();
    }
    if let Some(admin) = admin {
        let _ = admin.await;
    }
    running.shut_down(GOSSIP_LEAVE_GRACE).await;
    clients.map_err(|e| format!("client listener: {e}"))?;
    internal.map_err(|e| format!("internal listener: {e}"))?;
    tracing::info!("stopped");
    Ok(())
}

/// The node's TLS configuration, if any, and its transport to peers (over mutual TLS
/// when TLS is on).
fn transport(
    plan: &kv_config::Plan,
) -> Result<(Option<Arc<kv_grpc::NodeTls>>, GrpcTransport), String> {
    let (peers, timeout) = (&plan.node.peers, plan.node.peer_timeout);
    let Some(files) = &plan.tls else {
        return Ok((None, GrpcTransport::new(peers, timeout)));
    };
    let files = kv_grpc::TlsFiles {
        cert: files.cert.clone(),
        key: files.key.clone(),
        ca: files.ca.clone(),
    };
    let tls = kv_grpc::NodeTls::load(files).map_err(|e| e.to_string())?;
    let transport = GrpcTransport::with_tls(peers, timeout, Arc::clone(&tls));
    Ok((Some(tls), transport))
}

/// How the client listener admits calls: the token file, loaded and checked now, and the
/// bound on calls in flight.
fn client_access(plan: &kv_config::Plan) -> Result<kv_grpc::ClientAccess, String> {
    let tokens = if let Some(path) = &plan.auth_tokens {
        let table = kv_grpc::TokenTable::load(path).map_err(|e| format!("--auth-tokens: {e}"))?;
        tracing::info!(tokens = table.len(), file = %path.display(), "client calls need a bearer token");
        Some(table)
    } else {
        tracing::warn!("no --auth-tokens: every client may read, write and change the ring");
        None
    };
    Ok(kv_grpc::ClientAccess {
        tokens,
        max_concurrent_calls: plan.max_concurrent_client_calls,
    })
}

/// Binds the client and internal listeners, naming the flag to change when one is taken.
async fn bind_listeners(
    plan: &kv_config::Plan,
) -> Result<(tokio::net::TcpListener, tokio::net::TcpListener), String> {
    let bind = |address, flag| async move {
        tokio::net::TcpListener::bind(address)
            .await
            .map_err(|e| format!("cannot listen on {address} ({flag}): {e}"))
    };
    Ok((
        bind(plan.listen, "--listen").await?,
        bind(plan.internal_listen, "--internal-listen").await?,
    ))
}

/// Resolves once `stopped` turns true (or its sender is gone).
async fn stopped_signal(mut stopped: tokio::sync::watch::Receiver<bool>) {
    let _ = stopped.wait_for(|stop| *stop).await;
}

/// The start-up line: where the node serves and with which settings.
fn log_serving(
    listen: std::net::SocketAddr,
    internal_listen: std::net::SocketAddr,
    config: &kv_node::NodeConfig,
    tls: bool,
) {
    tracing::info!(
        node_id = %config.node_id,
        listen = %listen,
        advertised = %config.client_address,
        internal_listen = %internal_listen,
        internal_advertised = %config.internal_address,
        peers = config.peers.len(),
        n = config.replication_factor,
        r = config.read_quorum,
        w = config.write_quorum,
        tls,
        "serving"
    );
}

/// Runs both servers until they drain, or until [`DRAIN_GRACE`] after `stop_requested`:
/// a client that keeps its connection open would hold a drain forever, so past the grace
/// what is still in flight is cut (a write cut there was not acknowledged).
async fn drained_within_grace<A, B>(
    servers: impl std::future::Future<Output = (Result<(), A>, Result<(), B>)>,
    stop_requested: impl std::future::Future<Output = ()>,
) -> (Result<(), A>, Result<(), B>) {
    let deadline = async {
        stop_requested.await;
        tokio::time::sleep(DRAIN_GRACE).await;
    };
    tokio::select! {
        results = servers => results,
        () = deadline => {
            tracing::warn!(grace = ?DRAIN_GRACE, "requests still in flight after the drain grace; stopping anyway");
            (Ok(()), Ok(()))
        }
    }
}

/// Runs `server` to its end, then tells everything else to stop.
async fn stop_all_after<E>(
    stop: &tokio::sync::watch::Sender<bool>,
    server: impl std::future::Future<Output = Result<(), E>>,
) -> Result<(), E> {
    let result = server.await;
    stop.send_replace(true);
    result
}

/// Serves the admin endpoints on `address` until `stopped` turns true.
async fn start_admin(
    running: &kv_node::RunningNode<GrpcTransport>,
    address: std::net::SocketAddr,
    stopped: tokio::sync::watch::Receiver<bool>,
) -> Result<tokio::task::JoinHandle<()>, String> {
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .map_err(|e| format!("cannot listen on {address} (--admin-listen): {e}"))?;
    tracing::info!(admin = %address, "admin endpoints: /healthz /readyz /metrics");
    let node = std::sync::Arc::clone(running.node());
    Ok(tokio::spawn(async move {
        if let Err(error) = kv_admin::serve_admin(node, listener, stopped_signal(stopped)).await {
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
