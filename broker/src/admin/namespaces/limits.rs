//! A namespace's rate and client limits in Pulsar's paths and JSON:
//! `publishRate`, `subscriptionDispatchRate`, `maxProducersPerTopic`,
//! `maxConsumersPerTopic`, `maxConsumersPerSubscription`,
//! `maxSubscriptionsPerTopic`, `maxTopicsPerNamespace`. A change is
//! stored like every policy (CAS) and then applied at once to the
//! namespace's topics open on this broker; housekeeping applies it on the
//! others.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use bytes::Bytes;

use super::{json_or_no_content, load, parse_body, update_policies, NamespacePath};
use crate::admin::{AdminError, AdminResult, DONE};
use crate::topic::{BrokerService, DispatchRateLimit, NamespacePolicies, PublishRateLimit};

type Service = State<Arc<BrokerService>>;

pub(super) fn routes(ns: &str) -> Router<Arc<BrokerService>> {
    let mut router = Router::new()
        .route(
            &format!("{ns}/publishRate"),
            get(get_publish_rate)
                .post(set_publish_rate)
                .delete(remove_publish_rate),
        )
        .route(
            &format!("{ns}/subscriptionDispatchRate"),
            get(get_dispatch_rate)
                .post(set_dispatch_rate)
                .delete(remove_dispatch_rate),
        );
    for limit in ClientLimit::ALL {
        router = router.route(
            &format!("{ns}/{}", limit.path()),
            get(move |s: Service, p: NamespacePath| get_client_limit(s, p, limit))
                .post(move |s: Service, p: NamespacePath, b: Bytes| {
                    set_client_limit(s, p, b, limit)
                })
                .delete(move |s: Service, p: NamespacePath| remove_client_limit(s, p, limit)),
        );
    }
    router
}

/// Stores `change` and applies the resulting limits to open topics.
async fn update_limits(
    service: &BrokerService,
    tenant: &str,
    namespace: &str,
    change: impl Fn(&mut NamespacePolicies),
) -> AdminResult<StatusCode> {
    let policies = update_policies(service.metadata().as_ref(), tenant, namespace, change).await?;
    service.apply_limits(tenant, namespace, &policies).await;
    Ok(DONE)
}

/// Pulsar requires a period of at least one second; a rate relative to the
/// publish rate is not supported here.
fn validate_dispatch_rate(rate: &DispatchRateLimit) -> AdminResult<()> {
    if rate.rate_period_in_second < 1 {
        return Err(AdminError::BadRequest(format!(
            "ratePeriodInSecond must be 1 or more, got {}",
            rate.rate_period_in_second
        )));
    }
    if rate.relative_to_publish_rate {
        return Err(AdminError::BadRequest(
            "relativeToPublishRate is not supported".into(),
        ));
    }
    Ok(())
}

async fn get_publish_rate(
    State(service): Service,
    Path((tenant, namespace)): NamespacePath,
) -> AdminResult<Response> {
    let policies = load(service.metadata().as_ref(), &tenant, &namespace).await?;
    Ok(json_or_no_content(policies.publish_rate))
}

async fn set_publish_rate(
    State(service): Service,
    Path((tenant, namespace)): NamespacePath,
    body: Bytes,
) -> AdminResult<StatusCode> {
    let rate: PublishRateLimit = parse_body(&body, "PublishRate")?;
    update_limits(&service, &tenant, &namespace, |p| {
        p.publish_rate = Some(rate)
    })
    .await
}

async fn remove_publish_rate(
    State(service): Service,
    Path((tenant, namespace)): NamespacePath,
) -> AdminResult<StatusCode> {
    update_limits(&service, &tenant, &namespace, |p| p.publish_rate = None).await
}

async fn get_dispatch_rate(
    State(service): Service,
    Path((tenant, namespace)): NamespacePath,
) -> AdminResult<Response> {
    let policies = load(service.metadata().as_ref(), &tenant, &namespace).await?;
    Ok(json_or_no_content(policies.subscription_dispatch_rate))
}

async fn set_dispatch_rate(
    State(service): Service,
    Path((tenant, namespace)): NamespacePath,
    body: Bytes,
) -> AdminResult<StatusCode> {
    let rate: DispatchRateLimit = parse_body(&body, "DispatchRate")?;
    validate_dispatch_rate(&rate)?;
    update_limits(&service, &tenant, &namespace, |p| {
        p.subscription_dispatch_rate = Some(rate)
    })
    .await
}

async fn remove_dispatch_rate(
    State(service): Service,
    Path((tenant, namespace)): NamespacePath,
) -> AdminResult<StatusCode> {
    update_limits(&service, &tenant, &namespace, |p| {
        p.subscription_dispatch_rate = None
    })
    .await
}

/// The count limits, each a bare integer (0: unlimited).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ClientLimit {
    ProducersPerTopic,
    ConsumersPerTopic,
    ConsumersPerSubscription,
    SubscriptionsPerTopic,
    TopicsPerNamespace,
}

impl ClientLimit {
    const ALL: [ClientLimit; 5] = [
        ClientLimit::ProducersPerTopic,
        ClientLimit::ConsumersPerTopic,
        ClientLimit::ConsumersPerSubscription,
        ClientLimit::SubscriptionsPerTopic,
        ClientLimit::TopicsPerNamespace,
    ];

    fn path(self) -> &'static str {
        match self {
            ClientLimit::ProducersPerTopic => "maxProducersPerTopic",
            ClientLimit::ConsumersPerTopic => "maxConsumersPerTopic",
            ClientLimit::ConsumersPerSubscription => "maxConsumersPerSubscription",
            ClientLimit::SubscriptionsPerTopic => "maxSubscriptionsPerTopic",
            ClientLimit::TopicsPerNamespace => "maxTopicsPerNamespace",
        }
    }

    fn slot(self, p: &mut NamespacePolicies) -> &mut Option<u32> {
        match self {
            ClientLimit::ProducersPerTopic => &mut p.max_producers_per_topic,
            ClientLimit::ConsumersPerTopic => &mut p.max_consumers_per_topic,
            ClientLimit::ConsumersPerSubscription => &mut p.max_consumers_per_subscription,
            ClientLimit::SubscriptionsPerTopic => &mut p.max_subscriptions_per_topic,
            ClientLimit::TopicsPerNamespace => &mut p.max_topics_per_namespace,
        }
    }

    /// Pulsar's rule: 0 or more (an `int`).
    fn validate(self, value: i64) -> AdminResult<u32> {
        i32::try_from(value)
            .ok()
            .and_then(|v| u32::try_from(v).ok())
            .ok_or_else(|| {
                AdminError::BadRequest(format!(
                    "{} must be 0 or more (and at most {}), got {value}",
                    self.path(),
                    i32::MAX
                ))
            })
    }
}

async fn get_client_limit(
    State(service): Service,
    Path((tenant, namespace)): NamespacePath,
    limit: ClientLimit,
) -> AdminResult<Response> {
    let mut policies = load(service.metadata().as_ref(), &tenant, &namespace).await?;
    Ok(json_or_no_content(*limit.slot(&mut policies)))
}

async fn set_client_limit(
    State(service): Service,
    Path((tenant, namespace)): NamespacePath,
    body: Bytes,
    limit: ClientLimit,
) -> AdminResult<StatusCode> {
    let value = limit.validate(parse_body(&body, limit.path())?)?;
    update_limits(&service, &tenant, &namespace, |p| {
        *limit.slot(p) = Some(value)
    })
    .await
}

async fn remove_client_limit(
    State(service): Service,
    Path((tenant, namespace)): NamespacePath,
    limit: ClientLimit,
) -> AdminResult<StatusCode> {
    update_limits(&service, &tenant, &namespace, |p| *limit.slot(p) = None).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::testing::broker;

    fn ns() -> NamespacePath {
        Path(("acme".to_string(), "orders".to_string()))
    }

    fn body(json: &'static str) -> Bytes {
        Bytes::from_static(json.as_bytes())
    }

    fn status<T: std::fmt::Debug>(result: AdminResult<T>) -> StatusCode {
        match result {
            Ok(_) => StatusCode::OK,
            Err(e) => e.status(),
        }
    }

    #[tokio::test]
    async fn limits_round_trip_in_pulsars_json_and_bad_input_changes_nothing() {
        let broker = broker().await;
        let s = || State(broker.service.clone());
        let stored = || async {
            load(broker.service.metadata().as_ref(), "acme", "orders")
                .await
                .unwrap()
        };

        set_publish_rate(
            s(),
            ns(),
            body(r#"{"publishThrottlingRateInMsg": 100, "publishThrottlingRateInByte": -1}"#),
        )
        .await
        .unwrap();
        set_dispatch_rate(
            s(),
            ns(),
            body(r#"{"dispatchThrottlingRateInMsg": 50, "dispatchThrottlingRateInByte": 0}"#),
        )
        .await
        .unwrap();
        set_client_limit(s(), ns(), body("2"), ClientLimit::ProducersPerTopic)
            .await
            .unwrap();
        set_client_limit(s(), ns(), body("1"), ClientLimit::ConsumersPerSubscription)
            .await
            .unwrap();
        let expected = NamespacePolicies {
            publish_rate: Some(PublishRateLimit {
                publish_throttling_rate_in_msg: 100,
                publish_throttling_rate_in_byte: -1,
            }),
            subscription_dispatch_rate: Some(DispatchRateLimit {
                dispatch_throttling_rate_in_msg: 50,
                dispatch_throttling_rate_in_byte: 0,
                rate_period_in_second: 1,
                relative_to_publish_rate: false,
            }),
            max_producers_per_topic: Some(2),
            max_consumers_per_subscription: Some(1),
            ..NamespacePolicies::default()
        };
        assert_eq!(stored().await, expected);

        let bad = [
            status(set_publish_rate(s(), ns(), body("{not json")).await),
            status(
                set_dispatch_rate(
                    s(),
                    ns(),
                    body(r#"{"dispatchThrottlingRateInMsg": 5, "ratePeriodInSecond": 0}"#),
                )
                .await,
            ),
            status(
                set_dispatch_rate(
                    s(),
                    ns(),
                    body(r#"{"dispatchThrottlingRateInMsg": 5, "relativeToPublishRate": true}"#),
                )
                .await,
            ),
            status(set_client_limit(s(), ns(), body("-1"), ClientLimit::ConsumersPerTopic).await),
            status(
                set_client_limit(
                    s(),
                    ns(),
                    body("4294967296"),
                    ClientLimit::ConsumersPerTopic,
                )
                .await,
            ),
            status(set_client_limit(s(), ns(), Bytes::new(), ClientLimit::ConsumersPerTopic).await),
        ];
        assert!(bad.iter().all(|s| *s == StatusCode::BAD_REQUEST), "{bad:?}");
        assert_eq!(stored().await, expected);

        let answer = get_client_limit(s(), ns(), ClientLimit::ProducersPerTopic)
            .await
            .unwrap();
        assert_eq!(answer.status(), StatusCode::OK);
        remove_publish_rate(s(), ns()).await.unwrap();
        remove_client_limit(s(), ns(), ClientLimit::ProducersPerTopic)
            .await
            .unwrap();
        let answer = get_publish_rate(s(), ns()).await.unwrap();
        assert_eq!(answer.status(), StatusCode::NO_CONTENT);
        let answer = get_client_limit(s(), ns(), ClientLimit::ProducersPerTopic)
            .await
            .unwrap();
        assert_eq!(answer.status(), StatusCode::NO_CONTENT);
        assert_eq!(
            status(
                set_client_limit(
                    State(broker.service.clone()),
                    Path(("acme".into(), "missing".into())),
                    body("1"),
                    ClientLimit::ProducersPerTopic
                )
                .await
            ),
            StatusCode::NOT_FOUND
        );
    }
}
