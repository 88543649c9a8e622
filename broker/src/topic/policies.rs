//! Tenant and namespace records as stored in metadata (`keys::tenant`,
//! `keys::namespace`). Unknown fields are kept out of the way with defaults,
//! so later policies extend these without a migration.

use bytes::Bytes;
use magnetar_metadata::{keys, Expect, MetadataError, MetadataStore};
use serde::{Deserialize, Serialize};

use crate::ownership::{BundleLayout, BundlesData};
use crate::storage::{FlushPolicy, LogPolicies, Replication};

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantInfo {
    #[serde(default)]
    pub admin_roles: Vec<String>,
    #[serde(default)]
    pub allowed_clusters: Vec<String>,
}

/// Replication of a namespace's ledgers (Pulsar's persistence policy).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PersistencePolicy {
    pub ensemble_size: u32,
    pub write_quorum: u32,
    pub ack_quorum: u32,
}

/// How long and how much acknowledged data a namespace keeps (Pulsar's
/// `RetentionPolicies`; JSON field names as in Pulsar's admin API). A ledger
/// every cursor has passed is deleted once it is older than the time limit
/// or the retained size exceeds the size limit; -1 means unlimited, 0 means
/// delete as soon as it is consumed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RetentionPolicy {
    #[serde(default)]
    pub retention_time_in_minutes: i64,
    #[serde(default, rename = "retentionSizeInMB")]
    pub retention_size_in_mb: i64,
}

/// When a topic nobody uses is deleted (Pulsar's `InactiveTopicPolicies`
/// and the broker's `brokerDeleteInactiveTopics*` defaults).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InactiveTopicPolicies {
    pub inactive_topic_delete_mode: InactiveTopicDeleteMode,
    /// Seconds without producers, consumers or new subscriptions.
    pub max_inactive_duration_seconds: u32,
    pub delete_while_inactive: bool,
}

impl Default for InactiveTopicPolicies {
    /// Pulsar's broker defaults: on, after 60 s, topics without subscriptions.
    fn default() -> Self {
        InactiveTopicPolicies {
            inactive_topic_delete_mode: InactiveTopicDeleteMode::DeleteWhenNoSubscriptions,
            max_inactive_duration_seconds: 60,
            delete_while_inactive: true,
        }
    }
}

/// Which inactive topics go.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InactiveTopicDeleteMode {
    /// No subscriptions at all (and no producers).
    DeleteWhenNoSubscriptions,
    /// No producers or consumers, and every subscription has consumed
    /// everything.
    DeleteWhenSubscriptionsCaughtUp,
}

impl std::str::FromStr for InactiveTopicDeleteMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "delete_when_no_subscriptions" => Ok(Self::DeleteWhenNoSubscriptions),
            "delete_when_subscriptions_caught_up" => Ok(Self::DeleteWhenSubscriptionsCaughtUp),
            other => Err(format!(
                "unknown inactive topic delete mode {other:?}: delete_when_no_subscriptions or delete_when_subscriptions_caught_up"
            )),
        }
    }
}

/// What happens when a topic's backlog passes its quota (Pulsar's
/// `BacklogQuota.RetentionPolicy`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BacklogQuotaPolicy {
    /// Producers are refused and disconnected until the backlog shrinks;
    /// clients keep retrying, so their sends are held.
    ProducerRequestHold,
    /// Producers are refused and disconnected; clients fail their sends.
    ProducerException,
    /// The slowest cursors are moved forward until the backlog fits.
    ConsumerBacklogEviction,
}

/// Backlog limit of each topic in a namespace (Pulsar's `BacklogQuota`, type
/// `destination_storage`): `limit_size` in bytes, `limit_time` in seconds
/// (age of the oldest unacknowledged message); -1 or absent means no limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BacklogQuota {
    #[serde(default = "unlimited")]
    pub limit_size: i64,
    #[serde(default = "unlimited")]
    pub limit_time: i64,
    pub policy: BacklogQuotaPolicy,
}

fn unlimited() -> i64 {
    -1
}

/// Publish limit of each topic in a namespace, per second (Pulsar's
/// `PublishRate`; 0 or less: no limit). Producers past it are slowed by the
/// broker pausing reads from their connections, never refused.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PublishRateLimit {
    #[serde(default)]
    pub publish_throttling_rate_in_msg: i32,
    #[serde(default)]
    pub publish_throttling_rate_in_byte: i64,
}

/// Dispatch limit of each subscription in a namespace (Pulsar's
/// `DispatchRate` as `subscriptionDispatchRate`; 0 or less: no limit), per
/// `rate_period_in_second`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DispatchRateLimit {
    #[serde(default)]
    pub dispatch_throttling_rate_in_msg: i32,
    #[serde(default)]
    pub dispatch_throttling_rate_in_byte: i64,
    #[serde(default = "one_second")]
    pub rate_period_in_second: i32,
    /// Pulsar's rate relative to the publish rate; not supported (the
    /// admin API refuses `true`), kept so Pulsar's JSON round-trips.
    #[serde(default)]
    pub relative_to_publish_rate: bool,
}

fn one_second() -> i32 {
    1
}

/// A namespace's policies as stored at `keys::namespace`. Every field is
/// optional so records written by older brokers still load.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamespacePolicies {
    /// `None`: the broker's default persistence.
    #[serde(default)]
    pub persistence: Option<PersistencePolicy>,
    /// `None`: Pulsar's default, acknowledged ledgers are deleted at once.
    #[serde(default)]
    pub retention: Option<RetentionPolicy>,
    /// Unacknowledged messages older than this are acknowledged by the
    /// broker (expired). `None` or 0: never.
    #[serde(default)]
    pub message_ttl_seconds: Option<u32>,
    #[serde(default)]
    pub backlog_quota: Option<BacklogQuota>,
    /// Roles and what they may do here when auth is on (Pulsar's
    /// `auth_policies.namespace_auth`).
    #[serde(default)]
    pub permissions: crate::auth::Permissions,
    #[serde(default)]
    pub publish_rate: Option<PublishRateLimit>,
    #[serde(default)]
    pub subscription_dispatch_rate: Option<DispatchRateLimit>,
    /// Producers one topic accepts; `None` or 0: unlimited.
    #[serde(default)]
    pub max_producers_per_topic: Option<u32>,
    /// Consumers over all subscriptions of one topic; `None` or 0: unlimited.
    #[serde(default)]
    pub max_consumers_per_topic: Option<u32>,
    /// Consumers of one subscription; `None` or 0: unlimited.
    #[serde(default)]
    pub max_consumers_per_subscription: Option<u32>,
    /// Subscriptions of one topic; `None`: the broker's
    /// `--max-subscriptions-per-topic`; 0: unlimited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_subscriptions_per_topic: Option<u32>,
    /// Topics of the namespace, each partition counting as one; `None`: the
    /// broker's `--max-topics-per-namespace`; 0: unlimited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_topics_per_namespace: Option<u32>,
    /// `None`: the broker's `--delete-inactive-topics` defaults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inactive_topic_policies: Option<InactiveTopicPolicies>,
    /// How the namespace's topics are cut into bundles; `None`: the
    /// default equal bundles. Changed by bundle splits.
    #[serde(default)]
    pub bundles: Option<BundlesData>,
    /// Monolithic: a replica out of the ISR may lead when none in it is
    /// alive (Kafka's `unclean.leader.election.enable`); `None`: no.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unclean_leader_election: Option<bool>,
    /// Monolithic: when receipts go out relative to the disk; `None`: the
    /// broker's `--flush-policy`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flush_policy: Option<FlushPolicy>,
}

impl NamespacePolicies {
    /// What these policies ask of the namespace's logs.
    pub fn log_policies(&self) -> LogPolicies {
        LogPolicies {
            replication: self.persistence.map(|p| Replication {
                ensemble_size: p.ensemble_size,
                write_quorum: p.write_quorum,
                ack_quorum: p.ack_quorum,
            }),
            unclean_leader_election: self.unclean_leader_election.unwrap_or(false),
            flush: self.flush_policy,
        }
    }

    /// The namespace's bundles (the default layout if none is stored or
    /// the stored one is unreadable, which admin validation prevents).
    pub fn bundle_layout(&self) -> BundleLayout {
        match &self.bundles {
            None => BundleLayout::default(),
            Some(data) => BundleLayout::from_data(data).unwrap_or_else(|e| {
                tracing::warn!(error = %e, "ignoring stored bundle layout");
                BundleLayout::default()
            }),
        }
    }
}

/// Creates a tenant and a namespace unless they exist (standalone's
/// `public/default` on first start). Existing records are left unchanged.
pub async fn create_namespace_if_absent(
    store: &dyn MetadataStore,
    tenant: &str,
    namespace: &str,
    tenant_info: &TenantInfo,
    policies: &NamespacePolicies,
) -> Result<(), MetadataError> {
    let records = [
        (keys::tenant(tenant), serde_json::to_vec(tenant_info)),
        (
            keys::namespace(tenant, namespace),
            serde_json::to_vec(policies),
        ),
    ];
    for (key, value) in records {
        let value = value.map_err(|e| MetadataError::InvalidArgument(e.to_string()))?;
        match store
            .put(&key, Bytes::from(value), Expect::Absent, None)
            .await
        {
            Ok(_) | Err(MetadataError::Conflict { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
