//! `magnetar perf produce`: producers on one topic, each pipelining sends
//! with a bounded number awaiting their receipt, optionally paced to a total
//! rate. Reports acknowledged msg/s, MB/s and publish latency (send call to
//! receipt) percentiles over the measured window, after a warm-up.
//!
//! With batching on, the `pulsar` crate sends one batch per producer at a
//! time (it waits for a batch's receipt before sending the next), so
//! throughput per producer is bounded by batch size over round-trip time;
//! add producers to go beyond it.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use pulsar::producer::{Message, SendFuture};
use pulsar::{Producer, TokioExecutor};
use rand::RngCore;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};

use super::report::{measure, percentiles_line, LatencyRecorder, Load};
use super::schedule::Schedule;
use crate::client::{connect_with_outbound_queue, producer_options, ConnectArgs};

#[derive(Args, Debug, Clone)]
pub struct ProducePerfArgs {
    #[command(flatten)]
    connect: ConnectArgs,
    /// Topic to publish to.
    #[arg(long)]
    topic: String,
    /// Target total messages/s over all producers (0 = as fast as possible).
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// Message payload size in bytes.
    #[arg(long, default_value_t = 1024)]
    size: usize,
    /// Producers on the topic, sharing one client connection.
    #[arg(long, default_value_t = 1)]
    producers: usize,
    /// Messages per batch (1: no batching, one entry per message).
    #[arg(long, default_value_t = 1000)]
    batch_max_messages: u32,
    /// Payload bytes per batch.
    #[arg(long, default_value_t = 131_072)]
    batch_max_bytes: usize,
    /// Send a batch that is not full this many milliseconds after its first message.
    #[arg(long, default_value_t = 1)]
    batch_delay_ms: u64,
    /// Messages awaiting their receipt, per producer.
    #[arg(long, default_value_t = 1000)]
    max_pending: usize,
    /// Measured duration.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Unmeasured warm-up before it.
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    warmup: Duration,
    /// Publish pre-built batches straight over the Pulsar protocol, one
    /// connection per producer, instead of through the `pulsar` crate:
    /// measures the broker rather than the client library. Batches hold
    /// `min(--batch-max-messages, --batch-max-bytes / --size)` messages and
    /// `--max-pending` messages per producer are in flight as whole batches.
    #[arg(long)]
    wire: bool,
    /// With `--wire`: the topic is partitioned into this many partitions and
    /// producer i writes to partition i mod N (the crate routes by itself).
    #[arg(long, default_value_t = 0)]
    partitions: u32,
    /// With `--wire`: give each batch one of this many keys in turn (key-based
    /// batching, as Key_Shared producers use); 0 = no keys.
    #[arg(long, default_value_t = 0)]
    keys: u32,
}

pub async fn run(args: ProducePerfArgs) -> Result<()> {
    if args.producers == 0 || args.max_pending == 0 || args.batch_max_messages == 0 {
        bail!("--producers, --max-pending and --batch-max-messages must be positive");
    }
    if args.wire {
        return run_wire(args).await;
    }
    if args.partitions > 0 || args.keys > 0 {
        bail!("--partitions and --keys apply to --wire (the crate finds partitions itself)");
    }
    let pulsar =
        connect_with_outbound_queue(&args.connect, Some(args.max_pending.max(100))).await?;
    let mut payload = vec![0u8; args.size];
    rand::rng().fill_bytes(&mut payload);
    let load = Load::new();
    let per_producer_rate = args.rate as f64 / args.producers as f64;

    let mut producers = Vec::with_capacity(args.producers);
    for i in 0..args.producers {
        let producer = pulsar
            .producer()
            .with_topic(args.topic.as_str())
            .with_options(producer_options(
                args.batch_max_messages,
                Some(args.batch_max_bytes),
                Duration::from_millis(args.batch_delay_ms),
            ))
            .build()
            .await
            .with_context(|| format!("creating producer {i} on {}", args.topic))?;
        producers.push(producer);
    }
    let pending: Vec<Arc<Semaphore>> = (0..args.producers)
        .map(|_| Arc::new(Semaphore::new(args.max_pending)))
        .collect();
    let tasks: Vec<_> = producers
        .into_iter()
        .zip(&pending)
        .map(|(producer, window)| {
            tokio::spawn(produce(
                producer,
                payload.clone(),
                Schedule::new(per_producer_rate),
                window.clone(),
                load.clone(),
            ))
        })
        .collect();

    let max_pending = args.max_pending;
    let measured = measure(
        &load,
        args.warmup,
        args.duration,
        "produced",
        "publish latency",
        || {
            let in_flight: usize = pending
                .iter()
                .map(|w| max_pending - w.available_permits())
                .sum();
            format!(" | pending {in_flight}")
        },
    )
    .await?;
    for task in tasks {
        task.await??;
    }
    drop(pulsar);

    summarize(&args, &measured)
}

/// `--wire`: the same load without a client library in the way.
async fn run_wire(args: ProducePerfArgs) -> Result<()> {
    let wire = super::wire_produce::address_of(&args.connect.url)?;
    let tls = match (wire.tls, &args.connect.tls_trust_certs) {
        (false, _) => None,
        (true, Some(trust)) => Some(super::wire_produce::tls_connector(trust)?),
        (true, None) => anyhow::bail!("--wire over pulsar+ssl:// needs --tls-trust-certs"),
    };
    let address = wire.address;
    let per_batch =
        (args.batch_max_bytes / args.size.max(1)).clamp(1, args.batch_max_messages as usize) as u32;
    let window = (args.max_pending / per_batch as usize).max(1);
    let load = Load::new();
    let batches_per_second = args.rate as f64 / args.producers as f64 / per_batch as f64;
    let tasks: Vec<_> = (0..args.producers)
        .map(|i| {
            let topic = if args.partitions > 0 {
                format!("{}-partition-{}", args.topic, i as u32 % args.partitions)
            } else {
                args.topic.clone()
            };
            let spec = super::wire_produce::WireProducer {
                address: address.clone(),
                tls: tls.clone(),
                topic,
                keys: args.keys,
                message_size: args.size,
                messages_per_batch: per_batch,
                window,
                batches_per_second,
            };
            tokio::spawn(super::wire_produce::produce(spec, i, load.clone()))
        })
        .collect();
    let measured = measure(
        &load,
        args.warmup,
        args.duration,
        "produced",
        "publish latency",
        String::new,
    )
    .await?;
    for task in tasks {
        task.await??;
    }
    println!(
        "(wire client: {per_batch} messages per batch, {window} batches in flight per producer)"
    );
    summarize(&args, &measured)
}

fn summarize(args: &ProducePerfArgs, measured: &super::report::Measured) -> Result<()> {
    println!(
        "perf produce: {} producers, {} B messages, {}, {} pending per producer, rate {}",
        args.producers,
        args.size,
        if args.batch_max_messages > 1 {
            format!(
                "batches of up to {} messages / {} B / {} ms",
                args.batch_max_messages, args.batch_max_bytes, args.batch_delay_ms
            )
        } else {
            "no batching".to_string()
        },
        args.max_pending,
        if args.rate == 0 {
            "unlimited".to_string()
        } else {
            format!("{}/s", args.rate)
        }
    );
    println!(
        "acknowledged msg/s: {:.0}   MB/s: {:.1}   failed: {}   measured {:.1} s",
        measured.per_second(),
        measured.mb_per_second(),
        measured.failed,
        measured.elapsed.as_secs_f64()
    );
    println!("publish latency: {}", percentiles_line(&measured.latency));
    if measured.done == 0 {
        bail!("no message was acknowledged in the measured window");
    }
    if measured.failed > 0 {
        bail!("{} sends failed", measured.failed);
    }
    Ok(())
}

/// One producer: send (paced, or as fast as the window of pending receipts
/// allows) until told to stop, then wait for the receipts still pending.
async fn produce(
    mut producer: Producer<TokioExecutor>,
    payload: Vec<u8>,
    schedule: Option<Schedule>,
    window: Arc<Semaphore>,
    load: Arc<Load>,
) -> Result<()> {
    let recorder = load.recorder();
    let (receipts_tx, receipts_rx) = mpsc::unbounded_channel();
    let receipts = tokio::spawn(await_receipts(
        receipts_rx,
        payload.len(),
        load.clone(),
        recorder,
    ));
    let stop = load.stop_signal();
    let started = Instant::now();
    let mut sent = 0u64;
    while !*stop.borrow() {
        if let Some(schedule) = &schedule {
            if sent >= schedule.due(started.elapsed()) {
                // Short naps, so that a slow rate still notices the stop.
                let due = started + schedule.send_time(sent);
                let nap = due.min(Instant::now() + Duration::from_millis(100));
                tokio::time::sleep_until(nap.into()).await;
                continue;
            }
        }
        let permit = window.clone().acquire_owned().await?;
        let message = Message {
            payload: payload.clone(),
            ..Default::default()
        };
        let sent_at = Instant::now();
        match producer.send_non_blocking(message).await {
            Ok(receipt) => {
                if receipts_tx.send((sent_at, receipt, permit)).is_err() {
                    break;
                }
            }
            Err(e) => {
                note_failure(&load, &e);
                // Do not spin on a producer that cannot send at all.
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        sent += 1;
    }
    drop(receipts_tx);
    receipts.await?;
    if let Err(e) = producer.close().await {
        eprintln!("closing a producer: {e}");
    }
    Ok(())
}

/// Receipts of one producer, in send order (the broker acknowledges one
/// producer's messages in order, so the head is always the next to arrive).
async fn await_receipts(
    mut receipts: mpsc::UnboundedReceiver<(Instant, SendFuture, OwnedSemaphorePermit)>,
    bytes: usize,
    load: Arc<Load>,
    recorder: Arc<Mutex<LatencyRecorder>>,
) {
    while let Some((sent_at, receipt, permit)) = receipts.recv().await {
        match receipt.await {
            Ok(_) => load.completed(bytes, sent_at.elapsed().as_micros() as u64, &recorder),
            Err(e) => note_failure(&load, &e),
        }
        drop(permit);
    }
}

fn note_failure(load: &Load, e: &pulsar::Error) {
    if load.failed.fetch_add(1, Ordering::Relaxed) == 0 {
        eprintln!("first failed send: {e}");
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: ProducePerfArgs,
    }

    #[test]
    fn defaults_follow_pulsar_perf() {
        let args = Cli::try_parse_from(["perf", "--topic", "t"])
            .expect("parses")
            .args;
        assert_eq!(args.rate, 0);
        assert_eq!(args.size, 1024);
        assert_eq!(args.producers, 1);
        assert_eq!(args.batch_max_messages, 1000);
        assert_eq!(args.batch_max_bytes, 131_072);
        assert_eq!(args.batch_delay_ms, 1);
        assert_eq!(args.max_pending, 1000);
        assert_eq!(args.duration, Duration::from_secs(30));
        assert_eq!(args.warmup, Duration::from_secs(3));
    }

    #[test]
    fn durations_are_human() {
        let args = Cli::try_parse_from([
            "perf",
            "--topic",
            "t",
            "--duration",
            "1m 30s",
            "--warmup",
            "500ms",
            "--rate",
            "20000",
        ])
        .expect("parses")
        .args;
        assert_eq!(args.duration, Duration::from_secs(90));
        assert_eq!(args.warmup, Duration::from_millis(500));
        assert_eq!(args.rate, 20_000);
        assert!(
            Cli::try_parse_from(["perf"]).is_err(),
            "--topic is required"
        );
        assert!(Cli::try_parse_from(["perf", "--topic", "t", "--duration", "soon"]).is_err());
    }
}
