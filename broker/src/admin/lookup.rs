//! Pulsar's HTTP lookup, `GET /lookup/v2/topic/persistent/{tenant}/{ns}/{topic}`:
//! which broker serves a topic, for clients that look topics up over HTTP.
//! It decides ownership as the binary LOOKUP does, except that an HTTP
//! client cannot follow a redirect to the load manager: for an unowned
//! bundle this broker picks the least-loaded broker by the same rule and
//! writes the ownership for it, so the answer holds.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};

use super::{AdminError, AdminResult};
use crate::ownership::{BrokerIdentity, LookupAnswer, Ownership, OwnershipError};
use crate::topic::{BrokerService, TopicName};

pub(super) fn routes() -> Router<Arc<BrokerService>> {
    Router::new().route(
        "/lookup/v2/topic/persistent/{tenant}/{namespace}/{topic}",
        get(lookup),
    )
}

async fn lookup(
    State(service): State<Arc<BrokerService>>,
    Path((tenant, namespace, topic)): Path<(String, String, String)>,
) -> AdminResult<Json<Value>> {
    let name = TopicName::parse(&format!("persistent://{tenant}/{namespace}/{topic}"))
        .map_err(|e| AdminError::BadRequest(e.to_string()))?;
    let broker = match service.ownership() {
        Some(ownership) => match ownership.lookup(&name, false).await {
            Ok(LookupAnswer::Here) => ownership.identity().clone(),
            Ok(LookupAnswer::Elsewhere {
                broker,
                authoritative: true,
            }) => broker,
            Ok(LookupAnswer::Elsewhere {
                authoritative: false,
                ..
            }) => place(ownership, &name).await?,
            Err(e) => return Err(AdminError::Unavailable(e.to_string())),
        },
        None => service
            .identity()
            .cloned()
            .ok_or_else(|| AdminError::Unavailable("this broker's address is not known".into()))?,
    };
    Ok(Json(json!({
        "brokerUrl": broker.pulsar_url,
        "brokerUrlTls": broker.pulsar_url_tls.clone().unwrap_or_default(),
        "httpUrl": broker.http_url,
        "httpUrlTls": broker.http_url_tls.clone().unwrap_or_default(),
        "nativeUrl": broker.pulsar_url,
    })))
}

/// Places the unowned bundle of `name` on the least-loaded broker and
/// names it (or whoever claimed the bundle meanwhile).
async fn place(ownership: &Ownership, name: &TopicName) -> AdminResult<BrokerIdentity> {
    let unavailable = |e: OwnershipError| AdminError::Unavailable(e.to_string());
    let bundle = ownership.bundle_of_topic(name).await.map_err(unavailable)?;
    let chosen = ownership
        .choose_broker(&bundle)
        .await
        .map_err(unavailable)?
        .unwrap_or_else(|| ownership.identity().clone());
    if chosen.broker_id != ownership.identity().broker_id
        && ownership
            .place(&bundle, &chosen)
            .await
            .map_err(unavailable)?
    {
        return Ok(chosen);
    }
    match ownership.lookup(name, true).await.map_err(unavailable)? {
        LookupAnswer::Here => Ok(ownership.identity().clone()),
        LookupAnswer::Elsewhere { broker, .. } => Ok(broker),
    }
}
