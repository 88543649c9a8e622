//! `magnetar admin clusters|brokers|bookies ...` (pulsar-admin's verbs of
//! the same names): the cluster records, the live brokers and bookies.

use anyhow::Result;
use clap::Subcommand;

use super::{print, segment, AdminClient};

#[derive(Subcommand, Debug)]
pub enum ClustersCommand {
    /// List the clusters.
    List,
    /// Show a cluster's ClusterData.
    Get { cluster: String },
}

#[derive(Subcommand, Debug)]
pub enum BrokersCommand {
    /// The live brokers of a cluster (HTTP host:port).
    List { cluster: String },
    /// The load manager's leader broker.
    LeaderBroker,
    /// Whether the broker can serve: metadata answers and enough bookies
    /// are writable.
    Healthcheck,
    /// The namespace bundles a broker owns: the broker at `--url` (as
    /// pulsar-admin's `brokers namespaces CLUSTER --url BROKER`), or the
    /// one named by `--broker`.
    Namespaces {
        cluster: String,
        /// The broker: its HTTP host:port or its id [default: the broker
        /// at --url].
        #[arg(long)]
        broker: Option<String>,
    },
    /// Move everything a broker serves or stores to the other brokers, so
    /// that it can be stopped for good: its bundles move to the least
    /// loaded brokers and, in the monolithic architecture, its partitions'
    /// copies are copied to brokers holding none. Returns when done.
    Drain {
        cluster: String,
        /// The broker: its Pulsar host:port (its id) or HTTP host:port.
        broker: String,
        /// Monolithic: most bytes per second the copies into each
        /// receiving broker take (`50M`); unthrottled when absent.
        #[arg(long, value_parser = super::units::parse_positive_size)]
        throttle: Option<u64>,
    },
}

#[derive(Subcommand, Debug)]
pub enum BookiesCommand {
    /// The live bookies.
    ListBookies,
    /// The live bookies by rack.
    RacksInfo,
    /// Drain a bookie: its ledgers are copied to other bookies and it gets
    /// no new ones; stop it once `recovery` shows it `done`.
    Decommission {
        /// The bookie's id (its advertised host:port).
        bookie: String,
    },
    /// Withdraw a decommission request.
    CancelDecommission { bookie: String },
    /// Re-replication of lost and decommissioned bookies: state, ledgers
    /// left, bytes copied.
    Recovery,
}

pub async fn run_clusters(client: &AdminClient, command: ClustersCommand) -> Result<()> {
    match command {
        ClustersCommand::List => print(client.get("clusters").await?),
        ClustersCommand::Get { cluster } => print(
            client
                .get(&format!("clusters/{}", segment(&cluster)))
                .await?,
        ),
    }
}

pub async fn run_brokers(client: &AdminClient, command: BrokersCommand) -> Result<()> {
    match command {
        BrokersCommand::List { cluster } => print(
            client
                .get(&format!("brokers/{}", segment(&cluster)))
                .await?,
        ),
        BrokersCommand::LeaderBroker => print(client.get("brokers/leaderBroker").await?),
        BrokersCommand::Healthcheck => {
            let answer = client.get_text("brokers/health").await?;
            println!("{}", answer.trim());
            Ok(())
        }
        BrokersCommand::Namespaces { cluster, broker } => {
            let broker = broker.unwrap_or_else(|| client.host_port().to_string());
            let path = format!(
                "brokers/{}/{}/ownedNamespaces",
                segment(&cluster),
                segment(&broker)
            );
            print(client.get(&path).await?)
        }
        BrokersCommand::Drain {
            cluster,
            broker,
            throttle,
        } => {
            let mut path = format!("brokers/{}/{}/drain", segment(&cluster), segment(&broker));
            if let Some(rate) = throttle {
                path.push_str(&format!("?throttleBytesPerSecond={rate}"));
            }
            print(client.post_empty(&path).await?)
        }
    }
}

pub async fn run_bookies(client: &AdminClient, command: BookiesCommand) -> Result<()> {
    match command {
        BookiesCommand::ListBookies => print(client.get("bookies/all").await?),
        BookiesCommand::RacksInfo => print(client.get("bookies/racks-info").await?),
        BookiesCommand::Decommission { bookie } => {
            client
                .put(&format!("bookies/{}/decommission", segment(&bookie)), None)
                .await?;
            println!("bookie {bookie} is being decommissioned (see `admin bookies recovery`)");
            Ok(())
        }
        BookiesCommand::CancelDecommission { bookie } => {
            client
                .delete(&format!("bookies/{}/decommission", segment(&bookie)))
                .await?;
            println!("decommission of bookie {bookie} withdrawn");
            Ok(())
        }
        BookiesCommand::Recovery => print(client.get("bookies/recovery").await?),
    }
}
