//! Pulsar's HTTP lookup, `GET /lookup/v2/topic/persistent/{tenant}/{ns}/{topic}`:
//! which broker serves a topic, for clients that look topics up over HTTP.
//! It decides ownership as the binary LOOKUP does, except that an HTTP
//! client cannot follow a redirect to the load manager: for an unowned
//! bundle this broker picks the least-loaded broker by the same rule.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};

use super::{AdminError, AdminResult};
use crate::ownership::LookupAnswer;
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
            }) => {
                let bundle = ownership
                    .bundle_of_topic(&name)
                    .await
                    .map_err(|e| AdminError::Unavailable(e.to_string()))?;
                ownership
                    .choose_broker(&bundle)
                    .await
                    .map_err(|e| AdminError::Unavailable(e.to_string()))?
                    .unwrap_or_else(|| ownership.identity().clone())
            }
            Err(e) => return Err(AdminError::Unavailable(e.to_string())),
        },
        None => service
            .identity()
            .cloned()
            .ok_or_else(|| AdminError::Unavailable("this broker's address is not known".into()))?,
    };
    Ok(Json(json!({
        "brokerUrl": broker.pulsar_url,
        "brokerUrlTls": "",
        "httpUrl": broker.http_url,
        "httpUrlTls": "",
        "nativeUrl": broker.pulsar_url,
    })))
}
