//! Cursor operations on a subscription of a persistent topic, under
//! `/admin/v2/persistent/{tenant}/{namespace}/{topic}`: reset to a time or
//! a message id, skip, clear the backlog, expire by age, and create a
//! subscription without a consumer. On a partitioned topic each applies to
//! every partition (a message id to the partition it names), as in Pulsar.
//!
//! A request about one topic reaches its owner (the admin router redirects
//! it there); on a partitioned topic, partitions other brokers own are
//! asked over HTTP. Every change is stored in the cursor's metadata before
//! the answer, so it survives a broker restart. A reset moves the cursor as the protocol's
//! SEEK does and disconnects the subscription's consumers, which subscribe
//! again and receive from the new position.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{post, put};
use axum::Router;
use bytes::Bytes;
use reqwest::Method;
use serde::Deserialize;

use crate::admin::forward::request_owner;
use crate::admin::topics::{topic_name, topics_named};
use crate::admin::{parse_optional_body, AdminError, AdminResult, DONE};
use crate::protocol::commands;
use crate::storage::Position;
use crate::topic::{BrokerService, ServiceError, Subscription, Topic, TopicName};

pub(super) fn routes() -> Router<Arc<BrokerService>> {
    const TOPIC: &str = "/admin/v2/persistent/{tenant}/{namespace}/{topic}";
    const SUB: &str =
        "/admin/v2/persistent/{tenant}/{namespace}/{topic}/subscription/{subscription}";
    Router::new()
        .route(SUB, put(create_subscription))
        .route(
            &format!("{SUB}/resetcursor/{{timestamp}}"),
            post(reset_to_time),
        )
        .route(&format!("{SUB}/resetcursor"), post(reset_to_message_id))
        .route(&format!("{SUB}/skip/{{count}}"), post(skip))
        .route(&format!("{SUB}/skip_all"), post(skip_all))
        .route(
            &format!("{SUB}/expireMessages/{{seconds}}"),
            post(expire_messages),
        )
        .route(
            &format!("{TOPIC}/all_subscription/expireMessages/{{seconds}}"),
            post(expire_all_subscriptions),
        )
}

type SubscriptionPath = Path<(String, String, String, String)>;

/// Pulsar's `ResetCursorData` / `MessageIdImpl` JSON: a message id, the
/// partition it is in (-1: none), and whether to start after it.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
struct MessageIdJson {
    ledger_id: i64,
    entry_id: i64,
    #[serde(default = "no_partition")]
    partition_index: i32,
    #[serde(default)]
    is_excluded: bool,
}

fn no_partition() -> i32 {
    -1
}

/// Where a message id sends a cursor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Start {
    Earliest,
    Latest,
    /// Deliver from this entry on.
    At(Position),
}

impl MessageIdJson {
    /// Pulsar's earliest is (-1, -1) and latest (i64::MAX, i64::MAX).
    fn start(&self) -> Start {
        if self.ledger_id < 0 {
            Start::Earliest
        } else if self.ledger_id == i64::MAX {
            Start::Latest
        } else {
            let entry = self.entry_id.max(0);
            let entry = if self.is_excluded { entry + 1 } else { entry };
            Start::At(Position::new(self.ledger_id as u64, entry))
        }
    }
}

/// A whole non-negative number from a path segment, or 400.
fn parse_count(what: &str, text: &str) -> AdminResult<u64> {
    text.trim().parse().map_err(|_| {
        AdminError::BadRequest(format!(
            "{what} must be a non-negative integer, got {text:?}"
        ))
    })
}

/// The topics a request names: `name`, or its partitions (then true).
async fn targets(service: &BrokerService, name: &TopicName) -> AdminResult<(Vec<TopicName>, bool)> {
    topics_named(service, name).await
}

/// The topic, opened; on a partitioned topic a partition that was never
/// created is skipped (`None`).
async fn open(
    service: &BrokerService,
    name: &TopicName,
    partitioned: bool,
) -> AdminResult<Option<Arc<Topic>>> {
    match service.existing_topic(name).await {
        Ok(topic) => Ok(Some(topic)),
        Err(ServiceError::TopicNotFound(_)) if partitioned => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// The same request for a partition another broker owns: its method,
/// its path under the topic, the caller's headers (authorization) and its
/// JSON body, if any.
type Remote<'r> = Option<(Method, String, &'r HeaderMap, Option<Bytes>)>;

/// A name as a URL path segment, percent-encoded.
fn url_segment(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for byte in name.bytes() {
        if byte.is_ascii_alphanumeric() || b"-_.~:=".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// Asks the owner of `partition` to apply `remote`: `Some(true)` if it
/// did, `Some(false)` if it answered 404, `None` if this broker owns the
/// partition (or there is no `remote`).
async fn ask_owner(
    service: &BrokerService,
    partition: &TopicName,
    remote: &Remote<'_>,
) -> AdminResult<Option<bool>> {
    let Some((method, action, headers, body)) = remote else {
        return Ok(None);
    };
    match request_owner(
        service,
        method.clone(),
        partition,
        action,
        headers,
        body.clone(),
    )
    .await?
    {
        None => Ok(None),
        Some(answer) if answer.status.is_success() => Ok(Some(true)),
        Some(answer) if answer.status == StatusCode::NOT_FOUND => Ok(Some(false)),
        Some(answer) => {
            let status = answer.status;
            Err(answer.into_error(status))
        }
    }
}

/// The subscription on every topic a request names that this broker
/// serves, or 404 when no topic has it (partitions without it are
/// skipped; those owned elsewhere are handed `remote`).
async fn subscriptions_named(
    service: &BrokerService,
    name: &TopicName,
    subscription: &str,
    remote: Remote<'_>,
) -> AdminResult<Vec<(Arc<Topic>, Arc<Subscription>)>> {
    let (topics, partitioned) = targets(service, name).await?;
    let mut found = Vec::new();
    let mut applied_elsewhere = false;
    for target in topics {
        if partitioned {
            if let Some(applied) = ask_owner(service, &target, &remote).await? {
                applied_elsewhere |= applied;
                continue;
            }
        }
        let Some(topic) = open(service, &target, partitioned).await? else {
            continue;
        };
        if let Some(sub) = topic.subscription(subscription).await {
            found.push((topic, sub));
        }
    }
    if found.is_empty() && !applied_elsewhere {
        return Err(AdminError::NotFound(format!(
            "Subscription {subscription} not found on {name}"
        )));
    }
    Ok(found)
}

/// Moves `subscription` so delivery restarts at `target`, stores it, and
/// disconnects its consumers (they subscribe again and read from there).
async fn reset(topic: &Topic, subscription: &Subscription, target: Start) -> AdminResult<()> {
    let log = topic.log();
    let target = match target {
        Start::Earliest => Position::EARLIEST,
        Start::Latest => {
            let last = log.last_confirmed();
            Position::new(last.ledger_id, last.entry_id + 1)
        }
        Start::At(position) => position,
    };
    let consumers = subscription.seek(target);
    tracing::info!(topic = %topic.full_name(), subscription = %subscription.name(), %target, "cursor reset by admin");
    // Detached by the seek: told at once, whether or not the store works.
    for consumer in consumers {
        let _ = consumer
            .outbound
            .send(commands::close_consumer(consumer.key.1));
    }
    subscription.flush().await?;
    Ok(())
}

/// Acknowledges everything up to and including `upto` and stores it.
async fn acknowledge_through(subscription: &Subscription, upto: Position) -> AdminResult<()> {
    subscription.expire_until(upto);
    subscription.flush().await?;
    Ok(())
}

/// `POST .../subscription/{sub}/resetcursor/{timestamp}`: to the first
/// message published at or after the time (ms since the epoch).
async fn reset_to_time(
    State(service): State<Arc<BrokerService>>,
    Path((tenant, namespace, topic, subscription, timestamp)): Path<(
        String,
        String,
        String,
        String,
        String,
    )>,
    headers: HeaderMap,
) -> AdminResult<StatusCode> {
    let name = topic_name(&tenant, &namespace, &topic)?;
    let timestamp = parse_count("timestamp", &timestamp)?;
    let action = format!(
        "subscription/{}/resetcursor/{timestamp}",
        url_segment(&subscription)
    );
    let remote = Some((Method::POST, action, &headers, None));
    for (topic, sub) in subscriptions_named(&service, &name, &subscription, remote).await? {
        let target = topic.position_at_publish_time(timestamp).await?;
        reset(&topic, &sub, Start::At(target)).await?;
    }
    Ok(DONE)
}

/// `POST .../subscription/{sub}/resetcursor` with a message id body.
async fn reset_to_message_id(
    State(service): State<Arc<BrokerService>>,
    Path((tenant, namespace, topic, subscription)): SubscriptionPath,
    headers: HeaderMap,
    body: Bytes,
) -> AdminResult<StatusCode> {
    let name = topic_name(&tenant, &namespace, &topic)?;
    let id: MessageIdJson = parse_optional_body(&body, "message id")?
        .ok_or_else(|| AdminError::BadRequest("missing message id in the body".into()))?;
    let partitions = service.partitions(&name).await?;
    let name = if partitions == 0 {
        name
    } else {
        match u32::try_from(id.partition_index) {
            Ok(index) if index < partitions => name.partition(index),
            _ => {
                return Err(AdminError::NotAllowed(
                    "Reset-cursor at position is not allowed for partitioned-topic without a partition index"
                        .into(),
                ))
            }
        }
    };
    if partitions > 0 {
        // The partition may be another broker's: it resets there.
        let remote = Some((
            Method::POST,
            format!("subscription/{}/resetcursor", url_segment(&subscription)),
            &headers,
            Some(body.clone()),
        ));
        match ask_owner(&service, &name, &remote).await? {
            Some(true) => return Ok(DONE),
            Some(false) => {
                return Err(AdminError::NotFound(format!(
                    "Subscription {subscription} not found on {name}"
                )))
            }
            None => {}
        }
    }
    for (topic, sub) in subscriptions_named(&service, &name, &subscription, None).await? {
        reset(&topic, &sub, id.start()).await?;
    }
    Ok(DONE)
}

/// `POST .../subscription/{sub}/skip/{numMessages}`: acknowledges the next
/// that many unacknowledged entries.
async fn skip(
    State(service): State<Arc<BrokerService>>,
    Path((tenant, namespace, topic, subscription, count)): Path<(
        String,
        String,
        String,
        String,
        String,
    )>,
    headers: HeaderMap,
) -> AdminResult<StatusCode> {
    let name = topic_name(&tenant, &namespace, &topic)?;
    let count = parse_count("numMessages", &count)?;
    let action = format!("subscription/{}/skip/{count}", url_segment(&subscription));
    let remote = Some((Method::POST, action, &headers, None));
    for (_, sub) in subscriptions_named(&service, &name, &subscription, remote).await? {
        let upto = sub.position_after_unacknowledged(count);
        acknowledge_through(&sub, upto).await?;
    }
    Ok(DONE)
}

/// `POST .../subscription/{sub}/skip_all`: clears the backlog.
async fn skip_all(
    State(service): State<Arc<BrokerService>>,
    Path((tenant, namespace, topic, subscription)): SubscriptionPath,
    headers: HeaderMap,
) -> AdminResult<StatusCode> {
    let name = topic_name(&tenant, &namespace, &topic)?;
    let action = format!("subscription/{}/skip_all", url_segment(&subscription));
    let remote = Some((Method::POST, action, &headers, None));
    for (topic, sub) in subscriptions_named(&service, &name, &subscription, remote).await? {
        acknowledge_through(&sub, topic.log().last_confirmed()).await?;
    }
    Ok(DONE)
}

/// `POST .../subscription/{sub}/expireMessages/{expireTimeInSeconds}`.
async fn expire_messages(
    State(service): State<Arc<BrokerService>>,
    Path((tenant, namespace, topic, subscription, seconds)): Path<(
        String,
        String,
        String,
        String,
        String,
    )>,
    headers: HeaderMap,
) -> AdminResult<StatusCode> {
    let name = topic_name(&tenant, &namespace, &topic)?;
    let seconds = parse_count("expireTimeInSeconds", &seconds)?;
    let age = Duration::from_secs(seconds);
    let action = format!(
        "subscription/{}/expireMessages/{seconds}",
        url_segment(&subscription)
    );
    let remote = Some((Method::POST, action, &headers, None));
    for (topic, sub) in subscriptions_named(&service, &name, &subscription, remote).await? {
        topic
            .expire_messages_older_than(age, Some(sub.name()))
            .await?;
        sub.flush().await?;
    }
    Ok(DONE)
}

/// `POST .../all_subscription/expireMessages/{expireTimeInSeconds}`.
async fn expire_all_subscriptions(
    State(service): State<Arc<BrokerService>>,
    Path((tenant, namespace, topic, seconds)): Path<(String, String, String, String)>,
    headers: HeaderMap,
) -> AdminResult<StatusCode> {
    let name = topic_name(&tenant, &namespace, &topic)?;
    let seconds = parse_count("expireTimeInSeconds", &seconds)?;
    let age = Duration::from_secs(seconds);
    let remote = Some((
        Method::POST,
        format!("all_subscription/expireMessages/{seconds}"),
        &headers,
        None,
    ));
    let (topics, partitioned) = targets(&service, &name).await?;
    let mut any = false;
    for target in topics {
        if partitioned {
            if let Some(applied) = ask_owner(&service, &target, &remote).await? {
                any |= applied;
                continue;
            }
        }
        let Some(topic) = open(&service, &target, partitioned).await? else {
            continue;
        };
        any = true;
        topic.expire_messages_older_than(age, None).await?;
        for sub in topic.open_subscriptions().await {
            sub.flush().await?;
        }
    }
    if !any {
        return Err(AdminError::NotFound(format!("Topic {name} not found")));
    }
    Ok(DONE)
}

/// `PUT .../subscription/{sub}`: a durable subscription starting at the
/// end, or at the message id in the body; 409 if it exists.
async fn create_subscription(
    State(service): State<Arc<BrokerService>>,
    Path((tenant, namespace, topic, subscription)): SubscriptionPath,
    headers: HeaderMap,
    body: Bytes,
) -> AdminResult<StatusCode> {
    let name = topic_name(&tenant, &namespace, &topic)?;
    if subscription.is_empty() {
        return Err(AdminError::BadRequest("empty subscription name".into()));
    }
    let id = parse_optional_body::<MessageIdJson>(&body, "message id")?;
    let remote = Some((
        Method::PUT,
        format!("subscription/{}", url_segment(&subscription)),
        &headers,
        id.as_ref().map(|_| body.clone()),
    ));
    let start = id.map_or(Start::Latest, |id| id.start());
    let (names, partitioned) = targets(&service, &name).await?;
    let mut topics = Vec::new();
    for target in names {
        if partitioned && ask_owner(&service, &target, &remote).await?.is_some() {
            continue;
        }
        // A partition not created yet is created with the subscription.
        let topic = if partitioned {
            service.topic(&target).await?
        } else {
            service.existing_topic(&target).await?
        };
        if topic.subscription(&subscription).await.is_some() {
            return Err(AdminError::Conflict(format!(
                "Subscription {subscription} already exists on {}",
                topic.full_name()
            )));
        }
        topics.push(topic);
    }
    for topic in topics {
        let log = topic.log();
        let mark_delete = match start {
            Start::Earliest => log.first_position(),
            Start::Latest => log.last_confirmed(),
            Start::At(position) => log.previous_position(position),
        };
        if topic
            .create_durable_subscription(&subscription, mark_delete)
            .await?
            .is_none()
        {
            return Err(AdminError::Conflict(format!(
                "Subscription {subscription} already exists on {}",
                topic.full_name()
            )));
        }
    }
    Ok(DONE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_ids_follow_pulsar() {
        let parse = |json: &str| serde_json::from_str::<MessageIdJson>(json).unwrap();
        let id = parse(r#"{"ledgerId":7,"entryId":3,"partitionIndex":-1,"isExcluded":false}"#);
        assert_eq!(id.start(), Start::At(Position::new(7, 3)));
        let id = parse(r#"{"ledgerId":7,"entryId":3,"isExcluded":true}"#);
        assert_eq!(id.partition_index, -1);
        assert_eq!(id.start(), Start::At(Position::new(7, 4)));
        assert_eq!(
            parse(r#"{"ledgerId":-1,"entryId":-1}"#).start(),
            Start::Earliest
        );
        let latest = format!(r#"{{"ledgerId":{0},"entryId":{0}}}"#, i64::MAX);
        assert_eq!(parse(&latest).start(), Start::Latest);
        assert!(serde_json::from_str::<MessageIdJson>(r#"{"ledgerId":"x","entryId":1}"#).is_err());
    }

    #[test]
    fn subscription_names_are_encoded_in_paths() {
        assert_eq!(url_segment("sub-1_a.b"), "sub-1_a.b");
        assert_eq!(url_segment("a b/c%"), "a%20b%2Fc%25");
    }

    #[test]
    fn counts_are_whole_numbers() {
        assert_eq!(parse_count("n", "12").unwrap(), 12);
        for bad in ["-1", "x", "", "1.5", "99999999999999999999999"] {
            let err = parse_count("n", bad).unwrap_err();
            assert_eq!(err.status(), StatusCode::BAD_REQUEST, "{bad:?}");
        }
    }

    #[tokio::test]
    async fn unknown_topics_and_subscriptions_are_404() {
        let broker = crate::admin::testing::broker().await;
        let s = || State(broker.service.clone());
        let path = |topic: &str, sub: &str| {
            Path((
                "acme".to_string(),
                "orders".to_string(),
                topic.to_string(),
                sub.to_string(),
            ))
        };
        let h = HeaderMap::new;
        let err = skip_all(s(), path("missing", "sub"), h())
            .await
            .unwrap_err();
        assert_eq!(err.status(), StatusCode::NOT_FOUND);
        let err = create_subscription(s(), path("missing", "sub"), h(), Bytes::new())
            .await
            .unwrap_err();
        assert_eq!(err.status(), StatusCode::NOT_FOUND);
        let err = reset_to_message_id(
            s(),
            path("missing", "sub"),
            HeaderMap::new(),
            Bytes::from_static(b"{"),
        )
        .await
        .unwrap_err();
        assert_eq!(err.status(), StatusCode::BAD_REQUEST);
        let err = skip(
            s(),
            Path((
                "acme".into(),
                "orders".into(),
                "missing".into(),
                "sub".into(),
                "many".into(),
            )),
            h(),
        )
        .await
        .unwrap_err();
        assert_eq!(err.status(), StatusCode::BAD_REQUEST);
    }
}
