//! `magnetar admin namespaces ...` (pulsar-admin namespaces): namespaces
//! and their retention, message TTL, backlog quota and persistence, and
//! the permissions granted to roles.

mod limits;

use anyhow::Result;
use clap::{Subcommand, ValueEnum};
use serde_json::json;

use super::units::{parse_size_bytes, parse_time_secs, to_mebibytes, to_minutes};
use super::{namespace_path, print, segment, AdminClient};

/// What happens when a backlog quota is exceeded.
#[derive(Clone, Copy, Debug, ValueEnum)]
#[value(rename_all = "snake_case")]
pub enum QuotaPolicy {
    ProducerRequestHold,
    ProducerException,
    ConsumerBacklogEviction,
}

/// Which limit of a backlog quota.
#[derive(Clone, Copy, Debug, ValueEnum)]
#[value(rename_all = "snake_case")]
pub enum QuotaType {
    DestinationStorage,
    MessageAge,
}

fn snake(value: impl ValueEnum) -> String {
    value
        .to_possible_value()
        .map(|v| v.get_name().to_string())
        .unwrap_or_default()
}

#[derive(Subcommand, Debug)]
pub enum NamespacesCommand {
    /// Publish and dispatch rates, producer and consumer limits.
    #[command(flatten)]
    Limits(limits::LimitsCommand),
    /// Create a namespace (tenant/namespace).
    Create {
        namespace: String,
        /// Number of bundles [default: 4].
        #[arg(long)]
        bundles: Option<u32>,
    },
    /// Show the namespace's bundles (hash-range boundaries).
    Bundles {
        namespace: String,
    },
    /// Unload the namespace, or one bundle of it, from the brokers owning it:
    /// clients reconnect wherever the load manager places it next.
    Unload {
        namespace: String,
        /// A bundle (0xSTART_0xEND); all bundles when absent.
        #[arg(long, short = 'b')]
        bundle: Option<String>,
        /// Move the bundle to this broker (host:port). In the monolithic
        /// architecture its partitions are copied there first, and the
        /// command returns once that broker serves them.
        #[arg(long, short = 'd', requires = "bundle")]
        destination_broker: Option<String>,
        /// Monolithic moves: most bytes per second the copy into the
        /// destination takes (`50M`); unthrottled when absent.
        #[arg(long, requires = "destination_broker", value_parser = super::units::parse_positive_size)]
        throttle: Option<u64>,
    },
    /// Split a bundle in two halves.
    SplitBundle {
        namespace: String,
        #[arg(long, short = 'b')]
        bundle: String,
        /// Unload both halves afterwards, so the load manager places them.
        #[arg(long, short = 'u')]
        unload: bool,
    },
    /// List the namespaces of a tenant.
    List {
        tenant: String,
    },
    /// Delete a namespace that has no topics.
    Delete {
        namespace: String,
    },
    /// Show a namespace's policies.
    Policies {
        namespace: String,
    },
    /// Keep consumed data for a time and/or size (-1: no limit).
    SetRetention {
        namespace: String,
        /// e.g. 10m, 3h, 7d; -1 for no time limit.
        #[arg(short = 't', long, value_parser = parse_time_secs, allow_hyphen_values = true)]
        time: i64,
        /// e.g. 100M, 10G; -1 for no size limit.
        #[arg(short = 's', long, value_parser = parse_size_bytes, allow_hyphen_values = true)]
        size: i64,
    },
    GetRetention {
        namespace: String,
    },
    RemoveRetention {
        namespace: String,
    },
    /// Delete the namespace's topics once unused for a while (pulsar-admin's
    /// set-inactive-topic-policies).
    SetInactiveTopicPolicies {
        namespace: String,
        /// Delete inactive topics (without it: keep them).
        #[arg(short = 'e', long)]
        enable_delete_while_inactive: bool,
        /// How long unused, e.g. 10m, 1h.
        #[arg(short = 't', long, value_parser = parse_time_secs)]
        max_inactive_duration: i64,
        /// delete_when_no_subscriptions or delete_when_subscriptions_caught_up.
        #[arg(short = 'm', long, default_value = "delete_when_no_subscriptions")]
        delete_mode: String,
    },
    GetInactiveTopicPolicies {
        namespace: String,
    },
    RemoveInactiveTopicPolicies {
        namespace: String,
    },
    /// Expire unacknowledged messages after this long.
    SetMessageTtl {
        namespace: String,
        /// Seconds, or a time such as 1h.
        #[arg(long, alias = "messageTTL", value_parser = parse_time_secs)]
        ttl: i64,
    },
    GetMessageTtl {
        namespace: String,
    },
    RemoveMessageTtl {
        namespace: String,
    },
    /// Monolithic: whether a replica out of the ISR may lead when none in
    /// it is alive (Kafka's unclean.leader.election.enable: the partition
    /// comes back, its entries committed only on the lost replicas do not).
    SetUncleanLeaderElection {
        namespace: String,
        #[arg(action = clap::ArgAction::Set)]
        enabled: bool,
    },
    GetUncleanLeaderElection {
        namespace: String,
    },
    /// Monolithic: when receipts go out: `fsync` (after an fsync, the
    /// default) or `os` (once written to the OS, as Kafka by default; a
    /// power loss can lose acknowledged messages). Partitions take it up
    /// when next opened.
    SetFlushPolicy {
        namespace: String,
        #[arg(value_parser = ["fsync", "os"])]
        policy: String,
    },
    GetFlushPolicy {
        namespace: String,
    },
    RemoveFlushPolicy {
        namespace: String,
    },
    /// Limit each topic's backlog.
    SetBacklogQuota {
        namespace: String,
        /// e.g. 10M, 2G; -1 for none.
        #[arg(long, alias = "limitSize", value_parser = parse_size_bytes, allow_hyphen_values = true)]
        limit_size: Option<i64>,
        /// Age of the oldest unacknowledged message, e.g. 1h; -1 for none.
        #[arg(long, alias = "limitTime", value_parser = parse_time_secs, allow_hyphen_values = true)]
        limit_time: Option<i64>,
        #[arg(short = 'p', long)]
        policy: QuotaPolicy,
        #[arg(long = "type", value_enum, default_value = "destination_storage")]
        quota_type: QuotaType,
    },
    GetBacklogQuotas {
        namespace: String,
    },
    RemoveBacklogQuota {
        namespace: String,
        #[arg(long = "type", value_enum, default_value = "destination_storage")]
        quota_type: QuotaType,
    },
    /// Replication of new ledgers: ensemble >= write quorum >= ack quorum >= 1.
    SetPersistence {
        namespace: String,
        #[arg(short = 'e', long)]
        bookkeeper_ensemble: u32,
        #[arg(short = 'w', long)]
        bookkeeper_write_quorum: u32,
        #[arg(short = 'a', long)]
        bookkeeper_ack_quorum: u32,
        #[arg(short = 'r', long, default_value_t = 0.0)]
        ml_mark_delete_max_rate: f64,
    },
    GetPersistence {
        namespace: String,
    },
    RemovePersistence {
        namespace: String,
    },
    /// Let a role produce and/or consume in a namespace (when auth is on);
    /// replaces the role's earlier grant.
    GrantPermission {
        namespace: String,
        #[arg(long)]
        role: String,
        /// Comma-separated: produce, consume (also functions, sources, sinks, packages).
        #[arg(long, value_delimiter = ',', required = true)]
        actions: Vec<String>,
    },
    /// Take away every action a role was granted in a namespace.
    RevokePermission {
        namespace: String,
        #[arg(long)]
        role: String,
    },
    /// Show the roles granted actions in a namespace.
    Permissions {
        namespace: String,
    },
}

pub async fn run(client: &AdminClient, command: NamespacesCommand) -> Result<()> {
    use NamespacesCommand::*;
    let path = |ns: &str, tail: &str| -> Result<String> {
        Ok(format!("namespaces/{}{tail}", namespace_path(ns)?))
    };
    match command {
        Limits(command) => limits::run(client, command).await?,
        Create { namespace, bundles } => {
            let body = bundles.map(|n| json!({"bundles": {"numBundles": n}}));
            client.put(&path(&namespace, "")?, body.as_ref()).await?;
        }
        Bundles { namespace } => print(client.get(&path(&namespace, "/bundles")?).await?)?,
        Unload {
            namespace,
            bundle,
            destination_broker,
            throttle,
        } => {
            let mut tail = match bundle {
                Some(bundle) => format!("/{}/unload", segment(&bundle)),
                None => "/unload".to_string(),
            };
            if let Some(destination) = destination_broker {
                tail.push_str(&format!("?destinationBroker={}", segment(&destination)));
                if let Some(rate) = throttle {
                    tail.push_str(&format!("&throttleBytesPerSecond={rate}"));
                }
            }
            client.put(&path(&namespace, &tail)?, None).await?;
        }
        SplitBundle {
            namespace,
            bundle,
            unload,
        } => {
            let tail = format!("/{}/split?unload={unload}", segment(&bundle));
            client.put(&path(&namespace, &tail)?, None).await?;
        }
        List { tenant } => print(
            client
                .get(&format!("namespaces/{}", segment(&tenant)))
                .await?,
        )?,
        Delete { namespace } => {
            client.delete(&path(&namespace, "")?).await?;
        }
        Policies { namespace } => print(client.get(&path(&namespace, "")?).await?)?,
        SetRetention {
            namespace,
            time,
            size,
        } => {
            let body = json!({
                "retentionTimeInMinutes": to_minutes(time),
                "retentionSizeInMB": to_mebibytes(size),
            });
            client.post(&path(&namespace, "/retention")?, &body).await?;
        }
        GetRetention { namespace } => print(client.get(&path(&namespace, "/retention")?).await?)?,
        SetInactiveTopicPolicies {
            namespace,
            enable_delete_while_inactive,
            max_inactive_duration,
            delete_mode,
        } => {
            let body = json!({
                "inactiveTopicDeleteMode": delete_mode,
                "maxInactiveDurationSeconds": max_inactive_duration,
                "deleteWhileInactive": enable_delete_while_inactive,
            });
            client
                .post(&path(&namespace, "/inactiveTopicPolicies")?, &body)
                .await?;
        }
        GetInactiveTopicPolicies { namespace } => print(
            client
                .get(&path(&namespace, "/inactiveTopicPolicies")?)
                .await?,
        )?,
        RemoveInactiveTopicPolicies { namespace } => {
            client
                .delete(&path(&namespace, "/inactiveTopicPolicies")?)
                .await?;
        }
        RemoveRetention { namespace } => {
            client.delete(&path(&namespace, "/retention")?).await?;
        }
        SetMessageTtl { namespace, ttl } => {
            client
                .post(&path(&namespace, "/messageTTL")?, &json!(ttl))
                .await?;
        }
        SetUncleanLeaderElection { namespace, enabled } => {
            client
                .post(
                    &path(&namespace, "/uncleanLeaderElection")?,
                    &json!(enabled),
                )
                .await?;
        }
        GetUncleanLeaderElection { namespace } => print(
            client
                .get(&path(&namespace, "/uncleanLeaderElection")?)
                .await?,
        )?,
        SetFlushPolicy { namespace, policy } => {
            client
                .post(&path(&namespace, "/flushPolicy")?, &json!(policy))
                .await?;
        }
        GetFlushPolicy { namespace } => {
            print(client.get(&path(&namespace, "/flushPolicy")?).await?)?
        }
        RemoveFlushPolicy { namespace } => {
            client.delete(&path(&namespace, "/flushPolicy")?).await?;
        }
        GetMessageTtl { namespace } => print(client.get(&path(&namespace, "/messageTTL")?).await?)?,
        RemoveMessageTtl { namespace } => {
            client.delete(&path(&namespace, "/messageTTL")?).await?;
        }
        SetBacklogQuota {
            namespace,
            limit_size,
            limit_time,
            policy,
            quota_type,
        } => {
            let body = json!({
                "limitSize": limit_size.unwrap_or(-1),
                "limitTime": limit_time.unwrap_or(-1),
                "policy": snake(policy),
            });
            let tail = format!("/backlogQuota?backlogQuotaType={}", snake(quota_type));
            client.post(&path(&namespace, &tail)?, &body).await?;
        }
        GetBacklogQuotas { namespace } => {
            print(client.get(&path(&namespace, "/backlogQuotaMap")?).await?)?
        }
        RemoveBacklogQuota {
            namespace,
            quota_type,
        } => {
            let tail = format!("/backlogQuota?backlogQuotaType={}", snake(quota_type));
            client.delete(&path(&namespace, &tail)?).await?;
        }
        SetPersistence {
            namespace,
            bookkeeper_ensemble,
            bookkeeper_write_quorum,
            bookkeeper_ack_quorum,
            ml_mark_delete_max_rate,
        } => {
            let body = json!({
                "bookkeeperEnsemble": bookkeeper_ensemble,
                "bookkeeperWriteQuorum": bookkeeper_write_quorum,
                "bookkeeperAckQuorum": bookkeeper_ack_quorum,
                "managedLedgerMaxMarkDeleteRate": ml_mark_delete_max_rate,
            });
            client
                .post(&path(&namespace, "/persistence")?, &body)
                .await?;
        }
        GetPersistence { namespace } => {
            print(client.get(&path(&namespace, "/persistence")?).await?)?
        }
        RemovePersistence { namespace } => {
            client.delete(&path(&namespace, "/persistence")?).await?;
        }
        GrantPermission {
            namespace,
            role,
            actions,
        } => {
            let tail = format!("/permissions/{}", segment(&role));
            client
                .post(&path(&namespace, &tail)?, &json!(actions))
                .await?;
        }
        RevokePermission { namespace, role } => {
            let tail = format!("/permissions/{}", segment(&role));
            client.delete(&path(&namespace, &tail)?).await?;
        }
        Permissions { namespace } => print(client.get(&path(&namespace, "/permissions")?).await?)?,
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enum_values_use_pulsar_names() {
        assert_eq!(
            snake(QuotaPolicy::ProducerRequestHold),
            "producer_request_hold"
        );
        assert_eq!(
            snake(QuotaPolicy::ConsumerBacklogEviction),
            "consumer_backlog_eviction"
        );
        assert_eq!(snake(QuotaType::DestinationStorage), "destination_storage");
        assert_eq!(snake(QuotaType::MessageAge), "message_age");
    }
}
