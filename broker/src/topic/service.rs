//! The broker's topics: opens each at most once (concurrent opens share one
//! attempt), checks that its namespace exists, and closes them all on
//! shutdown.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use magnetar_metadata::{keys, Expect, MetadataError, MetadataStore};
use pulsar::proto::ServerError;
use thiserror::Error;
use tokio::sync::OnceCell;

use super::housekeeping::{Housekeeper, DEFAULT_HOUSEKEEPING_INTERVAL};
use super::policies::{BacklogQuotaPolicy, NamespacePolicies};
use super::subscription::SubscribeError;
use super::{Topic, TopicName};
use crate::cursor::CursorStorage;
use crate::load_manager::{LoadManager, LoadManagerConfig};
use crate::metrics::BrokerMetrics;
use crate::ownership::{topic_hash, BrokerIdentity, BundleRange, Ownership, OwnershipError};
use crate::storage::{Architecture, LogStore, Replication, StorageError};

/// 16 MiB: several dispatch rounds of large messages, a few MiB of replies.
pub const DEFAULT_MAX_OUTBOUND_BYTES_PER_CONNECTION: usize = 16 * 1024 * 1024;
/// A client has this long to read 256 KiB of what waits for it.
pub const DEFAULT_CONNECTION_WRITE_TIMEOUT: std::time::Duration =
    std::time::Duration::from_secs(30);

/// What the broker needs to serve topics.
#[derive(Clone, Debug)]
pub struct BrokerConfig {
    /// Largest message (or batch) accepted, in bytes (Pulsar's default 5 MiB).
    pub max_message_size: usize,
    /// Replication of namespaces that set no persistence policy (Pulsar's
    /// default E/Qw/Qa 2/2/2).
    pub default_replication: Replication,
    /// `host:port` that lookups send clients to; by default the address the
    /// client connected to.
    pub advertised_address: Option<String>,
    /// SENDs in flight per connection before the broker stops reading it.
    pub max_pending_sends_per_connection: usize,
    /// Bytes waiting to be written to one connection before the broker stops
    /// reading it and dispatching to its consumers.
    pub max_outbound_bytes_per_connection: usize,
    /// How long a client may take to read a batch of what waits for it
    /// before it is disconnected.
    pub connection_write_timeout: std::time::Duration,
    /// Client connections this broker holds at most (0: no limit; Pulsar's
    /// `brokerMaxConnections`).
    pub max_connections: usize,
    /// Client connections from one IP address (0: no limit; Pulsar's
    /// `brokerMaxConnectionsPerIp`).
    pub max_connections_per_ip: usize,
    /// Subscriptions per topic where the namespace sets no
    /// `maxSubscriptionsPerTopic` (0: no limit).
    pub max_subscriptions_per_topic: u32,
    /// Topics per namespace where the namespace sets no
    /// `maxTopicsPerNamespace` (0: no limit).
    pub max_topics_per_namespace: u32,
    /// Inactive-topic deletion where the namespace sets no
    /// `inactiveTopicPolicies` (Pulsar's defaults: on, 60 s, topics without
    /// subscriptions); checked at each housekeeping tick.
    pub inactive_topics: super::InactiveTopicPolicies,
    /// How often message TTL, backlog quotas and retention are applied to
    /// open topics (see `housekeeping`).
    pub housekeeping_interval: std::time::Duration,
    /// Token authentication and authorization; `None`: off, every client
    /// may do everything.
    pub auth: Option<crate::auth::AuthConfig>,
    /// The cluster this broker belongs to (Pulsar's `clusterName`); the
    /// admin API registers it and checks tenants' allowed clusters against it.
    pub cluster_name: String,
    /// Keep cursor state in the metadata store even where the log store
    /// keeps cursor logs (every flush then writes to metadata, as before
    /// cursor logs; for comparisons).
    pub cursors_in_metadata: bool,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        BrokerConfig {
            max_message_size: 5 * 1024 * 1024,
            default_replication: Replication {
                ensemble_size: 2,
                write_quorum: 2,
                ack_quorum: 2,
            },
            advertised_address: None,
            max_pending_sends_per_connection: 1000,
            max_outbound_bytes_per_connection: DEFAULT_MAX_OUTBOUND_BYTES_PER_CONNECTION,
            connection_write_timeout: DEFAULT_CONNECTION_WRITE_TIMEOUT,
            max_connections: 0,
            max_connections_per_ip: 0,
            max_subscriptions_per_topic: 0,
            max_topics_per_namespace: 0,
            inactive_topics: super::InactiveTopicPolicies::default(),
            housekeeping_interval: DEFAULT_HOUSEKEEPING_INTERVAL,
            auth: None,
            cluster_name: "standalone".to_string(),
            cursors_in_metadata: false,
        }
    }
}

#[derive(Debug, Error, Clone)]
pub enum ServiceError {
    #[error(transparent)]
    InvalidTopic(#[from] super::InvalidTopicName),
    #[error("namespace {0} does not exist")]
    NamespaceNotFound(String),
    #[error(transparent)]
    Subscribe(#[from] SubscribeError),
    #[error("storage: {0}")]
    Storage(#[from] StorageError),
    #[error("metadata: {0}")]
    Metadata(String),
    #[error("broker is shutting down")]
    ShuttingDown,
    /// Clients look the topic up again and go to the owner.
    #[error(transparent)]
    NotOwned(#[from] OwnershipError),
    /// A producer-blocking backlog quota is exceeded (Pulsar's codes:
    /// clients retry a held producer and fail the sends of the other).
    #[error("backlog quota exceeded on {topic} ({policy:?})")]
    BacklogQuotaExceeded {
        topic: String,
        policy: BacklogQuotaPolicy,
    },
    #[error("topic {0} not found")]
    TopicNotFound(String),
    /// Pulsar's refusal to delete a topic in use without `force`.
    #[error("topic {0} has active producers/subscriptions")]
    TopicBusy(String),
    /// Clients retry this (ServiceNotReady) until the topic is gone.
    #[error("topic {0} is being deleted")]
    TopicBeingDeleted(String),
    #[error("subscription {0} not found")]
    SubscriptionNotFound(String),
    #[error("subscription {0} has active consumers")]
    SubscriptionBusy(String),
    /// The namespace's `max_producers_per_topic` (Pulsar: ProducerBusy).
    #[error("Topic {topic} reached max producers limit of {limit}")]
    ProducerLimit { topic: String, limit: u32 },
    /// The namespace's consumer limit of a topic or a subscription (Pulsar:
    /// ConsumerBusy).
    #[error("{scope} reached max consumers limit of {limit}")]
    ConsumerLimit { scope: String, limit: u32 },
    /// `maxSubscriptionsPerTopic` (Pulsar: NotAllowedError).
    #[error("Exceed the maximum number of subscriptions of the topic {topic}: {limit}")]
    SubscriptionLimit { topic: String, limit: u32 },
    /// `maxTopicsPerNamespace` (Pulsar: NotAllowedError; 412 in admin).
    #[error("Exceed maximum number of topics in namespace {namespace}: {limit}")]
    TopicLimit { namespace: String, limit: u32 },
}

impl From<MetadataError> for ServiceError {
    fn from(e: MetadataError) -> Self {
        ServiceError::Metadata(e.to_string())
    }
}

impl ServiceError {
    /// The protocol's error code for this error.
    pub fn server_error(&self) -> ServerError {
        match self {
            ServiceError::InvalidTopic(_) => ServerError::InvalidTopicName,
            ServiceError::NamespaceNotFound(_) => ServerError::TopicNotFound,
            ServiceError::Subscribe(SubscribeError::Closed(_)) => ServerError::SubscriptionNotFound,
            ServiceError::Subscribe(SubscribeError::KeyShared(_)) => {
                ServerError::ConsumerAssignError
            }
            ServiceError::Subscribe(_) => ServerError::ConsumerBusy,
            // Retried by clients until replicas catch up (or the send times out).
            ServiceError::Storage(StorageError::NotEnoughReplicas { .. }) => {
                ServerError::ServiceNotReady
            }
            ServiceError::Storage(_) => ServerError::PersistenceError,
            ServiceError::Metadata(_) => ServerError::MetadataError,
            ServiceError::ShuttingDown => ServerError::ServiceNotReady,
            ServiceError::NotOwned(OwnershipError::NamespaceNotFound(_)) => {
                ServerError::TopicNotFound
            }
            ServiceError::NotOwned(_) => ServerError::ServiceNotReady,
            ServiceError::BacklogQuotaExceeded {
                policy: BacklogQuotaPolicy::ProducerException,
                ..
            } => ServerError::ProducerBlockedQuotaExceededException,
            ServiceError::BacklogQuotaExceeded { .. } => {
                ServerError::ProducerBlockedQuotaExceededError
            }
            ServiceError::TopicNotFound(_) => ServerError::TopicNotFound,
            ServiceError::TopicBusy(_) => ServerError::NotAllowedError,
            ServiceError::TopicBeingDeleted(_) => ServerError::ServiceNotReady,
            ServiceError::SubscriptionNotFound(_) => ServerError::SubscriptionNotFound,
            ServiceError::SubscriptionBusy(_) => ServerError::ConsumerBusy,
            ServiceError::ProducerLimit { .. } => ServerError::ProducerBusy,
            ServiceError::ConsumerLimit { .. } => ServerError::ConsumerBusy,
            ServiceError::SubscriptionLimit { .. } | ServiceError::TopicLimit { .. } => {
                ServerError::NotAllowedError
            }
        }
    }
}

type TopicSlot = Arc<OnceCell<Arc<Topic>>>;

pub struct BrokerService {
    config: BrokerConfig,
    store: Arc<dyn MetadataStore>,
    logs: Arc<dyn LogStore>,
    metrics: BrokerMetrics,
    topics: tokio::sync::Mutex<HashMap<String, TopicSlot>>,
    /// Topics being deleted, which are not opened meanwhile. Added and
    /// checked while holding `topics`.
    deleting: std::sync::Mutex<HashSet<String>>,
    shutting_down: std::sync::atomic::AtomicBool,
    /// The lifecycle-policy task, stopped on shutdown.
    housekeeper: std::sync::Mutex<Option<Housekeeper>>,
    /// Bundle ownership when brokers share metadata; unset, this broker
    /// serves every topic (in-process tests).
    ownership: std::sync::OnceLock<Arc<Ownership>>,
    /// How clients reach this broker when it runs without ownership.
    identity: std::sync::OnceLock<BrokerIdentity>,
    /// Load reports and bundle placement, with ownership.
    load_manager: std::sync::OnceLock<Arc<LoadManager>>,
}

impl BrokerService {
    pub fn new(
        config: BrokerConfig,
        store: Arc<dyn MetadataStore>,
        logs: Arc<dyn LogStore>,
        metrics: BrokerMetrics,
    ) -> Arc<Self> {
        let interval = config.housekeeping_interval;
        let service = Arc::new(BrokerService {
            config,
            store,
            logs,
            metrics,
            topics: tokio::sync::Mutex::new(HashMap::new()),
            deleting: std::sync::Mutex::new(HashSet::new()),
            shutting_down: std::sync::atomic::AtomicBool::new(false),
            housekeeper: std::sync::Mutex::new(None),
            ownership: std::sync::OnceLock::new(),
            identity: std::sync::OnceLock::new(),
            load_manager: std::sync::OnceLock::new(),
        });
        let housekeeper = Housekeeper::start(Arc::downgrade(&service), interval);
        if housekeeper.is_none() {
            tracing::warn!("no Tokio runtime: lifecycle policies (TTL, backlog quota, retention) are not applied");
        }
        *service.housekeeper_slot() = housekeeper;
        service
    }

    /// Serves only the bundles `ownership` holds from now on, and unloads
    /// every topic whenever the broker loses its lease.
    pub fn set_ownership(self: &Arc<Self>, ownership: Arc<Ownership>) {
        let mut lost = ownership.subscribe_lost();
        if self.ownership.set(ownership).is_err() {
            return;
        }
        let service = Arc::downgrade(self);
        tokio::spawn(async move {
            while lost.changed().await.is_ok() {
                let Some(service) = service.upgrade() else {
                    return;
                };
                service.unload_all().await;
            }
        });
    }

    pub fn ownership(&self) -> Option<&Arc<Ownership>> {
        self.ownership.get()
    }

    /// Whether this broker still owns `name`'s bundle (always, standalone),
    /// so that what it decides alone about the topic, such as deleting it
    /// for inactivity, is its to decide. Unknown counts as no.
    pub async fn still_serves(&self, name: &TopicName) -> bool {
        let Some(ownership) = self.ownership.get() else {
            return true;
        };
        match ownership.bundle_of_topic(name).await {
            Ok(bundle) => ownership.holds(&bundle).await.unwrap_or(false),
            Err(_) => false,
        }
    }

    /// Closes `topic` and tells its clients to look it up again, unless it
    /// was replaced meanwhile: its log was fenced under it (another
    /// broker leads it now, or it was deleted), so serving it on would
    /// fail every send.
    pub async fn unload_fenced(&self, topic: &Arc<Topic>) {
        let removed = {
            let mut topics = self.topics.lock().await;
            let full = topic.full_name();
            let current = topics.get(full).and_then(|s| s.get().cloned());
            match current {
                Some(current) if Arc::ptr_eq(&current, topic) => topics.remove(full).is_some(),
                _ => false,
            }
        };
        if removed {
            tracing::warn!(topic = %topic.full_name(), "topic's log was fenced; unloading it");
            topic.unload().await;
        }
    }

    /// Starts the load manager's tasks for this (owning) broker.
    pub fn start_load_manager(self: &Arc<Self>, config: LoadManagerConfig) {
        if let Some(ownership) = self.ownership.get() {
            let manager = LoadManager::start(self, ownership.clone(), config);
            let _ = self.load_manager.set(manager);
        }
    }

    pub fn load_manager(&self) -> Option<&Arc<LoadManager>> {
        self.load_manager.get()
    }

    /// Records how clients reach this broker (standalone: no ownership).
    pub fn set_identity(&self, identity: BrokerIdentity) {
        let _ = self.identity.set(identity);
    }

    /// How clients reach this broker, if known.
    pub fn identity(&self) -> Option<&BrokerIdentity> {
        self.ownership
            .get()
            .map(|o| o.identity())
            .or_else(|| self.identity.get())
    }

    /// Closes every open topic and tells its clients, which look their
    /// topics up again (bundles lost, or handed to another broker).
    pub async fn unload_all(&self) {
        let slots: Vec<TopicSlot> = self.topics.lock().await.drain().map(|(_, s)| s).collect();
        for slot in slots {
            if let Some(topic) = slot.get() {
                topic.unload().await;
            }
        }
    }

    /// Closes the open topics of `namespace` (`tenant/ns`) whose names hash
    /// into `range`, telling their clients (a bundle unloaded or moved).
    /// Returns how many were closed.
    pub async fn unload_bundle(&self, namespace: &str, range: BundleRange) -> usize {
        let slots: Vec<TopicSlot> = {
            let mut topics = self.topics.lock().await;
            let names: Vec<String> = topics
                .iter()
                .filter(|(name, slot)| {
                    slot.get()
                        .is_some_and(|t| t.name().namespace_name() == namespace)
                        && range.holds(topic_hash(name))
                })
                .map(|(name, _)| name.clone())
                .collect();
            names.iter().filter_map(|n| topics.remove(n)).collect()
        };
        let count = slots.len();
        for slot in slots {
            if let Some(topic) = slot.get() {
                topic.unload().await;
            }
        }
        count
    }

    fn housekeeper_slot(&self) -> std::sync::MutexGuard<'_, Option<Housekeeper>> {
        self.housekeeper.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The topics open on this broker now.
    pub async fn open_topics(&self) -> Vec<Arc<Topic>> {
        let slots: Vec<TopicSlot> = self.topics.lock().await.values().cloned().collect();
        slots.iter().filter_map(|s| s.get().cloned()).collect()
    }

    pub fn config(&self) -> &BrokerConfig {
        &self.config
    }

    pub fn metrics(&self) -> &BrokerMetrics {
        &self.metrics
    }

    pub fn metadata(&self) -> &Arc<dyn MetadataStore> {
        &self.store
    }

    /// Where this broker's topics are stored.
    pub fn logs(&self) -> &Arc<dyn LogStore> {
        &self.logs
    }

    pub fn architecture(&self) -> Architecture {
        self.logs.architecture()
    }

    pub async fn namespace_policies(
        &self,
        name: &TopicName,
    ) -> Result<NamespacePolicies, ServiceError> {
        let key = keys::namespace(&name.tenant, &name.namespace);
        let kv = self
            .store
            .get(&key)
            .await?
            .ok_or_else(|| ServiceError::NamespaceNotFound(name.namespace_name()))?;
        serde_json::from_slice(&kv.value)
            .map_err(|e| ServiceError::Metadata(format!("corrupt policies of {key}: {e}")))
    }

    /// The topic, opened (and created) on first use.
    pub async fn topic(&self, name: &TopicName) -> Result<Arc<Topic>, ServiceError> {
        if self
            .shutting_down
            .load(std::sync::atomic::Ordering::Acquire)
        {
            return Err(ServiceError::ShuttingDown);
        }
        if let Some(ownership) = self.ownership.get() {
            ownership.ensure_owned(name).await?;
        }
        let full = name.to_string();
        let slot = {
            let mut topics = self.topics.lock().await;
            if self.deleting().contains(&full) {
                return Err(ServiceError::TopicBeingDeleted(full));
            }
            topics.entry(full.clone()).or_default().clone()
        };
        let opened = slot
            .get_or_try_init(|| self.open_topic(name))
            .await
            .cloned();
        if opened.is_err() {
            let mut topics = self.topics.lock().await;
            if topics.get(&full).is_some_and(|s| Arc::ptr_eq(s, &slot)) {
                topics.remove(&full);
            }
        }
        opened
    }

    async fn open_topic(&self, name: &TopicName) -> Result<Arc<Topic>, ServiceError> {
        let policies = self.namespace_policies(name).await?;
        if self.topic_limit(&policies) > 0 && !self.logs.exists(&name.log_name()).await? {
            self.check_room_for_topics(name, &policies, 1).await?;
        }
        let log = self
            .logs
            .open(&name.log_name(), &policies.log_policies())
            .await?;
        let cursors = self.cursor_storage(name, &policies);
        let topic = Arc::new(Topic::new(
            name.clone(),
            log,
            cursors,
            self.metrics.clone(),
            self.config.max_subscriptions_per_topic,
        ));
        topic.set_backlog_quota(policies.backlog_quota);
        topic.apply_limits(&policies).await;
        if let Err(e) = topic.load_subscriptions().await {
            topic.close().await;
            return Err(e);
        }
        Ok(topic)
    }

    fn cursor_storage(&self, name: &TopicName, policies: &NamespacePolicies) -> CursorStorage {
        let logs = (!self.config.cursors_in_metadata && self.logs.keeps_cursor_logs())
            .then(|| (self.logs.clone(), policies.log_policies()));
        CursorStorage::new(self.store.clone(), name.log_name(), logs)
    }

    fn topic_limit(&self, policies: &NamespacePolicies) -> u32 {
        policies
            .max_topics_per_namespace
            .unwrap_or(self.config.max_topics_per_namespace)
    }

    /// Refuses `new_topics` more topics in `name`'s namespace past its
    /// `maxTopicsPerNamespace` (each partition counts, as in Pulsar).
    /// Counted only when a limit is set; two brokers creating at once may
    /// both pass, as in Pulsar.
    pub async fn check_room_for_topics(
        &self,
        name: &TopicName,
        policies: &NamespacePolicies,
        new_topics: u32,
    ) -> Result<(), ServiceError> {
        let limit = self.topic_limit(policies);
        if limit == 0 || new_topics == 0 {
            return Ok(());
        }
        let namespace = name.namespace_name();
        let count = self.topics_of_namespace(&namespace).await?.len();
        if count.saturating_add(new_topics as usize) <= limit as usize {
            Ok(())
        } else {
            Err(ServiceError::TopicLimit { namespace, limit })
        }
    }

    /// Partition count of a partitioned topic, 0 for a plain one.
    pub async fn partitions(&self, name: &TopicName) -> Result<u32, ServiceError> {
        let key = keys::partitioned_topic(&name.tenant, &name.namespace, &name.local);
        Ok(match self.store.get(&key).await? {
            Some(kv) => std::str::from_utf8(&kv.value)
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .unwrap_or(0),
            None => 0,
        })
    }

    /// Full names of the persistent topics of `tenant/namespace`.
    pub async fn topics_of_namespace(&self, namespace: &str) -> Result<Vec<String>, ServiceError> {
        let Some((tenant, ns)) = namespace.split_once('/') else {
            return Err(ServiceError::NamespaceNotFound(namespace.to_string()));
        };
        let prefix = keys::topics_prefix(tenant, ns);
        let mut topics: Vec<String> = self
            .store
            .list(&prefix)
            .await?
            .iter()
            .filter_map(|kv| keys::child_name(&prefix, &kv.key))
            .map(|local| format!("persistent://{tenant}/{ns}/{local}"))
            .collect();
        topics.sort();
        Ok(topics)
    }

    /// Stops opening topics and the housekeeping task, then persists
    /// cursors and seals the ledgers of every open topic.
    pub async fn shutdown(&self) {
        self.shutting_down
            .store(true, std::sync::atomic::Ordering::Release);
        let housekeeper = self.housekeeper_slot().take();
        if let Some(housekeeper) = housekeeper {
            housekeeper.stop().await;
        }
        let slots: Vec<TopicSlot> = self.topics.lock().await.drain().map(|(_, s)| s).collect();
        for slot in slots {
            if let Some(topic) = slot.get() {
                topic.close().await;
            }
        }
        if let Some(ownership) = self.ownership.get() {
            ownership.release().await;
        }
    }
}

/// Admin operations on topics: existence, deletion.
impl BrokerService {
    fn deleting(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.deleting.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The topic if it is open on this broker now (never opens it).
    pub async fn loaded_topic(&self, name: &TopicName) -> Option<Arc<Topic>> {
        let slot = self.topics.lock().await.get(&name.to_string()).cloned();
        slot.and_then(|s| s.get().cloned())
    }

    /// Whether the topic exists: open here, or stored in metadata.
    pub async fn topic_exists(&self, name: &TopicName) -> Result<bool, ServiceError> {
        if self.loaded_topic(name).await.is_some() {
            return Ok(true);
        }
        Ok(self.logs.exists(&name.log_name()).await?)
    }

    /// The topic, opened if it exists; `TopicNotFound` rather than creating it.
    pub async fn existing_topic(&self, name: &TopicName) -> Result<Arc<Topic>, ServiceError> {
        if !self.topic_exists(name).await? {
            return Err(ServiceError::TopicNotFound(name.to_string()));
        }
        self.topic(name).await
    }

    /// Deletes a topic: its subscriptions and cursors, its ledgers, then its
    /// ledger list (see [`Topic`]'s deletion for `force`). Meanwhile the
    /// topic is not served (`TopicBeingDeleted`, which clients retry); after
    /// it, a producer creates the topic anew, empty. A topic not open here
    /// is deleted from metadata directly.
    pub async fn delete_topic(&self, name: &TopicName, force: bool) -> Result<(), ServiceError> {
        let full = name.to_string();
        let slot = {
            let topics = self.topics.lock().await;
            if !self.deleting().insert(full.clone()) {
                return Err(ServiceError::TopicBeingDeleted(full));
            }
            topics.get(&full).cloned()
        };
        let _guard = DeletingGuard {
            service: self,
            name: full.clone(),
        };
        // An open under way finishes first; a failed one leaves no topic.
        let open = match slot {
            Some(slot) => slot
                .get_or_try_init(|| async { Err(()) })
                .await
                .ok()
                .cloned(),
            None => None,
        };
        let Some(topic) = open else {
            return self.delete_stored_topic(name).await;
        };
        let result = topic.delete(force).await;
        if !matches!(result, Err(ServiceError::TopicBusy(_))) {
            // Past the busy check the topic is fenced for good: drop it, so
            // a retry works on what is left in metadata.
            let mut topics = self.topics.lock().await;
            let current = topics.get(&full).and_then(|s| s.get().cloned());
            if current.is_some_and(|t| Arc::ptr_eq(&t, &topic)) {
                topics.remove(&full);
            }
        }
        result
    }

    async fn delete_stored_topic(&self, name: &TopicName) -> Result<(), ServiceError> {
        let log = name.log_name();
        let policies = self.namespace_policies(name).await?;
        // Cursors left by a deletion interrupted after its log went are
        // still deleted.
        let deleted_log = self.logs.exists(&log).await? && self.logs.delete_stored(&log).await?;
        let deleted_cursors = self.cursor_storage(name, &policies).delete_all().await?;
        if !deleted_log && deleted_cursors == 0 {
            return Err(ServiceError::TopicNotFound(name.to_string()));
        }
        tracing::info!(topic = %name, "stored topic deleted");
        Ok(())
    }

    /// Deletes every partition of a partitioned topic, then its partition
    /// count. Without `force`, a partition with clients refuses the whole
    /// deletion before anything is deleted.
    pub async fn delete_partitioned_topic(
        &self,
        name: &TopicName,
        force: bool,
    ) -> Result<(), ServiceError> {
        let partitions = self.partitions(name).await?;
        if partitions == 0 {
            return Err(ServiceError::TopicNotFound(name.to_string()));
        }
        let names: Vec<TopicName> = (0..partitions).map(|i| name.partition(i)).collect();
        if !force {
            for partition in &names {
                if let Some(topic) = self.loaded_topic(partition).await {
                    if topic.has_clients().await {
                        return Err(ServiceError::TopicBusy(partition.to_string()));
                    }
                }
            }
        }
        for partition in &names {
            match self.delete_topic(partition, force).await {
                Ok(()) | Err(ServiceError::TopicNotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        let key = keys::partitioned_topic(&name.tenant, &name.namespace, &name.local);
        self.store.delete(&key, Expect::Any).await?;
        tracing::info!(topic = %name, partitions, "partitioned topic deleted");
        Ok(())
    }
}

/// Ends a topic's deletion (whatever its outcome) when dropped.
struct DeletingGuard<'a> {
    service: &'a BrokerService,
    name: String,
}

impl Drop for DeletingGuard<'_> {
    fn drop(&mut self) {
        self.service.deleting().remove(&self.name);
    }
}
