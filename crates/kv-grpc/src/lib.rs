//! kvstore over gRPC: everything that knows tonic.
//!
//! - [`PublicApi`] serves `kvstore.KVStore` and `kvstore.Membership`; [`InternalApi`]
//!   serves the node-to-node `kvstore.internal.Replica`; [`serve_clients`] and
//!   [`serve_internal`] run them on their own listeners.
//! - [`auth`] checks client bearer tokens and their roles; [`gate`] admits each call
//!   (token, then a bound on calls in flight: RESOURCE_EXHAUSTED beyond it); [`tls`]
//!   holds the node's mutual-TLS configuration, reloaded when its files change.
//! - [`GrpcTransport`] is kv-node's `PeerTransport` over the internal service: one channel
//!   per peer, replica reads and writes queued per peer and sent as `Replica/Batch`
//!   calls. Channels come from a [`Connector`]: tonic over TCP in production, anything
//!   that carries the same messages in a simulation.
//! - [`wire`] owns the encoding of internal messages and the limits both sides enforce;
//!   [`status`] owns the mapping between node errors and gRPC statuses, including the
//!   classification of failed calls that decides whether a write may be retried.
//! - [`convert`] turns the public API's messages into the node's types and back.
//!
//! kv-node knows nothing of this crate; this crate only adapts.

#![warn(missing_docs)]

pub mod auth;
mod batcher;
mod channel;
pub mod convert;
mod convert_hints;
mod convert_ring;
pub mod gate;
mod incoming;
mod peer_metrics;
mod server;
mod service_internal;
mod service_public;
pub mod status;
pub mod tls;
mod transport;
pub mod wire;

pub use auth::{Role, TokenFileError, TokenTable};
pub use channel::{Connector, ReplicaChannel, TonicConnector};
pub use gate::ClientAccess;
pub use server::{InternalLimits, ServeError, serve_clients, serve_internal};
pub use service_internal::InternalApi;
pub use service_public::PublicApi;
pub use tls::{NodeTls, TlsError, TlsFiles};
pub use transport::GrpcTransport;

/// A key's ring position, shown in hex as logs show it on the coordinator and the
/// replicas; formatted only when a log line is written (no allocation per request).
pub(crate) struct KeyHash(u64);

impl std::fmt::Display for KeyHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

pub(crate) fn key_hash_hex(key: &[u8]) -> KeyHash {
    KeyHash(kv_ring::key_hash(key))
}
