//! `magnetar admin namespaces` verbs for rate and client limits
//! (pulsar-admin's set/get/remove-publish-rate,
//! -subscription-dispatch-rate, -max-producers-per-topic,
//! -max-consumers-per-topic, -max-consumers-per-subscription,
//! -max-subscriptions-per-topic, -max-topics-per-namespace).

use anyhow::Result;
use clap::Subcommand;
use serde_json::{json, Value};

use crate::admin::{namespace_path, print, AdminClient};

#[derive(Subcommand, Debug)]
pub enum LimitsCommand {
    /// Throttle publishing to each topic (per second; -1 or 0: no limit).
    SetPublishRate {
        namespace: String,
        #[arg(short = 'm', long, default_value_t = -1, allow_hyphen_values = true)]
        msg_publish_rate: i32,
        #[arg(short = 'b', long, default_value_t = -1, allow_hyphen_values = true)]
        byte_publish_rate: i64,
    },
    GetPublishRate {
        namespace: String,
    },
    RemovePublishRate {
        namespace: String,
    },
    /// Throttle dispatch to each subscription (per period; -1 or 0: no limit).
    SetSubscriptionDispatchRate {
        namespace: String,
        #[arg(long, default_value_t = -1, allow_hyphen_values = true)]
        msg_dispatch_rate: i32,
        #[arg(long, default_value_t = -1, allow_hyphen_values = true)]
        byte_dispatch_rate: i64,
        /// The period the rates are per, in seconds.
        #[arg(long, default_value_t = 1)]
        dispatch_rate_period: i32,
    },
    GetSubscriptionDispatchRate {
        namespace: String,
    },
    RemoveSubscriptionDispatchRate {
        namespace: String,
    },
    /// Producers each topic accepts (0: unlimited).
    SetMaxProducersPerTopic {
        namespace: String,
        max: u32,
    },
    GetMaxProducersPerTopic {
        namespace: String,
    },
    RemoveMaxProducersPerTopic {
        namespace: String,
    },
    /// Consumers each topic accepts over all its subscriptions (0: unlimited).
    SetMaxConsumersPerTopic {
        namespace: String,
        max: u32,
    },
    GetMaxConsumersPerTopic {
        namespace: String,
    },
    RemoveMaxConsumersPerTopic {
        namespace: String,
    },
    /// Consumers each subscription accepts (0: unlimited).
    SetMaxConsumersPerSubscription {
        namespace: String,
        max: u32,
    },
    GetMaxConsumersPerSubscription {
        namespace: String,
    },
    RemoveMaxConsumersPerSubscription {
        namespace: String,
    },
    /// Subscriptions each topic keeps (0: unlimited).
    SetMaxSubscriptionsPerTopic {
        namespace: String,
        max: u32,
    },
    GetMaxSubscriptionsPerTopic {
        namespace: String,
    },
    RemoveMaxSubscriptionsPerTopic {
        namespace: String,
    },
    /// Topics the namespace holds, each partition counting (0: unlimited).
    SetMaxTopicsPerNamespace {
        namespace: String,
        max: u32,
    },
    GetMaxTopicsPerNamespace {
        namespace: String,
    },
    RemoveMaxTopicsPerNamespace {
        namespace: String,
    },
}

/// What a command does: the policy's path under the namespace, and the
/// body to set (`None`: get; `Some(Null)`: remove).
fn request(command: LimitsCommand) -> (String, &'static str, Option<Value>) {
    use LimitsCommand::*;
    match command {
        SetPublishRate {
            namespace,
            msg_publish_rate,
            byte_publish_rate,
        } => (
            namespace,
            "publishRate",
            Some(json!({
                "publishThrottlingRateInMsg": msg_publish_rate,
                "publishThrottlingRateInByte": byte_publish_rate,
            })),
        ),
        GetPublishRate { namespace } => (namespace, "publishRate", None),
        RemovePublishRate { namespace } => (namespace, "publishRate", Some(Value::Null)),
        SetSubscriptionDispatchRate {
            namespace,
            msg_dispatch_rate,
            byte_dispatch_rate,
            dispatch_rate_period,
        } => (
            namespace,
            "subscriptionDispatchRate",
            Some(json!({
                "dispatchThrottlingRateInMsg": msg_dispatch_rate,
                "dispatchThrottlingRateInByte": byte_dispatch_rate,
                "ratePeriodInSecond": dispatch_rate_period,
                "relativeToPublishRate": false,
            })),
        ),
        GetSubscriptionDispatchRate { namespace } => (namespace, "subscriptionDispatchRate", None),
        RemoveSubscriptionDispatchRate { namespace } => {
            (namespace, "subscriptionDispatchRate", Some(Value::Null))
        }
        SetMaxProducersPerTopic { namespace, max } => {
            (namespace, "maxProducersPerTopic", Some(json!(max)))
        }
        GetMaxProducersPerTopic { namespace } => (namespace, "maxProducersPerTopic", None),
        RemoveMaxProducersPerTopic { namespace } => {
            (namespace, "maxProducersPerTopic", Some(Value::Null))
        }
        SetMaxConsumersPerTopic { namespace, max } => {
            (namespace, "maxConsumersPerTopic", Some(json!(max)))
        }
        GetMaxConsumersPerTopic { namespace } => (namespace, "maxConsumersPerTopic", None),
        RemoveMaxConsumersPerTopic { namespace } => {
            (namespace, "maxConsumersPerTopic", Some(Value::Null))
        }
        SetMaxConsumersPerSubscription { namespace, max } => {
            (namespace, "maxConsumersPerSubscription", Some(json!(max)))
        }
        GetMaxConsumersPerSubscription { namespace } => {
            (namespace, "maxConsumersPerSubscription", None)
        }
        RemoveMaxConsumersPerSubscription { namespace } => {
            (namespace, "maxConsumersPerSubscription", Some(Value::Null))
        }
        SetMaxSubscriptionsPerTopic { namespace, max } => {
            (namespace, "maxSubscriptionsPerTopic", Some(json!(max)))
        }
        GetMaxSubscriptionsPerTopic { namespace } => (namespace, "maxSubscriptionsPerTopic", None),
        RemoveMaxSubscriptionsPerTopic { namespace } => {
            (namespace, "maxSubscriptionsPerTopic", Some(Value::Null))
        }
        SetMaxTopicsPerNamespace { namespace, max } => {
            (namespace, "maxTopicsPerNamespace", Some(json!(max)))
        }
        GetMaxTopicsPerNamespace { namespace } => (namespace, "maxTopicsPerNamespace", None),
        RemoveMaxTopicsPerNamespace { namespace } => {
            (namespace, "maxTopicsPerNamespace", Some(Value::Null))
        }
    }
}

pub async fn run(client: &AdminClient, command: LimitsCommand) -> Result<()> {
    let (namespace, policy, body) = request(command);
    let path = format!("namespaces/{}/{policy}", namespace_path(&namespace)?);
    match body {
        None => print(client.get(&path).await?)?,
        Some(Value::Null) => {
            client.delete(&path).await?;
        }
        Some(body) => {
            client.post(&path, &body).await?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_map_to_pulsars_paths_and_bodies() {
        let (ns, path, body) = request(LimitsCommand::SetSubscriptionDispatchRate {
            namespace: "acme/orders".into(),
            msg_dispatch_rate: 10,
            byte_dispatch_rate: -1,
            dispatch_rate_period: 2,
        });
        assert_eq!(
            (ns.as_str(), path),
            ("acme/orders", "subscriptionDispatchRate")
        );
        assert_eq!(
            body,
            Some(json!({
                "dispatchThrottlingRateInMsg": 10,
                "dispatchThrottlingRateInByte": -1,
                "ratePeriodInSecond": 2,
                "relativeToPublishRate": false,
            }))
        );
        let (_, path, body) = request(LimitsCommand::SetMaxProducersPerTopic {
            namespace: "acme/orders".into(),
            max: 3,
        });
        assert_eq!((path, body), ("maxProducersPerTopic", Some(json!(3))));
        let (_, _, body) = request(LimitsCommand::RemovePublishRate {
            namespace: "acme/orders".into(),
        });
        assert_eq!(body, Some(Value::Null));
    }
}
