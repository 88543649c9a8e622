//! `magnetar health`: the probe a container healthcheck runs. Images built
//! from scratch have no shell or curl, so the binary probes itself.

use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;

#[derive(Args, Debug)]
pub struct HealthArgs {
    /// The endpoint to probe; healthy when it answers 2xx. Works for a
    /// broker (`:8080/health`), a bookie (`:8000/health`) and etcd
    /// (`:2379/health`).
    #[arg(
        long,
        env = "MAGNETAR_HEALTH_URL",
        default_value = "http://127.0.0.1:8080/health"
    )]
    pub url: String,
    /// Give up after this long.
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
}

pub async fn run(args: HealthArgs) -> Result<()> {
    let client = reqwest::Client::builder()
        .timeout(args.timeout)
        .build()
        .context("building the HTTP client")?;
    let response = client
        .get(&args.url)
        .send()
        .await
        .with_context(|| format!("probing {}", args.url))?;
    let status = response.status();
    let body = response.text().await.unwrap_or_default();
    anyhow::ensure!(
        status.is_success(),
        "{} answered {status}: {}",
        args.url,
        body.trim()
    );
    println!("{}", body.trim());
    Ok(())
}
