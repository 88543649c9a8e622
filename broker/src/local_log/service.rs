//! The replication service a monolithic broker serves to its peers' followers.

use std::sync::Arc;
use std::time::Duration;

use magnetar_auth::{PeerGate, PeerPolicy};
use magnetar_proto::replication::{
    replication_server::{Replication, ReplicationServer},
    EpochRequest, EpochResponse, FetchRequest, FetchResponse, ReplicaError,
};
use tonic::service::interceptor::InterceptedService;
use tonic::{Request, Response, Status};

use super::leader::{self, FetchError};
use super::log::LocalLog;
use super::replicas::Replicas;

/// Largest request accepted (requests are small; this bounds hostile ones).
const MAX_REQUEST: usize = 64 << 10;
/// Largest response sent (a fetch returns at most 16 MiB of batches).
const MAX_RESPONSE: usize = 32 << 20;

pub struct ReplicationService {
    replicas: Arc<Replicas>,
}

impl ReplicationService {
    /// The service behind `peers`' check: followers are brokers, and
    /// nothing else may read a partition's log this way.
    pub fn server(
        replicas: Arc<Replicas>,
        peers: PeerPolicy,
    ) -> InterceptedService<ReplicationServer<ReplicationService>, PeerGate> {
        let server = ReplicationServer::new(ReplicationService { replicas })
            .max_decoding_message_size(MAX_REQUEST)
            .max_encoding_message_size(MAX_RESPONSE);
        InterceptedService::new(server, PeerGate::new(peers))
    }

    fn leader_of(&self, partition: &str, log_id: u64) -> Result<Arc<LocalLog>, FetchError> {
        self.replicas
            .leader(partition)
            .filter(|log| log.log_id == log_id)
            .ok_or(FetchError::NotLeader)
    }
}

fn code(error: &FetchError) -> ReplicaError {
    match error {
        FetchError::FencedEpoch { .. } => ReplicaError::FencedEpoch,
        FetchError::UnknownEpoch { .. } => ReplicaError::UnknownEpoch,
        FetchError::NotReplica(_) => ReplicaError::NotReplica,
        FetchError::NotLeader => ReplicaError::NotLeader,
        FetchError::OutOfRange { .. } => ReplicaError::OutOfRange,
        FetchError::Storage(_) => ReplicaError::Storage,
    }
}

#[tonic::async_trait]
impl Replication for ReplicationService {
    async fn fetch(
        &self,
        request: Request<FetchRequest>,
    ) -> Result<Response<FetchResponse>, Status> {
        let req = request.into_inner();
        let served = match self.leader_of(&req.partition, req.log_id) {
            Ok(log) => {
                log.serve_fetch(leader::FetchRequest {
                    replica: &req.replica_id,
                    epoch: req.leader_epoch,
                    offset: req.fetch_offset,
                    max_bytes: req.max_bytes as usize,
                    max_wait: Duration::from_millis(u64::from(req.max_wait_ms)),
                })
                .await
            }
            Err(e) => Err(e),
        };
        let response = match served {
            Ok(fetched) => FetchResponse {
                records: fetched.records,
                high_watermark: fetched.high_watermark,
                log_start_offset: fetched.log_start,
                log_end_offset: fetched.log_end,
                error: ReplicaError::None.into(),
                message: String::new(),
            },
            Err(e) => {
                let (start, end) = match &e {
                    FetchError::OutOfRange { start, end, .. } => (*start, *end),
                    _ => (0, 0),
                };
                FetchResponse {
                    records: Default::default(),
                    high_watermark: 0,
                    log_start_offset: start,
                    log_end_offset: end,
                    error: code(&e).into(),
                    message: e.to_string(),
                }
            }
        };
        Ok(Response::new(response))
    }

    async fn offset_for_leader_epoch(
        &self,
        request: Request<EpochRequest>,
    ) -> Result<Response<EpochResponse>, Status> {
        let req = request.into_inner();
        let answer = self
            .leader_of(&req.partition, req.log_id)
            .and_then(|log| log.serve_epoch(req.leader_epoch, req.epoch));
        let response = match answer {
            Ok(found) => EpochResponse {
                known: found.is_some(),
                epoch: found.map_or(0, |(e, _)| e),
                end_offset: found.map_or(0, |(_, o)| o),
                error: ReplicaError::None.into(),
                message: String::new(),
            },
            Err(e) => EpochResponse {
                known: false,
                epoch: 0,
                end_offset: 0,
                error: code(&e).into(),
                message: e.to_string(),
            },
        };
        Ok(Response::new(response))
    }
}
