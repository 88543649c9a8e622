//! `magnetar bookie`: a storage node registered in the cluster metadata.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;
use magnetar_bookie::{BookieConfig, BookieNode};
use serde::Deserialize;

use crate::config_file::prefer_cli;

#[derive(Args, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct BookieArgs {
    /// Metadata store: etcd://host:port[,host:port...][/prefix] or embedded://DIR.
    #[arg(long, env = "MAGNETAR_METADATA")]
    pub metadata: Option<String>,
    /// Where entries are stored.
    #[arg(long, env = "MAGNETAR_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// gRPC listen address [default: 0.0.0.0:3181].
    #[arg(long, env = "MAGNETAR_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// HTTP address for /metrics and /health [default: 0.0.0.0:8000].
    #[arg(long, env = "MAGNETAR_HTTP")]
    pub http: Option<SocketAddr>,
    /// host:port that brokers use to reach this bookie (its identity).
    #[arg(long, env = "MAGNETAR_ADVERTISE")]
    pub advertise: Option<String>,
    /// Rack label for rack-aware ensembles.
    #[arg(long, env = "MAGNETAR_RACK")]
    pub rack: Option<String>,
    /// Largest entry accepted, in bytes [default: 5 MiB].
    #[arg(long, env = "MAGNETAR_MAX_ENTRY_BYTES")]
    pub max_entry_bytes: Option<usize>,
    /// Used-disk fraction at which the bookie turns read-only [default: 0.95].
    #[arg(long, env = "MAGNETAR_DISK_HIGH_WATER")]
    pub disk_high_water: Option<f64>,
    /// Used-disk fraction below which it writes again [default: 0.90].
    #[arg(long, env = "MAGNETAR_DISK_LOW_WATER")]
    pub disk_low_water: Option<f64>,
    /// TTL of the registration lease, in milliseconds [default: 10000].
    #[arg(long, env = "MAGNETAR_LEASE_TTL_MS")]
    pub lease_ttl_ms: Option<u64>,
    /// Keep entry payloads in RocksDB blob files (BlobDB) [default: true].
    #[arg(long, env = "MAGNETAR_BLOB_FILES")]
    pub blob_files: Option<bool>,
    /// Flush and compaction bypass the page cache (O_DIRECT) [default: false].
    #[arg(long, env = "MAGNETAR_DIRECT_IO_FLUSH")]
    pub direct_io_flush: Option<bool>,
    /// Smallest value kept in a blob file when blob files are on [default: 256].
    #[arg(long, env = "MAGNETAR_MIN_BLOB_BYTES")]
    pub min_blob_bytes: Option<u64>,
    /// How often ledgers whose metadata is gone are garbage collected, in
    /// milliseconds; 0 disables it [default: 60000].
    #[arg(long, env = "MAGNETAR_GC_INTERVAL_MS")]
    pub gc_interval_ms: Option<u64>,
}

impl BookieArgs {
    pub fn merged(mut self, file: BookieArgs) -> Self {
        prefer_cli!(self, file; metadata, data_dir, listen, http, advertise, rack,
            max_entry_bytes, disk_high_water, disk_low_water, lease_ttl_ms, blob_files, min_blob_bytes, direct_io_flush, gc_interval_ms);
        self
    }

    /// Fills a [`BookieConfig`], keeping its defaults where nothing was set.
    pub fn apply(&self, config: &mut BookieConfig) -> Result<()> {
        if let Some(listen) = self.listen {
            config.listen = listen;
        }
        if let Some(http) = self.http {
            config.http = Some(http);
        }
        config.advertise = self.advertise.clone().or(config.advertise.take());
        config.rack = self.rack.clone().or(config.rack.take());
        if let Some(max) = self.max_entry_bytes {
            anyhow::ensure!(max > 0, "--max-entry-bytes must be positive");
            config.journal.max_entry_bytes = max;
        }
        if let Some(high) = self.disk_high_water {
            config.disk_high_water = high;
        }
        if let Some(low) = self.disk_low_water {
            config.disk_low_water = low;
        }
        anyhow::ensure!(
            0.0 < config.disk_low_water
                && config.disk_low_water <= config.disk_high_water
                && config.disk_high_water <= 1.0,
            "disk water marks must satisfy 0 < low <= high <= 1"
        );
        if let Some(ms) = self.lease_ttl_ms {
            anyhow::ensure!(ms >= 1000, "--lease-ttl-ms must be at least 1000");
            config.lease_ttl = Duration::from_millis(ms);
        }
        if let Some(blob) = self.blob_files {
            config.rocks.blob_files = blob;
        }
        if let Some(direct) = self.direct_io_flush {
            config.rocks.direct_io_flush = direct;
        }
        if let Some(min) = self.min_blob_bytes {
            config.rocks.min_blob_size = min;
        }
        if let Some(ms) = self.gc_interval_ms {
            config.gc_interval = Duration::from_millis(ms);
        }
        Ok(())
    }
}

pub async fn run(args: BookieArgs) -> Result<()> {
    let metadata_url = args
        .metadata
        .clone()
        .context("--metadata is required (etcd://host:port or embedded://DIR)")?;
    let data_dir = args.data_dir.clone().context("--data-dir is required")?;
    let mut config = BookieConfig::new(data_dir);
    args.apply(&mut config)?;
    let metadata = magnetar_metadata::connect(&metadata_url)
        .await
        .with_context(|| format!("connecting to metadata at {metadata_url}"))?;
    let bookie = BookieNode::start(config, Some(metadata))
        .await
        .context("starting bookie")?;
    println!(
        "bookie {} serving gRPC on {}",
        bookie.bookie_id, bookie.grpc_addr
    );
    crate::shutdown::requested().await?;
    tracing::info!("shutting down");
    bookie.shutdown().await;
    Ok(())
}
