//! `magnetar standalone`: embedded metadata, one bookie and the broker in one
//! process, data under one directory. On first start it creates tenant
//! `public` and namespace `public/default` (persistence 1/1/1 on its single
//! bookie), so any Pulsar client can point at pulsar://localhost:6650.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use magnetar_bookie::{BookieConfig, BookieNode};
use magnetar_broker::storage::{Architecture, Replication};
use magnetar_broker::topic::{
    create_namespace_if_absent, BrokerConfig, NamespacePolicies, PersistencePolicy, TenantInfo,
};
use serde::Deserialize;

use crate::broker_cmd::{BrokerTuning, RunningBroker};
use crate::config_file::prefer_cli;

#[derive(Args, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct StandaloneArgs {
    /// Data directory for metadata and entries [default: ./data].
    #[arg(long, env = "MAGNETAR_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Pulsar protocol address [default: 0.0.0.0:6650].
    #[arg(long, env = "MAGNETAR_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Broker HTTP address for /metrics and /health [default: 0.0.0.0:8080].
    #[arg(long, env = "MAGNETAR_HTTP")]
    pub http: Option<SocketAddr>,
    /// Bookie gRPC address [default: 127.0.0.1:3181].
    #[arg(long, env = "MAGNETAR_BOOKIE_LISTEN")]
    pub bookie_listen: Option<SocketAddr>,
    /// Bookie HTTP address for /metrics and /health [default: 127.0.0.1:8000].
    #[arg(long, env = "MAGNETAR_BOOKIE_HTTP")]
    pub bookie_http: Option<SocketAddr>,
    /// Flattened in the file too: its keys sit in the subcommand's table.
    #[command(flatten)]
    #[serde(flatten)]
    pub broker: BrokerTuning,
}

impl StandaloneArgs {
    pub fn merged(mut self, file: StandaloneArgs) -> Self {
        prefer_cli!(self, file; data_dir, listen, http, bookie_listen, bookie_http);
        self.broker = self.broker.merged(file.broker);
        self
    }
}

pub async fn run(args: StandaloneArgs) -> Result<()> {
    // Settings are checked before anything starts. One bookie: every
    // ledger is 1/1/1.
    let defaults = BrokerConfig {
        default_replication: Replication {
            ensemble_size: 1,
            write_quorum: 1,
            ack_quorum: 1,
        },
        ..BrokerConfig::default()
    };
    let broker_config = args.broker.config(defaults)?;
    let tls = args.broker.tls()?;
    let data_dir = args.data_dir.unwrap_or_else(|| PathBuf::from("data"));
    let metadata_dir = data_dir.join("metadata");
    let metadata = magnetar_metadata::connect(&format!("embedded://{}", metadata_dir.display()))
        .await
        .context("opening embedded metadata")?;
    let mut config = BookieConfig::new(data_dir.join("bookie"));
    config.listen = args
        .bookie_listen
        .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 3181)));
    // Its one client is the broker in this process; a bookie others can
    // reach would serve them without authentication.
    anyhow::ensure!(
        config.listen.ip().is_loopback(),
        "--bookie-listen must be a loopback address: the standalone bookie serves only its own broker and has no authentication (run `magnetar bookie` with a token key to share one)"
    );
    config.http = Some(
        args.bookie_http
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8000))),
    );
    // Monolithic: partitions live in the broker's own data directory.
    let bookie = match args.broker.architecture() {
        Architecture::Decoupled => Some(
            BookieNode::start(config, Some(metadata.clone()))
                .await
                .context("starting bookie")?,
        ),
        Architecture::Monolithic => None,
    };

    let listen = args
        .listen
        .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 6650)));
    let http = args
        .http
        .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 8080)));
    create_namespace_if_absent(
        metadata.as_ref(),
        "public",
        "default",
        &TenantInfo {
            admin_roles: Vec::new(),
            allowed_clusters: vec![broker_config.cluster_name.clone()],
        },
        &NamespacePolicies {
            persistence: Some(PersistencePolicy {
                ensemble_size: 1,
                write_quorum: 1,
                ack_quorum: 1,
            }),
            ..NamespacePolicies::default()
        },
    )
    .await
    .context("creating public/default")?;
    // One broker owns everything: no leases, no bundles.
    let storage = args.broker.storage(
        &metadata,
        broker_config.default_replication,
        Some(&data_dir.join("broker")),
        false,
    )?;
    let broker = RunningBroker::start(
        metadata,
        (broker_config, storage),
        (listen, http),
        tls,
        None,
    )
    .await?;
    let storage = match &bookie {
        Some(bookie) => format!("bookie on {}", bookie.grpc_addr),
        None => "monolithic: partitions on the broker's disk".to_string(),
    };
    println!(
        "magnetar standalone: pulsar://{} (broker metrics http://{}/metrics), data in {}, {storage}",
        broker.server.local_addr,
        broker.http_addr,
        data_dir.display(),
    );
    crate::shutdown::requested().await?;
    tracing::info!("shutting down");
    broker.shutdown().await;
    if let Some(bookie) = bookie {
        bookie.shutdown().await;
    }
    Ok(())
}
