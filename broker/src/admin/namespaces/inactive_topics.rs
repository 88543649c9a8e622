//! `inactiveTopicPolicies` in Pulsar's path and JSON: whether, after how
//! long and which unused topics of the namespace housekeeping deletes.
//! Without one the broker's `--delete-inactive-topics*` defaults apply.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use bytes::Bytes;

use super::{json_or_no_content, load, parse_body, update, NamespacePath};
use crate::admin::AdminResult;
use crate::topic::{BrokerService, InactiveTopicPolicies};

type Service = State<Arc<BrokerService>>;

pub(super) fn routes(ns: &str) -> Router<Arc<BrokerService>> {
    Router::new().route(
        &format!("{ns}/inactiveTopicPolicies"),
        get(get_policies).post(set_policies).delete(remove_policies),
    )
}

async fn get_policies(
    State(service): Service,
    Path((t, ns)): NamespacePath,
) -> AdminResult<Response> {
    let policies = load(service.metadata().as_ref(), &t, &ns).await?;
    Ok(json_or_no_content(policies.inactive_topic_policies))
}

async fn set_policies(
    State(service): Service,
    Path((t, ns)): NamespacePath,
    body: Bytes,
) -> AdminResult<StatusCode> {
    let inactive: InactiveTopicPolicies = parse_body(&body, "InactiveTopicPolicies")?;
    update(service.metadata().as_ref(), &t, &ns, |p| {
        p.inactive_topic_policies = Some(inactive)
    })
    .await
}

async fn remove_policies(
    State(service): Service,
    Path((t, ns)): NamespacePath,
) -> AdminResult<StatusCode> {
    update(service.metadata().as_ref(), &t, &ns, |p| {
        p.inactive_topic_policies = None
    })
    .await
}
