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

pub mod balancer;
mod bundle;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use magnetar_metadata::{
    keys, Compare, Expect, KeyValue, LeaseId, MetadataError, MetadataStore, Op, Txn,
};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

pub use bundle::{
    bundle_of, topic_hash, BundleError, BundleLayout, BundleRange, BundlesData, DEFAULT_BUNDLES,
    MAX_BUNDLES,
};

pub use balancer::{BalancerConfig, BrokerLoad, BundleLoad, LoadReport};

use crate::storage::LogStore;
use crate::topic::{NamespacePolicies, TopicName};

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
    /// `pulsar+ssl://host:port`, when the broker serves TLS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pulsar_url_tls: Option<String>,
    /// `https://host:port`, when the broker serves HTTPS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_url_tls: Option<String>,
    /// Monolithic brokers only: where followers fetch this broker's
    /// partitions, and the id partition records name it by.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replica: Option<ReplicaEndpoint>,
}

/// A monolithic broker as a replica holder: its stable id (kept in its data
/// directory) and the address of its replication service.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReplicaEndpoint {
    pub id: String,
    pub url: String,
    /// Its rack (`--rack`), so a partition's replicas spread over racks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rack: Option<String>,
}

/// What a lookup answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LookupAnswer {
    /// This broker serves the topic.
    Here,
    /// Another broker does, or should: send the client there. Not
    /// `authoritative` when it is the load manager, which decides.
    Elsewhere {
        broker: BrokerIdentity,
        authoritative: bool,
    },
}

#[derive(Debug, thiserror::Error, Clone)]
pub enum OwnershipError {
    #[error("bundle {bundle} of {namespace} is owned by {owner}")]
    OwnedElsewhere {
        namespace: String,
        bundle: String,
        owner: String,
    },
    #[error("bundle {bundle} of {namespace} is being unloaded from this broker")]
    Unloading { namespace: String, bundle: String },
    #[error("this broker holds no lease (metadata unreachable or lease lost)")]
    NoLease,
    #[error("namespace {0} does not exist")]
    NamespaceNotFound(String),
    /// No broker that may lead the topic (an in-sync replica of its local
    /// log) is alive.
    #[error("no in-sync replica of {0} is alive to lead it; unclean leader election is off")]
    NoEligibleLeader(String),
    #[error(transparent)]
    Bundle(#[from] BundleError),
    #[error("metadata: {0}")]
    Metadata(String),
}

impl From<MetadataError> for OwnershipError {
    fn from(e: MetadataError) -> Self {
        OwnershipError::Metadata(e.to_string())
    }
}

/// One bundle of one namespace, with its ownership key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BundleRef {
    pub tenant: String,
    pub namespace: String,
    pub range: BundleRange,
}

impl BundleRef {
    pub fn new(tenant: &str, namespace: &str, range: BundleRange) -> Self {
        BundleRef {
            tenant: tenant.to_string(),
            namespace: namespace.to_string(),
            range,
        }
    }

    /// `tenant/namespace`.
    pub fn namespace_name(&self) -> String {
        format!("{}/{}", self.tenant, self.namespace)
    }

    /// `tenant/namespace/0xSTART_0xEND`, as load reports and Pulsar name it.
    pub fn full_name(&self) -> String {
        format!("{}/{}/{}", self.tenant, self.namespace, self.range.name())
    }

    /// Parses [`Self::full_name`].
    pub fn parse(full: &str) -> Option<BundleRef> {
        let mut parts = full.splitn(3, '/');
        let tenant = parts.next()?;
        let namespace = parts.next()?;
        let range = BundleRange::parse(parts.next()?).ok()?;
        Some(BundleRef::new(tenant, namespace, range))
    }

    pub fn owner_key(&self) -> String {
        keys::bundle_owner(&self.tenant, &self.namespace, &self.range.name())
    }

    pub fn assignment_key(&self) -> String {
        keys::bundle_assignment(&self.tenant, &self.namespace, &self.range.name())
    }

    pub fn request_key(&self) -> String {
        keys::bundle_request(&self.tenant, &self.namespace, &self.range.name())
    }
}

struct LeaseState {
    lease: Option<LeaseId>,
    /// Bundles this broker holds under `lease` (ownership key names).
    owned: HashSet<String>,
    /// Bundles being unloaded: not claimed again until released.
    releasing: HashSet<String>,
}

/// Bundles sent to a broker by this (leader) broker's lookups and not yet
/// claimed: counted as that broker's, so a burst of lookups spreads.
struct PendingAssignment {
    at: Instant,
    owner_key: String,
    broker_id: String,
}

/// How long a lookup's choice counts against the chosen broker before its
/// ownership key shows it (the client normally connects within
/// milliseconds).
const PENDING_ASSIGNMENT_TTL: Duration = Duration::from_secs(10);

pub struct Ownership {
    store: Arc<dyn MetadataStore>,
    me: BrokerIdentity,
    ttl: Duration,
    state: Mutex<LeaseState>,
    /// Bundle layouts by `tenant/namespace`, read from the namespace
    /// policies; refreshed whenever a lookup is not answered from `owned`.
    layouts: Mutex<HashMap<String, BundleLayout>>,
    pending: Mutex<Vec<PendingAssignment>>,
    balancer: BalancerConfig,
    /// Bumped every time the lease is lost; the broker closes its topics.
    lost: watch::Sender<u64>,
    /// Set by [`Self::release`]: the keep-alive task ends.
    released: AtomicBool,
    /// Where topics are stored, asked which brokers may lead a topic.
    logs: std::sync::OnceLock<Arc<dyn LogStore>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

fn decode_identity(kv: &KeyValue) -> Result<BrokerIdentity, OwnershipError> {
    serde_json::from_slice(&kv.value)
        .map_err(|e| OwnershipError::Metadata(format!("corrupt {}: {e}", kv.key)))
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
                releasing: HashSet::new(),
            }),
            layouts: Mutex::new(HashMap::new()),
            pending: Mutex::new(Vec::new()),
            balancer: BalancerConfig::default(),
            lost: watch::channel(0).0,
            released: AtomicBool::new(false),
            logs: std::sync::OnceLock::new(),
        });
        ownership.register().await?;
        tokio::spawn(keep_alive_loop(Arc::downgrade(&ownership)));
        Ok(ownership)
    }

    pub fn identity(&self) -> &BrokerIdentity {
        &self.me
    }

    /// Lets lookups place an unowned topic only on a broker its storage
    /// allows to lead it (an in-sync replica of a local log).
    pub fn set_log_store(&self, logs: Arc<dyn LogStore>) {
        let _ = self.logs.set(logs);
    }

    /// Where the lookup of an unowned `topic` must go when its storage
    /// restricts its leader: here, or another broker. `None` when any
    /// broker may lead it.
    async fn leader_placement(
        &self,
        topic: &TopicName,
        authoritative: bool,
    ) -> Result<Option<LookupAnswer>, OwnershipError> {
        let Some(logs) = self.logs.get() else {
            return Ok(None);
        };
        let unclean = self
            .namespace_policies(&topic.tenant, &topic.namespace)
            .await?
            .log_policies()
            .unclean_leader_election;
        let eligible = logs
            .eligible_leaders(&topic.log_name(), unclean)
            .await
            .map_err(|e| OwnershipError::Metadata(e.to_string()))?;
        let Some(eligible) = eligible else {
            return Ok(None);
        };
        let me = &self.me.broker_id;
        let Some(first) = eligible.first() else {
            return Err(OwnershipError::NoEligibleLeader(topic.to_string()));
        };
        if first == me || (authoritative && eligible.contains(me)) {
            return Ok(Some(LookupAnswer::Here));
        }
        match self.store.get(&keys::broker_available(first)).await? {
            Some(kv) => Ok(Some(LookupAnswer::Elsewhere {
                broker: decode_identity(&kv)?,
                authoritative: true,
            })),
            None => Err(OwnershipError::NoEligibleLeader(topic.to_string())),
        }
    }

    pub fn store(&self) -> &Arc<dyn MetadataStore> {
        &self.store
    }

    pub fn balancer_config(&self) -> &BalancerConfig {
        &self.balancer
    }

    /// The lease this broker holds now, if any.
    pub fn lease(&self) -> Option<LeaseId> {
        lock(&self.state).lease
    }

    /// Changes each time this broker lost its lease (and so its bundles).
    pub fn subscribe_lost(&self) -> watch::Receiver<u64> {
        self.lost.subscribe()
    }

    /// The ownership keys this broker holds now.
    pub fn owned_keys(&self) -> Vec<String> {
        lock(&self.state).owned.iter().cloned().collect()
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
        let mut state = lock(&self.state);
        state.lease = Some(lease);
        state.owned.clear();
        state.releasing.clear();
        tracing::info!(broker = %self.me.broker_id, lease, "broker registered");
        Ok(())
    }

    fn drop_lease(&self) {
        {
            let mut state = lock(&self.state);
            state.lease = None;
            state.owned.clear();
            state.releasing.clear();
        }
        self.lost.send_modify(|n| *n += 1);
    }

    /// The namespace's policies as stored now, with their version.
    async fn stored_policies(
        &self,
        tenant: &str,
        namespace: &str,
    ) -> Result<(NamespacePolicies, i64), OwnershipError> {
        match self.store.get(&keys::namespace(tenant, namespace)).await? {
            None => Err(OwnershipError::NamespaceNotFound(format!(
                "{tenant}/{namespace}"
            ))),
            Some(kv) => serde_json::from_slice(&kv.value)
                .map(|p| (p, kv.version))
                .map_err(|e| OwnershipError::Metadata(format!("corrupt {}: {e}", kv.key))),
        }
    }

    async fn namespace_policies(
        &self,
        tenant: &str,
        namespace: &str,
    ) -> Result<NamespacePolicies, OwnershipError> {
        Ok(self.stored_policies(tenant, namespace).await?.0)
    }

    /// The namespace's bundle layout as stored now (and cached).
    pub async fn refresh_layout(
        &self,
        tenant: &str,
        namespace: &str,
    ) -> Result<(BundleLayout, Option<i64>), OwnershipError> {
        let name = format!("{tenant}/{namespace}");
        let (policies, version) = self.stored_policies(tenant, namespace).await?;
        let (layout, version) = (policies.bundle_layout(), Some(version));
        lock(&self.layouts).insert(name, layout.clone());
        Ok((layout, version))
    }

    /// The bundle of `topic` by the cached layout, if one is cached.
    pub fn cached_bundle_of(&self, topic: &TopicName) -> Option<BundleRef> {
        let layouts = lock(&self.layouts);
        let layout = layouts.get(&topic.namespace_name())?;
        let range = layout.find(topic_hash(&topic.to_string()));
        Some(BundleRef::new(&topic.tenant, &topic.namespace, range))
    }

    /// The bundle of `topic` by the stored layout.
    pub async fn bundle_of_topic(&self, topic: &TopicName) -> Result<BundleRef, OwnershipError> {
        let (layout, _) = self.refresh_layout(&topic.tenant, &topic.namespace).await?;
        let range = layout.find(topic_hash(&topic.to_string()));
        Ok(BundleRef::new(&topic.tenant, &topic.namespace, range))
    }

    /// Whether this broker holds `topic`'s bundle now (no metadata access).
    fn owns_cached(&self, topic: &TopicName) -> bool {
        self.cached_bundle_of(topic)
            .is_some_and(|b| lock(&self.state).owned.contains(&b.owner_key()))
    }

    /// Whether this broker may serve `topic`: it owns the bundle, or claims
    /// it now if nobody does and the load manager sent it nowhere else.
    pub async fn ensure_owned(&self, topic: &TopicName) -> Result<(), OwnershipError> {
        if self.owns_cached(topic) {
            return Ok(());
        }
        let bundle = self.bundle_of_topic(topic).await?;
        self.ensure_bundle_owned(&bundle).await
    }

    async fn ensure_bundle_owned(&self, bundle: &BundleRef) -> Result<(), OwnershipError> {
        let key = bundle.owner_key();
        let lease = {
            let state = lock(&self.state);
            if state.owned.contains(&key) {
                return Ok(());
            }
            if state.releasing.contains(&key) {
                return Err(OwnershipError::Unloading {
                    namespace: bundle.namespace_name(),
                    bundle: bundle.range.name(),
                });
            }
            state.lease.ok_or(OwnershipError::NoLease)?
        };
        if let Some(target) = self.live_assignment(bundle).await? {
            if target.broker_id != self.me.broker_id {
                return Err(OwnershipError::OwnedElsewhere {
                    namespace: bundle.namespace_name(),
                    bundle: bundle.range.name(),
                    owner: target.broker_id,
                });
            }
        }
        match self.claim(bundle, lease).await? {
            None => {
                let mut state = lock(&self.state);
                // The lease may have been lost meanwhile.
                if state.lease != Some(lease) {
                    return Err(OwnershipError::NoLease);
                }
                state.owned.insert(key);
                tracing::info!(broker = %self.me.broker_id, bundle = %bundle.full_name(), "bundle owned");
                Ok(())
            }
            Some(owner) => Err(OwnershipError::OwnedElsewhere {
                namespace: bundle.namespace_name(),
                bundle: bundle.range.name(),
                owner: owner.broker_id,
            }),
        }
    }

    /// Takes the bundle for this broker under `lease` unless another live
    /// broker holds it; returns that broker if so. An assignment of the
    /// bundle to this broker is consumed in the same transaction.
    async fn claim(
        &self,
        bundle: &BundleRef,
        lease: LeaseId,
    ) -> Result<Option<BrokerIdentity>, OwnershipError> {
        let key = bundle.owner_key();
        let value =
            serde_json::to_vec(&self.me).map_err(|e| OwnershipError::Metadata(e.to_string()))?;
        loop {
            let expect = match self.store.get(&key).await? {
                None => Expect::Absent,
                Some(kv) => {
                    let owner = decode_identity(&kv)?;
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
            let txn = Txn {
                compares: vec![Compare {
                    key: key.clone(),
                    expect,
                }],
                ops: vec![
                    Op::Put {
                        key: key.clone(),
                        value: Bytes::from(value.clone()),
                        lease: Some(lease),
                    },
                    Op::Delete {
                        key: bundle.assignment_key(),
                    },
                ],
            };
            if self.store.txn(txn).await?.succeeded {
                return Ok(None);
            }
        }
    }

    /// Where the load manager sent this bundle, if that broker is alive.
    async fn live_assignment(
        &self,
        bundle: &BundleRef,
    ) -> Result<Option<BrokerIdentity>, OwnershipError> {
        let Some(kv) = self.store.get(&bundle.assignment_key()).await? else {
            return Ok(None);
        };
        let target = decode_identity(&kv)?;
        let alive = self
            .store
            .get(&keys::broker_available(&target.broker_id))
            .await?
            .is_some();
        Ok(alive.then_some(target))
    }

    /// The elected load manager, if any.
    pub async fn leader(&self) -> Result<Option<BrokerIdentity>, OwnershipError> {
        match self.store.get(&keys::load_manager_leader()).await? {
            None => Ok(None),
            Some(kv) => decode_identity(&kv).map(Some),
        }
    }

    /// Answers a lookup of `topic`: here if this broker owns its bundle;
    /// the owner if another does. An unowned bundle goes where the load
    /// manager assigned it, else is claimed when `authoritative` (the client
    /// was sent here by another broker's answer); otherwise the leader
    /// decides: a non-leader sends the client to the leader, which picks
    /// the least-loaded broker.
    pub async fn lookup(
        &self,
        topic: &TopicName,
        authoritative: bool,
    ) -> Result<LookupAnswer, OwnershipError> {
        if self.owns_cached(topic) {
            return Ok(LookupAnswer::Here);
        }
        let bundle = self.bundle_of_topic(topic).await?;
        if lock(&self.state).owned.contains(&bundle.owner_key()) {
            return Ok(LookupAnswer::Here);
        }
        if let Some(kv) = self.store.get(&bundle.owner_key()).await? {
            let owner = decode_identity(&kv)?;
            if owner.broker_id != self.me.broker_id {
                return Ok(LookupAnswer::Elsewhere {
                    broker: owner,
                    authoritative: true,
                });
            }
            // Placed here by the load manager (or ours from an earlier
            // life of this broker, which is claimed below).
            if self.holds(&bundle).await? {
                return Ok(LookupAnswer::Here);
            }
        }
        if let Some(answer) = self.leader_placement(topic, authoritative).await? {
            if answer != LookupAnswer::Here {
                return Ok(answer);
            }
        } else if let Some(target) = self.live_assignment(&bundle).await? {
            if target.broker_id != self.me.broker_id {
                return Ok(LookupAnswer::Elsewhere {
                    broker: target,
                    authoritative: true,
                });
            }
        } else if !authoritative {
            match self.leader().await? {
                Some(leader) if leader.broker_id != self.me.broker_id => {
                    return Ok(LookupAnswer::Elsewhere {
                        broker: leader,
                        authoritative: false,
                    });
                }
                _ => {
                    if let Some(chosen) = self.choose_broker(&bundle).await? {
                        if chosen.broker_id != self.me.broker_id {
                            return Ok(LookupAnswer::Elsewhere {
                                broker: chosen,
                                authoritative: true,
                            });
                        }
                    }
                }
            }
        }
        match self.ensure_bundle_owned(&bundle).await {
            Ok(()) => Ok(LookupAnswer::Here),
            Err(OwnershipError::OwnedElsewhere { .. }) => {
                // Claimed by someone else in the meantime: ask again.
                Box::pin(self.lookup(topic, true)).await
            }
            Err(e) => Err(e),
        }
    }

    /// Where an unowned bundle should go: the least-loaded live broker by
    /// the latest load reports and ownership, counting bundles this broker
    /// sent elsewhere that are not claimed yet.
    pub async fn choose_broker(
        &self,
        bundle: &BundleRef,
    ) -> Result<Option<BrokerIdentity>, OwnershipError> {
        let view = ClusterView::read(self.store.as_ref()).await?;
        let mut loads = view.broker_loads();
        {
            let mut pending = lock(&self.pending);
            pending.retain(|p| {
                p.at.elapsed() < PENDING_ASSIGNMENT_TTL && !view.owners.contains_key(&p.owner_key)
            });
            for p in pending.iter() {
                if let Some(load) = loads.iter_mut().find(|l| l.broker_id == p.broker_id) {
                    load.pending += 1;
                }
            }
        }
        let Some(chosen) = balancer::choose(&loads, &self.balancer) else {
            return Ok(None);
        };
        let identity = view
            .brokers
            .iter()
            .find(|b| b.broker_id == chosen.broker_id)
            .cloned();
        if let Some(identity) = &identity {
            lock(&self.pending).push(PendingAssignment {
                at: Instant::now(),
                owner_key: bundle.owner_key(),
                broker_id: identity.broker_id.clone(),
            });
        }
        Ok(identity)
    }

    /// Stops serving `bundle`: new lookups and clients of it are refused
    /// while `unload` closes its topics, then the ownership key is deleted
    /// so another broker may claim it. False if this broker did not own it.
    pub async fn release_bundle<F, Fut>(
        &self,
        bundle: &BundleRef,
        unload: F,
    ) -> Result<bool, OwnershipError>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = ()>,
    {
        let key = bundle.owner_key();
        if !self.holds(bundle).await? {
            return Ok(false);
        }
        {
            let mut state = lock(&self.state);
            if !state.owned.remove(&key) {
                return Ok(false);
            }
            state.releasing.insert(key.clone());
        }
        unload().await;
        let result = self.delete_own_key(&key).await;
        lock(&self.state).releasing.remove(&key);
        tracing::info!(broker = %self.me.broker_id, bundle = %bundle.full_name(), "bundle unloaded");
        result.map(|()| true)
    }

    /// Whether this broker owns `bundle` now. A bundle the load manager
    /// handed to this broker (its key written under this broker's lease)
    /// counts, and is taken into the owned set.
    pub async fn holds(&self, bundle: &BundleRef) -> Result<bool, OwnershipError> {
        let key = bundle.owner_key();
        let lease = {
            let state = lock(&self.state);
            if state.owned.contains(&key) {
                return Ok(true);
            }
            match state.lease {
                Some(lease) if !state.releasing.contains(&key) => lease,
                _ => return Ok(false),
            }
        };
        let Some(kv) = self.store.get(&key).await? else {
            return Ok(false);
        };
        if kv.lease != Some(lease) || decode_identity(&kv)?.broker_id != self.me.broker_id {
            return Ok(false);
        }
        let mut state = lock(&self.state);
        if state.lease != Some(lease) {
            return Ok(false);
        }
        state.owned.insert(key);
        Ok(true)
    }

    /// Writes `bundle`'s ownership key for `target` under the target's
    /// lease (the load manager placing a shed bundle), unless somebody owns
    /// it already. The target serves it on its first client.
    pub async fn place(
        &self,
        bundle: &BundleRef,
        target: &BrokerIdentity,
    ) -> Result<bool, OwnershipError> {
        let Some(registration) = self
            .store
            .get(&keys::broker_available(&target.broker_id))
            .await?
        else {
            return Ok(false);
        };
        let Some(lease) = registration.lease else {
            return Ok(false);
        };
        let value =
            serde_json::to_vec(target).map_err(|e| OwnershipError::Metadata(e.to_string()))?;
        let txn = Txn {
            compares: vec![Compare {
                key: bundle.owner_key(),
                expect: Expect::Absent,
            }],
            ops: vec![
                Op::Put {
                    key: bundle.owner_key(),
                    value: Bytes::from(value),
                    lease: Some(lease),
                },
                Op::Delete {
                    key: bundle.assignment_key(),
                },
            ],
        };
        Ok(self.store.txn(txn).await?.succeeded)
    }

    /// Records that the load manager sends `bundle` to `target` next
    /// (bound to this broker's lease, so it ends with this leader).
    pub async fn assign(
        &self,
        bundle: &BundleRef,
        target: &BrokerIdentity,
    ) -> Result<(), OwnershipError> {
        let lease = self.lease().ok_or(OwnershipError::NoLease)?;
        let value =
            serde_json::to_vec(target).map_err(|e| OwnershipError::Metadata(e.to_string()))?;
        self.store
            .put(
                &bundle.assignment_key(),
                Bytes::from(value),
                Expect::Any,
                Some(lease),
            )
            .await?;
        Ok(())
    }

    /// Deletes an ownership key if it is still this broker's.
    async fn delete_own_key(&self, key: &str) -> Result<(), OwnershipError> {
        let Some(kv) = self.store.get(key).await? else {
            return Ok(());
        };
        if decode_identity(&kv)?.broker_id != self.me.broker_id {
            return Ok(());
        }
        self.store.delete(key, Expect::Version(kv.version)).await?;
        Ok(())
    }

    /// Splits `bundle` in two halves (see [`split_bundle`]); when this
    /// broker owns it, it owns both halves.
    pub async fn split_bundle(
        &self,
        bundle: &BundleRef,
    ) -> Result<(BundleRef, BundleRef), OwnershipError> {
        let parent_key = bundle.owner_key();
        let held = if self.holds(bundle).await? {
            self.lease()
        } else {
            None
        };
        let (layout, low, high) = split_bundle(self.store.as_ref(), bundle, held).await?;
        {
            let mut state = lock(&self.state);
            if state.owned.remove(&parent_key) {
                state.owned.insert(low.owner_key());
                state.owned.insert(high.owner_key());
            }
        }
        lock(&self.layouts).insert(bundle.namespace_name(), layout);
        Ok((low, high))
    }

    /// Gives up the lease (graceful shutdown): bundles move at once.
    pub async fn release(&self) {
        self.released.store(true, Ordering::Release);
        let lease = lock(&self.state).lease.take();
        if let Some(lease) = lease {
            if let Err(e) = self.store.revoke_lease(lease).await {
                tracing::warn!(error = %e, "revoking the broker lease failed");
            }
        }
    }
}

/// Splits `bundle` in two halves (Pulsar's `range_equally_divide`). The
/// namespace's layout and the ownership keys change in one transaction:
/// with `held` (the owner's lease) the parent's key gives way to keys of
/// both halves under that lease; without, the parent must be unowned.
pub async fn split_bundle(
    store: &dyn MetadataStore,
    bundle: &BundleRef,
    held: Option<LeaseId>,
) -> Result<(BundleLayout, BundleRef, BundleRef), OwnershipError> {
    let policies_key = keys::namespace(&bundle.tenant, &bundle.namespace);
    let parent_key = bundle.owner_key();
    loop {
        let kv = store
            .get(&policies_key)
            .await?
            .ok_or_else(|| OwnershipError::NamespaceNotFound(bundle.namespace_name()))?;
        let mut policies: NamespacePolicies = serde_json::from_slice(&kv.value)
            .map_err(|e| OwnershipError::Metadata(format!("corrupt {}: {e}", kv.key)))?;
        let (layout, low, high) = policies.bundle_layout().split(bundle.range)?;
        policies.bundles = Some(layout.to_data());
        let encoded =
            serde_json::to_vec(&policies).map_err(|e| OwnershipError::Metadata(e.to_string()))?;
        let low = BundleRef::new(&bundle.tenant, &bundle.namespace, low);
        let high = BundleRef::new(&bundle.tenant, &bundle.namespace, high);
        let mut txn = Txn {
            compares: vec![Compare {
                key: policies_key.clone(),
                expect: Expect::Version(kv.version),
            }],
            ops: vec![Op::Put {
                key: policies_key.clone(),
                value: Bytes::from(encoded),
                lease: None,
            }],
        };
        let owner = store.get(&parent_key).await?;
        match (held, owner) {
            (Some(lease), Some(owner)) if owner.lease == Some(lease) => {
                txn.compares.push(Compare {
                    key: parent_key.clone(),
                    expect: Expect::Version(owner.version),
                });
                for half in [&low, &high] {
                    txn.ops.push(Op::Put {
                        key: half.owner_key(),
                        value: owner.value.clone(),
                        lease: Some(lease),
                    });
                }
                txn.ops.push(Op::Delete {
                    key: parent_key.clone(),
                });
            }
            (None, None) => txn.compares.push(Compare {
                key: parent_key.clone(),
                expect: Expect::Absent,
            }),
            (_, owner) => {
                return Err(OwnershipError::OwnedElsewhere {
                    namespace: bundle.namespace_name(),
                    bundle: bundle.range.name(),
                    owner: owner
                        .and_then(|kv| decode_identity(&kv).ok())
                        .map_or_else(|| "nobody".to_string(), |o| o.broker_id),
                })
            }
        }
        if store.txn(txn).await?.succeeded {
            tracing::info!(bundle = %bundle.full_name(), low = %low.range.name(), high = %high.range.name(), "bundle split");
            return Ok((layout, low, high));
        }
        // The layout or the owner changed meanwhile: look again.
    }
}

/// Live brokers, their load reports and who owns which bundle, read from
/// metadata in one go (the load manager's input).
pub struct ClusterView {
    pub brokers: Vec<BrokerIdentity>,
    pub reports: HashMap<String, LoadReport>,
    /// Owner broker id by ownership key.
    pub owners: HashMap<String, String>,
}

impl ClusterView {
    pub async fn read(store: &dyn MetadataStore) -> Result<ClusterView, OwnershipError> {
        let brokers: Vec<BrokerIdentity> = store
            .list(&keys::brokers_available_prefix())
            .await?
            .iter()
            .filter_map(|kv| serde_json::from_slice(&kv.value).ok())
            .collect();
        let reports = store
            .list(&keys::brokers_load_prefix())
            .await?
            .iter()
            .filter_map(|kv| serde_json::from_slice::<LoadReport>(&kv.value).ok())
            .map(|r| (r.broker_id.clone(), r))
            .collect();
        let owners = store
            .list(&keys::ownership_prefix())
            .await?
            .iter()
            .filter_map(|kv| {
                let owner: BrokerIdentity = serde_json::from_slice(&kv.value).ok()?;
                Some((kv.key.clone(), owner.broker_id))
            })
            .collect();
        Ok(ClusterView {
            brokers,
            reports,
            owners,
        })
    }

    /// Full bundle name (`tenant/ns/range`) of an ownership key.
    pub fn bundle_name(owner_key: &str) -> Option<String> {
        let rest = owner_key.strip_prefix(&keys::ownership_prefix())?;
        let parts: Vec<String> = rest
            .split('/')
            .map(keys::unescape_segment)
            .collect::<Option<_>>()?;
        (parts.len() == 3).then(|| parts.join("/"))
    }

    /// The balancer's view of every live broker.
    pub fn broker_loads(&self) -> Vec<BrokerLoad> {
        self.brokers
            .iter()
            .map(|b| {
                let owned = self
                    .owners
                    .iter()
                    .filter(|(_, owner)| **owner == b.broker_id)
                    .filter_map(|(key, _)| Self::bundle_name(key))
                    .collect();
                BrokerLoad::from_report(self.reports.get(&b.broker_id), &b.broker_id, owned)
            })
            .collect()
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
        let lease = lock(&this.state).lease;
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
