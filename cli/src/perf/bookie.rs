//! `magnetar perf bookie`: many writers, each a bidirectional add stream with
//! a window of batches in flight, spread over several connections. Reports
//! synced entries/s, MB/s, add latency percentiles and, from the bookie's
//! /metrics, entries per fsync.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use clap::Args;
use hdrhistogram::Histogram;
use magnetar_proto::bookie::bookie_client::BookieClient;
use magnetar_proto::bookie::{AddBatch, AddEntry, ErrorCode};
use rand::RngCore;
use tokio::sync::{mpsc, Semaphore};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint};

use magnetar_auth::PeerCredentials;

use super::report::{latency_histogram, percentiles_line};

#[derive(Args, Debug, Clone)]
pub struct BookiePerfArgs {
    /// Bookie gRPC address (host:port).
    #[arg(long, default_value = "127.0.0.1:3181")]
    bookie: String,
    /// Bookie HTTP address, to read fsync counts from /metrics.
    #[arg(long)]
    bookie_http: Option<String>,
    /// Concurrent writers (one add stream each).
    #[arg(long, default_value_t = 8)]
    writers: usize,
    /// TCP connections the writers are spread over (0: one per writer, so
    /// HTTP/2 framing of one connection is not the bottleneck).
    #[arg(long, default_value_t = 0)]
    connections: usize,
    /// Ledgers per writer, written round robin.
    #[arg(long, default_value_t = 4)]
    ledgers_per_writer: u64,
    /// Entry size in bytes.
    #[arg(long, default_value_t = 1024)]
    entry_size: usize,
    /// Entries per add batch (one gRPC message).
    #[arg(long, default_value_t = 64)]
    batch: usize,
    /// Batches in flight per writer.
    #[arg(long, default_value_t = 8)]
    in_flight: usize,
    /// Target total entries/s (0 = as fast as possible).
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// Measured duration.
    #[arg(long, default_value = "20s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Unmeasured warm-up before it.
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    warmup: Duration,
    /// First ledger id used; vary it between runs against one bookie.
    #[arg(long)]
    first_ledger: Option<u64>,
    /// A broker's token, for a bookie that requires one: the token, or `file:PATH`.
    #[arg(long)]
    storage_token: Option<String>,
}

struct Shared {
    measuring: AtomicBool,
    stop: AtomicBool,
    entries: AtomicU64,
    errors: AtomicU64,
    latency: Mutex<Histogram<u64>>,
}

pub async fn run(args: BookiePerfArgs) -> Result<()> {
    if args.writers == 0 || args.batch == 0 || args.in_flight == 0 {
        bail!("--writers, --batch and --in-flight must be positive");
    }
    let connections = match args.connections {
        0 => args.writers,
        n => n,
    };
    let mut channels = Vec::new();
    for _ in 0..connections {
        let channel = Endpoint::from_shared(format!("http://{}", args.bookie))?
            .tcp_nodelay(true)
            .initial_stream_window_size(Some(8 << 20))
            .initial_connection_window_size(Some(32 << 20))
            .connect()
            .await
            .with_context(|| format!("connecting to bookie {}", args.bookie))?;
        channels.push(channel);
    }
    let mut payload = vec![0u8; args.entry_size];
    rand::rng().fill_bytes(&mut payload);
    let payload = Bytes::from(payload);
    let first_ledger = args.first_ledger.unwrap_or_else(|| {
        // Distinct ledgers per run, so repeated runs never collide on ids.
        (std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(1)
            % 1_000_000)
            * 1_000_000
            + 1
    });
    let shared = Arc::new(Shared {
        measuring: AtomicBool::new(false),
        stop: AtomicBool::new(false),
        entries: AtomicU64::new(0),
        errors: AtomicU64::new(0),
        latency: Mutex::new(latency_histogram()),
    });

    let mut writers = Vec::new();
    for w in 0..args.writers {
        let channel = channels[w % channels.len()].clone();
        let ledgers: Vec<u64> = (0..args.ledgers_per_writer)
            .map(|i| first_ledger + w as u64 * args.ledgers_per_writer + i)
            .collect();
        writers.push(tokio::spawn(writer(
            channel,
            ledgers,
            payload.clone(),
            args.clone(),
            shared.clone(),
        )));
    }

    tokio::time::sleep(args.warmup).await;
    let before = scrape(&args).await;
    shared.measuring.store(true, Ordering::SeqCst);
    let started = Instant::now();
    tokio::time::sleep(args.duration).await;
    shared.measuring.store(false, Ordering::SeqCst);
    let elapsed = started.elapsed().as_secs_f64();
    let after = scrape(&args).await;
    shared.stop.store(true, Ordering::SeqCst);
    for w in writers {
        w.await??;
    }

    let entries = shared.entries.load(Ordering::SeqCst);
    let errors = shared.errors.load(Ordering::SeqCst);
    let latency = shared
        .latency
        .lock()
        .map_err(|_| anyhow::anyhow!("latency histogram poisoned"))?;
    let rate = entries as f64 / elapsed;
    println!(
        "bookie perf: {} writers, {} connections, {} B entries, {} per batch, {} batches in flight per writer, rate {}",
        args.writers,
        connections,
        args.entry_size,
        args.batch,
        args.in_flight,
        if args.rate == 0 { "unlimited".to_string() } else { format!("{}/s", args.rate) }
    );
    println!(
        "synced entries/s: {:.0}   MB/s: {:.1}   errors: {}   measured {:.1} s",
        rate,
        rate * args.entry_size as f64 / 1e6,
        errors,
        elapsed
    );
    println!("add latency: {}", percentiles_line(&latency));
    if let (Some(b), Some(a)) = (before, after) {
        let commits = a.commits - b.commits;
        let added = a.entries - b.entries;
        if commits > 0.0 {
            println!(
                "bookie: {:.0} fsyncs/s, {:.1} entries per fsync",
                commits / elapsed,
                added / commits
            );
        }
    }
    Ok(())
}

async fn writer(
    channel: Channel,
    ledgers: Vec<u64>,
    payload: Bytes,
    args: BookiePerfArgs,
    shared: Arc<Shared>,
) -> Result<()> {
    let credentials = match &args.storage_token {
        Some(token) => PeerCredentials::token(&crate::tokens::load_token(token)?)?,
        None => PeerCredentials::none(),
    };
    let mut client = BookieClient::with_interceptor(channel, credentials)
        .max_decoding_message_size(64 << 20)
        .max_encoding_message_size(64 << 20);
    let (tx, rx) = mpsc::channel::<AddBatch>(args.in_flight);
    let window = Arc::new(Semaphore::new(args.in_flight));
    let sent_at: Arc<Mutex<std::collections::HashMap<u64, Instant>>> = Arc::default();
    let mut responses = client
        .add_entries(ReceiverStream::new(rx))
        .await
        .context("opening add stream")?
        .into_inner();

    let receiver = {
        let shared = shared.clone();
        let window = window.clone();
        let sent_at = sent_at.clone();
        tokio::spawn(async move {
            while let Some(result) = responses.message().await? {
                let started = sent_at
                    .lock()
                    .ok()
                    .and_then(|mut m| m.remove(&result.batch_id));
                let ok = result
                    .results
                    .iter()
                    .filter(|r| r.code == ErrorCode::Ok as i32)
                    .count() as u64;
                let failed = result.results.len() as u64 - ok;
                if shared.measuring.load(Ordering::Relaxed) {
                    shared.entries.fetch_add(ok, Ordering::Relaxed);
                    shared.errors.fetch_add(failed, Ordering::Relaxed);
                    if let (Some(started), Ok(mut h)) = (started, shared.latency.lock()) {
                        let micros = started.elapsed().as_micros() as u64;
                        // Every entry of the batch waited this long.
                        let _ = h.record_n(micros.max(1), ok);
                    }
                }
                window.add_permits(1);
            }
            anyhow::Ok(())
        })
    };

    let per_writer_rate = args.rate as f64 / args.writers as f64;
    let batch_interval = (per_writer_rate > 0.0)
        .then(|| Duration::from_secs_f64(args.batch as f64 / per_writer_rate));
    let mut pacer = batch_interval.map(|i| {
        let mut t = tokio::time::interval(i);
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        t
    });
    let mut next_entry = vec![0i64; ledgers.len()];
    let master_key = Bytes::from_static(b"perf");
    let mut batch_id = 0u64;
    while !shared.stop.load(Ordering::Relaxed) {
        if let Some(p) = pacer.as_mut() {
            p.tick().await;
        }
        window.acquire().await?.forget();
        let mut entries = Vec::with_capacity(args.batch);
        for i in 0..args.batch {
            let slot = (batch_id as usize + i) % ledgers.len();
            let entry_id = next_entry[slot];
            next_entry[slot] += 1;
            entries.push(AddEntry {
                ledger_id: ledgers[slot],
                entry_id,
                lac: entry_id - 1,
                master_key: master_key.clone(),
                recovery: false,
                payload: payload.clone(),
            });
        }
        if let Ok(mut m) = sent_at.lock() {
            m.insert(batch_id, Instant::now());
        }
        if tx.send(AddBatch { batch_id, entries }).await.is_err() {
            break;
        }
        batch_id += 1;
    }
    drop(tx);
    receiver.await??;
    Ok(())
}

struct Counters {
    commits: f64,
    entries: f64,
}

async fn scrape(args: &BookiePerfArgs) -> Option<Counters> {
    let http = args.bookie_http.as_ref()?;
    let body = match http_get(http, "/metrics").await {
        Ok(b) => b,
        Err(e) => {
            eprintln!("cannot read bookie metrics from {http}: {e}");
            return None;
        }
    };
    let value = |name: &str| {
        body.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
    };
    Some(Counters {
        commits: value("magnetar_bookie_journal_commits_total")?,
        entries: value("magnetar_bookie_entries_added_total")?,
    })
}

async fn http_get(addr: &str, path: &str) -> Result<String> {
    Ok(reqwest::get(format!("http://{addr}{path}"))
        .await?
        .error_for_status()?
        .text()
        .await?)
}
