//! `magnetar admin topics ...` cursor verbs (pulsar-admin topics):
//! reset-cursor, skip, clear-backlog, expire-messages,
//! expire-messages-all-subscriptions, create-subscription.

use anyhow::{bail, Context, Result};
use clap::{ArgGroup, Subcommand};
use serde_json::{json, Value};

use super::units::parse_time_secs;
use super::{segment, topic_path, AdminClient};

#[derive(Subcommand, Debug)]
pub enum SubscriptionCommand {
    /// Move a subscription back or forward: to a relative time (`--time
    /// 10m`: messages of the last ten minutes), a publish time in ms since
    /// the epoch, or a message id (`ledger:entry`). Its consumers are
    /// disconnected and resume from there.
    #[command(group(ArgGroup::new("target").required(true).args(["time", "timestamp", "message_id"])))]
    ResetCursor {
        topic: String,
        #[arg(short = 's', long)]
        subscription: String,
        /// How far back, e.g. 10m, 1h (pulsar-admin's units).
        #[arg(short = 't', long, value_parser = parse_time_secs)]
        time: Option<i64>,
        /// Publish time in ms since the epoch.
        #[arg(long)]
        timestamp: Option<u64>,
        /// `ledgerId:entryId` (`earliest` and `latest` too).
        #[arg(short = 'm', long = "message-id")]
        message_id: Option<String>,
        /// Start after the message id rather than at it.
        #[arg(short = 'e', long = "exclude-reset-position")]
        exclude: bool,
    },
    /// Skip (acknowledge) the next N messages of a subscription.
    Skip {
        topic: String,
        #[arg(short = 's', long)]
        subscription: String,
        #[arg(short = 'n', long = "count")]
        count: u64,
    },
    /// Acknowledge everything a subscription has not consumed.
    ClearBacklog {
        topic: String,
        #[arg(short = 's', long)]
        subscription: String,
    },
    /// Expire a subscription's messages older than SECS seconds.
    ExpireMessages {
        topic: String,
        #[arg(short = 's', long)]
        subscription: String,
        #[arg(short = 't', long = "expireTime", visible_alias = "expire-time")]
        expire_time: u64,
    },
    /// Expire messages older than SECS seconds on every subscription.
    ExpireMessagesAllSubscriptions {
        topic: String,
        #[arg(short = 't', long = "expireTime", visible_alias = "expire-time")]
        expire_time: u64,
    },
    /// Create a durable subscription without a consumer, at the end (or
    /// at `--message-id ledger:entry`, `earliest` or `latest`).
    CreateSubscription {
        topic: String,
        #[arg(short = 's', long)]
        subscription: String,
        #[arg(short = 'm', long = "message-id")]
        message_id: Option<String>,
    },
}

/// A message id as the admin API takes it: `ledger:entry`, `earliest` or
/// `latest` (pulsar-admin's forms).
fn message_id_json(text: &str, exclude: bool) -> Result<Value> {
    let (ledger, entry) = match text.trim() {
        "earliest" => (-1, -1),
        "latest" => (i64::MAX, i64::MAX),
        other => {
            let (ledger, entry) = other.split_once(':').with_context(|| {
                format!("expected a message id as ledgerId:entryId, got {other:?}")
            })?;
            let ledger: i64 = ledger
                .parse()
                .with_context(|| format!("bad ledger id in {other:?}"))?;
            let entry: i64 = entry
                .parse()
                .with_context(|| format!("bad entry id in {other:?}"))?;
            if ledger < 0 || entry < 0 {
                bail!("message id {other:?}: ids are non-negative");
            }
            (ledger, entry)
        }
    };
    Ok(json!({
        "ledgerId": ledger,
        "entryId": entry,
        "partitionIndex": -1,
        "isExcluded": exclude,
    }))
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn subscription_path(topic: &str, subscription: &str) -> Result<String> {
    Ok(format!(
        "{}/subscription/{}",
        topic_path(topic)?,
        segment(subscription)
    ))
}

pub async fn run(client: &AdminClient, command: SubscriptionCommand) -> Result<()> {
    use SubscriptionCommand::*;
    match command {
        ResetCursor {
            topic,
            subscription,
            time,
            timestamp,
            message_id,
            exclude,
        } => {
            let path = subscription_path(&topic, &subscription)?;
            if let Some(id) = message_id {
                let body = message_id_json(&id, exclude)?;
                client.post(&format!("{path}/resetcursor"), &body).await?;
            } else {
                let at = match (time, timestamp) {
                    (_, Some(ms)) => ms,
                    (Some(secs), None) if secs >= 0 => {
                        now_ms().saturating_sub((secs as u64).saturating_mul(1000))
                    }
                    _ => bail!("give --time (a relative time), --timestamp or --message-id"),
                };
                client
                    .post_empty(&format!("{path}/resetcursor/{at}"))
                    .await?;
            }
        }
        Skip {
            topic,
            subscription,
            count,
        } => {
            let path = subscription_path(&topic, &subscription)?;
            client.post_empty(&format!("{path}/skip/{count}")).await?;
        }
        ClearBacklog {
            topic,
            subscription,
        } => {
            let path = subscription_path(&topic, &subscription)?;
            client.post_empty(&format!("{path}/skip_all")).await?;
        }
        ExpireMessages {
            topic,
            subscription,
            expire_time,
        } => {
            let path = subscription_path(&topic, &subscription)?;
            client
                .post_empty(&format!("{path}/expireMessages/{expire_time}"))
                .await?;
        }
        ExpireMessagesAllSubscriptions { topic, expire_time } => {
            let path = format!(
                "{}/all_subscription/expireMessages/{expire_time}",
                topic_path(&topic)?
            );
            client.post_empty(&path).await?;
        }
        CreateSubscription {
            topic,
            subscription,
            message_id,
        } => {
            let path = subscription_path(&topic, &subscription)?;
            let body = message_id
                .map(|id| message_id_json(&id, false))
                .transpose()?;
            client.put(&path, body.as_ref()).await?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_ids_parse_like_pulsar_admin() {
        assert_eq!(
            message_id_json("12:3", false).unwrap(),
            json!({"ledgerId": 12, "entryId": 3, "partitionIndex": -1, "isExcluded": false})
        );
        assert_eq!(message_id_json("earliest", true).unwrap()["ledgerId"], -1);
        assert_eq!(
            message_id_json("latest", false).unwrap()["entryId"],
            i64::MAX
        );
        for bad in ["12", "a:b", "-1:0", ""] {
            assert!(message_id_json(bad, false).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn paths() {
        assert_eq!(
            subscription_path("acme/orders/t", "my sub").unwrap(),
            "persistent/acme/orders/t/subscription/my%20sub"
        );
    }
}
