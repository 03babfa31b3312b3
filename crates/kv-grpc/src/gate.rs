//! What a listener checks before it runs a call: the caller's token and role (the client
//! listener, when `--auth-tokens` is set) and a bound on the calls it runs at once. Over
//! the bound a call is refused at once with RESOURCE_EXHAUSTED and a retry pushback,
//! rather than queued until its deadline passes: overload shows as a clear refusal.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use kv_node::RequestMetrics;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::Status;
use tonic::metadata::MetadataMap;

use crate::auth::{Role, TokenTable};
use crate::incoming::PeerKey;

/// Most peers whose in-flight calls are tracked one by one; idle ones are forgotten when
/// the table is full.
const MAX_TRACKED_PEERS: usize = 4096;

/// How long a refused caller is asked to wait before it retries, ms (sent as gRPC's
/// `grpc-retry-pushback-ms`).
pub const RETRY_PUSHBACK_MS: u64 = 50;

/// How the client listener admits calls.
#[derive(Debug)]
pub struct ClientAccess {
    /// The tokens it accepts; `None` admits every caller (the dev default).
    pub tokens: Option<TokenTable>,
    /// Most client calls running at once; more are refused with RESOURCE_EXHAUSTED.
    pub max_concurrent_calls: usize,
}

/// A listener's admission: authentication, then a permit for the call's duration.
#[derive(Debug)]
pub(crate) struct Gate {
    listener: &'static str,
    tokens: Option<TokenTable>,
    permits: Arc<Semaphore>,
    limit: usize,
    per_peer: Option<PerPeer>,
}

/// A bound on the calls one peer (a client certificate under mTLS, else an IP address)
/// runs at once, so one busy or misbehaving peer cannot take the whole listener.
#[derive(Debug)]
struct PerPeer {
    limit: usize,
    running: Mutex<HashMap<PeerKey, Arc<Semaphore>>>,
}

impl PerPeer {
    fn admit(&self, peer: PeerKey) -> Option<OwnedSemaphorePermit> {
        let permits = {
            let mut running = self.running.lock().unwrap_or_else(PoisonError::into_inner);
            if running.len() >= MAX_TRACKED_PEERS && !running.contains_key(&peer) {
                running.retain(|_, permits| permits.available_permits() < self.limit);
            }
            Arc::clone(
                running
                    .entry(peer)
                    .or_insert_with(|| Arc::new(Semaphore::new(self.limit))),
            )
        };
        permits.try_acquire_owned().ok()
    }
}

/// What an admitted call holds until it ends.
#[derive(Debug)]
pub(crate) struct Admitted {
    _listener: OwnedSemaphorePermit,
    _peer: Option<OwnedSemaphorePermit>,
}

impl Gate {
    /// A gate for `listener` (`client` or `internal`, as metrics and errors name it).
    pub(crate) fn new(
        listener: &'static str,
        tokens: Option<TokenTable>,
        max_concurrent_calls: usize,
    ) -> Self {
        let limit = max_concurrent_calls.clamp(1, Semaphore::MAX_PERMITS);
        Self {
            listener,
            tokens,
            permits: Arc::new(Semaphore::new(limit)),
            limit,
            per_peer: None,
        }
    }

    /// Also bounds the calls of each peer to `max_per_peer` at once.
    pub(crate) fn with_per_peer_limit(mut self, max_per_peer: usize) -> Self {
        self.per_peer = Some(PerPeer {
            limit: max_per_peer.clamp(1, Semaphore::MAX_PERMITS),
            running: Mutex::new(HashMap::new()),
        });
        self
    }

    /// A gate that admits everything (for services built without a listener).
    pub(crate) fn open(listener: &'static str) -> Self {
        Self::new(listener, None, Semaphore::MAX_PERMITS)
    }

    /// Admits a call of `call` from `peer` needing `needed` (`None`: no token needed),
    /// or says why not; what it returns is held until the call ends.
    pub(crate) fn admit(
        &self,
        metadata: &MetadataMap,
        peer: Option<PeerKey>,
        call: &str,
        needed: Option<Role>,
        metrics: &RequestMetrics,
    ) -> Result<Admitted, Status> {
        if let (Some(tokens), Some(needed)) = (&self.tokens, needed) {
            tokens
                .authorize(metadata, call, needed)
                .inspect_err(|status| {
                    let reason = match status.code() {
                        tonic::Code::PermissionDenied => "permission_denied",
                        _ => "unauthenticated",
                    };
                    metrics.record_refused(self.listener, reason);
                })?;
        }
        let listener = Arc::clone(&self.permits).try_acquire_owned().map_err(|_| {
            metrics.record_refused(self.listener, "overloaded");
            overloaded(self.listener, self.limit, "")
        })?;
        let peer = match &self.per_peer {
            Some(per_peer) => Some(
                per_peer
                    .admit(peer.unwrap_or(PeerKey::Unknown))
                    .ok_or_else(|| {
                        metrics.record_refused(self.listener, "peer_overloaded");
                        overloaded(self.listener, per_peer.limit, "-per-peer")
                    })?,
            ),
            None => None,
        };
        Ok(Admitted {
            _listener: listener,
            _peer: peer,
        })
    }
}

/// RESOURCE_EXHAUSTED with the limit that was hit and gRPC's retry pushback.
fn overloaded(listener: &str, limit: usize, scope: &str) -> Status {
    let whose = if scope.is_empty() {
        ""
    } else {
        " from this caller"
    };
    let mut status = Status::resource_exhausted(format!(
        "this node is running its limit of {limit} concurrent {listener} calls{whose}; \
         retry in {RETRY_PUSHBACK_MS} ms (the node's --max-concurrent-{listener}-calls{scope} \
         sets the limit)"
    ));
    status
        .metadata_mut()
        .insert("grpc-retry-pushback-ms", RETRY_PUSHBACK_MS.into());
    status
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_over_the_limit_are_refused_until_a_permit_returns() {
        let metrics = RequestMetrics::default();
        let gate = Gate::new("client", None, 2);
        let none = MetadataMap::new();
        let first = gate
            .admit(&none, None, "Get", Some(Role::Read), &metrics)
            .unwrap();
        let _second = gate
            .admit(&none, None, "Get", Some(Role::Read), &metrics)
            .unwrap();
        let refused = gate
            .admit(&none, None, "Get", Some(Role::Read), &metrics)
            .unwrap_err();
        assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
        assert!(
            refused
                .message()
                .contains("limit of 2 concurrent client calls")
        );
        assert_eq!(
            refused.metadata().get("grpc-retry-pushback-ms").unwrap(),
            "50"
        );
        drop(first);
        assert!(
            gate.admit(&none, None, "Get", Some(Role::Read), &metrics)
                .is_ok()
        );
    }

    #[test]
    fn one_peer_cannot_take_the_whole_listener() {
        let metrics = RequestMetrics::default();
        let gate = Gate::new("internal", None, 10).with_per_peer_limit(2);
        let none = MetadataMap::new();
        let busy = Some(PeerKey::Certificate(1));
        let other = Some(PeerKey::Certificate(2));
        let _first = gate.admit(&none, busy, "Batch", None, &metrics).unwrap();
        let _second = gate.admit(&none, busy, "Batch", None, &metrics).unwrap();
        let refused = gate
            .admit(&none, busy, "Batch", None, &metrics)
            .unwrap_err();
        assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
        assert!(
            refused.message().contains("from this caller")
                && refused
                    .message()
                    .contains("--max-concurrent-internal-calls-per-peer"),
            "{}",
            refused.message()
        );
        assert!(gate.admit(&none, other, "Batch", None, &metrics).is_ok());
    }

    #[test]
    fn tokens_are_checked_before_a_permit_is_taken() {
        let metrics = RequestMetrics::default();
        let tokens = TokenTable::parse("read r rrrrrrrrrrrrrrrrrrrr").unwrap();
        let gate = Gate::new("client", Some(tokens), 1);
        let refused = gate
            .admit(&MetadataMap::new(), None, "Get", Some(Role::Read), &metrics)
            .unwrap_err();
        assert_eq!(refused.code(), tonic::Code::Unauthenticated);
        let mut reader = MetadataMap::new();
        reader.insert(
            "authorization",
            "Bearer rrrrrrrrrrrrrrrrrrrr".parse().unwrap(),
        );
        let denied = gate
            .admit(&reader, None, "Put", Some(Role::Write), &metrics)
            .unwrap_err();
        assert_eq!(denied.code(), tonic::Code::PermissionDenied);
        let permit = gate
            .admit(&reader, None, "Get", Some(Role::Read), &metrics)
            .unwrap();
        drop(permit);
        let probe = gate.admit(&MetadataMap::new(), None, "Health", None, &metrics);
        assert!(probe.is_ok(), "health probes need no token");
    }
}
