//! `magnetar admin topics ...` (pulsar-admin topics): create and delete
//! topics and partitioned topics, list them, stats, subscriptions.

use anyhow::Result;
use clap::Subcommand;
use serde_json::json;

use super::{force_query, namespace_path, print, segment, topic_path, AdminClient};

#[derive(Subcommand, Debug)]
pub enum TopicsCommand {
    /// Create a non-partitioned topic.
    Create {
        topic: String,
    },
    /// Create a partitioned topic.
    CreatePartitionedTopic {
        topic: String,
        #[arg(short = 'p', long)]
        partitions: u32,
    },
    /// Add partitions to a partitioned topic (never fewer).
    UpdatePartitionedTopic {
        topic: String,
        #[arg(short = 'p', long)]
        partitions: u32,
    },
    /// Show the partition count (0: not partitioned).
    GetPartitionedTopicMetadata {
        topic: String,
    },
    /// Delete a topic with its data; refused while clients are attached
    /// unless forced (which disconnects them).
    Delete {
        topic: String,
        #[arg(short = 'f', long)]
        force: bool,
    },
    /// Delete every partition of a partitioned topic, and the topic.
    DeletePartitionedTopic {
        topic: String,
        #[arg(short = 'f', long)]
        force: bool,
    },
    /// List the topics of a namespace (partitions included).
    List {
        namespace: String,
    },
    /// List the partitioned topics of a namespace.
    ListPartitionedTopics {
        namespace: String,
    },
    Stats {
        topic: String,
    },
    StatsInternal {
        topic: String,
    },
    PartitionedStats {
        topic: String,
        /// Include each partition's stats.
        #[arg(long)]
        per_partition: bool,
    },
    Subscriptions {
        topic: String,
    },
    /// Delete a subscription; refused while it has consumers unless forced.
    Unsubscribe {
        topic: String,
        #[arg(short = 's', long)]
        subscription: String,
        #[arg(short = 'f', long)]
        force: bool,
    },
    /// Where a partition's copies are (monolithic architecture): leader,
    /// in-sync replicas, how far each copy has got, a move under way.
    Replicas {
        topic: String,
    },
    /// Move a partition's copies to other brokers (Kafka's partition
    /// reassignment): the new ones copy the log and join the ISR, then the
    /// ones left out delete theirs. The leader must stay; to move the
    /// leader, move its bundle (`namespaces unload --destination-broker`).
    Reassign {
        topic: String,
        /// The brokers (host:port) or replica ids to hold it, comma
        /// separated, the preferred leader first.
        #[arg(long, value_delimiter = ',', required = true)]
        replicas: Vec<String>,
        /// Most bytes per second the new copies fetch, per receiving
        /// broker (`50M`); unthrottled when absent.
        #[arg(long, value_parser = super::units::parse_positive_size)]
        throttle: Option<u64>,
    },
    /// Cancel the reassignment under way; its new copies go again.
    CancelReassignment {
        topic: String,
    },
    #[command(flatten)]
    Cursor(super::subscriptions::SubscriptionCommand),
}

pub async fn run(client: &AdminClient, command: TopicsCommand) -> Result<()> {
    use TopicsCommand::*;
    match command {
        Create { topic } => {
            client.put(&topic_path(&topic)?, None).await?;
        }
        CreatePartitionedTopic { topic, partitions } => {
            let path = format!("{}/partitions", topic_path(&topic)?);
            client.put(&path, Some(&json!(partitions))).await?;
        }
        UpdatePartitionedTopic { topic, partitions } => {
            let path = format!("{}/partitions", topic_path(&topic)?);
            client.post(&path, &json!(partitions)).await?;
        }
        GetPartitionedTopicMetadata { topic } => print(
            client
                .get(&format!("{}/partitions", topic_path(&topic)?))
                .await?,
        )?,
        Delete { topic, force } => {
            let path = format!("{}{}", topic_path(&topic)?, force_query(force));
            client.delete(&path).await?;
        }
        DeletePartitionedTopic { topic, force } => {
            let path = format!("{}/partitions{}", topic_path(&topic)?, force_query(force));
            client.delete(&path).await?;
        }
        List { namespace } => print(
            client
                .get(&format!("persistent/{}", namespace_path(&namespace)?))
                .await?,
        )?,
        ListPartitionedTopics { namespace } => {
            let path = format!("persistent/{}/partitioned", namespace_path(&namespace)?);
            print(client.get(&path).await?)?
        }
        Stats { topic } => print(
            client
                .get(&format!("{}/stats", topic_path(&topic)?))
                .await?,
        )?,
        StatsInternal { topic } => print(
            client
                .get(&format!("{}/internalStats", topic_path(&topic)?))
                .await?,
        )?,
        PartitionedStats {
            topic,
            per_partition,
        } => {
            let path = format!(
                "{}/partitioned-stats?perPartition={per_partition}",
                topic_path(&topic)?
            );
            print(client.get(&path).await?)?
        }
        Subscriptions { topic } => print(
            client
                .get(&format!("{}/subscriptions", topic_path(&topic)?))
                .await?,
        )?,
        Unsubscribe {
            topic,
            subscription,
            force,
        } => {
            let path = format!(
                "{}/subscription/{}{}",
                topic_path(&topic)?,
                segment(&subscription),
                force_query(force)
            );
            client.delete(&path).await?;
        }
        Replicas { topic } => print(
            client
                .get(&format!("{}/replicas", topic_path(&topic)?))
                .await?,
        )?,
        Reassign {
            topic,
            replicas,
            throttle,
        } => {
            let path = format!("{}/reassignment", topic_path(&topic)?);
            let mut body = json!({ "replicas": replicas });
            if let Some(rate) = throttle {
                body["throttleBytesPerSecond"] = json!(rate);
            }
            print(client.post(&path, &body).await?)?
        }
        CancelReassignment { topic } => {
            let path = format!("{}/reassignment", topic_path(&topic)?);
            print(client.delete(&path).await?)?
        }
        Cursor(command) => super::subscriptions::run(client, command).await?,
    }
    Ok(())
}
