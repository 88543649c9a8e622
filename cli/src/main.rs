//! `magnetar`: one binary for every Magnetar process and tool.

mod admin;
mod bench;
mod bookie_cmd;
mod broker_cmd;
mod client;
mod config_file;
mod health;
mod logging;
mod perf;
mod shutdown;
mod standalone_cmd;
mod tokens;

use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "magnetar",
    version,
    about = "Pulsar-style streaming: brokers, bookies, tools"
)]
struct Cli {
    /// TOML configuration file; flags and MAGNETAR_* variables override it.
    #[arg(long, global = true, env = "MAGNETAR_CONFIG")]
    config: Option<PathBuf>,
    #[command(flatten)]
    logging: logging::LogArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Everything in one process with embedded metadata (the default way to try Magnetar).
    Standalone(standalone_cmd::StandaloneArgs),
    /// A bookie storage node.
    Bookie(bookie_cmd::BookieArgs),
    /// A broker: serves topics over the Pulsar protocol, stores them on bookies.
    Broker(broker_cmd::BrokerArgs),
    /// Administer tenants, namespaces and topics over the broker's admin REST API (like pulsar-admin).
    Admin(admin::AdminArgs),
    /// Publish messages to a topic and print their ids.
    Produce(client::produce::ProduceArgs),
    /// Receive, print and acknowledge messages of a subscription.
    Consume(client::consume::ConsumeArgs),
    /// Benchmarks.
    #[command(subcommand)]
    Perf(perf::PerfCommand),
    /// OpenMessaging-style comparison runs on either architecture, and their report.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// Secret keys and tokens for token authentication (like pulsar tokens).
    #[command(subcommand)]
    Tokens(tokens::TokensCommand),
    /// Probe an HTTP health endpoint: exits 0 when it answers 2xx (for
    /// container healthchecks).
    Health(health::HealthArgs),
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    logging::init(&cli.logging)?;
    let file = config_file::ConfigFile::load(cli.config.as_deref())?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        match cli.command {
            Command::Standalone(args) => standalone_cmd::run(args.merged(file.standalone)).await,
            Command::Bookie(args) => bookie_cmd::run(args.merged(file.bookie)).await,
            Command::Broker(args) => broker_cmd::run(args.merged(file.broker)).await,
            Command::Admin(args) => admin::run(args).await,
            Command::Produce(args) => client::produce::run(args).await,
            Command::Consume(args) => client::consume::run(args).await,
            Command::Perf(cmd) => perf::run(cmd).await,
            Command::Bench(cmd) => bench::run(cmd).await,
            Command::Tokens(cmd) => tokens::run(cmd),
            Command::Health(args) => health::run(args).await,
        }
    })
}
