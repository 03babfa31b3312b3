//! The public gRPC services, `kvstore.KVStore` and `kvstore.Membership`: validate, then
//! hand the request to the node. One tracing span per request carries its ids.

use std::sync::Arc;
use std::time::UNIX_EPOCH;

use kv_proto::kvstore as api;
use kv_proto::kvstore::kv_store_server::KvStore;
use kv_proto::kvstore::membership_server::Membership;
use tonic::{Request, Response, Status};
use tracing::Instrument;

use crate::convert::{get_response, version_to_api};
use crate::peers::PeerState;
use crate::{Node, NodeError, PeerTransport, WriteCommand, validate};

/// Serves `kvstore.KVStore` and `kvstore.Membership` for one node.
#[derive(Debug)]
pub struct PublicApi<T> {
    node: Arc<Node<T>>,
}

impl<T> PublicApi<T> {
    /// Wraps a node.
    pub fn new(node: Arc<Node<T>>) -> Self {
        Self { node }
    }
}

impl<T> Clone for PublicApi<T> {
    fn clone(&self) -> Self {
        Self {
            node: Arc::clone(&self.node),
        }
    }
}

impl<T: PeerTransport> PublicApi<T> {
    fn write_command(
        &self,
        key: &str,
        value: Option<bytes::Bytes>,
        consistency_w: u32,
        version: Option<&api::Version>,
        request_id: &str,
    ) -> Result<WriteCommand, NodeError> {
        // Before validation: a joining node's partial ring would misjudge the quorums.
        self.node.ensure_ring_complete()?;
        let config = self.node.config();
        let key = validate::key(key, &config.limits)?;
        if let Some(value) = &value {
            validate::value(value, &config.limits)?;
        }
        let replicas = self.node.ring().replicas();
        let write_quorum = validate::quorum(
            "consistency_w",
            consistency_w,
            config.write_quorum,
            replicas,
        )?;
        let context = validate::version(version, &config.limits)?;
        Ok(WriteCommand {
            key,
            value,
            context,
            write_quorum,
            request_id: request_id.to_owned(),
        })
    }
}

#[tonic::async_trait]
impl<T: PeerTransport> KvStore for PublicApi<T> {
    async fn put(
        &self,
        request: Request<api::PutRequest>,
    ) -> Result<Response<api::PutResponse>, Status> {
        let req = request.into_inner();
        let span =
            tracing::info_span!("put", client_id = %req.client_id, request_id = %req.request_id);
        async {
            let limits = &self.node.config().limits;
            validate::ids(&req.client_id, &req.request_id, limits)?;
            self.node.ensure_ring_complete()?;
            validate::quorum(
                "consistency_r",
                req.consistency_r,
                1,
                self.node.ring().replicas(),
            )?;
            let command = self.write_command(
                &req.key,
                Some(req.value.clone()),
                req.consistency_w,
                req.version.as_ref(),
                &req.request_id,
            )?;
            let context = self.node.put(command).await?;
            Ok(Response::new(api::PutResponse {
                status: api::Status::Success.into(),
                version: Some(version_to_api(&context)),
            }))
        }
        .instrument(span)
        .await
        .map_err(|e: NodeError| e.into())
    }

    async fn get(
        &self,
        request: Request<api::GetRequest>,
    ) -> Result<Response<api::GetResponse>, Status> {
        let req = request.into_inner();
        let span =
            tracing::info_span!("get", client_id = %req.client_id, request_id = %req.request_id);
        async {
            let config = self.node.config();
            validate::ids(&req.client_id, &req.request_id, &config.limits)?;
            let key = validate::key(&req.key, &config.limits)?;
            self.node.ensure_ring_complete()?;
            let read_quorum = validate::quorum(
                "consistency_r",
                req.consistency_r,
                config.read_quorum,
                self.node.ring().replicas(),
            )?;
            let merged = self.node.get(key, read_quorum).await?;
            Ok(Response::new(get_response(merged.as_ref())))
        }
        .instrument(span)
        .await
        .map_err(|e: NodeError| e.into())
    }

    async fn delete(
        &self,
        request: Request<api::DeleteRequest>,
    ) -> Result<Response<api::DeleteResponse>, Status> {
        let req = request.into_inner();
        let span =
            tracing::info_span!("delete", client_id = %req.client_id, request_id = %req.request_id);
        async {
            validate::ids(&req.client_id, &req.request_id, &self.node.config().limits)?;
            let command = self.write_command(
                &req.key,
                None,
                req.consistency_w,
                req.version.as_ref(),
                &req.request_id,
            )?;
            let context = self.node.put(command).await?;
            Ok(Response::new(api::DeleteResponse {
                status: api::Status::Success.into(),
                version: Some(version_to_api(&context)),
            }))
        }
        .instrument(span)
        .await
        .map_err(|e: NodeError| e.into())
    }
}

#[tonic::async_trait]
impl<T: PeerTransport> Membership for PublicApi<T> {
    async fn get_membership(
        &self,
        _request: Request<api::GetMembershipRequest>,
    ) -> Result<Response<api::GetMembershipResponse>, Status> {
        Ok(Response::new(api::GetMembershipResponse {
            node_id: self.node.config().node_id.clone(),
            members: self.members(),
        }))
    }

    async fn leave(
        &self,
        request: Request<api::LeaveRequest>,
    ) -> Result<Response<api::LeaveResponse>, Status> {
        let node_id = self.node.leave_ring(&request.into_inner().node_id).await?;
        tracing::info!(%node_id, "node leaves the ring");
        Ok(Response::new(api::LeaveResponse { node_id }))
    }

    async fn get_ring(
        &self,
        request: Request<api::GetRingRequest>,
    ) -> Result<Response<api::GetRingResponse>, Status> {
        let req = request.into_inner();
        let ring = self.node.ring();
        let mut response = api::GetRingResponse {
            replication_factor: ring.replicas() as u32,
            nodes: ring
                .ownership()
                .into_iter()
                .map(|o| api::NodeOwnership {
                    node_id: o.node,
                    vnodes: o.vnodes,
                    primary_share: o.primary_share,
                    replica_share: o.replica_share,
                })
                .collect(),
            ..api::GetRingResponse::default()
        };
        if !req.key.is_empty() {
            let key = validate::key(&req.key, &self.node.config().limits)?;
            response.key_hash = kv_ring::key_hash(&key);
            response.preference_list = self.node.replicas_for(&key);
        }
        Ok(Response::new(response))
    }

    async fn health(
        &self,
        _request: Request<api::HealthRequest>,
    ) -> Result<Response<api::HealthResponse>, Status> {
        let members = self.members();
        let alive = members
            .iter()
            .filter(|m| m.state == api::MemberState::Alive as i32)
            .count();
        let config = self.node.config();
        Ok(Response::new(api::HealthResponse {
            status: if self.node.ring_complete() {
                "SERVING"
            } else {
                "JOINING"
            }
            .into(),
            node_id: config.node_id.clone(),
            members_alive: alive as u32,
            members_total: members.len() as u32,
            replication_factor: self.node.ring().replicas() as u32,
            read_quorum: config.read_quorum as u32,
            write_quorum: config.write_quorum as u32,
        }))
    }
}

impl<T: PeerTransport> PublicApi<T> {
    /// This node (always ALIVE) and every peer it knows, with their liveness.
    fn members(&self) -> Vec<api::Member> {
        let config = self.node.config();
        let ring = self.node.ring();
        let me = api::Member {
            node_id: config.node_id.clone(),
            grpc_address: config.grpc_address.to_string(),
            state: api::MemberState::Alive.into(),
            in_ring: ring.members().any(|m| m == config.node_id),
            ..api::Member::default()
        };
        let peers = self.node.peer_statuses().into_iter().map(|peer| {
            let state = match peer.state {
                PeerState::Alive => api::MemberState::Alive,
                PeerState::Suspect => api::MemberState::Suspect,
                PeerState::Dead => api::MemberState::Dead,
                PeerState::Unknown => api::MemberState::Unknown,
            };
            let since_ms = peer
                .since
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64);
            api::Member {
                node_id: peer.node_id,
                grpc_address: peer.grpc_address.to_string(),
                state: state.into(),
                incarnation: peer.incarnation,
                gossip_address: peer
                    .gossip_address
                    .map(|a| a.to_string())
                    .unwrap_or_default(),
                last_change_unix_ms: since_ms,
                in_ring: peer.in_ring,
            }
        });
        std::iter::once(me).chain(peers).collect()
    }
}
