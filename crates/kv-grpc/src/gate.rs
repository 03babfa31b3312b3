//! What a listener checks before it runs a call: the caller's token and role (the client
//! listener, when `--auth-tokens` is set) and a bound on the calls it runs at once. Over
//! the bound a call is refused at once with RESOURCE_EXHAUSTED and a retry pushback,
//! rather than queued until its deadline passes: overload shows as a clear refusal.

use std::sync::Arc;

use kv_node::RequestMetrics;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::Status;
use tonic::metadata::MetadataMap;

use crate::auth::{Role, TokenTable};

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
        }
    }

    /// A gate that admits everything (for services built without a listener).
    pub(crate) fn open(listener: &'static str) -> Self {
        Self::new(listener, None, Semaphore::MAX_PERMITS)
    }

    /// Admits a call of `call` needing `needed` (`None`: no token needed), or says why
    /// not; the permit is held until the call ends.
    pub(crate) fn admit(
        &self,
        metadata: &MetadataMap,
        call: &str,
        needed: Option<Role>,
        metrics: &RequestMetrics,
    ) -> Result<OwnedSemaphorePermit, Status> {
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
        Arc::clone(&self.permits).try_acquire_owned().map_err(|_| {
            metrics.record_refused(self.listener, "overloaded");
            overloaded(self.listener, self.limit)
        })
    }
}

/// RESOURCE_EXHAUSTED with the limit that was hit and gRPC's retry pushback.
fn overloaded(listener: &str, limit: usize) -> Status {
    let mut status = Status::resource_exhausted(format!(
        "this node is running its limit of {limit} concurrent {listener} calls; retry in \
         {RETRY_PUSHBACK_MS} ms (the node's --max-concurrent-{listener}-calls sets the limit)"
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
            .admit(&none, "Get", Some(Role::Read), &metrics)
            .unwrap();
        let _second = gate
            .admit(&none, "Get", Some(Role::Read), &metrics)
            .unwrap();
        let refused = gate
            .admit(&none, "Get", Some(Role::Read), &metrics)
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
        assert!(gate.admit(&none, "Get", Some(Role::Read), &metrics).is_ok());
    }

    #[test]
    fn tokens_are_checked_before_a_permit_is_taken() {
        let metrics = RequestMetrics::default();
        let tokens = TokenTable::parse("read r rrrrrrrrrrrrrrrrrrrr").unwrap();
        let gate = Gate::new("client", Some(tokens), 1);
        let refused = gate
            .admit(&MetadataMap::new(), "Get", Some(Role::Read), &metrics)
            .unwrap_err();
        assert_eq!(refused.code(), tonic::Code::Unauthenticated);
        let mut reader = MetadataMap::new();
        reader.insert(
            "authorization",
            "Bearer rrrrrrrrrrrrrrrrrrrr".parse().unwrap(),
        );
        let denied = gate
            .admit(&reader, "Put", Some(Role::Write), &metrics)
            .unwrap_err();
        assert_eq!(denied.code(), tonic::Code::PermissionDenied);
        let permit = gate
            .admit(&reader, "Get", Some(Role::Read), &metrics)
            .unwrap();
        drop(permit);
        let probe = gate.admit(&MetadataMap::new(), "Health", None, &metrics);
        assert!(probe.is_ok(), "health probes need no token");
    }
}
