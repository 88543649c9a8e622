//! Log set-up shared by every subcommand: `RUST_LOG`-style filters, pretty or
//! JSON lines.

use anyhow::Result;
use clap::{Args, ValueEnum};
use tracing_subscriber::EnvFilter;

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum LogFormat {
    Pretty,
    Json,
}

#[derive(Args, Debug)]
pub struct LogArgs {
    /// Log filter, e.g. `info` or `magnetar_bookie=debug`.
    #[arg(long, global = true, env = "MAGNETAR_LOG", default_value = "info")]
    log: String,
    #[arg(
        long,
        global = true,
        env = "MAGNETAR_LOG_FORMAT",
        value_enum,
        default_value = "pretty"
    )]
    log_format: LogFormat,
}

pub fn init(args: &LogArgs) -> Result<()> {
    let filter = EnvFilter::try_new(&args.log)?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match args.log_format {
        LogFormat::Pretty => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
    Ok(())
}
