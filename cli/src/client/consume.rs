//! `magnetar consume`: subscribe, print each message (id, key, payload) on
//! one line, acknowledge it, and stop after `-n` messages or on Ctrl-C.

use anyhow::{bail, Context, Result};
use clap::Args;
use futures::TryStreamExt;
use pulsar::consumer::Message;
use pulsar::{Consumer, ConsumerOptions, TokioExecutor};

use super::{connect, message_id, ConnectArgs, StartPosition, SubscriptionType};
use crate::shutdown;

#[derive(Args, Debug)]
pub struct ConsumeArgs {
    #[command(flatten)]
    connect: ConnectArgs,
    /// Topic, e.g. `persistent://public/default/orders`.
    topic: String,
    /// Subscription name; created on first use.
    #[arg(short = 's', long)]
    subscription: String,
    /// How the subscription shares messages among its consumers.
    #[arg(long, value_enum, default_value = "exclusive")]
    subscription_type: SubscriptionType,
    /// Stop after this many messages (0: until interrupted).
    #[arg(short = 'n', long, value_name = "COUNT", default_value_t = 1)]
    count: u64,
    /// Where a new subscription starts; an existing one resumes where it was.
    #[arg(long, value_enum, default_value = "latest")]
    initial_position: StartPosition,
}

pub async fn run(args: ConsumeArgs) -> Result<()> {
    let pulsar = connect(&args.connect).await?;
    let mut consumer: Consumer<Vec<u8>, TokioExecutor> = pulsar
        .consumer()
        .with_topic(args.topic.as_str())
        .with_subscription(args.subscription.as_str())
        .with_subscription_type(args.subscription_type.into())
        .with_options(
            ConsumerOptions::default().with_initial_position(args.initial_position.into()),
        )
        .build()
        .await
        .with_context(|| format!("subscribing {} to {}", args.subscription, args.topic))?;

    let interrupted = shutdown::requested();
    tokio::pin!(interrupted);
    let mut received = 0u64;
    while args.count == 0 || received < args.count {
        let next = tokio::select! {
            next = consumer.try_next() => next.context("receiving")?,
            r = &mut interrupted => {
                r?;
                break;
            }
        };
        let Some(message) = next else {
            bail!("the consumer stopped after {received} messages");
        };
        println!("{}", describe(&message));
        consumer.ack(&message).await.with_context(|| {
            format!(
                "acknowledging {}",
                message_id::display(message.message_id())
            )
        })?;
        received += 1;
    }
    if let Err(e) = consumer.close().await {
        eprintln!("closing the consumer: {e}");
    }
    eprintln!("received {received} messages");
    Ok(())
}

/// `id [key=K] payload`, on one line.
fn describe(message: &Message<Vec<u8>>) -> String {
    let mut line = message_id::display(message.message_id());
    if let Some(key) = message.key() {
        let label = if message.has_base64_encoded_key() {
            "key(base64)"
        } else {
            "key"
        };
        line.push_str(&format!(" {label}={key}"));
    }
    line.push(' ');
    line.push_str(&render_payload(&message.payload.data));
    line
}

/// Text as itself (line breaks escaped, so one message stays one line);
/// anything else, or text with other control characters, as its length.
fn render_payload(payload: &[u8]) -> String {
    if payload.is_empty() {
        return "<empty>".to_string();
    }
    match std::str::from_utf8(payload) {
        Ok(text) if text.chars().all(printable) => text.replace('\r', "\\r").replace('\n', "\\n"),
        _ => format!("<{} bytes, binary>", payload.len()),
    }
}

fn printable(c: char) -> bool {
    !c.is_control() || matches!(c, '\t' | '\n' | '\r')
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: ConsumeArgs,
    }

    fn parse(argv: &[&str]) -> Result<ConsumeArgs, clap::Error> {
        Cli::try_parse_from(std::iter::once("consume").chain(argv.iter().copied())).map(|c| c.args)
    }

    #[test]
    fn defaults_follow_pulsar_client() {
        let args = parse(&["t", "-s", "sub"]).expect("parses");
        assert_eq!(args.topic, "t");
        assert_eq!(args.subscription, "sub");
        assert_eq!(args.subscription_type, SubscriptionType::Exclusive);
        assert_eq!(args.count, 1);
        assert_eq!(args.initial_position, StartPosition::Latest);
        assert_eq!(args.connect.url, "pulsar://127.0.0.1:6650");
    }

    #[test]
    fn every_flag_parses() {
        let args = parse(&[
            "--url",
            "pulsar://h:1",
            "t",
            "--subscription",
            "s",
            "--subscription-type",
            "key-shared",
            "-n",
            "0",
            "--initial-position",
            "earliest",
        ])
        .expect("parses");
        assert_eq!(args.subscription_type, SubscriptionType::KeyShared);
        assert_eq!(args.count, 0);
        assert_eq!(args.initial_position, StartPosition::Earliest);
    }

    #[test]
    fn a_subscription_is_required_and_types_are_checked() {
        assert!(parse(&["t"]).is_err());
        assert!(parse(&["t", "-s", "s", "--subscription-type", "queue"]).is_err());
        assert!(parse(&["t", "-s", "s", "--initial-position", "middle"]).is_err());
    }

    #[test]
    fn text_payloads_print_on_one_line() {
        assert_eq!(render_payload(b"hello"), "hello");
        assert_eq!(render_payload(b"a\nb\r\n"), "a\\nb\\r\\n");
        assert_eq!(render_payload("héllo\t!".as_bytes()), "héllo\t!");
    }

    #[test]
    fn binary_payloads_print_their_length() {
        assert_eq!(render_payload(&[0xff, 0xfe, 0x00]), "<3 bytes, binary>");
        assert_eq!(render_payload(b"nul\0inside"), "<10 bytes, binary>");
        assert_eq!(render_payload(b""), "<empty>");
    }
}
