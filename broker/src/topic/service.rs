//! The broker's topics: opens each at most once (concurrent opens share one
//! attempt), checks that its namespace exists, and closes them all on
//! shutdown.

use std::collections::HashMap;
use std::sync::Arc;

use magnetar_metadata::{keys, MetadataError, MetadataStore};
use pulsar::proto::ServerError;
use thiserror::Error;
use tokio::sync::OnceCell;

use super::policies::NamespacePolicies;
use super::subscription::SubscribeError;
use super::{Topic, TopicName};
use crate::ledger::{LedgerClient, LedgerConfig};
use crate::managed_ledger::{ManagedLedger, ManagedLedgerConfig, ManagedLedgerError};
use crate::metrics::BrokerMetrics;

/// What the broker needs to serve topics.
#[derive(Clone, Debug)]
pub struct BrokerConfig {
    /// Largest message (or batch) accepted, in bytes (Pulsar's default 5 MiB).
    pub max_message_size: usize,
    /// Ledger rollover, cache and the default persistence of namespaces
    /// that set none.
    pub managed_ledger: ManagedLedgerConfig,
    /// `host:port` that lookups send clients to; by default the address the
    /// client connected to.
    pub advertised_address: Option<String>,
    /// SENDs in flight per connection before the broker stops reading it.
    pub max_pending_sends_per_connection: usize,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        BrokerConfig {
            max_message_size: 5 * 1024 * 1024,
            managed_ledger: ManagedLedgerConfig::default(),
            advertised_address: None,
            max_pending_sends_per_connection: 1000,
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
    Storage(#[from] ManagedLedgerError),
    #[error("metadata: {0}")]
    Metadata(String),
    #[error("broker is shutting down")]
    ShuttingDown,
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
            ServiceError::Subscribe(_) => ServerError::ConsumerBusy,
            ServiceError::Storage(_) => ServerError::PersistenceError,
            ServiceError::Metadata(_) => ServerError::MetadataError,
            ServiceError::ShuttingDown => ServerError::ServiceNotReady,
        }
    }
}

type TopicSlot = Arc<OnceCell<Arc<Topic>>>;

pub struct BrokerService {
    config: BrokerConfig,
    store: Arc<dyn MetadataStore>,
    ledgers: LedgerClient,
    metrics: BrokerMetrics,
    topics: tokio::sync::Mutex<HashMap<String, TopicSlot>>,
    shutting_down: std::sync::atomic::AtomicBool,
}

impl BrokerService {
    pub fn new(
        config: BrokerConfig,
        store: Arc<dyn MetadataStore>,
        ledgers: LedgerClient,
        metrics: BrokerMetrics,
    ) -> Arc<Self> {
        Arc::new(BrokerService {
            config,
            store,
            ledgers,
            metrics,
            topics: tokio::sync::Mutex::new(HashMap::new()),
            shutting_down: std::sync::atomic::AtomicBool::new(false),
        })
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
        let full = name.to_string();
        let slot = self
            .topics
            .lock()
            .await
            .entry(full.clone())
            .or_default()
            .clone();
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
        let mut config = self.config.managed_ledger.clone();
        if let Some(p) = policies.persistence {
            config.ledger = LedgerConfig::new(p.ensemble_size, p.write_quorum, p.ack_quorum);
        }
        let key = keys::topic(&name.tenant, &name.namespace, &name.local);
        let ml = ManagedLedger::open(
            name.to_string(),
            self.store.clone(),
            key,
            self.ledgers.clone(),
            config,
        )
        .await?;
        Ok(Arc::new(Topic::new(
            name.clone(),
            ml,
            self.store.clone(),
            self.metrics.clone(),
        )))
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

    /// Stops opening topics, then persists cursors and seals the ledgers of
    /// every open topic.
    pub async fn shutdown(&self) {
        self.shutting_down
            .store(true, std::sync::atomic::Ordering::Release);
        let slots: Vec<TopicSlot> = self.topics.lock().await.drain().map(|(_, s)| s).collect();
        for slot in slots {
            if let Some(topic) = slot.get() {
                topic.close().await;
            }
        }
    }
}
