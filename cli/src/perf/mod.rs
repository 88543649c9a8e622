//! `magnetar perf`: load generators that report throughput and latency
//! percentiles (HdrHistogram), in the spirit of pulsar-perf.

mod bookie;
mod consume;
mod ledger;
mod produce;
pub mod report;
pub mod schedule;
mod wire_produce;

use anyhow::Result;
use clap::Subcommand;

#[derive(Subcommand)]
pub enum PerfCommand {
    /// Drive one bookie over gRPC with many concurrent writers.
    Bookie(bookie::BookiePerfArgs),
    /// Append to (and recover) a replicated ledger through the ledger client.
    Ledger(ledger::LedgerPerfArgs),
    /// Publish to a topic through the Pulsar protocol: msg/s and publish latency.
    Produce(produce::ProducePerfArgs),
    /// Consume a topic through the Pulsar protocol: msg/s and end-to-end latency.
    Consume(consume::ConsumePerfArgs),
}

pub async fn run(cmd: PerfCommand) -> Result<()> {
    match cmd {
        PerfCommand::Bookie(args) => bookie::run(args).await,
        PerfCommand::Ledger(args) => ledger::run(args).await,
        PerfCommand::Produce(args) => produce::run(args).await,
        PerfCommand::Consume(args) => consume::run(args).await,
    }
}
