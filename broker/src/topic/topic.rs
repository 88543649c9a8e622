//! One open topic: its managed ledger and its subscriptions.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use magnetar_metadata::{keys, MetadataStore};
use pulsar::proto::MessageIdData;
use tokio::sync::mpsc;

use super::subscription::{ConsumerHandle, ConsumerKey, Subscription, SubscriptionType};
use super::{ServiceError, TopicName};
use crate::managed_ledger::{ManagedLedger, ManagedLedgerError, Position};
use crate::metrics::BrokerMetrics;
use crate::protocol::{commands, Outbound};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InitialPosition {
    Latest,
    Earliest,
}

/// What a SUBSCRIBE asks for, in broker terms.
#[derive(Clone, Debug)]
pub struct SubscribeRequest {
    pub subscription: String,
    pub sub_type: SubscriptionType,
    pub durable: bool,
    pub initial: InitialPosition,
    /// Where a non-durable subscription (a Reader) starts: the client's
    /// message id, with its batch index.
    pub start: Option<MessageIdData>,
}

pub struct Topic {
    name: TopicName,
    full_name: String,
    ml: Arc<ManagedLedger>,
    store: Arc<dyn MetadataStore>,
    metrics: BrokerMetrics,
    subscriptions: tokio::sync::Mutex<HashMap<String, Arc<Subscription>>>,
    /// Producers attached here, so the broker can close them (topic deletion,
    /// backlog quota) and count them.
    producers: std::sync::Mutex<HashMap<ProducerKey, mpsc::UnboundedSender<Outbound>>>,
}

/// A producer is known by its connection and its id on that connection.
pub type ProducerKey = (u64, u64);

impl Topic {
    pub(super) fn new(
        name: TopicName,
        ml: Arc<ManagedLedger>,
        store: Arc<dyn MetadataStore>,
        metrics: BrokerMetrics,
    ) -> Self {
        Topic {
            full_name: name.to_string(),
            name,
            ml,
            store,
            metrics,
            subscriptions: tokio::sync::Mutex::new(HashMap::new()),
            producers: std::sync::Mutex::new(HashMap::new()),
        }
    }

    pub fn name(&self) -> &TopicName {
        &self.name
    }

    pub fn full_name(&self) -> &str {
        &self.full_name
    }

    pub fn managed_ledger(&self) -> &Arc<ManagedLedger> {
        &self.ml
    }

    fn producers(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<ProducerKey, mpsc::UnboundedSender<Outbound>>> {
        self.producers.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Attaches a producer; `outbound` is its connection's writer, used to
    /// close it from the broker's side.
    pub fn add_producer(
        &self,
        key: ProducerKey,
        outbound: mpsc::UnboundedSender<Outbound>,
    ) -> Result<(), ServiceError> {
        self.producers().insert(key, outbound);
        Ok(())
    }

    pub fn remove_producer(&self, key: ProducerKey) {
        self.producers().remove(&key);
    }

    pub fn producer_count(&self) -> usize {
        self.producers().len()
    }

    /// Sends CLOSE_PRODUCER to every producer and forgets them; clients
    /// reconnect through lookup.
    pub fn disconnect_producers(&self) {
        for ((_, producer_id), outbound) in self.producers().drain() {
            let _ = outbound.send(commands::close_producer(producer_id));
        }
    }

    /// Appends one entry (a message or a whole batch, as the producer sent it).
    pub fn publish(
        &self,
        entry: Bytes,
    ) -> impl Future<Output = Result<Position, ManagedLedgerError>> + Send {
        self.ml.append(entry)
    }

    /// Attaches a consumer to a subscription, creating the subscription (and
    /// its durable cursor) if needed.
    pub async fn subscribe(
        &self,
        request: &SubscribeRequest,
        handle: ConsumerHandle,
    ) -> Result<Arc<Subscription>, ServiceError> {
        let mut subscriptions = self.subscriptions.lock().await;
        let subscription = match subscriptions.get(&request.subscription) {
            Some(existing) if existing.is_durable() || !request.durable => existing.clone(),
            _ => {
                let created = self.create_subscription(request).await?;
                subscriptions.insert(request.subscription.clone(), created.clone());
                created
            }
        };
        subscription.add_consumer(handle, request.sub_type)?;
        Ok(subscription)
    }

    async fn create_subscription(
        &self,
        request: &SubscribeRequest,
    ) -> Result<Arc<Subscription>, ServiceError> {
        let initial = match request.initial {
            InitialPosition::Earliest => self.ml.first_position(),
            InitialPosition::Latest => self.ml.last_confirmed(),
        };
        if request.durable {
            let key = keys::cursor(
                &self.name.tenant,
                &self.name.namespace,
                &self.name.local,
                &request.subscription,
            );
            return Ok(Subscription::open_durable(
                self.full_name.clone(),
                request.subscription.clone(),
                (self.ml.clone(), self.metrics.clone()),
                (self.store.clone(), key),
                request.sub_type,
                initial,
            )
            .await?);
        }
        let mark_delete = match &request.start {
            None => initial,
            // Earliest is (-1, -1) on the wire.
            Some(id) if id.ledger_id == u64::MAX => self.ml.first_position(),
            // Latest is (i64::MAX, i64::MAX).
            Some(id) if id.ledger_id >= i64::MAX as u64 => self.ml.last_confirmed(),
            Some(id) => {
                let position = commands::position_of(id);
                // Inside a batch: deliver the batch again; the client skips
                // the messages before its start.
                if id.batch_index.unwrap_or(-1) >= 0 {
                    self.ml.position_before(position)
                } else {
                    position
                }
            }
        };
        Ok(Subscription::open_non_durable(
            self.full_name.clone(),
            request.subscription.clone(),
            self.ml.clone(),
            self.metrics.clone(),
            request.sub_type,
            mark_delete,
        ))
    }

    /// A consumer left: its unacknowledged entries go back for redelivery,
    /// and a non-durable subscription without consumers is dropped.
    pub async fn release_consumer(&self, subscription: &Arc<Subscription>, key: ConsumerKey) {
        let empty = subscription.remove_consumer(key);
        if empty && !subscription.is_durable() {
            let mut subscriptions = self.subscriptions.lock().await;
            if let Some(current) = subscriptions.get(subscription.name()) {
                if Arc::ptr_eq(current, subscription) {
                    subscriptions.remove(subscription.name());
                }
            }
            drop(subscriptions);
            subscription.close().await;
        }
    }

    /// Deletes the subscription if `key` is its only consumer.
    pub async fn unsubscribe(
        &self,
        subscription: &Arc<Subscription>,
        key: ConsumerKey,
    ) -> Result<(), ServiceError> {
        subscription.begin_unsubscribe(key)?;
        subscription.delete_cursor().await?;
        let mut subscriptions = self.subscriptions.lock().await;
        if let Some(current) = subscriptions.get(subscription.name()) {
            if Arc::ptr_eq(current, subscription) {
                subscriptions.remove(subscription.name());
            }
        }
        Ok(())
    }

    /// The id of the last message stored (for GET_LAST_MESSAGE_ID): the last
    /// entry, with the index of its last message when it is a batch.
    pub async fn last_message_id(&self) -> Result<MessageIdData, ServiceError> {
        let last = self.ml.last_confirmed();
        let mut id = commands::message_id(last);
        id.batch_index = Some(-1);
        if last.entry_id < 0 {
            return Ok(id);
        }
        let before = self.ml.position_before(last);
        let entries = self.ml.read_entries(before, 1).await?;
        if let Some(entry) = entries.first().filter(|e| e.position == last) {
            let messages = commands::entry_info(&entry.data).messages;
            if messages > 1 {
                id.batch_index = Some(messages as i32 - 1);
            }
        }
        Ok(id)
    }

    /// The first entry published at or after `publish_time_ms` (for SEEK by
    /// time), found by binary search over the topic's entries; just past the
    /// last entry if none is that recent.
    pub async fn position_at_publish_time(
        &self,
        publish_time_ms: u64,
    ) -> Result<Position, ServiceError> {
        let mut ledgers: Vec<(u64, i64)> = Vec::new();
        for info in self.ml.ledgers() {
            let count = match info.entries {
                Some(n) => n as i64,
                None => {
                    let last = self.ml.last_confirmed();
                    if last.ledger_id == info.ledger_id {
                        last.entry_id + 1
                    } else {
                        0
                    }
                }
            };
            if count > 0 {
                ledgers.push((info.ledger_id, count));
            }
        }
        // Flatten (ledger, entry) into one index space for the search.
        let total: i64 = ledgers.iter().map(|(_, n)| n).sum();
        let position_at = |mut index: i64| {
            for (ledger, count) in &ledgers {
                if index < *count {
                    return Position::new(*ledger, index);
                }
                index -= count;
            }
            Position::LATEST
        };
        let (mut low, mut high) = (0i64, total);
        while low < high {
            let mid = low + (high - low) / 2;
            let position = position_at(mid);
            let before = self.ml.position_before(position);
            let entries = self.ml.read_entries(before, 1).await?;
            let published = entries
                .first()
                .and_then(|e| crate::protocol::entry_metadata(&e.data).ok())
                .map(|m| m.publish_time)
                .unwrap_or(0);
            if published >= publish_time_ms {
                high = mid;
            } else {
                low = mid + 1;
            }
        }
        if low < total {
            Ok(position_at(low))
        } else {
            let last = self.ml.last_confirmed();
            Ok(Position::new(last.ledger_id, last.entry_id + 1))
        }
    }

    /// Persists every cursor and seals the current ledger.
    pub async fn close(&self) {
        let subscriptions: Vec<Arc<Subscription>> =
            self.subscriptions.lock().await.values().cloned().collect();
        for subscription in subscriptions {
            subscription.close().await;
        }
        if let Err(e) = self.ml.close().await {
            tracing::warn!(topic = %self.full_name, error = %e, "closing managed ledger failed");
        }
    }
}
