//! `magnetar perf consume`: consumers on one subscription receive and
//! acknowledge as fast as the broker delivers. Reports received msg/s, MB/s
//! and end-to-end latency (receive time minus the message's publish time)
//! percentiles over the measured window, after a warm-up.
//!
//! Acks are per entry, not per message: a batch is acknowledged once its
//! last message arrived; exclusive and failover subscriptions acknowledge
//! cumulatively a few times a second instead.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use clap::Args;
use futures::TryStreamExt;
use pulsar::{Consumer, ConsumerOptions, TokioExecutor};

use super::report::{measure, percentiles_line, Load};
use crate::client::ack::Acker;
use crate::client::{connect, ConnectArgs, StartPosition, SubscriptionType};

/// How long a consumer may take to send its last acks and close.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Args, Debug, Clone)]
pub struct ConsumePerfArgs {
    #[command(flatten)]
    connect: ConnectArgs,
    /// Topic to consume.
    #[arg(long)]
    topic: String,
    /// Subscription name; created on first use.
    #[arg(long)]
    subscription: String,
    /// Consumers on the subscription, sharing one client connection.
    #[arg(long, default_value_t = 1)]
    consumers: usize,
    /// How the consumers share the subscription.
    #[arg(long, value_enum, default_value = "exclusive")]
    subscription_type: SubscriptionType,
    /// Where a new subscription starts.
    #[arg(long, value_enum, default_value = "latest")]
    initial_position: StartPosition,
    /// Messages the broker may push ahead of the application, per consumer.
    #[arg(long, default_value_t = 1000)]
    receiver_queue: u32,
    /// Measured duration.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Unmeasured warm-up before it.
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    warmup: Duration,
}

pub async fn run(args: ConsumePerfArgs) -> Result<()> {
    if args.consumers == 0 || args.receiver_queue == 0 {
        bail!("--consumers and --receiver-queue must be positive");
    }
    if args.consumers > 1 && args.subscription_type == SubscriptionType::Exclusive {
        bail!("an exclusive subscription takes one consumer; use --subscription-type shared or failover");
    }
    let pulsar = connect(&args.connect).await?;
    let load = Load::new();
    let mut tasks = Vec::with_capacity(args.consumers);
    for i in 0..args.consumers {
        let consumer: Consumer<Vec<u8>, TokioExecutor> = pulsar
            .consumer()
            .with_topic(args.topic.as_str())
            .with_subscription(args.subscription.as_str())
            .with_subscription_type(args.subscription_type.into())
            .with_consumer_name(format!("perf-consume-{i}"))
            .with_batch_size(args.receiver_queue)
            .with_options(
                ConsumerOptions::default()
                    .with_initial_position(args.initial_position.into())
                    .with_receiver_queue_size(args.receiver_queue),
            )
            .build()
            .await
            .with_context(|| {
                format!(
                    "subscribing consumer {i} as {} to {}",
                    args.subscription, args.topic
                )
            })?;
        tasks.push(tokio::spawn(consume(
            consumer,
            Acker::new(args.subscription_type.acks_cumulatively()),
            load.clone(),
        )));
    }

    let measured = measure(
        &load,
        args.warmup,
        args.duration,
        "received",
        "end-to-end latency",
        String::new,
    )
    .await?;
    let mut failure = None;
    for mut task in tasks {
        match tokio::time::timeout(2 * CLOSE_TIMEOUT, &mut task).await {
            Ok(result) => {
                if let Err(e) = result? {
                    failure.get_or_insert(e);
                }
            }
            Err(_) => {
                eprintln!("a consumer did not stop within {:?}", 2 * CLOSE_TIMEOUT);
                task.abort();
            }
        }
    }
    drop(pulsar);

    println!(
        "perf consume: {} consumers, {:?} subscription {}, receiver queue {}",
        args.consumers, args.subscription_type, args.subscription, args.receiver_queue
    );
    println!(
        "received msg/s: {:.0}   MB/s: {:.1}   measured {:.1} s",
        measured.per_second(),
        measured.mb_per_second(),
        measured.elapsed.as_secs_f64()
    );
    println!(
        "end-to-end latency: {}",
        percentiles_line(&measured.latency)
    );
    if measured.done == 0 {
        eprintln!("no message received in the measured window (is a producer running?)");
    }
    match failure {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// One consumer: receive, record, acknowledge, until told to stop.
async fn consume(
    mut consumer: Consumer<Vec<u8>, TokioExecutor>,
    mut acker: Acker,
    load: Arc<Load>,
) -> Result<()> {
    let recorder = load.recorder();
    let mut stop = load.stop_signal();
    loop {
        let next = tokio::select! {
            biased;
            _ = stop.wait_for(|stopping| *stopping) => break,
            next = consumer.try_next() => next,
        };
        let message = match next {
            Ok(Some(message)) => message,
            Ok(None) => bail!("the consumer stopped"),
            Err(e) => {
                eprintln!("receiving: {e}");
                return Err(e).context("receiving");
            }
        };
        let micros = end_to_end_micros(SystemTime::now(), message.metadata().publish_time);
        load.completed(message.payload.data.len(), micros, &recorder);
        acker.received(&mut consumer, &message).await?;
    }
    // The figures are in: a client that hangs while closing must not keep
    // the tool from reporting them.
    match tokio::time::timeout(CLOSE_TIMEOUT, async {
        acker.flush(&mut consumer).await?;
        consumer.close().await.context("closing a consumer")
    })
    .await
    {
        Ok(Err(e)) => eprintln!("{e:#}"),
        Err(_) => eprintln!("a consumer did not close within {CLOSE_TIMEOUT:?}"),
        Ok(Ok(())) => {}
    }
    Ok(())
}

/// Microseconds from a publish time (milliseconds since the epoch, stamped
/// by the producer) to `now`; zero if the clocks disagree.
fn end_to_end_micros(now: SystemTime, publish_time_ms: u64) -> u64 {
    let now_micros = now
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0);
    now_micros.saturating_sub(publish_time_ms.saturating_mul(1000))
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[test]
    fn end_to_end_latency_is_receive_minus_publish() {
        let now = UNIX_EPOCH + Duration::from_micros(1_700_000_000_123_456);
        assert_eq!(end_to_end_micros(now, 1_700_000_000_120), 3_456);
        assert_eq!(end_to_end_micros(now, 1_700_000_000_123), 456);
    }

    #[test]
    fn a_publish_time_in_the_future_counts_as_zero() {
        let now = UNIX_EPOCH + Duration::from_millis(1_000);
        assert_eq!(end_to_end_micros(now, 2_000), 0);
        assert_eq!(end_to_end_micros(now, u64::MAX), 0);
    }

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: ConsumePerfArgs,
    }

    #[test]
    fn defaults_and_flags() {
        let args = Cli::try_parse_from(["perf", "--topic", "t", "--subscription", "s"])
            .expect("parses")
            .args;
        assert_eq!(args.consumers, 1);
        assert_eq!(args.subscription_type, SubscriptionType::Exclusive);
        assert_eq!(args.initial_position, StartPosition::Latest);
        assert_eq!(args.receiver_queue, 1000);
        assert_eq!(args.duration, Duration::from_secs(30));
        assert_eq!(args.warmup, Duration::from_secs(3));

        let args = Cli::try_parse_from([
            "perf",
            "--topic",
            "t",
            "--subscription",
            "s",
            "--consumers",
            "4",
            "--subscription-type",
            "shared",
            "--receiver-queue",
            "5000",
            "--duration",
            "10s",
            "--warmup",
            "0s",
        ])
        .expect("parses")
        .args;
        assert_eq!(args.consumers, 4);
        assert_eq!(args.subscription_type, SubscriptionType::Shared);
        assert_eq!(args.receiver_queue, 5000);
        assert_eq!(args.warmup, Duration::ZERO);
        assert!(Cli::try_parse_from(["perf", "--topic", "t"]).is_err());
    }
}
