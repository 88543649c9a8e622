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
        Cursor(command) => super::subscriptions::run(client, command).await?,
    }
    Ok(())
}
