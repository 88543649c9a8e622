//! Which broker serves which topics. A broker registers under an etcd lease
//! and owns namespace bundles through keys bound to that lease
//! (`keys::bundle_owner`), so its bundles free themselves when it dies or
//! stalls past the lease TTL; another broker then claims them on the next
//! lookup and recovers the topics' open ledgers by fencing.
//!
//! A broker that finds its lease gone (after a pause, say) drops every
//! bundle at once: it closes its topics and their clients, which look the
//! topics up again. Whatever it still tries to write is refused by the
//! bookies (fenced) or by the ledger list's CAS, so it acknowledges nothing.

mod bundle;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use magnetar_metadata::{keys, Expect, LeaseId, MetadataError, MetadataStore};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

pub use bundle::{bundle_of, topic_hash, BundleRange, DEFAULT_BUNDLES};

use crate::topic::TopicName;

/// Default lease TTL: a dead or paused broker's bundles move after this.
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(10);

/// How a broker is reached; written under `keys::broker_available` and in
/// every ownership key it holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BrokerIdentity {
    /// `host:port` of its Pulsar protocol listener; also its id.
    pub broker_id: String,
    pub pulsar_url: String,
    pub http_url: String,
}

/// What a lookup answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LookupAnswer {
    /// This broker serves the topic.
    Here,
    /// Another broker does (or should): send the client there.
    Elsewhere(BrokerIdentity),
}

#[derive(Debug, thiserror::Error, Clone)]
pub enum OwnershipError {
    #[error("bundle {bundle} of {namespace} is owned by {owner}")]
    OwnedElsewhere {
        namespace: String,
        bundle: String,
        owner: String,
    },
    #[error("this broker holds no lease (metadata unreachable or lease lost)")]
    NoLease,
    #[error("metadata: {0}")]
    Metadata(String),
}

impl From<MetadataError> for OwnershipError {
    fn from(e: MetadataError) -> Self {
        OwnershipError::Metadata(e.to_string())
    }
}

struct LeaseState {
    lease: Option<LeaseId>,
    /// Bundles this broker holds under `lease` (ownership key names).
    owned: HashSet<String>,
}

pub struct Ownership {
    store: Arc<dyn MetadataStore>,
    me: BrokerIdentity,
    ttl: Duration,
    state: Mutex<LeaseState>,
    /// Bumped every time the lease is lost; the broker closes its topics.
    lost: watch::Sender<u64>,
    /// Set by [`Self::release`]: the keep-alive task ends.
    released: AtomicBool,
}

impl Ownership {
    /// Registers this broker under a fresh lease and keeps the lease alive
    /// in the background until [`Self::release`] (or the last handle goes).
    pub async fn start(
        store: Arc<dyn MetadataStore>,
        me: BrokerIdentity,
        ttl: Duration,
    ) -> Result<Arc<Ownership>, OwnershipError> {
        let ownership = Arc::new(Ownership {
            store,
            me,
            ttl,
            state: Mutex::new(LeaseState {
                lease: None,
                owned: HashSet::new(),
            }),
            lost: watch::channel(0).0,
            released: AtomicBool::new(false),
        });
        ownership.register().await?;
        tokio::spawn(keep_alive_loop(Arc::downgrade(&ownership)));
        Ok(ownership)
    }

    pub fn identity(&self) -> &BrokerIdentity {
        &self.me
    }

    /// Changes each time this broker lost its lease (and so its bundles).
    pub fn subscribe_lost(&self) -> watch::Receiver<u64> {
        self.lost.subscribe()
    }

    fn lock(&self) -> MutexGuard<'_, LeaseState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn register(&self) -> Result<(), OwnershipError> {
        let lease = self.store.grant_lease(self.ttl).await?;
        let value =
            serde_json::to_vec(&self.me).map_err(|e| OwnershipError::Metadata(e.to_string()))?;
        self.store
            .put(
                &keys::broker_available(&self.me.broker_id),
                Bytes::from(value),
                Expect::Any,
                Some(lease),
            )
            .await?;
        let mut state = self.lock();
        state.lease = Some(lease);
        state.owned.clear();
        tracing::info!(broker = %self.me.broker_id, lease, "broker registered");
        Ok(())
    }

    fn drop_lease(&self) {
        {
            let mut state = self.lock();
            state.lease = None;
            state.owned.clear();
        }
        self.lost.send_modify(|n| *n += 1);
    }

    /// The ownership key of the bundle holding `topic`.
    fn bundle_key(topic: &TopicName) -> (String, String) {
        let bundle = bundle_of(topic_hash(&topic.to_string()), DEFAULT_BUNDLES).name();
        let key = keys::bundle_owner(&topic.tenant, &topic.namespace, &bundle);
        (bundle, key)
    }

    /// Whether this broker may serve `topic`: it owns the bundle, or claims
    /// it now if nobody does.
    pub async fn ensure_owned(&self, topic: &TopicName) -> Result<(), OwnershipError> {
        let (bundle, key) = Self::bundle_key(topic);
        let lease = {
            let state = self.lock();
            if state.owned.contains(&key) {
                return Ok(());
            }
            state.lease.ok_or(OwnershipError::NoLease)?
        };
        match self.claim(&key, lease).await? {
            None => {
                let mut state = self.lock();
                // The lease may have been lost meanwhile.
                if state.lease != Some(lease) {
                    return Err(OwnershipError::NoLease);
                }
                state.owned.insert(key);
                tracing::info!(broker = %self.me.broker_id, namespace = %topic.namespace_name(), %bundle, "bundle owned");
                Ok(())
            }
            Some(owner) => Err(OwnershipError::OwnedElsewhere {
                namespace: topic.namespace_name(),
                bundle,
                owner: owner.broker_id,
            }),
        }
    }

    /// Takes `key` for this broker under `lease` unless another live broker
    /// holds it; returns that broker if so.
    async fn claim(
        &self,
        key: &str,
        lease: LeaseId,
    ) -> Result<Option<BrokerIdentity>, OwnershipError> {
        let value =
            serde_json::to_vec(&self.me).map_err(|e| OwnershipError::Metadata(e.to_string()))?;
        loop {
            let expect = match self.store.get(key).await? {
                None => Expect::Absent,
                Some(kv) => {
                    let owner: BrokerIdentity = serde_json::from_slice(&kv.value)
                        .map_err(|e| OwnershipError::Metadata(format!("corrupt {key}: {e}")))?;
                    if owner.broker_id != self.me.broker_id {
                        return Ok(Some(owner));
                    }
                    if kv.lease == Some(lease) {
                        return Ok(None);
                    }
                    // Ours from an earlier life of this broker: take it over
                    // under the current lease.
                    Expect::Version(kv.version)
                }
            };
            match self
                .store
                .put(key, Bytes::from(value.clone()), expect, Some(lease))
                .await
            {
                Ok(_) => return Ok(None),
                Err(MetadataError::Conflict { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Answers a lookup of `topic`: here if this broker owns its bundle; the
    /// owner if another does; if nobody does, the live broker owning the
    /// fewest bundles (this one when `authoritative`: the client was sent
    /// here by another broker's answer).
    pub async fn lookup(
        &self,
        topic: &TopicName,
        authoritative: bool,
    ) -> Result<LookupAnswer, OwnershipError> {
        let (_, key) = Self::bundle_key(topic);
        if self.lock().owned.contains(&key) {
            return Ok(LookupAnswer::Here);
        }
        if let Some(kv) = self.store.get(&key).await? {
            let owner: BrokerIdentity = serde_json::from_slice(&kv.value)
                .map_err(|e| OwnershipError::Metadata(format!("corrupt {key}: {e}")))?;
            if owner.broker_id != self.me.broker_id {
                return Ok(LookupAnswer::Elsewhere(owner));
            }
        }
        if !authoritative {
            if let Some(candidate) = self.least_loaded().await? {
                if candidate.broker_id != self.me.broker_id {
                    return Ok(LookupAnswer::Elsewhere(candidate));
                }
            }
        }
        match self.ensure_owned(topic).await {
            Ok(()) => Ok(LookupAnswer::Here),
            Err(OwnershipError::OwnedElsewhere { .. }) => {
                // Claimed by someone else in the meantime: ask again.
                Box::pin(self.lookup(topic, true)).await
            }
            Err(e) => Err(e),
        }
    }

    /// The live broker holding the fewest bundles (ties: by id).
    async fn least_loaded(&self) -> Result<Option<BrokerIdentity>, OwnershipError> {
        let brokers: Vec<BrokerIdentity> = self
            .store
            .list(&keys::brokers_available_prefix())
            .await?
            .iter()
            .filter_map(|kv| serde_json::from_slice(&kv.value).ok())
            .collect();
        let owners = self.store.list(&keys::ownership_prefix()).await?;
        let count = |id: &str| {
            owners
                .iter()
                .filter_map(|kv| serde_json::from_slice::<BrokerIdentity>(&kv.value).ok())
                .filter(|o| o.broker_id == id)
                .count()
        };
        Ok(brokers
            .into_iter()
            .min_by_key(|b| (count(&b.broker_id), b.broker_id.clone())))
    }

    /// Gives up the lease (graceful shutdown): bundles move at once.
    pub async fn release(&self) {
        self.released.store(true, Ordering::Release);
        let lease = self.lock().lease.take();
        if let Some(lease) = lease {
            if let Err(e) = self.store.revoke_lease(lease).await {
                tracing::warn!(error = %e, "revoking the broker lease failed");
            }
        }
    }
}

/// Refreshes the lease every third of its TTL while the broker lives; drops
/// the bundles when the lease is gone and registers again.
async fn keep_alive_loop(ownership: std::sync::Weak<Ownership>) {
    let Some(ttl) = ownership.upgrade().map(|o| o.ttl) else {
        return;
    };
    let period = ttl / 3;
    let mut last_ok = Instant::now();
    loop {
        tokio::time::sleep(period).await;
        let Some(this) = ownership.upgrade() else {
            return;
        };
        if this.released.load(Ordering::Acquire) {
            return;
        }
        let lease = this.lock().lease;
        let Some(lease) = lease else {
            match this.register().await {
                Ok(()) => last_ok = Instant::now(),
                Err(e) => tracing::warn!(error = %e, "registering the broker failed; retrying"),
            }
            continue;
        };
        // Paused (or cut off) past the TTL: the lease is gone even if
        // etcd has not said so to us yet.
        if last_ok.elapsed() >= ttl {
            tracing::warn!(broker = %this.me.broker_id, lease, "lease expired while this broker was not refreshing it; dropping every bundle");
            this.drop_lease();
            continue;
        }
        match this.store.keep_alive(lease).await {
            Ok(()) => last_ok = Instant::now(),
            Err(MetadataError::LeaseNotFound(_)) => {
                tracing::warn!(broker = %this.me.broker_id, lease, "lease lost; dropping every bundle");
                this.drop_lease();
            }
            Err(e) => tracing::warn!(error = %e, "lease keep-alive failed; retrying"),
        }
    }
}
