//! Asking a topic's owner over HTTP, for admin requests about several
//! topics at once (a partitioned topic's partitions may live on different
//! brokers). Redirects are followed here, keeping the caller's
//! `Authorization` header, which HTTP clients drop on a redirect to
//! another host or port.

use std::sync::OnceLock;
use std::time::Duration;

use axum::http::{header, HeaderMap, StatusCode};
use bytes::Bytes;
use reqwest::Method;

use super::AdminError;
use crate::ownership::LookupAnswer;
use crate::topic::{BrokerService, TopicName};

/// How many redirects one forwarded request may follow (owner changes,
/// the load manager's placement).
const MAX_HOPS: usize = 4;
const TIMEOUT: Duration = Duration::from_secs(30);

/// The owner's answer, as it sent it.
pub(super) struct OwnerAnswer {
    pub status: StatusCode,
    pub body: Bytes,
    owner: String,
}

impl OwnerAnswer {
    /// The owner's refusal, passed on with its status.
    pub(super) fn into_error(self, status: StatusCode) -> AdminError {
        let reason = serde_json::from_slice::<serde_json::Value>(&self.body)
            .ok()
            .and_then(|v| v.get("reason").and_then(|r| r.as_str()).map(str::to_string))
            .unwrap_or_else(|| String::from_utf8_lossy(&self.body).into_owned());
        AdminError::Forwarded {
            status,
            reason: format!("broker {}: {reason}", self.owner),
        }
    }
}

fn client() -> &'static reqwest::Client {
    static CLIENT: OnceLock<reqwest::Client> = OnceLock::new();
    CLIENT.get_or_init(|| {
        reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(TIMEOUT)
            .build()
            .unwrap_or_default()
    })
}

/// `GET` of `/admin/v2/persistent/{topic}/{action}` on the topic's owner;
/// `None` when this broker owns it (or runs alone): answer locally.
pub(super) async fn to_owner(
    service: &BrokerService,
    topic: &TopicName,
    action: &str,
    headers: &HeaderMap,
) -> Result<Option<OwnerAnswer>, AdminError> {
    request_owner(service, Method::GET, topic, action, headers, None).await
}

/// Like [`to_owner`] with any method, and a JSON body if given.
pub(super) async fn request_owner(
    service: &BrokerService,
    method: Method,
    topic: &TopicName,
    action: &str,
    headers: &HeaderMap,
    body: Option<Bytes>,
) -> Result<Option<OwnerAnswer>, AdminError> {
    let Some(ownership) = service.ownership() else {
        return Ok(None);
    };
    let (broker, authoritative) = match ownership.lookup(topic, false).await {
        Ok(LookupAnswer::Here) => return Ok(None),
        Ok(LookupAnswer::Elsewhere {
            broker,
            authoritative,
        }) => (broker, authoritative),
        Err(e) => {
            return Err(AdminError::Unavailable(format!(
                "finding the owner of {topic}: {e}"
            )))
        }
    };
    let path = format!(
        "/admin/v2/persistent/{}/{}/{}/{action}",
        escape(&topic.tenant),
        escape(&topic.namespace),
        escape(&topic.local)
    );
    let mut url = format!("{}{path}?authoritative={authoritative}", broker.http_url);
    let mut owner = broker.broker_id;
    for _ in 0..MAX_HOPS {
        let mut request = client().request(method.clone(), &url);
        if let Some(auth) = headers.get(header::AUTHORIZATION) {
            request = request.header(header::AUTHORIZATION, auth);
        }
        if let Some(body) = &body {
            request = request
                .header(header::CONTENT_TYPE, "application/json")
                .body(body.clone());
        }
        let response = request
            .send()
            .await
            .map_err(|e| AdminError::Unavailable(format!("asking {owner} about {topic}: {e}")))?;
        let status = response.status();
        if status == StatusCode::TEMPORARY_REDIRECT {
            let Some(location) = response
                .headers()
                .get(header::LOCATION)
                .and_then(|l| l.to_str().ok())
            else {
                break;
            };
            url = location.to_string();
            owner = url.clone();
            continue;
        }
        let body = response
            .bytes()
            .await
            .map_err(|e| AdminError::Unavailable(format!("reading {owner}'s answer: {e}")))?;
        return Ok(Some(OwnerAnswer {
            status,
            body,
            owner,
        }));
    }
    Err(AdminError::Unavailable(format!(
        "too many redirects asking about {topic}"
    )))
}

/// A name segment in a URL path (names allow `%`, which must be escaped).
fn escape(segment: &str) -> String {
    segment.replace('%', "%25")
}
