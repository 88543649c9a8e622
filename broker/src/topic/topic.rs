//! One open topic: its log and its subscriptions.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use pulsar::proto::MessageIdData;

use super::counters::TopicCounters;
use super::housekeeping::QuotaState;
use super::limits::{has_room, ClientLimits};
use super::rate_limit::RateLimiter;
use super::subscription::{ConsumerHandle, ConsumerKey, Subscription, SubscriptionType};
use super::{ServiceError, TopicName};
use crate::cursor::{CursorSnapshot, CursorStorage};
use crate::metrics::BrokerMetrics;
use crate::protocol::commands;
use crate::storage::{PartitionLog, Position, StorageError};

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
    log: Arc<dyn PartitionLog>,
    cursors: CursorStorage,
    metrics: BrokerMetrics,
    pub(super) subscriptions: tokio::sync::Mutex<HashMap<String, Arc<Subscription>>>,
    /// The backlog quota and whether it is exceeded (see `housekeeping`).
    pub(super) quota: std::sync::Mutex<QuotaState>,
    /// Producers attached here, so the broker can close them (topic deletion,
    /// backlog quota) and count them.
    producers: std::sync::Mutex<HashMap<ProducerKey, ProducerCloser>>,
    /// Set while the topic is being deleted: no producer or consumer may
    /// attach (set under the producers lock, checked under it and under
    /// the subscriptions lock).
    fenced: AtomicBool,
    /// Publish counters for admin stats.
    counters: TopicCounters,
    /// The namespace's publish rate, counted per SEND (see `limits`).
    pub(super) publish_limiter: std::sync::Mutex<RateLimiter>,
    /// Whether a publish rate is set: SENDs of unthrottled topics skip the
    /// limiter's lock.
    pub(super) publish_limited: std::sync::atomic::AtomicBool,
    /// Producer and consumer limits and the subscriptions' dispatch rate.
    pub(super) limits: std::sync::Mutex<ClientLimits>,
    /// The broker's `--max-subscriptions-per-topic`, for namespaces that
    /// set none.
    pub(super) broker_max_subscriptions: u32,
    /// When a producer or consumer last came or went (ms since the epoch):
    /// inactive-topic deletion counts from here.
    last_active_ms: std::sync::atomic::AtomicU64,
}

/// A producer is known by its connection and its id on that connection.
pub type ProducerKey = (u64, u64);

/// Asks a producer's connection to close it from the broker's side (it
/// sends CLOSE_PRODUCER once the receipts of the producer's earlier sends
/// are out).
pub type ProducerCloser = Box<dyn Fn() + Send + Sync>;

impl Topic {
    pub(super) fn new(
        name: TopicName,
        log: Arc<dyn PartitionLog>,
        cursors: CursorStorage,
        metrics: BrokerMetrics,
        broker_max_subscriptions: u32,
    ) -> Self {
        Topic {
            cursors,
            broker_max_subscriptions,
            last_active_ms: std::sync::atomic::AtomicU64::new(crate::clock::now_ms()),
            full_name: name.to_string(),
            name,
            log,
            metrics,
            subscriptions: tokio::sync::Mutex::new(HashMap::new()),
            quota: std::sync::Mutex::new(QuotaState::default()),
            producers: std::sync::Mutex::new(HashMap::new()),
            fenced: AtomicBool::new(false),
            counters: TopicCounters::new(),
            publish_limiter: std::sync::Mutex::new(RateLimiter::new(std::time::Instant::now())),
            publish_limited: std::sync::atomic::AtomicBool::new(false),
            limits: std::sync::Mutex::new(ClientLimits::default()),
        }
    }

    pub fn name(&self) -> &TopicName {
        &self.name
    }

    pub fn full_name(&self) -> &str {
        &self.full_name
    }

    /// The topic's storage.
    pub fn log(&self) -> &Arc<dyn PartitionLog> {
        &self.log
    }

    fn producers(&self) -> std::sync::MutexGuard<'_, HashMap<ProducerKey, ProducerCloser>> {
        self.producers.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Attaches a producer; `close` closes it from the broker's side.
    pub fn add_producer(
        &self,
        key: ProducerKey,
        close: ProducerCloser,
    ) -> Result<(), ServiceError> {
        let mut producers = self.producers();
        if self.fenced.load(Ordering::Acquire) {
            return Err(ServiceError::TopicBeingDeleted(self.full_name.clone()));
        }
        self.log.accepts_writes()?;
        // Pulsar refuses producers while a producer-blocking backlog quota
        // is exceeded; clients retry (hold) or fail their sends (exception).
        if let Some(policy) = self.producer_block() {
            return Err(ServiceError::BacklogQuotaExceeded {
                topic: self.full_name.clone(),
                policy,
            });
        }
        let max = self.client_limits().max_producers;
        let others = producers.len() - usize::from(producers.contains_key(&key));
        if !has_room(others, max) {
            return Err(ServiceError::ProducerLimit {
                topic: self.full_name.clone(),
                limit: max,
            });
        }
        producers.insert(key, close);
        self.touch();
        Ok(())
    }

    pub fn remove_producer(&self, key: ProducerKey) {
        self.producers().remove(&key);
        self.touch();
    }

    fn touch(&self) {
        self.last_active_ms
            .store(crate::clock::now_ms(), Ordering::Release);
    }

    /// Whether the topic has been unused for longer than `policies` allow,
    /// so that housekeeping deletes it: no producers, no consumers, and no
    /// subscriptions (or, in the caught-up mode, none with a backlog).
    pub async fn is_inactive(&self, policies: &super::InactiveTopicPolicies, now_ms: u64) -> bool {
        if !policies.delete_while_inactive || self.producer_count() > 0 {
            return false;
        }
        let idle_ms = now_ms.saturating_sub(self.last_active_ms.load(Ordering::Acquire));
        if idle_ms < u64::from(policies.max_inactive_duration_seconds) * 1000 {
            return false;
        }
        let subscriptions = self.subscriptions.lock().await;
        match policies.inactive_topic_delete_mode {
            super::InactiveTopicDeleteMode::DeleteWhenNoSubscriptions => subscriptions.is_empty(),
            super::InactiveTopicDeleteMode::DeleteWhenSubscriptionsCaughtUp => subscriptions
                .values()
                .all(|s| s.consumers().is_empty() && s.backlog_entries() == 0),
        }
    }

    pub fn producer_count(&self) -> usize {
        self.producers().len()
    }

    /// Sends CLOSE_PRODUCER to every producer and forgets them; clients
    /// reconnect through lookup.
    pub fn disconnect_producers(&self) {
        for (_, close) in self.producers().drain() {
            close();
        }
    }

    /// Appends one entry (a message or a whole batch, as the producer sent it).
    pub fn publish(
        &self,
        entry: Bytes,
    ) -> impl Future<Output = Result<Position, StorageError>> + Send {
        self.log.clone().append(entry)
    }

    /// Attaches a consumer to a subscription, creating the subscription (and
    /// its durable cursor) if needed.
    pub async fn subscribe(
        &self,
        request: &SubscribeRequest,
        handle: ConsumerHandle,
    ) -> Result<Arc<Subscription>, ServiceError> {
        let mut subscriptions = self.subscriptions.lock().await;
        if self.fenced.load(Ordering::Acquire) {
            return Err(ServiceError::TopicBeingDeleted(self.full_name.clone()));
        }
        // Checked under the subscriptions lock, so concurrent SUBSCRIBEs
        // cannot both take the last place.
        let limits = self.client_limits();
        let others = |consumers: Vec<ConsumerHandle>| {
            consumers.iter().filter(|c| c.key != handle.key).count()
        };
        let on_topic: usize = subscriptions.values().map(|s| others(s.consumers())).sum();
        if !has_room(on_topic, limits.max_consumers_per_topic) {
            return Err(ServiceError::ConsumerLimit {
                scope: format!("topic {}", self.full_name),
                limit: limits.max_consumers_per_topic,
            });
        }
        let existing = subscriptions
            .get(&request.subscription)
            .filter(|s| s.is_durable() || !request.durable);
        let on_subscription = existing.map_or(0, |s| others(s.consumers()));
        if !has_room(on_subscription, limits.max_consumers_per_subscription) {
            return Err(ServiceError::ConsumerLimit {
                scope: format!("subscription {}", request.subscription),
                limit: limits.max_consumers_per_subscription,
            });
        }
        let subscription = match existing {
            Some(existing) => existing.clone(),
            None => {
                if !has_room(subscriptions.len(), limits.max_subscriptions) {
                    return Err(ServiceError::SubscriptionLimit {
                        topic: self.full_name.clone(),
                        limit: limits.max_subscriptions,
                    });
                }
                let created = self.create_subscription(request).await?;
                created.set_dispatch_limit(limits.dispatch);
                subscriptions.insert(request.subscription.clone(), created.clone());
                created
            }
        };
        subscription.add_consumer(handle, request.sub_type)?;
        self.touch();
        Ok(subscription)
    }

    /// Opens every stored durable subscription, as Pulsar recovers all
    /// cursors when it loads a topic: lifecycle policies must see each
    /// cursor, also one no consumer has reattached to since, so trimming
    /// never passes it and TTL and backlog quotas apply to it.
    pub(super) async fn load_subscriptions(&self) -> Result<(), ServiceError> {
        let stored = self.cursors.list().await?;
        let mut subscriptions = self.subscriptions.lock().await;
        for (name, _) in stored {
            if subscriptions.contains_key(&name) {
                continue;
            }
            let subscription = self
                .open_durable(
                    &name,
                    SubscriptionType::Exclusive,
                    self.log.first_position(),
                )
                .await?;
            subscriptions.insert(name, subscription);
        }
        Ok(())
    }

    /// Opens (or creates at `initial`) the durable subscription `name`.
    async fn open_durable(
        &self,
        name: &str,
        sub_type: SubscriptionType,
        initial: Position,
    ) -> Result<Arc<Subscription>, ServiceError> {
        let stored = self.cursors.open(name, initial).await?;
        let subscription = Subscription::open_durable(
            self.full_name.clone(),
            name.to_string(),
            (self.log.clone(), self.metrics.clone()),
            stored,
            sub_type,
        );
        subscription.set_dispatch_limit(self.client_limits().dispatch);
        Ok(subscription)
    }

    async fn create_subscription(
        &self,
        request: &SubscribeRequest,
    ) -> Result<Arc<Subscription>, ServiceError> {
        let initial = match request.initial {
            InitialPosition::Earliest => self.log.first_position(),
            InitialPosition::Latest => self.log.last_confirmed(),
        };
        if request.durable {
            return self
                .open_durable(&request.subscription, request.sub_type, initial)
                .await;
        }
        let mark_delete = match &request.start {
            None => initial,
            // Earliest is (-1, -1) on the wire.
            Some(id) if id.ledger_id == u64::MAX => self.log.first_position(),
            // Latest is (i64::MAX, i64::MAX).
            Some(id) if id.ledger_id >= i64::MAX as u64 => self.log.last_confirmed(),
            Some(id) => {
                let position = commands::position_of(id);
                // Inside a batch: deliver the batch again; the client skips
                // the messages before its start.
                if id.batch_index.unwrap_or(-1) >= 0 {
                    self.log.previous_position(position)
                } else {
                    position
                }
            }
        };
        Ok(Subscription::open_non_durable(
            self.full_name.clone(),
            request.subscription.clone(),
            self.log.clone(),
            self.metrics.clone(),
            request.sub_type,
            mark_delete,
        ))
    }

    /// A consumer left: its unacknowledged entries go back for redelivery,
    /// and a non-durable subscription without consumers is dropped.
    pub async fn release_consumer(&self, subscription: &Arc<Subscription>, key: ConsumerKey) {
        let empty = subscription.remove_consumer(key);
        self.touch();
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
        self.touch();
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
        let last = self.log.last_confirmed();
        let mut id = commands::message_id(last);
        id.batch_index = Some(-1);
        if last.entry_id < 0 {
            return Ok(id);
        }
        let before = self.log.previous_position(last);
        let entries = self.log.read_entries(before, 1).await?;
        if let Some(entry) = entries.first().filter(|e| e.position == last) {
            let messages = commands::entry_info(&entry.data, false).messages;
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
        let publish_time = |entry: &[u8]| {
            crate::protocol::entry_metadata(entry)
                .ok()
                .map(|m| m.publish_time)
        };
        Ok(crate::storage::position_at_publish_time(
            self.log.as_ref(),
            publish_time_ms,
            publish_time,
        )
        .await?)
    }

    /// Closes the topic on this broker and tells its producers and
    /// consumers (CLOSE_PRODUCER / CLOSE_CONSUMER), so they look it up again
    /// and reconnect wherever it is served next.
    pub async fn unload(&self) {
        self.disconnect_producers();
        let consumers: Vec<ConsumerHandle> = self
            .subscriptions
            .lock()
            .await
            .values()
            .flat_map(|s| s.consumers())
            .collect();
        self.close().await;
        for consumer in consumers {
            let _ = consumer
                .outbound
                .send(commands::close_consumer(consumer.key.1));
        }
    }

    /// Persists every cursor and seals the current ledger.
    pub async fn close(&self) {
        let subscriptions: Vec<Arc<Subscription>> =
            self.subscriptions.lock().await.values().cloned().collect();
        for subscription in subscriptions {
            subscription.close().await;
        }
        if let Err(e) = self.log.close().await {
            tracing::warn!(topic = %self.full_name, error = %e, "closing managed ledger failed");
        }
    }
}

/// What admin requests need of a topic: its counters, its subscriptions as
/// open here and as stored, and deletion.
impl Topic {
    /// Counts one stored entry of `messages` messages (admin stats).
    pub fn record_published(&self, messages: u64, bytes: u64) {
        self.counters.record(messages, bytes);
    }

    pub fn counters(&self) -> &TopicCounters {
        &self.counters
    }

    /// The attached producers, by (connection, producer id).
    pub fn producer_keys(&self) -> Vec<ProducerKey> {
        let mut keys: Vec<ProducerKey> = self.producers().keys().copied().collect();
        keys.sort_unstable();
        keys
    }

    /// Whether producers or consumers are attached.
    pub async fn has_clients(&self) -> bool {
        self.producer_count() > 0
            || self
                .subscriptions
                .lock()
                .await
                .values()
                .any(|s| !s.consumers().is_empty())
    }

    /// Subscriptions open on this broker: durable ones a consumer opened
    /// since the topic was loaded, and readers.
    pub async fn open_subscriptions(&self) -> Vec<Arc<Subscription>> {
        let mut open: Vec<Arc<Subscription>> =
            self.subscriptions.lock().await.values().cloned().collect();
        open.sort_by(|a, b| a.name().cmp(b.name()));
        open
    }

    /// The subscription `name` as open here (every stored durable one is
    /// open once the topic is loaded), if any.
    pub async fn subscription(&self, name: &str) -> Option<Arc<Subscription>> {
        self.subscriptions.lock().await.get(name).cloned()
    }

    /// Creates a durable subscription without a consumer (admin), its
    /// cursor at `mark_delete` and stored at once. `None` if a subscription
    /// of that name exists already (open here or stored).
    pub async fn create_durable_subscription(
        &self,
        name: &str,
        mark_delete: Position,
    ) -> Result<Option<Arc<Subscription>>, ServiceError> {
        let mut subscriptions = self.subscriptions.lock().await;
        if self.fenced.load(Ordering::Acquire) {
            return Err(ServiceError::TopicBeingDeleted(self.full_name.clone()));
        }
        if subscriptions.contains_key(name) || self.cursors.exists(name).await? {
            return Ok(None);
        }
        let subscription = self
            .open_durable(name, SubscriptionType::Exclusive, mark_delete)
            .await?;
        subscriptions.insert(name.to_string(), subscription.clone());
        tracing::info!(topic = %self.full_name, subscription = name, %mark_delete, "subscription created");
        Ok(Some(subscription))
    }

    /// Every durable subscription's cursor as its record in metadata has
    /// it, including ones nobody has opened since the topic was loaded (for
    /// a cursor kept in a log, only a recent mark-delete position).
    pub async fn stored_cursors(&self) -> Result<Vec<(String, CursorSnapshot)>, ServiceError> {
        Ok(self.cursors.list().await?)
    }

    /// Names of the stored subscriptions and of open readers, sorted.
    pub async fn subscription_names(&self) -> Result<Vec<String>, ServiceError> {
        let mut names: Vec<String> = self
            .stored_cursors()
            .await?
            .into_iter()
            .map(|(name, _)| name)
            .collect();
        for open in self.open_subscriptions().await {
            names.push(open.name().to_string());
        }
        names.sort();
        names.dedup();
        Ok(names)
    }

    /// Deletes a subscription and its cursor. One with consumers is refused
    /// unless `force`; then they are sent CLOSE_CONSUMER (clients that
    /// subscribe again create it anew).
    pub async fn delete_subscription(&self, name: &str, force: bool) -> Result<(), ServiceError> {
        // Held throughout, so no SUBSCRIBE recreates the cursor midway.
        let mut subscriptions = self.subscriptions.lock().await;
        let open = subscriptions.get(name).cloned();
        if open.is_none() && !self.cursors.exists(name).await? {
            return Err(ServiceError::SubscriptionNotFound(name.to_string()));
        }
        let consumers = open.as_ref().map(|s| s.consumers()).unwrap_or_default();
        if !consumers.is_empty() && !force {
            return Err(ServiceError::SubscriptionBusy(name.to_string()));
        }
        match &open {
            Some(subscription) => {
                subscription.close().await;
                subscription.delete_cursor().await?;
                subscriptions.remove(name);
            }
            None => {
                self.cursors.delete_stored(name).await?;
            }
        }
        drop(subscriptions);
        for consumer in consumers {
            let _ = consumer
                .outbound
                .send(commands::close_consumer(consumer.key.1));
        }
        tracing::info!(topic = %self.full_name, subscription = name, force, "subscription deleted");
        Ok(())
    }

    /// Deletes the topic's subscriptions, cursors and ledgers. Refused with
    /// `TopicBusy` while producers or consumers are attached unless `force`,
    /// which sends them CLOSE_PRODUCER / CLOSE_CONSUMER. Past that check the
    /// topic stays fenced (nothing attaches) even if a later step fails; the
    /// caller drops it and a retry works on the stored remains.
    pub(super) async fn delete(&self, force: bool) -> Result<(), ServiceError> {
        {
            let _producers = self.producers();
            self.fenced.store(true, Ordering::Release);
        }
        // Waits for a SUBSCRIBE under way; later ones see the fence.
        let mut subscriptions = self.subscriptions.lock().await;
        let busy =
            self.producer_count() > 0 || subscriptions.values().any(|s| !s.consumers().is_empty());
        if busy && !force {
            self.fenced.store(false, Ordering::Release);
            return Err(ServiceError::TopicBusy(self.full_name.clone()));
        }
        self.disconnect_producers();
        let open: Vec<Arc<Subscription>> = subscriptions.drain().map(|(_, s)| s).collect();
        drop(subscriptions);
        for subscription in open {
            let consumers = subscription.consumers();
            subscription.close().await;
            for consumer in consumers {
                let _ = consumer
                    .outbound
                    .send(commands::close_consumer(consumer.key.1));
            }
        }
        // The log first: it refuses a broker that no longer leads the topic
        // (fenced), before anything of the topic's is gone.
        self.log.delete().await?;
        self.cursors.delete_all().await?;
        tracing::info!(topic = %self.full_name, force, "topic deleted");
        Ok(())
    }
}
