//! The public gRPC services, `kvstore.KVStore` and `kvstore.Membership`: admit each call
//! (token and role, concurrency bound), turn its message into the node's request type,
//! hand it over, and turn the answer back. Validation is the node's; one tracing span per
//! request carries the client's ids.

use std::sync::Arc;

use kv_node::{ClientRead, ClientWrite, Node, NodeError, PeerTransport};
use kv_proto::kvstore as api;
use kv_proto::kvstore::kv_store_server::KvStore;
use kv_proto::kvstore::membership_server::Membership;
use tonic::{Request, Response, Status};
use tracing::Instrument;

use crate::auth::Role;
use crate::convert::{self, get_response, version_entries, version_to_api};
use crate::gate::{ClientAccess, Gate};
use crate::status::status_of;
use crate::{convert_hints, convert_ring};

/// Serves `kvstore.KVStore` and `kvstore.Membership` for one node.
#[derive(Debug)]
pub struct PublicApi<T> {
    node: Arc<Node<T>>,
    gate: Arc<Gate>,
}

impl<T> PublicApi<T> {
    /// Wraps a node, admitting every call (no tokens, no bound).
    pub fn new(node: Arc<Node<T>>) -> Self {
        Self {
            node,
            gate: Arc::new(Gate::open("client")),
        }
    }

    /// Wraps a node, admitting calls as `access` says.
    pub fn with_access(node: Arc<Node<T>>, access: ClientAccess) -> Self {
        let gate = Gate::new("client", access.tokens, access.max_concurrent_calls);
        Self {
            node,
            gate: Arc::new(gate),
        }
    }

    /// Admits a call of `call` from a caller with `request`'s metadata, if its token
    /// allows `needed` (`None`: health probes, which need no token); the permit bounds the
    /// calls running at once.
    fn admit<M>(
        &self,
        request: &Request<M>,
        call: &str,
        needed: Option<Role>,
    ) -> Result<crate::gate::Admitted, Status> {
        self.gate.admit(
            request.metadata(),
            request
                .extensions()
                .get::<crate::incoming::PeerKey>()
                .copied(),
            call,
            needed,
            &self.node.stats().requests,
        )
    }
}

impl<T> Clone for PublicApi<T> {
    fn clone(&self) -> Self {
        Self {
            node: Arc::clone(&self.node),
            gate: Arc::clone(&self.gate),
        }
    }
}

impl<T: PeerTransport> PublicApi<T> {
    /// Runs a Put or Delete in a span carrying the client's ids; returns the context after
    /// the write.
    async fn write(
        &self,
        operation: &'static str,
        write: ClientWrite,
    ) -> Result<api::Version, Status> {
        let span = tracing::info_span!(
            "write",
            operation,
            client_id = %write.client_id,
            request_id = %write.request_id,
            key_hash = %crate::key_hash_hex(write.key.as_bytes()),
            w = write.consistency_w,
        );
        let result = self.node.client_put(write).instrument(span.clone()).await;
        span.in_scope(|| tracing::debug!(ok = result.is_ok(), "{operation} answered"));
        Ok(version_to_api(&result.map_err(|e| status_of(&e))?))
    }
}

#[tonic::async_trait]
impl<T: PeerTransport> KvStore for PublicApi<T> {
    async fn put(
        &self,
        request: Request<api::PutRequest>,
    ) -> Result<Response<api::PutResponse>, Status> {
        let _permit = self.admit(&request, "KVStore/Put", Some(Role::Write))?;
        let req = request.into_inner();
        let write = ClientWrite {
            key: req.key,
            value: Some(req.value),
            consistency_w: req.consistency_w,
            consistency_r: req.consistency_r,
            version: version_entries(req.version),
            client_id: req.client_id,
            request_id: req.request_id,
            mode: requested_mode(req.write_mode)?,
        };
        Ok(Response::new(api::PutResponse {
            status: api::Status::Success.into(),
            version: Some(self.write("put", write).await?),
        }))
    }

    async fn get(
        &self,
        request: Request<api::GetRequest>,
    ) -> Result<Response<api::GetResponse>, Status> {
        let _permit = self.admit(&request, "KVStore/Get", Some(Role::Read))?;
        let req = request.into_inner();
        let span = tracing::info_span!(
            "get",
            client_id = %req.client_id,
            request_id = %req.request_id,
            key_hash = %crate::key_hash_hex(req.key.as_bytes()),
            r = req.consistency_r,
        );
        let read = ClientRead {
            key: req.key,
            consistency_r: req.consistency_r,
            client_id: req.client_id,
            request_id: req.request_id,
        };
        let result = self.node.client_get(read).instrument(span.clone()).await;
        span.in_scope(|| tracing::debug!(ok = result.is_ok(), "get answered"));
        let merged = result.map_err(|e| status_of(&e))?;
        Ok(Response::new(get_response(merged.as_ref())))
    }

    async fn delete(
        &self,
        request: Request<api::DeleteRequest>,
    ) -> Result<Response<api::DeleteResponse>, Status> {
        let _permit = self.admit(&request, "KVStore/Delete", Some(Role::Write))?;
        let req = request.into_inner();
        let write = ClientWrite {
            key: req.key,
            value: None,
            consistency_w: req.consistency_w,
            consistency_r: 0,
            version: version_entries(req.version),
            client_id: req.client_id,
            request_id: req.request_id,
            mode: requested_mode(req.write_mode)?,
        };
        Ok(Response::new(api::DeleteResponse {
            status: api::Status::Success.into(),
            version: Some(self.write("delete", write).await?),
        }))
    }
}

#[tonic::async_trait]
impl<T: PeerTransport> Membership for PublicApi<T> {
    async fn get_membership(
        &self,
        request: Request<api::GetMembershipRequest>,
    ) -> Result<Response<api::GetMembershipResponse>, Status> {
        let _permit = self.admit(&request, "Membership/GetMembership", Some(Role::Read))?;
        Ok(Response::new(api::GetMembershipResponse {
            node_id: self.node.config().node_id.clone(),
            members: self.members(),
        }))
    }

    async fn change_ring(
        &self,
        request: Request<api::ChangeRingRequest>,
    ) -> Result<Response<api::ChangeRingResponse>, Status> {
        let _permit = self.admit(&request, "Membership/ChangeRing", Some(Role::Admin))?;
        let request = request.into_inner();
        let plan = convert_ring::change(&request)
            .and_then(|change| self.node.change_ring(&change, request.dry_run))
            .map_err(|e| status_of(&e))?;
        Ok(Response::new(convert_ring::plan(plan)))
    }

    async fn ring_transfers(
        &self,
        request: Request<api::RingTransfersRequest>,
    ) -> Result<Response<api::RingTransfersResponse>, Status> {
        let _permit = self.admit(&request, "Membership/RingTransfers", Some(Role::Read))?;
        Ok(Response::new(convert_ring::transfers(
            &self.node.config().node_id,
            self.node.routing().as_deref(),
            self.node.transfers(),
            self.node.cleanup_progress(),
        )))
    }

    async fn get_ring(
        &self,
        request: Request<api::GetRingRequest>,
    ) -> Result<Response<api::GetRingResponse>, Status> {
        let _permit = self.admit(&request, "Membership/GetRing", Some(Role::Read))?;
        let key = request.into_inner().key;
        let mut response = convert_ring::ring(self.node.routing().as_deref());
        if !key.is_empty() {
            let placement = self
                .node
                .locate(key)
                .map_err(|e| status_of(&NodeError::from(e)))?;
            response.key_hash = placement.hash;
            response.preference_list = placement.replicas;
        }
        Ok(Response::new(response))
    }

    async fn health(
        &self,
        request: Request<api::HealthRequest>,
    ) -> Result<Response<api::HealthResponse>, Status> {
        let _permit = self.admit(&request, "Membership/Health", None)?;
        Ok(Response::new(convert::health(self.node.health())))
    }

    async fn hints(
        &self,
        request: Request<api::HintsRequest>,
    ) -> Result<Response<api::HintsResponse>, Status> {
        let _permit = self.admit(&request, "Membership/Hints", Some(Role::Read))?;
        Ok(Response::new(convert_hints::hints(
            &self.node.config().node_id,
            self.node.hints_status(),
        )))
    }

    async fn anti_entropy(
        &self,
        request: Request<api::AntiEntropyRequest>,
    ) -> Result<Response<api::AntiEntropyResponse>, Status> {
        let _permit = self.admit(&request, "Membership/AntiEntropy", Some(Role::Read))?;
        let mut response =
            convert::anti_entropy(&self.node.config().node_id, self.node.anti_entropy_status());
        if request.get_ref().ranges {
            response.ranges = self
                .node
                .range_agreements()
                .into_iter()
                .map(convert::range_agreement)
                .collect();
        }
        Ok(Response::new(response))
    }
}

impl<T> PublicApi<T> {
    /// This node (always ALIVE) and every peer it knows, with their liveness.
    fn members(&self) -> Vec<api::Member> {
        let config = self.node.config();
        let routing = self.node.routing();
        let in_ring = |node: &str| {
            routing
                .as_ref()
                .is_some_and(|r| r.layout().newest().has(node))
        };
        let me = api::Member {
            node_id: config.node_id.clone(),
            grpc_address: config.client_address.to_string(),
            internal_address: config.internal_address.to_string(),
            state: api::MemberState::Alive.into(),
            in_ring: in_ring(&config.node_id),
            ..api::Member::default()
        };
        let peers = self.node.peer_statuses().into_iter().map(|peer| {
            let member = in_ring(&peer.node_id);
            convert::member(peer, member)
        });
        std::iter::once(me).chain(peers).collect()
    }
}

/// A Put's or Delete's `write_mode`, refused as INVALID_ARGUMENT when unknown.
fn requested_mode(raw: i32) -> Result<kv_node::WriteMode, Status> {
    convert_hints::write_mode(raw).map_err(|e| status_of(&NodeError::from(e)))
}
