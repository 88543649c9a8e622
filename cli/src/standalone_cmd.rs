//! `magnetar standalone`: embedded metadata and one bookie in one process,
//! data under one directory. (The broker joins it with the topics issue.)

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use magnetar_bookie::{BookieConfig, BookieNode};
use serde::Deserialize;

use crate::config_file::prefer_cli;

#[derive(Args, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct StandaloneArgs {
    /// Data directory for metadata and entries [default: ./data].
    #[arg(long, env = "MAGNETAR_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Bookie gRPC address [default: 127.0.0.1:3181].
    #[arg(long, env = "MAGNETAR_BOOKIE_LISTEN")]
    pub bookie_listen: Option<SocketAddr>,
    /// Bookie HTTP address for /metrics and /health [default: 127.0.0.1:8000].
    #[arg(long, env = "MAGNETAR_BOOKIE_HTTP")]
    pub bookie_http: Option<SocketAddr>,
}

impl StandaloneArgs {
    pub fn merged(mut self, file: StandaloneArgs) -> Self {
        prefer_cli!(self, file; data_dir, bookie_listen, bookie_http);
        self
    }
}

pub async fn run(args: StandaloneArgs) -> Result<()> {
    let data_dir = args.data_dir.unwrap_or_else(|| PathBuf::from("data"));
    let metadata_dir = data_dir.join("metadata");
    let metadata = magnetar_metadata::connect(&format!("embedded://{}", metadata_dir.display()))
        .await
        .context("opening embedded metadata")?;
    let mut config = BookieConfig::new(data_dir.join("bookie"));
    config.listen = args
        .bookie_listen
        .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 3181)));
    config.http = Some(
        args.bookie_http
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8000))),
    );
    let bookie = BookieNode::start(config, Some(metadata))
        .await
        .context("starting bookie")?;
    println!(
        "magnetar standalone: data in {}, bookie on {} (metrics http://{}/metrics)",
        data_dir.display(),
        bookie.grpc_addr,
        bookie.http_addr.map(|a| a.to_string()).unwrap_or_default()
    );
    crate::shutdown::requested().await?;
    bookie.shutdown().await;
    Ok(())
}
