//! `magnetar bench`: OpenMessaging-Benchmark-style workloads run side by
//! side on both architectures (`run`), and a Markdown report with charts
//! from their result files (`report`).

mod charts;
mod discovery;
mod faults;
mod load;
mod phases;
mod report;
mod results;
mod runner;
mod sample;
mod setup;
mod summary;
mod topology;
mod verify;
mod workload;

use anyhow::Result;
use clap::Subcommand;

#[derive(Subcommand)]
pub enum BenchCommand {
    /// Run one workload on a topology this command starts, or on a running service.
    Run(Box<runner::RunArgs>),
    /// Write a Markdown report with PNG charts from result files.
    Report(report::ReportArgs),
}

pub async fn run(cmd: BenchCommand) -> Result<()> {
    match cmd {
        BenchCommand::Run(args) => runner::run(*args).await,
        BenchCommand::Report(args) => report::run(args),
    }
}
