//! `magnetar bookie`: a storage node registered in the cluster metadata.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;
use magnetar_auth::{PeerPolicy, PeerTls, DEFAULT_STORAGE_ROLE};
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
    /// gRPC listen address [default: 127.0.0.1:3181]. Any other than
    /// loopback needs a token key, or --insecure.
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
    /// Require a broker's token on every call: the HS256 key tokens are
    /// signed with, a file or `base64:<key>` (as the brokers' own).
    #[arg(
        long,
        env = "MAGNETAR_TOKEN_SECRET_KEY",
        conflicts_with = "token_public_key"
    )]
    pub token_secret_key: Option<String>,
    /// Require a broker's token on every call: the RS256 public key (PEM file).
    #[arg(long, env = "MAGNETAR_TOKEN_PUBLIC_KEY")]
    pub token_public_key: Option<PathBuf>,
    /// Roles whose tokens (or client certificates' common names) may call
    /// this bookie, comma-separated [default: broker].
    #[arg(long, env = "MAGNETAR_STORAGE_ROLES", value_delimiter = ',')]
    pub storage_roles: Option<Vec<String>>,
    /// Serve gRPC over TLS with this certificate chain (PEM file).
    #[arg(long, env = "MAGNETAR_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM file).
    #[arg(long, env = "MAGNETAR_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Mutual TLS: require every caller to present a certificate these CA
    /// certificates (PEM file) verify; its subject common name is its role.
    #[arg(long, env = "MAGNETAR_TLS_TRUST_CERTS", requires = "tls_cert")]
    pub tls_trust_certs: Option<PathBuf>,
    /// Serve a non-loopback address without authentication: anyone who
    /// reaches it can then write, fence and delete ledgers.
    #[arg(long, env = "MAGNETAR_INSECURE")]
    #[serde(default)]
    pub insecure: bool,
}

impl BookieArgs {
    pub fn merged(mut self, file: BookieArgs) -> Self {
        prefer_cli!(self, file; metadata, data_dir, listen, http, advertise, rack,
            max_entry_bytes, disk_high_water, disk_low_water, lease_ttl_ms, blob_files, min_blob_bytes, direct_io_flush, gc_interval_ms,
            token_secret_key, token_public_key, storage_roles, tls_cert, tls_key, tls_trust_certs);
        self.insecure |= file.insecure;
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
        config.tls = match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Some(
                PeerTls::load(cert, key, self.tls_trust_certs.as_deref())
                    .context("loading the bookie's TLS files")?,
            ),
            _ => None,
        };
        config.peers = self.peer_policy(config.tls.as_ref())?;
        anyhow::ensure!(
            !config.peers.is_open() || config.listen.ip().is_loopback() || self.insecure,
            "refusing to serve {} without authentication: anyone who reaches it could write, fence and delete ledgers; give --tls-trust-certs (mutual TLS, brokers --storage-tls-*) or --token-secret-key / --token-public-key (brokers --storage-token), or --insecure",
            config.listen
        );
        Ok(())
    }

    /// Peers of `--storage-roles` proving their role with a token (once a
    /// key is given) or a client certificate (mutual TLS), else open.
    fn peer_policy(&self, tls: Option<&PeerTls>) -> Result<PeerPolicy> {
        let verifier = crate::tokens::load_verifier(
            self.token_secret_key.as_deref(),
            self.token_public_key.as_deref(),
        )?;
        let certificates = tls.is_some_and(PeerTls::verifies_peers);
        if verifier.is_none() && !certificates {
            anyhow::ensure!(
                self.storage_roles.is_none(),
                "--storage-roles needs --tls-trust-certs, --token-secret-key or --token-public-key"
            );
            return Ok(PeerPolicy::Open);
        }
        let roles = self
            .storage_roles
            .clone()
            .unwrap_or_else(|| vec![DEFAULT_STORAGE_ROLE.to_string()]);
        anyhow::ensure!(
            roles.iter().all(|r| !r.is_empty()),
            "--storage-roles must not name an empty role"
        );
        Ok(PeerPolicy::authenticated(
            verifier.map(Arc::new),
            certificates,
            roles,
        ))
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
        .with_context(|| {
            format!(
                "connecting to metadata at {}",
                magnetar_metadata::redacted_url(&metadata_url)
            )
        })?;
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
