//! `magnetar perf`: load generators that report throughput and latency
//! percentiles (HdrHistogram), in the spirit of pulsar-perf.

mod bookie;
mod ledger;
mod report;

use anyhow::Result;
use clap::Subcommand;

#[derive(Subcommand)]
pub enum PerfCommand {
    /// Drive one bookie over gRPC with many concurrent writers.
    Bookie(bookie::BookiePerfArgs),
    /// Append to (and recover) a replicated ledger through the ledger client.
    Ledger(ledger::LedgerPerfArgs),
}

pub async fn run(cmd: PerfCommand) -> Result<()> {
    match cmd {
        PerfCommand::Bookie(args) => bookie::run(args).await,
        PerfCommand::Ledger(args) => ledger::run(args).await,
    }
}
