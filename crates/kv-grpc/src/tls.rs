//! Mutual TLS for a node (rustls, ring provider): its certificate and key, and the CA
//! that signs every node's certificate. The internal listener requires a client
//! certificate from that CA; the client listener serves TLS without asking for one
//! (clients prove who they are with tokens); outgoing peer calls present the node's
//! certificate and check the peer's against the CA and the IP address dialled.
//!
//! The files are re-read by [`NodeTls::reload_if_changed`] (the server calls it every
//! [`RELOAD_EVERY`]): new connections use the new certificate, open ones keep theirs, so
//! certificates rotate without a restart. A file that does not load keeps the old
//! configuration in place.

use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use thiserror::Error;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio_rustls::{TlsAcceptor, TlsConnector};

/// How often the certificate files are checked for a change.
pub const RELOAD_EVERY: Duration = Duration::from_secs(2);
/// How long a client has to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Most TLS handshakes in progress at once per listener; more connections wait.
const MAX_HANDSHAKES: usize = 256;
/// Handshaken connections waiting for the server to take them.
const ACCEPTED_QUEUE: usize = 64;

/// Where a node's TLS material lives (PEM files).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The node's certificate chain (it must name the node's IP addresses, and allow
    /// both server and client authentication).
    pub cert: PathBuf,
    /// The certificate's private key.
    pub key: PathBuf,
    /// The CA certificate(s) every node's certificate is checked against.
    pub ca: PathBuf,
}

/// Why TLS material could not be used; names the file.
#[derive(Debug, Error)]
pub enum TlsError {
    /// A file could not be read or holds no usable PEM item.
    #[error("{what} {path}: {why}")]
    File {
        /// Which file (certificate, key, CA).
        what: &'static str,
        /// Its path.
        path: String,
        /// What is wrong.
        why: String,
    },
    /// rustls refused the combination (e.g. the key does not match the certificate).
    #[error("TLS configuration: {0}")]
    Config(String),
}

/// A node's TLS configurations, rebuilt when its files change.
pub struct NodeTls {
    files: TlsFiles,
    current: RwLock<Loaded>,
    /// The contents of files that failed to load, so they are not retried (and
    /// reported) every period.
    refused: std::sync::Mutex<Vec<u8>>,
}

impl fmt::Debug for NodeTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeTls")
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

struct Loaded {
    contents: Vec<u8>,
    client_listener: Arc<ServerConfig>,
    internal_listener: Arc<ServerConfig>,
    peer: Arc<ClientConfig>,
}

/// Which listener a TLS acceptor serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    /// The client API: server authentication only.
    Client,
    /// The node-to-node service: a client certificate from the CA is required.
    Internal,
}

impl NodeTls {
    /// Loads and checks `files`.
    pub fn load(files: TlsFiles) -> Result<Arc<Self>, TlsError> {
        let loaded = build(&files)?;
        Ok(Arc::new(Self {
            files,
            current: RwLock::new(loaded),
            refused: std::sync::Mutex::new(Vec::new()),
        }))
    }

    /// The files.
    pub fn files(&self) -> &TlsFiles {
        &self.files
    }

    /// Re-reads the files; installs them if they changed and load. `Ok(true)` when a
    /// new configuration is in place.
    pub fn reload_if_changed(&self) -> Result<bool, TlsError> {
        let contents = read_all(&self.files)?;
        let mut refused = self.refused.lock().unwrap_or_else(PoisonError::into_inner);
        if contents == self.read().contents || contents == *refused {
            return Ok(false);
        }
        let loaded = build(&self.files).inspect_err(|_| refused.clone_from(&contents))?;
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = loaded;
        Ok(true)
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Loaded> {
        self.current.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn server_config(&self, listener: Listener) -> Arc<ServerConfig> {
        let loaded = self.read();
        match listener {
            Listener::Client => Arc::clone(&loaded.client_listener),
            Listener::Internal => Arc::clone(&loaded.internal_listener),
        }
    }

    fn peer_config(&self) -> Arc<ClientConfig> {
        Arc::clone(&self.read().peer)
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn file_error(what: &'static str, path: &Path, why: impl fmt::Display) -> TlsError {
    TlsError::File {
        what,
        path: path.display().to_string(),
        why: why.to_string(),
    }
}

fn read_all(files: &TlsFiles) -> Result<Vec<u8>, TlsError> {
    let mut contents = Vec::new();
    for (what, path) in [
        ("certificate", &files.cert),
        ("key", &files.key),
        ("CA", &files.ca),
    ] {
        contents.extend(std::fs::read(path).map_err(|e| file_error(what, path, e))?);
    }
    Ok(contents)
}

fn certificates(what: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_error(what, path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(what, path, e))?;
    if certs.is_empty() {
        return Err(file_error(what, path, "no PEM certificate in it"));
    }
    Ok(certs)
}

fn build(files: &TlsFiles) -> Result<Loaded, TlsError> {
    let contents = read_all(files)?;
    let chain = certificates("certificate", &files.cert)?;
    let key =
        PrivateKeyDer::from_pem_file(&files.key).map_err(|e| file_error("key", &files.key, e))?;
    let mut roots = RootCertStore::empty();
    for ca in certificates("CA", &files.ca)? {
        roots.add(ca).map_err(|e| file_error("CA", &files.ca, e))?;
    }
    let roots = Arc::new(roots);
    let config = |e: rustls::Error| TlsError::Config(e.to_string());
    let server = || {
        ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(config)
    };
    let mut client_listener = server()?
        .with_no_client_auth()
        .with_single_cert(chain.clone(), key.clone_key())
        .map_err(config)?;
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::clone(&roots), provider())
        .build()
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let mut internal_listener = server()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain.clone(), key.clone_key())
        .map_err(config)?;
    let mut peer = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(config)?
        .with_root_certificates(Arc::clone(&roots))
        .with_client_auth_cert(chain, key)
        .map_err(config)?;
    for alpn in [
        &mut client_listener.alpn_protocols,
        &mut internal_listener.alpn_protocols,
        &mut peer.alpn_protocols,
    ] {
        *alpn = vec![b"h2".to_vec()];
    }
    Ok(Loaded {
        contents,
        client_listener: Arc::new(client_listener),
        internal_listener: Arc::new(internal_listener),
        peer: Arc::new(peer),
    })
}

/// A server-side TLS connection.
pub(crate) type TlsIo = tokio_rustls::server::TlsStream<TcpStream>;

/// Accepts TCP connections on `listener` and hands over those whose TLS handshake
/// (under the configuration current at accept time) succeeded. Handshakes run side by
/// side, bounded in number and time, so a slow or plaintext client holds up no one. The
/// accept task ends when the receiver is dropped.
pub(crate) fn accept_tls(
    listener: TcpListener,
    tls: Arc<NodeTls>,
    which: Listener,
) -> mpsc::Receiver<TlsIo> {
    let (accepted, incoming) = mpsc::channel(ACCEPTED_QUEUE);
    let handshakes = Arc::new(Semaphore::new(MAX_HANDSHAKES));
    tokio::spawn(async move {
        loop {
            let (tcp, from) = tokio::select! {
                () = accepted.closed() => return,
                result = listener.accept() => match result {
                    Ok(connection) => connection,
                    Err(error) => {
                        tracing::debug!(%error, "accept failed");
                        continue;
                    }
                },
            };
            let Ok(permit) = Arc::clone(&handshakes).acquire_owned().await else {
                return;
            };
            let _ = tcp.set_nodelay(true);
            let acceptor = TlsAcceptor::from(tls.server_config(which));
            let deliver = accepted.clone();
            tokio::spawn(async move {
                let _permit = permit;
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => {
                        let _ = deliver.send(stream).await;
                    }
                    Ok(Err(error)) => {
                        tracing::debug!(%from, ?which, %error, "TLS handshake refused");
                    }
                    Err(_) => tracing::debug!(%from, ?which, "TLS handshake timed out"),
                }
            });
        }
    });
    incoming
}

/// Dials one peer over TLS with the node's current client configuration, checking the
/// peer's certificate against the CA and the IP address dialled.
#[derive(Debug, Clone)]
pub(crate) struct PeerTlsConnector {
    pub(crate) tls: Arc<NodeTls>,
    pub(crate) address: SocketAddr,
}

type Connecting = Pin<
    Box<
        dyn Future<Output = io::Result<TokioIo<tokio_rustls::client::TlsStream<TcpStream>>>> + Send,
    >,
>;

impl tower::Service<tonic::transport::Uri> for PeerTlsConnector {
    type Response = TokioIo<tokio_rustls::client::TlsStream<TcpStream>>;
    type Error = io::Error;
    type Future = Connecting;

    fn poll_ready(&mut self, _cx: &mut std::task::Context<'_>) -> std::task::Poll<io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, _uri: tonic::transport::Uri) -> Self::Future {
        let connector = TlsConnector::from(self.tls.peer_config());
        let address = self.address;
        Box::pin(async move {
            let tcp = TcpStream::connect(address).await?;
            tcp.set_nodelay(true)?;
            let name = ServerName::IpAddress(address.ip().into());
            let stream = connector.connect(name, tcp).await?;
            Ok(TokioIo::new(stream))
        })
    }
}

/// Re-reads the files every [`RELOAD_EVERY`] until `stop` resolves, logging each change
/// and each failure (the old configuration stays on failure).
pub async fn reload_periodically(tls: Arc<NodeTls>, stop: impl Future<Output = ()>) {
    let mut every = tokio::time::interval(RELOAD_EVERY);
    tokio::pin!(stop);
    loop {
        tokio::select! {
            () = &mut stop => return,
            _ = every.tick() => match tls.reload_if_changed() {
                Ok(true) => tracing::info!(files = ?tls.files(), "TLS certificates reloaded"),
                Ok(false) => {}
                Err(error) => tracing::warn!(%error, "TLS certificates not reloaded; keeping the current ones"),
            },
        }
    }
}
