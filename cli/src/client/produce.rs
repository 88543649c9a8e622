//! `magnetar produce`: publish the messages given with `-m` (or `-n`
//! generated ones), wait for every receipt and print each message id, one
//! per line, in the order sent. Exits non-zero if any message failed.

use std::collections::VecDeque;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{ArgGroup, Args};
use pulsar::producer::{Message, SendFuture};

use super::{connect, message_id, producer_options, ConnectArgs};

/// Sends awaiting their receipt at most; bounds memory for large `-n`.
const MAX_IN_FLIGHT: usize = 1000;

/// Size of generated messages when `--size` is not given.
const DEFAULT_GENERATED_SIZE: usize = 64;

#[derive(Args, Debug)]
#[command(group(ArgGroup::new("content").required(true).args(["messages", "count"])))]
pub struct ProduceArgs {
    #[command(flatten)]
    connect: ConnectArgs,
    /// Topic, e.g. `persistent://public/default/orders`.
    topic: String,
    /// A message to send; repeat for several, each is sent once, in order.
    #[arg(short = 'm', long = "message", value_name = "TEXT")]
    messages: Vec<String>,
    /// Send this many generated text messages instead.
    #[arg(short = 'n', long, value_name = "COUNT")]
    count: Option<u64>,
    /// Size of each generated message in bytes [default: 64].
    #[arg(long, value_name = "BYTES", conflicts_with = "messages")]
    size: Option<usize>,
    /// Key of every message (routes it to a partition, groups it for key-shared).
    #[arg(long, value_name = "K")]
    key: Option<String>,
    /// Batch up to this many messages into one entry (1: no batching).
    #[arg(long, value_name = "N", default_value_t = 1)]
    batch_max_messages: u32,
    /// Send a batch that is not full this long after its first message.
    #[arg(long, value_name = "D", default_value_t = 10)]
    batch_delay_ms: u64,
}

pub async fn run(args: ProduceArgs) -> Result<()> {
    let pulsar = connect(&args.connect).await?;
    let mut producer = pulsar
        .producer()
        .with_topic(args.topic.as_str())
        .with_options(producer_options(
            args.batch_max_messages,
            None,
            Duration::from_millis(args.batch_delay_ms),
        ))
        .build()
        .await
        .with_context(|| format!("creating a producer on {}", args.topic))?;

    let payloads: Box<dyn Iterator<Item = Vec<u8>>> = match args.count {
        Some(count) => {
            let size = args.size.unwrap_or(DEFAULT_GENERATED_SIZE);
            Box::new((0..count).map(move |i| generated_payload(i, size)))
        }
        None => Box::new(args.messages.into_iter().map(String::into_bytes)),
    };
    let mut window: VecDeque<(u64, SendFuture)> = VecDeque::with_capacity(MAX_IN_FLIGHT);
    let (mut sent, mut failed) = (0u64, 0u64);
    for (i, payload) in (0u64..).zip(payloads) {
        if window.len() >= MAX_IN_FLIGHT {
            if let Some((n, receipt)) = window.pop_front() {
                failed += u64::from(!settle(n, receipt).await);
            }
        }
        let message = Message {
            payload,
            partition_key: args.key.clone(),
            ..Default::default()
        };
        sent += 1;
        match producer.send_non_blocking(message).await {
            Ok(receipt) => window.push_back((i, receipt)),
            Err(e) => {
                eprintln!("message {i} failed: {e}");
                failed += 1;
            }
        }
    }
    for (n, receipt) in window {
        failed += u64::from(!settle(n, receipt).await);
    }
    if let Err(e) = producer.close().await {
        eprintln!("closing the producer: {e}");
    }
    if failed > 0 {
        bail!("{failed} of {sent} messages failed");
    }
    eprintln!("sent {sent} messages to {}", args.topic);
    Ok(())
}

/// Waits for message `n`'s receipt and prints its id; false if it failed.
async fn settle(n: u64, receipt: SendFuture) -> bool {
    match receipt.await {
        Ok(receipt) => {
            match receipt.message_id {
                Some(id) => println!("{}", message_id::display(&id)),
                None => println!("(receipt without a message id)"),
            }
            true
        }
        Err(e) => {
            eprintln!("message {n} failed: {e}");
            false
        }
    }
}

/// Readable filler of exactly `size` bytes that starts with the message's
/// number, so a consumer can tell generated messages apart.
fn generated_payload(index: u64, size: usize) -> Vec<u8> {
    let mut payload = format!("message-{index} ").into_bytes();
    let mut filler = b"abcdefghijklmnopqrstuvwxyz".iter().cycle();
    while payload.len() < size {
        payload.push(*filler.next().unwrap_or(&b'x'));
    }
    payload.truncate(size);
    payload
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: ProduceArgs,
    }

    fn parse(argv: &[&str]) -> Result<ProduceArgs, clap::Error> {
        Cli::try_parse_from(std::iter::once("produce").chain(argv.iter().copied())).map(|c| c.args)
    }

    #[test]
    fn messages_are_repeatable_and_defaults_apply() {
        let args = parse(&["t", "-m", "a", "--message", "b c"]).expect("parses");
        assert_eq!(args.topic, "t");
        assert_eq!(args.messages, ["a", "b c"]);
        assert_eq!(args.count, None);
        assert_eq!(args.connect.url, "pulsar://127.0.0.1:6650");
        assert_eq!(args.batch_max_messages, 1);
        assert_eq!(args.key, None);
    }

    #[test]
    fn generated_messages_take_count_size_and_batching() {
        let args = parse(&[
            "--url",
            "pulsar://h:1",
            "t",
            "-n",
            "5",
            "--size",
            "10",
            "--key",
            "k",
            "--batch-max-messages",
            "100",
            "--batch-delay-ms",
            "2",
        ])
        .expect("parses");
        assert_eq!(args.count, Some(5));
        assert_eq!(args.size, Some(10));
        assert_eq!(args.key.as_deref(), Some("k"));
        assert_eq!(args.batch_max_messages, 100);
        assert_eq!(args.batch_delay_ms, 2);
        assert_eq!(args.connect.url, "pulsar://h:1");
    }

    #[test]
    fn either_messages_or_a_count_is_required() {
        assert!(parse(&["t"]).is_err());
        assert!(parse(&["t", "-m", "a", "-n", "3"]).is_err());
        assert!(parse(&["-m", "a"]).is_err(), "the topic is required");
        assert!(
            parse(&["t", "-m", "a", "--size", "8"]).is_err(),
            "--size is for -n"
        );
    }

    #[test]
    fn generated_payloads_have_the_exact_size_and_their_number() {
        let p = generated_payload(12, 30);
        assert_eq!(p.len(), 30);
        assert!(p.starts_with(b"message-12 abc"));
        assert_eq!(generated_payload(12, 4), b"mess");
        assert!(generated_payload(0, 0).is_empty());
        assert!(std::str::from_utf8(&generated_payload(3, 1000)).is_ok());
    }
}
