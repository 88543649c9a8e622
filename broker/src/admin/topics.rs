//! `/admin/v2/persistent/{tenant}/{namespace}/...`: create and delete
//! topics, partitioned topics and their partition counts, list them, list
//! and delete subscriptions. Stats are in [`super::stats`].
//!
//! A partitioned topic is its partition count at `keys::partitioned_topic`
//! plus ordinary topics `{topic}-partition-{n}`, created here with it so
//! they are listed (and their stats readable) before anyone produces.

use std::sync::Arc;

use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::routing::{delete, get, put};
use axum::{Json, Router};
use bytes::Bytes;
use magnetar_metadata::{keys, Expect, MetadataError, MetadataStore};

use super::{parse_body, query_flag, stats, AdminError, AdminResult, DONE};
use crate::storage::LogStore;
use crate::topic::{BrokerService, ServiceError, TopicName};

/// Most partitions a topic may have: each is a topic with its own metadata.
const MAX_PARTITIONS: i64 = 10_000;

pub(super) fn routes() -> Router<Arc<BrokerService>> {
    const NS: &str = "/admin/v2/persistent/{tenant}/{namespace}";
    const TOPIC: &str = "/admin/v2/persistent/{tenant}/{namespace}/{topic}";
    Router::new()
        .route(NS, get(list))
        .route(&format!("{NS}/partitioned"), get(list_partitioned))
        .route(TOPIC, put(create).delete(delete_topic))
        .route(
            &format!("{TOPIC}/partitions"),
            get(partition_count)
                .put(create_partitioned)
                .post(update_partitioned)
                .delete(delete_partitioned),
        )
        .route(&format!("{TOPIC}/subscriptions"), get(subscriptions))
        .route(
            &format!("{TOPIC}/subscription/{{subscription}}"),
            delete(delete_subscription),
        )
        .route(&format!("{TOPIC}/stats"), get(stats::topic_stats))
        .route(
            &format!("{TOPIC}/internalStats"),
            get(stats::internal_stats),
        )
        .route(
            &format!("{TOPIC}/partitioned-stats"),
            get(stats::partitioned_stats),
        )
}

pub(super) type TopicPath = Path<(String, String, String)>;

/// The topic a path names, or 400.
pub(super) fn topic_name(tenant: &str, namespace: &str, topic: &str) -> AdminResult<TopicName> {
    TopicName::parse(&format!("persistent://{tenant}/{namespace}/{topic}"))
        .map_err(|e| AdminError::BadRequest(e.to_string()))
}

/// 404 unless the namespace exists.
pub(super) async fn require_namespace(
    store: &dyn MetadataStore,
    tenant: &str,
    namespace: &str,
) -> AdminResult<()> {
    match store.get(&keys::namespace(tenant, namespace)).await? {
        Some(_) => Ok(()),
        None => Err(AdminError::NotFound(format!(
            "Namespace {tenant}/{namespace} does not exist"
        ))),
    }
}

fn parse_partitions(body: &Bytes) -> AdminResult<u32> {
    let n: i64 = parse_body(body, "number of partitions")?;
    if !(1..=MAX_PARTITIONS).contains(&n) {
        return Err(AdminError::BadRequest(format!(
            "Number of partitions must be between 1 and {MAX_PARTITIONS}, got {n}"
        )));
    }
    Ok(n as u32)
}

/// Creates partitions `from..to` of `name` as empty topics (those that
/// exist already are kept).
async fn create_partitions(
    logs: &Arc<dyn LogStore>,
    name: &TopicName,
    from: u32,
    to: u32,
) -> AdminResult<()> {
    for i in from..to {
        logs.create(&name.partition(i).log_name()).await?;
    }
    Ok(())
}

async fn list(
    State(service): State<Arc<BrokerService>>,
    Path((tenant, namespace)): Path<(String, String)>,
) -> AdminResult<Json<Vec<String>>> {
    require_namespace(service.metadata().as_ref(), &tenant, &namespace).await?;
    let topics = service
        .topics_of_namespace(&format!("{tenant}/{namespace}"))
        .await?;
    Ok(Json(topics))
}

async fn list_partitioned(
    State(service): State<Arc<BrokerService>>,
    Path((tenant, namespace)): Path<(String, String)>,
) -> AdminResult<Json<Vec<String>>> {
    let store = service.metadata();
    require_namespace(store.as_ref(), &tenant, &namespace).await?;
    let prefix = keys::partitioned_topics_prefix(&tenant, &namespace);
    let mut topics: Vec<String> = store
        .list(&prefix)
        .await?
        .iter()
        .filter_map(|kv| keys::child_name(&prefix, &kv.key))
        .map(|local| format!("persistent://{tenant}/{namespace}/{local}"))
        .collect();
    topics.sort();
    Ok(Json(topics))
}

/// `PUT .../{topic}`: a non-partitioned topic, empty.
async fn create(
    State(service): State<Arc<BrokerService>>,
    Path((tenant, namespace, topic)): TopicPath,
) -> AdminResult<StatusCode> {
    let name = topic_name(&tenant, &namespace, &topic)?;
    let store = service.metadata();
    require_namespace(store.as_ref(), &tenant, &namespace).await?;
    if service.partitions(&name).await? > 0 {
        return Err(AdminError::Conflict(format!(
            "Partitioned topic {name} already exists"
        )));
    }
    if service.topic_exists(&name).await? {
        return Err(AdminError::Conflict(format!(
            "This topic already exists: {name}"
        )));
    }
    let policies = service.namespace_policies(&name).await?;
    service.check_room_for_topics(&name, &policies, 1).await?;
    if !service.logs().create(&name.log_name()).await? {
        return Err(AdminError::Conflict(format!(
            "This topic already exists: {name}"
        )));
    }
    tracing::info!(topic = %name, "topic created");
    Ok(DONE)
}

/// `DELETE .../{topic}?force=`: see [`BrokerService::delete_topic`].
async fn delete_topic(
    State(service): State<Arc<BrokerService>>,
    Path((tenant, namespace, topic)): TopicPath,
    RawQuery(query): RawQuery,
) -> AdminResult<StatusCode> {
    let name = topic_name(&tenant, &namespace, &topic)?;
    let force = query_flag(query.as_deref(), "force")?;
    if service.partitions(&name).await? > 0 {
        return Err(AdminError::PreconditionFailed(format!(
            "{name} is a partitioned topic: delete it with DELETE .../{topic}/partitions"
        )));
    }
    service.delete_topic(&name, force).await?;
    Ok(DONE)
}

/// `GET .../{topic}/partitions`: `{"partitions": N}`, 0 when not partitioned.
async fn partition_count(
    State(service): State<Arc<BrokerService>>,
    Path((tenant, namespace, topic)): TopicPath,
) -> AdminResult<Json<serde_json::Value>> {
    let name = topic_name(&tenant, &namespace, &topic)?;
    let partitions = service.partitions(&name).await?;
    Ok(Json(serde_json::json!({ "partitions": partitions })))
}

/// `PUT .../{topic}/partitions` with the count as the body.
async fn create_partitioned(
    State(service): State<Arc<BrokerService>>,
    Path((tenant, namespace, topic)): TopicPath,
    body: Bytes,
) -> AdminResult<StatusCode> {
    let name = topic_name(&tenant, &namespace, &topic)?;
    let partitions = parse_partitions(&body)?;
    let store = service.metadata();
    require_namespace(store.as_ref(), &tenant, &namespace).await?;
    if service.topic_exists(&name).await? {
        return Err(AdminError::Conflict(format!(
            "This topic already exists: {name} (not partitioned)"
        )));
    }
    let policies = service.namespace_policies(&name).await?;
    service
        .check_room_for_topics(&name, &policies, partitions)
        .await?;
    let key = keys::partitioned_topic(&name.tenant, &name.namespace, &name.local);
    match store
        .put(
            &key,
            Bytes::from(partitions.to_string()),
            Expect::Absent,
            None,
        )
        .await
    {
        Ok(_) => {}
        Err(MetadataError::Conflict { .. }) => {
            return Err(AdminError::Conflict(format!(
                "Partitioned topic {name} already exists"
            )))
        }
        Err(e) => return Err(e.into()),
    }
    create_partitions(service.logs(), &name, 0, partitions).await?;
    tracing::info!(topic = %name, partitions, "partitioned topic created");
    Ok(DONE)
}

/// `POST .../{topic}/partitions`: more partitions (never fewer).
async fn update_partitioned(
    State(service): State<Arc<BrokerService>>,
    Path((tenant, namespace, topic)): TopicPath,
    body: Bytes,
) -> AdminResult<StatusCode> {
    let name = topic_name(&tenant, &namespace, &topic)?;
    let partitions = parse_partitions(&body)?;
    let store = service.metadata();
    let key = keys::partitioned_topic(&name.tenant, &name.namespace, &name.local);
    let kv = store
        .get(&key)
        .await?
        .ok_or_else(|| AdminError::NotFound(format!("Partitioned topic {name} does not exist")))?;
    let current: u32 = std::str::from_utf8(&kv.value)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .ok_or_else(|| AdminError::Internal(format!("corrupt partition count at {key}")))?;
    if partitions <= current {
        return Err(AdminError::PreconditionFailed(format!(
            "Number of partitions must be more than the existing {current}, got {partitions}"
        )));
    }
    let policies = service.namespace_policies(&name).await?;
    service
        .check_room_for_topics(&name, &policies, partitions - current)
        .await?;
    // The new partitions exist before clients learn the new count.
    create_partitions(service.logs(), &name, current, partitions).await?;
    match store
        .put(
            &key,
            Bytes::from(partitions.to_string()),
            Expect::Version(kv.version),
            None,
        )
        .await
    {
        Ok(_) => {}
        Err(MetadataError::Conflict { .. }) => {
            return Err(AdminError::Conflict(format!(
                "Partitioned topic {name} was changed concurrently; retry"
            )))
        }
        Err(e) => return Err(e.into()),
    }
    tracing::info!(topic = %name, from = current, to = partitions, "partitions added");
    Ok(DONE)
}

/// `DELETE .../{topic}/partitions?force=`: every partition, then the count.
async fn delete_partitioned(
    State(service): State<Arc<BrokerService>>,
    Path((tenant, namespace, topic)): TopicPath,
    RawQuery(query): RawQuery,
) -> AdminResult<StatusCode> {
    let name = topic_name(&tenant, &namespace, &topic)?;
    let force = query_flag(query.as_deref(), "force")?;
    if service.partitions(&name).await? == 0 {
        return Err(AdminError::NotFound(format!(
            "Partitioned topic {name} does not exist"
        )));
    }
    service.delete_partitioned_topic(&name, force).await?;
    Ok(DONE)
}

/// The topics a request about `name` is about: its partitions when it is
/// partitioned (then true), else itself.
pub(super) async fn topics_named(
    service: &BrokerService,
    name: &TopicName,
) -> AdminResult<(Vec<TopicName>, bool)> {
    let partitions = service.partitions(name).await?;
    Ok(if partitions == 0 {
        (vec![name.clone()], false)
    } else {
        ((0..partitions).map(|i| name.partition(i)).collect(), true)
    })
}

/// `GET .../{topic}/subscriptions` (of every partition, for a partitioned
/// topic).
async fn subscriptions(
    State(service): State<Arc<BrokerService>>,
    Path((tenant, namespace, topic)): TopicPath,
) -> AdminResult<Json<Vec<String>>> {
    let name = topic_name(&tenant, &namespace, &topic)?;
    let mut names = Vec::new();
    let (targets, partitioned) = topics_named(&service, &name).await?;
    for target in targets {
        match service.existing_topic(&target).await {
            Ok(topic) => names.extend(topic.subscription_names().await?),
            Err(ServiceError::TopicNotFound(_)) if partitioned => {}
            Err(e) => return Err(e.into()),
        }
    }
    names.sort();
    names.dedup();
    Ok(Json(names))
}

/// `DELETE .../{topic}/subscription/{sub}?force=` (on every partition, for
/// a partitioned topic).
async fn delete_subscription(
    State(service): State<Arc<BrokerService>>,
    Path((tenant, namespace, topic, subscription)): Path<(String, String, String, String)>,
    RawQuery(query): RawQuery,
) -> AdminResult<StatusCode> {
    let name = topic_name(&tenant, &namespace, &topic)?;
    let force = query_flag(query.as_deref(), "force")?;
    let (targets, partitioned) = topics_named(&service, &name).await?;
    let mut deleted = false;
    for target in targets {
        let topic = match service.existing_topic(&target).await {
            Ok(topic) => topic,
            Err(ServiceError::TopicNotFound(_)) if partitioned => continue,
            Err(e) => return Err(e.into()),
        };
        match topic.delete_subscription(&subscription, force).await {
            Ok(()) => deleted = true,
            Err(ServiceError::SubscriptionNotFound(_)) if partitioned => {}
            Err(e) => return Err(e.into()),
        }
    }
    if !deleted {
        return Err(AdminError::NotFound(format!(
            "Subscription {subscription} not found on {name}"
        )));
    }
    Ok(DONE)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::testing::broker;

    fn topic(name: &str) -> TopicPath {
        Path(("acme".into(), "orders".into(), name.into()))
    }

    fn status<T: std::fmt::Debug>(result: AdminResult<T>) -> StatusCode {
        match result {
            Ok(_) => StatusCode::OK,
            Err(e) => e.status(),
        }
    }

    #[tokio::test]
    async fn partitioned_topics_are_created_grown_and_deleted() {
        let broker = broker().await;
        let s = || State(broker.service.clone());
        let n = |v: &'static str| Bytes::from_static(v.as_bytes());

        for bad in ["0", "-3", "x", "", "100001"] {
            assert_eq!(
                status(create_partitioned(s(), topic("p"), n(bad)).await),
                StatusCode::BAD_REQUEST,
                "{bad:?}"
            );
        }
        assert_eq!(
            status(
                create_partitioned(
                    s(),
                    Path(("acme".into(), "none".into(), "p".into())),
                    n("2")
                )
                .await
            ),
            StatusCode::NOT_FOUND
        );
        create_partitioned(s(), topic("p"), n("4")).await.unwrap();
        assert_eq!(
            status(create_partitioned(s(), topic("p"), n("4")).await),
            StatusCode::CONFLICT
        );
        assert_eq!(status(create(s(), topic("p")).await), StatusCode::CONFLICT);
        let Json(count) = partition_count(s(), topic("p")).await.unwrap();
        assert_eq!(count, serde_json::json!({"partitions": 4}));
        let Json(count) = partition_count(s(), topic("plain")).await.unwrap();
        assert_eq!(count, serde_json::json!({"partitions": 0}));

        // Partitions exist as topics before anyone produces.
        let Json(all) = list(s(), Path(("acme".into(), "orders".into())))
            .await
            .unwrap();
        assert_eq!(
            all,
            (0..4)
                .map(|i| format!("persistent://acme/orders/p-partition-{i}"))
                .collect::<Vec<_>>()
        );

        for fewer in ["4", "3"] {
            assert_eq!(
                status(update_partitioned(s(), topic("p"), n(fewer)).await),
                StatusCode::PRECONDITION_FAILED
            );
        }
        assert_eq!(
            status(update_partitioned(s(), topic("nope"), n("3")).await),
            StatusCode::NOT_FOUND
        );
        update_partitioned(s(), topic("p"), n("6")).await.unwrap();
        let Json(count) = partition_count(s(), topic("p")).await.unwrap();
        assert_eq!(count["partitions"], 6);
        let Json(all) = list(s(), Path(("acme".into(), "orders".into())))
            .await
            .unwrap();
        assert_eq!(all.len(), 6);

        // A plain topic of the same name as a partitioned one, and the reverse.
        create(s(), topic("plain")).await.unwrap();
        assert_eq!(
            status(create(s(), topic("plain")).await),
            StatusCode::CONFLICT
        );
        assert_eq!(
            status(create_partitioned(s(), topic("plain"), n("2")).await),
            StatusCode::CONFLICT
        );
        let Json(partitioned) = list_partitioned(s(), Path(("acme".into(), "orders".into())))
            .await
            .unwrap();
        assert_eq!(partitioned, vec!["persistent://acme/orders/p"]);
        assert_eq!(
            status(delete_topic(s(), topic("p"), RawQuery(None)).await),
            StatusCode::PRECONDITION_FAILED
        );

        // Not open on this broker: deleted from metadata directly.
        delete_partitioned(s(), topic("p"), RawQuery(None))
            .await
            .unwrap();
        delete_topic(s(), topic("plain"), RawQuery(Some("force=false".into())))
            .await
            .unwrap();
        let Json(all) = list(s(), Path(("acme".into(), "orders".into())))
            .await
            .unwrap();
        assert!(all.is_empty(), "{all:?}");
        assert_eq!(
            status(delete_partitioned(s(), topic("p"), RawQuery(None)).await),
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            status(delete_topic(s(), topic("plain"), RawQuery(None)).await),
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            status(delete_topic(s(), topic("bad name"), RawQuery(None)).await),
            StatusCode::BAD_REQUEST
        );
    }
}
