//! `magnetar perf ledger`: append throughput and latency of one replicated
//! ledger through the broker's ledger client, and the time to recover a
//! ledger left open by its writer.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use clap::Args;
use magnetar_broker::ledger::bookie_client::{BookieClientConfig, BookieClients};
use magnetar_broker::ledger::{LedgerClient, LedgerConfig};
use rand::RngCore;

use super::report::{latency_histogram, percentiles_line};

#[derive(Args, Debug, Clone)]
pub struct LedgerPerfArgs {
    /// Metadata store the bookies registered in.
    #[arg(long, default_value = "etcd://127.0.0.1:2379")]
    metadata: String,
    #[arg(long, default_value_t = 3)]
    ensemble: u32,
    #[arg(long, default_value_t = 2)]
    write_quorum: u32,
    #[arg(long, default_value_t = 2)]
    ack_quorum: u32,
    /// Entry size in bytes.
    #[arg(long, default_value_t = 1024)]
    entry_size: usize,
    /// Entries in flight (appended, not yet confirmed).
    #[arg(long, default_value_t = 1024)]
    in_flight: usize,
    /// Measured duration of the append phase.
    #[arg(long, default_value = "15s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Also time recovery of an open ledger of this many entries (0: skip).
    #[arg(long, default_value_t = 0)]
    recover_entries: u64,
}

pub async fn run(args: LedgerPerfArgs) -> Result<()> {
    if args.in_flight == 0 {
        bail!("--in-flight must be positive");
    }
    let metadata = magnetar_metadata::connect(&args.metadata)
        .await
        .with_context(|| format!("connecting to {}", args.metadata))?;
    let client = LedgerClient::new(
        metadata.clone(),
        BookieClients::new(BookieClientConfig::default()),
    );
    let config = LedgerConfig::new(args.ensemble, args.write_quorum, args.ack_quorum);
    let mut payload = vec![0u8; args.entry_size];
    rand::rng().fill_bytes(&mut payload);
    let payload = Bytes::from(payload);

    let writer = client.create(&config).await.context("creating ledger")?;
    let mut latency = latency_histogram();
    let mut window = VecDeque::with_capacity(args.in_flight);
    let started = Instant::now();
    let mut confirmed = 0u64;
    while started.elapsed() < args.duration {
        if window.len() >= args.in_flight {
            let (sent, f): (Instant, _) = window.pop_front().context("window")?;
            f.await?;
            confirmed += 1;
            let _ = latency.record((sent.elapsed().as_micros() as u64).max(1));
        }
        window.push_back((Instant::now(), writer.append(payload.clone())));
    }
    for (sent, f) in window {
        f.await?;
        confirmed += 1;
        let _ = latency.record((sent.elapsed().as_micros() as u64).max(1));
    }
    let elapsed = started.elapsed().as_secs_f64();
    writer.close().await?;
    let rate = confirmed as f64 / elapsed;
    println!(
        "ledger perf: E={} Qw={} Qa={}, {} B entries, {} in flight",
        args.ensemble, args.write_quorum, args.ack_quorum, args.entry_size, args.in_flight
    );
    println!(
        "confirmed entries/s: {:.0}   MB/s: {:.1}   measured {:.1} s",
        rate,
        rate * args.entry_size as f64 / 1e6,
        elapsed
    );
    println!("append latency: {}", percentiles_line(&latency));

    if args.recover_entries > 0 {
        let writer = client.create(&config).await?;
        let mut window = VecDeque::with_capacity(args.in_flight);
        for _ in 0..args.recover_entries {
            if window.len() >= args.in_flight {
                if let Some(f) = window.pop_front() {
                    f.await?;
                }
            }
            window.push_back(writer.append(payload.clone()));
        }
        for f in window {
            f.await?;
        }
        let id = writer.id();
        drop(writer);
        // Another client (as a new owner would) recovers the open ledger.
        let other = LedgerClient::new(metadata, BookieClients::new(BookieClientConfig::default()));
        let started = Instant::now();
        let recovered = other.recover(id).await?;
        println!(
            "recovery of {} entries: {:.3} s (closed at entry {})",
            args.recover_entries,
            started.elapsed().as_secs_f64(),
            recovered.last_entry_id
        );
    }
    Ok(())
}
