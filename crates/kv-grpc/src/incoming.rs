//! The connections a listener serves: plain TCP, or TLS once the handshake succeeded
//! (see `tls`), as one stream type tonic's server takes.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_stream::{Stream, StreamExt};
use tonic::transport::server::TcpIncoming;

use crate::tls::{Listener, NodeTls, TlsIo, accept_tls};

/// One accepted connection.
pub(crate) enum Connection {
    Plain(TcpStream),
    Tls(Box<TlsIo>),
}

/// Connections accepted on a listener.
pub(crate) type Incoming = Pin<Box<dyn Stream<Item = io::Result<Connection>> + Send>>;

/// The connections of `listener`: TLS ones under `tls` when it is set, else plain TCP,
/// with TCP_NODELAY either way (with Nagle on, small replies wait for delayed ACKs).
pub(crate) fn incoming(
    listener: TcpListener,
    tls: Option<Arc<NodeTls>>,
    which: Listener,
) -> Incoming {
    if let Some(tls) = tls {
        let accepted =
            tokio_stream::wrappers::ReceiverStream::new(accept_tls(listener, tls, which));
        return Box::pin(accepted.map(|stream| Ok(Connection::Tls(Box::new(stream)))));
    }
    // serve_with_incoming ignores the builder's TCP_NODELAY: set it here.
    let plain = TcpIncoming::from(listener).with_nodelay(Some(true));
    Box::pin(plain.map(|stream| stream.map(Connection::Plain)))
}

/// Who is at the other end of a connection, as the gate keys its per-peer bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum PeerKey {
    /// The client certificate it presented (a hash of its DER): who it is, under mTLS.
    Certificate(u64),
    /// Its IP address, without a certificate.
    Address(std::net::IpAddr),
    /// Unknown (the socket could not tell).
    Unknown,
}

impl tonic::transport::server::Connected for Connection {
    type ConnectInfo = PeerKey;

    fn connect_info(&self) -> PeerKey {
        let (tcp, certificate) = match self {
            Self::Plain(stream) => (stream, None),
            Self::Tls(stream) => {
                let (tcp, session) = stream.get_ref();
                (tcp, session.peer_certificates().and_then(<[_]>::first))
            }
        };
        if let Some(certificate) = certificate {
            use std::hash::{Hash, Hasher};
            let mut hasher = std::hash::DefaultHasher::new();
            certificate.as_ref().hash(&mut hasher);
            return PeerKey::Certificate(hasher.finish());
        }
        tcp.peer_addr()
            .map_or(PeerKey::Unknown, |a| PeerKey::Address(a.ip()))
    }
}

impl AsyncRead for Connection {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(stream) => Pin::new(stream).poll_read(cx, buf),
            Self::Tls(stream) => Pin::new(stream.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Connection {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(stream) => Pin::new(stream).poll_write(cx, buf),
            Self::Tls(stream) => Pin::new(stream.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(stream) => Pin::new(stream).poll_flush(cx),
            Self::Tls(stream) => Pin::new(stream.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(stream) => Pin::new(stream).poll_shutdown(cx),
            Self::Tls(stream) => Pin::new(stream.as_mut()).poll_shutdown(cx),
        }
    }
}
