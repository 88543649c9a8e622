//! Admin requests on one topic go to the broker owning it: another broker
//! answers `307 Temporary Redirect` to the owner's same URL, as Pulsar
//! does, so the topic is only ever opened on its owner. A bundle nobody owns
//! is placed as a lookup would place it (`authoritative=true` in the query
//! tells the target to take it).

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::{query_param, AdminError};
use crate::ownership::{LookupAnswer, OwnershipError};
use crate::topic::{BrokerService, TopicName};

/// Paths under a topic that concern a partitioned topic as a whole (its
/// metadata, aggregated stats): answered by any broker.
const WHOLE_TOPIC_ACTIONS: &[&str] = &[
    "partitions",
    "partitioned-stats",
    "partitioned-internalStats",
];

/// The topic an admin path is about, if it is about one topic.
fn topic_of_path(path: &str) -> Option<(TopicName, Option<&str>)> {
    let rest = path.strip_prefix("/admin/v2/persistent/")?;
    let mut segments = rest.split('/');
    let (tenant, namespace, topic) = (segments.next()?, segments.next()?, segments.next()?);
    let action = segments.next();
    let name = TopicName::parse(&format!("persistent://{tenant}/{namespace}/{topic}")).ok()?;
    Some((name, action))
}

pub(super) async fn to_owner(
    State(service): State<Arc<BrokerService>>,
    request: Request,
    next: Next,
) -> Response {
    let Some(ownership) = service.ownership().cloned() else {
        return next.run(request).await;
    };
    let Some((name, action)) = topic_of_path(request.uri().path()) else {
        return next.run(request).await;
    };
    if action.is_some_and(|a| WHOLE_TOPIC_ACTIONS.contains(&a)) {
        return next.run(request).await;
    }
    // A partitioned topic's own name: handlers fan out to its partitions.
    if matches!(service.partitions(&name).await, Ok(n) if n > 0) {
        return next.run(request).await;
    }
    let query = request.uri().query();
    let authoritative = query_param(query, "authoritative") == Some("true");
    match ownership.lookup(&name, authoritative).await {
        Ok(LookupAnswer::Here) | Err(OwnershipError::NamespaceNotFound(_)) => {
            next.run(request).await
        }
        Ok(LookupAnswer::Elsewhere {
            broker,
            authoritative,
        }) => {
            // A client that came over HTTPS goes on over HTTPS.
            let base = match request.extensions().get::<crate::http::ServedOverTls>() {
                Some(_) => broker.http_url_tls.as_deref().unwrap_or(&broker.http_url),
                None => &broker.http_url,
            };
            let mut location = format!("{base}{}", request.uri().path());
            let others: Vec<&str> = query
                .unwrap_or("")
                .split('&')
                .filter(|p| !p.is_empty() && !p.starts_with("authoritative="))
                .collect();
            location.push('?');
            for param in others {
                location.push_str(param);
                location.push('&');
            }
            location.push_str(&format!("authoritative={authoritative}"));
            (
                StatusCode::TEMPORARY_REDIRECT,
                [(header::LOCATION, location)],
            )
                .into_response()
        }
        Err(e) => {
            AdminError::Unavailable(format!("finding the owner of {name}: {e}")).into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_paths() {
        let (name, action) = topic_of_path("/admin/v2/persistent/acme/orders/t1/stats").unwrap();
        assert_eq!(name.to_string(), "persistent://acme/orders/t1");
        assert_eq!(action, Some("stats"));
        let (_, action) = topic_of_path("/admin/v2/persistent/acme/orders/t1").unwrap();
        assert_eq!(action, None);
        assert!(topic_of_path("/admin/v2/persistent/acme/orders").is_none());
        assert!(topic_of_path("/admin/v2/namespaces/acme/orders/x").is_none());
    }
}
