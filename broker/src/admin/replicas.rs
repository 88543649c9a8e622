//! `/admin/v2/persistent/{tenant}/{namespace}/{topic}/replicas` and
//! `.../reassignment`: where a partition's copies are, and moving them
//! (Kafka's `kafka-reassign-partitions`), for the architecture that keeps
//! copies on brokers. Answered by the partition's leader (the topic's
//! owner), which knows how far each copy has got. The decoupled
//! architecture answers 412: its copies are ledgers on bookies.

use std::sync::Arc;

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use bytes::Bytes;
use serde::Deserialize;

use super::topics::{topic_name, TopicPath};
use super::{parse_body, AdminError, AdminResult};
use crate::storage::ReplicaSet;
use crate::topic::{BrokerService, TopicName};

pub(super) fn routes() -> Router<Arc<BrokerService>> {
    const TOPIC: &str = "/admin/v2/persistent/{tenant}/{namespace}/{topic}";
    Router::new()
        .route(&format!("{TOPIC}/replicas"), get(replicas))
        .route(
            &format!("{TOPIC}/reassignment"),
            get(replicas).post(reassign).delete(cancel),
        )
}

/// A reassignment request: the brokers (`host:port`, or replica ids) to
/// hold the partition, the preferred leader first.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ReassignRequest {
    replicas: Vec<String>,
    #[serde(default)]
    throttle_bytes_per_second: Option<u64>,
}

/// The partition the path names; a partitioned topic's own name is
/// refused, since each partition has its own replicas.
async fn partition(service: &BrokerService, path: TopicPath) -> AdminResult<TopicName> {
    let (tenant, namespace, topic) = path.0;
    let name = topic_name(&tenant, &namespace, &topic)?;
    if service.partitions(&name).await? > 0 {
        return Err(AdminError::BadRequest(format!(
            "{name} is a partitioned topic: name one of its partitions ({name}-partition-N)"
        )));
    }
    Ok(name)
}

async fn replicas(
    State(service): State<Arc<BrokerService>>,
    path: TopicPath,
) -> AdminResult<Json<ReplicaSet>> {
    let name = partition(&service, path).await?;
    Ok(Json(service.logs().replica_set(&name.log_name()).await?))
}

async fn reassign(
    State(service): State<Arc<BrokerService>>,
    path: TopicPath,
    body: Bytes,
) -> AdminResult<Json<ReplicaSet>> {
    let name = partition(&service, path).await?;
    let request: ReassignRequest = parse_body(&body, "reassignment")?;
    if request.throttle_bytes_per_second == Some(0) {
        return Err(AdminError::BadRequest(
            "throttleBytesPerSecond must be positive (leave it out for no throttle)".into(),
        ));
    }
    let set = service
        .logs()
        .reassign(
            &name.log_name(),
            &request.replicas,
            request.throttle_bytes_per_second,
        )
        .await?;
    tracing::info!(topic = %name, target = ?request.replicas, "reassignment requested");
    Ok(Json(set))
}

async fn cancel(
    State(service): State<Arc<BrokerService>>,
    path: TopicPath,
) -> AdminResult<Json<ReplicaSet>> {
    let name = partition(&service, path).await?;
    Ok(Json(
        service.logs().cancel_reassignment(&name.log_name()).await?,
    ))
}
