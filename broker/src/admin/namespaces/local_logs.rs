//! Policies of the monolithic architecture's local logs (Magnetar's own
//! paths; Pulsar has no such policies): `uncleanLeaderElection` (Kafka's
//! `unclean.leader.election.enable`) and `flushPolicy` (`fsync`, the
//! default, or `os`: acknowledge before fsync, as Kafka does by default).
//! A partition takes them up when its leader next opens it (a lookup of
//! an unowned topic, a takeover, an unload); decoupled clusters store them
//! and have no use for them.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use bytes::Bytes;

use super::{json_or_no_content, load, parse_body, update, NamespacePath};
use crate::admin::AdminResult;
use crate::storage::FlushPolicy;
use crate::topic::BrokerService;

type Service = State<Arc<BrokerService>>;

pub(super) fn routes(ns: &str) -> Router<Arc<BrokerService>> {
    Router::new()
        .route(
            &format!("{ns}/uncleanLeaderElection"),
            get(get_unclean).post(set_unclean).delete(remove_unclean),
        )
        .route(
            &format!("{ns}/flushPolicy"),
            get(get_flush).post(set_flush).delete(remove_flush),
        )
}

async fn get_unclean(
    State(service): Service,
    Path((t, ns)): NamespacePath,
) -> AdminResult<Response> {
    let policies = load(service.metadata().as_ref(), &t, &ns).await?;
    Ok(json_or_no_content(policies.unclean_leader_election))
}

async fn set_unclean(
    State(service): Service,
    Path((t, ns)): NamespacePath,
    body: Bytes,
) -> AdminResult<StatusCode> {
    let allowed: bool = parse_body(&body, "true or false")?;
    update(service.metadata().as_ref(), &t, &ns, |p| {
        p.unclean_leader_election = Some(allowed)
    })
    .await
}

async fn remove_unclean(
    State(service): Service,
    Path((t, ns)): NamespacePath,
) -> AdminResult<StatusCode> {
    update(service.metadata().as_ref(), &t, &ns, |p| {
        p.unclean_leader_election = None
    })
    .await
}

async fn get_flush(State(service): Service, Path((t, ns)): NamespacePath) -> AdminResult<Response> {
    let policies = load(service.metadata().as_ref(), &t, &ns).await?;
    Ok(json_or_no_content(policies.flush_policy))
}

async fn set_flush(
    State(service): Service,
    Path((t, ns)): NamespacePath,
    body: Bytes,
) -> AdminResult<StatusCode> {
    let flush: FlushPolicy = parse_body(&body, "flush policy (\"fsync\" or \"os\")")?;
    update(service.metadata().as_ref(), &t, &ns, |p| {
        p.flush_policy = Some(flush)
    })
    .await
}

async fn remove_flush(
    State(service): Service,
    Path((t, ns)): NamespacePath,
) -> AdminResult<StatusCode> {
    update(service.metadata().as_ref(), &t, &ns, |p| {
        p.flush_policy = None
    })
    .await
}
