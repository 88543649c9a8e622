//! Topic stats in Pulsar's JSON, the subset this broker measures: `stats`
//! (`TopicStats`), `internalStats` (`PersistentTopicInternalStats`) and
//! `partitioned-stats` (summed over partitions). Read-only; reading the
//! stats of a stored topic loads it, as Pulsar does.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use serde::{Deserialize, Serialize};

use super::topics::{topic_name, TopicPath};
use super::{forward, query_flag, query_param, AdminError, AdminResult};
use crate::cursor::CursorSnapshot;
use crate::storage::PartitionLog;
use crate::topic::{BrokerService, ServiceError, Subscription, SubscriptionType, Topic};

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct TopicStats {
    msg_rate_in: f64,
    msg_throughput_in: f64,
    msg_in_counter: u64,
    bytes_in_counter: u64,
    average_msg_size: f64,
    storage_size: u64,
    /// Estimated bytes not yet consumed by the slowest subscription.
    backlog_size: u64,
    publishers: Vec<PublisherStats>,
    subscriptions: BTreeMap<String, SubscriptionStats>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct PublisherStats {
    producer_id: u64,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct SubscriptionStats {
    /// None for a stored subscription nobody has opened since the topic
    /// was loaded (its type is chosen by its next consumer).
    #[serde(rename = "type")]
    sub_type: Option<String>,
    /// Entries not yet acknowledged (a batch counts once).
    msg_backlog: u64,
    /// Messages and bytes dispatched to consumers since the topic was
    /// opened here (Pulsar's counters, which also restart with the topic).
    msg_out_counter: u64,
    bytes_out_counter: u64,
    is_durable: bool,
    consumers: Vec<ConsumerStats>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct ConsumerStats {
    consumer_name: String,
}

impl TopicStats {
    /// Adds a partition's stats into a partitioned topic's.
    fn add(&mut self, partition: &TopicStats) {
        self.msg_rate_in += partition.msg_rate_in;
        self.msg_throughput_in += partition.msg_throughput_in;
        self.msg_in_counter += partition.msg_in_counter;
        self.bytes_in_counter += partition.bytes_in_counter;
        self.storage_size += partition.storage_size;
        self.backlog_size += partition.backlog_size;
        self.average_msg_size = if self.msg_in_counter > 0 {
            self.bytes_in_counter as f64 / self.msg_in_counter as f64
        } else {
            0.0
        };
        self.publishers.extend(partition.publishers.iter().cloned());
        for (name, sub) in &partition.subscriptions {
            match self.subscriptions.get_mut(name) {
                Some(total) => {
                    total.msg_backlog += sub.msg_backlog;
                    total.msg_out_counter += sub.msg_out_counter;
                    total.bytes_out_counter += sub.bytes_out_counter;
                    total.sub_type = total.sub_type.take().or(sub.sub_type.clone());
                    total.consumers.extend(sub.consumers.iter().cloned());
                }
                None => {
                    self.subscriptions.insert(name.clone(), sub.clone());
                }
            }
        }
    }
}

/// Pulsar's names of subscription types.
fn type_name(sub_type: SubscriptionType) -> &'static str {
    match sub_type {
        SubscriptionType::Exclusive => "Exclusive",
        SubscriptionType::Shared => "Shared",
        SubscriptionType::Failover => "Failover",
        SubscriptionType::KeyShared => "Key_Shared",
    }
}

/// Entries after a stored cursor's mark-delete position not acknowledged
/// individually.
fn stored_backlog(log: &dyn PartitionLog, cursor: &CursorSnapshot) -> u64 {
    let acked: u64 = cursor
        .acked_ranges
        .iter()
        .map(|(_, first, last)| (last - first + 1).max(0) as u64)
        .sum();
    log.entries_after(cursor.mark_delete).saturating_sub(acked)
}

async fn collect(topic: &Topic) -> AdminResult<TopicStats> {
    let log = topic.log();
    let storage = log.stats();
    let totals = topic.counters().totals();
    let rate = topic.counters().rates();
    let mut subscriptions = BTreeMap::new();
    for sub in topic.open_subscriptions().await {
        let (msg_out_counter, bytes_out_counter) = sub.dispatched_totals();
        let stats = SubscriptionStats {
            sub_type: Some(type_name(sub.sub_type()).to_string()),
            msg_backlog: sub.backlog_entries(),
            msg_out_counter,
            bytes_out_counter,
            is_durable: sub.is_durable(),
            consumers: sub
                .consumers()
                .into_iter()
                .map(|c| ConsumerStats {
                    consumer_name: c.name,
                })
                .collect(),
        };
        subscriptions.insert(sub.name().to_string(), stats);
    }
    for (name, cursor) in topic.stored_cursors().await? {
        subscriptions
            .entry(name)
            .or_insert_with(|| SubscriptionStats {
                sub_type: None,
                msg_backlog: stored_backlog(log.as_ref(), &cursor),
                is_durable: true,
                ..Default::default()
            });
    }
    let bytes_per_entry = if storage.entries > 0 {
        storage.size as f64 / storage.entries as f64
    } else {
        0.0
    };
    let slowest = subscriptions
        .values()
        .map(|s| s.msg_backlog)
        .max()
        .unwrap_or(0);
    Ok(TopicStats {
        msg_rate_in: rate.messages_per_sec,
        msg_throughput_in: rate.bytes_per_sec,
        msg_in_counter: totals.messages,
        bytes_in_counter: totals.bytes,
        average_msg_size: if totals.messages > 0 {
            totals.bytes as f64 / totals.messages as f64
        } else {
            0.0
        },
        storage_size: storage.size,
        backlog_size: (slowest as f64 * bytes_per_entry) as u64,
        publishers: topic
            .producer_keys()
            .into_iter()
            .map(|(_, producer_id)| PublisherStats { producer_id })
            .collect(),
        subscriptions,
    })
}

/// `GET .../{topic}/stats`.
pub(super) async fn topic_stats(
    State(service): State<Arc<BrokerService>>,
    Path((tenant, namespace, topic)): TopicPath,
) -> AdminResult<Json<serde_json::Value>> {
    let name = topic_name(&tenant, &namespace, &topic)?;
    let topic = service.existing_topic(&name).await?;
    let stats = collect(&topic).await?;
    Ok(Json(to_json(&stats)?))
}

fn to_json(value: &impl Serialize) -> AdminResult<serde_json::Value> {
    serde_json::to_value(value).map_err(|e| AdminError::Internal(format!("encoding stats: {e}")))
}

/// `GET .../{topic}/partitioned-stats?perPartition=`: the partitions'
/// stats summed, with `metadata.partitions` and, unless `perPartition=false`,
/// each partition's own under `partitions`.
pub(super) async fn partitioned_stats(
    State(service): State<Arc<BrokerService>>,
    Path((tenant, namespace, topic)): TopicPath,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> AdminResult<Json<serde_json::Value>> {
    let name = topic_name(&tenant, &namespace, &topic)?;
    // Pulsar's default is per partition.
    let per_partition = query_param(query.as_deref(), "perPartition").is_none()
        || query_flag(query.as_deref(), "perPartition")?;
    let partitions = service.partitions(&name).await?;
    if partitions == 0 {
        return Err(AdminError::NotFound(format!(
            "Partitioned topic {name} does not exist"
        )));
    }
    let mut total = TopicStats::default();
    let mut each = BTreeMap::new();
    for i in 0..partitions {
        let partition = name.partition(i);
        // Partitions are spread over brokers: ask the owner of each.
        if let Some(answer) = forward::to_owner(&service, &partition, "stats", &headers).await? {
            match answer.status {
                StatusCode::OK => {
                    let stats: TopicStats = serde_json::from_slice(&answer.body).map_err(|e| {
                        AdminError::Internal(format!("stats of {partition} from its owner: {e}"))
                    })?;
                    total.add(&stats);
                    each.insert(partition.to_string(), stats);
                }
                StatusCode::NOT_FOUND => {}
                status => return Err(answer.into_error(status)),
            }
            continue;
        }
        let topic = match service.existing_topic(&partition).await {
            Ok(topic) => topic,
            Err(ServiceError::TopicNotFound(_)) => continue,
            Err(e) => return Err(e.into()),
        };
        let stats = collect(&topic).await?;
        total.add(&stats);
        each.insert(partition.to_string(), stats);
    }
    let mut json = to_json(&total)?;
    if let Some(object) = json.as_object_mut() {
        object.insert(
            "metadata".into(),
            serde_json::json!({ "partitions": partitions }),
        );
        if per_partition {
            object.insert("partitions".into(), to_json(&each)?);
        }
    }
    Ok(Json(json))
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct InternalStats {
    entries_added_counter: u64,
    number_of_entries: u64,
    total_size: u64,
    current_ledger_entries: u64,
    current_ledger_size: u64,
    last_confirmed_entry: String,
    ledgers: Vec<LedgerJson>,
    cursors: BTreeMap<String, CursorJson>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct LedgerJson {
    ledger_id: u64,
    /// Not in Pulsar: a local log's segments share its ledger id and
    /// differ here (the segment's base offset); 0 for a ledger.
    first_entry_id: i64,
    entries: u64,
    size: u64,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct CursorJson {
    /// `ledger:entry`.
    mark_delete_position: String,
    /// Ranges acknowledged beyond the mark-delete position, in Pulsar's
    /// notation: `[(3:4..3:6], (3:8..3:9]]`.
    individually_deleted_messages: String,
    total_non_contiguous_deleted_messages_range: usize,
    /// The mark-delete position of the state last stored, where a broker
    /// crash would restart the subscription (absent for a non-durable one).
    #[serde(skip_serializing_if = "Option::is_none")]
    persistent_mark_delete_position: Option<String>,
    is_durable: bool,
}

impl CursorJson {
    /// A cursor known only from its stored record.
    fn stored(cursor: &CursorSnapshot) -> Self {
        CursorJson {
            mark_delete_position: cursor.mark_delete.to_string(),
            individually_deleted_messages: deleted_ranges(cursor),
            total_non_contiguous_deleted_messages_range: cursor.acked_ranges.len(),
            persistent_mark_delete_position: Some(cursor.mark_delete.to_string()),
            is_durable: true,
        }
    }

    /// An open subscription's cursor.
    fn open(sub: &Subscription) -> Self {
        let cursor = sub.cursor_snapshot();
        CursorJson {
            mark_delete_position: cursor.mark_delete.to_string(),
            individually_deleted_messages: deleted_ranges(&cursor),
            total_non_contiguous_deleted_messages_range: sub.acked_runs(),
            persistent_mark_delete_position: sub.persisted_mark_delete().map(|p| p.to_string()),
            is_durable: sub.is_durable(),
        }
    }
}

/// Acknowledged runs `(ledger, first, last)` as open-closed ranges
/// `(ledger:first-1..ledger:last]`, as Pulsar prints them.
fn deleted_ranges(cursor: &CursorSnapshot) -> String {
    let ranges: Vec<String> = cursor
        .acked_ranges
        .iter()
        .map(|(ledger, first, last)| format!("({ledger}:{}..{ledger}:{last}]", first - 1))
        .collect();
    format!("[{}]", ranges.join(", "))
}

/// `GET .../{topic}/internalStats`.
pub(super) async fn internal_stats(
    State(service): State<Arc<BrokerService>>,
    Path((tenant, namespace, topic)): TopicPath,
) -> AdminResult<Json<serde_json::Value>> {
    let name = topic_name(&tenant, &namespace, &topic)?;
    let topic = service.existing_topic(&name).await?;
    let storage = topic.log().stats();
    let mut cursors = BTreeMap::new();
    for sub in topic.open_subscriptions().await {
        cursors.insert(sub.name().to_string(), CursorJson::open(&sub));
    }
    for (name, cursor) in topic.stored_cursors().await? {
        cursors
            .entry(name)
            .or_insert_with(|| CursorJson::stored(&cursor));
    }
    let current = storage.current.clone();
    let stats = InternalStats {
        entries_added_counter: topic.counters().totals().entries,
        number_of_entries: storage.entries,
        total_size: storage.size,
        current_ledger_entries: current.as_ref().map_or(0, |l| l.entries),
        current_ledger_size: current.as_ref().map_or(0, |l| l.size),
        last_confirmed_entry: storage.last_confirmed.to_string(),
        ledgers: storage
            .segments
            .iter()
            .map(|l| LedgerJson {
                ledger_id: l.id,
                first_entry_id: l.first_entry,
                entries: l.entries,
                size: l.size,
            })
            .collect(),
        cursors,
    };
    Ok(Json(to_json(&stats)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::Position;

    #[test]
    fn deleted_ranges_in_pulsar_notation() {
        let cursor = CursorSnapshot {
            mark_delete: Position::new(3, 2),
            acked_ranges: vec![(3, 5, 6), (3, 9, 9), (4, 0, 1)],
            partial: Vec::new(),
        };
        assert_eq!(
            deleted_ranges(&cursor),
            "[(3:4..3:6], (3:8..3:9], (4:-1..4:1]]"
        );
        let json = CursorJson::stored(&cursor);
        assert_eq!(json.mark_delete_position, "3:2");
        assert_eq!(json.total_non_contiguous_deleted_messages_range, 3);
        let empty = CursorSnapshot {
            acked_ranges: Vec::new(),
            ..cursor
        };
        assert_eq!(deleted_ranges(&empty), "[]");
    }

    fn sub(backlog: u64, consumer: &str) -> SubscriptionStats {
        SubscriptionStats {
            sub_type: Some("Shared".into()),
            msg_backlog: backlog,
            is_durable: true,
            consumers: vec![ConsumerStats {
                consumer_name: consumer.into(),
            }],
            ..Default::default()
        }
    }

    #[test]
    fn partition_stats_add_up() {
        let a = TopicStats {
            msg_in_counter: 10,
            bytes_in_counter: 100,
            storage_size: 150,
            publishers: vec![PublisherStats { producer_id: 1 }],
            subscriptions: [("s".to_string(), sub(3, "c1"))].into(),
            ..Default::default()
        };
        let b = TopicStats {
            msg_in_counter: 30,
            bytes_in_counter: 100,
            storage_size: 50,
            publishers: vec![PublisherStats { producer_id: 2 }],
            subscriptions: [
                ("s".to_string(), sub(4, "c2")),
                ("t".to_string(), sub(1, "c3")),
            ]
            .into(),
            ..Default::default()
        };
        let mut total = TopicStats::default();
        total.add(&a);
        total.add(&b);
        assert_eq!(total.msg_in_counter, 40);
        assert_eq!(total.storage_size, 200);
        assert_eq!(total.average_msg_size, 5.0);
        assert_eq!(total.publishers.len(), 2);
        assert_eq!(total.subscriptions["s"].msg_backlog, 7);
        assert_eq!(total.subscriptions["s"].consumers.len(), 2);
        assert_eq!(total.subscriptions["t"].msg_backlog, 1);
    }
}
