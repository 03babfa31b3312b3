//! A kvstore node's admin HTTP listener, for orchestrators and monitoring:
//!
//! - `GET /healthz`: 200 while the process runs (liveness);
//! - `GET /readyz`: 200 once the node serves client requests, 503 with the reason before
//!   (it is joining, or has no ring it can trust yet);
//! - `GET /metrics`: the node's metrics in the Prometheus (OpenMetrics) text format:
//!   client requests by operation and outcome with their latency (recorded by the node),
//!   and, computed at each scrape, the store's keys and bytes, members by state, the
//!   ring's version, members and live versions, read repairs, anti-entropy and transfer
//!   work, and the last cleanup;
//! - `GET /status`: a page that refreshes itself: the members as this node sees them, a
//!   picture of the ring with each node's share, the ring versions.
//!
//! It is served on its own address (`--admin-listen`), apart from the gRPC listeners.

#![warn(missing_docs)]

mod scrape;
mod status;

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use kv_node::{Node, PeerTransport};
use tokio::net::TcpListener;

/// The content type of `/metrics` (what `prometheus_client` encodes).
pub const METRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Serves the admin endpoints of `node` on `listener` until `shutdown` completes.
pub async fn serve_admin<T: PeerTransport + Send + Sync + 'static>(
    node: Arc<Node<T>>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(node))
        .with_graceful_shutdown(shutdown)
        .await
}

/// The admin routes, for tests that drive them without a socket.
pub fn router<T: PeerTransport + Send + Sync + 'static>(node: Arc<Node<T>>) -> Router {
    let ready = Arc::clone(&node);
    let page = Arc::clone(&node);
    Router::new()
        .route(
            "/status",
            get(move || async move { axum::response::Html(status::render(&page).await) }),
        )
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(move || async move { readiness(&ready) }))
        .route("/metrics", get(move || async move { metrics(&node) }))
}

fn readiness<T: PeerTransport>(node: &Node<T>) -> axum::response::Response {
    let health = node.health();
    if health.serving {
        (StatusCode::OK, format!("{} serving\n", health.node_id)).into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "{} is not serving yet: it has no ring it can trust (joining, or waiting to \
                 exchange rings with a member)\n",
                health.node_id
            ),
        )
            .into_response()
    }
}

fn metrics<T: PeerTransport>(node: &Node<T>) -> axum::response::Response {
    match scrape::encode(node) {
        Ok(text) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, METRICS_CONTENT_TYPE)],
            text,
        )
            .into_response(),
        Err(error) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot encode the metrics: {error}\n"),
        )
            .into_response(),
    }
}
