//! `magnetar produce` and `magnetar consume`: small Pulsar clients (the
//! `pulsar` crate) for trying a topic by hand. This module owns what the
//! client commands and the perf load generators share: the broker URL flag,
//! the connection, and the subscription options. It never talks to bookies
//! or metadata directly; everything goes through the Pulsar protocol.

pub mod ack;
pub mod consume;
pub mod message_id;
pub mod produce;

use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use pulsar::consumer::InitialPosition;
use pulsar::{ConnectionRetryOptions, ProducerOptions, Pulsar, SubType, TokioExecutor};

/// Where the broker is.
#[derive(Args, Debug, Clone)]
pub struct ConnectArgs {
    /// Broker service URL (`pulsar+ssl://` for TLS).
    #[arg(long, default_value = "pulsar://127.0.0.1:6650")]
    pub url: String,
    /// CA certificates (PEM) that a `pulsar+ssl://` broker's certificate
    /// must chain to, when they are not the system's.
    #[arg(long, value_name = "PEM")]
    pub tls_trust_certs: Option<std::path::PathBuf>,
}

impl ConnectArgs {
    /// The broker at `url`, with the system's trust roots.
    pub fn new(url: impl Into<String>) -> Self {
        ConnectArgs {
            url: url.into(),
            tls_trust_certs: None,
        }
    }
}

/// A client connected to the broker at `--url`.
pub async fn connect(args: &ConnectArgs) -> Result<Pulsar<TokioExecutor>> {
    connect_with_outbound_queue(args, None).await
}

/// Like [`connect`], with the per-connection queue of frames not yet written
/// to the socket sized for `outbound` pipelined sends.
pub async fn connect_with_outbound_queue(
    args: &ConnectArgs,
    outbound: Option<usize>,
) -> Result<Pulsar<TokioExecutor>> {
    // A tool should say soon that nothing listens at --url: about 5 s of
    // retries rather than the crate's default of about 40.
    let retries = ConnectionRetryOptions {
        max_backoff: Duration::from_secs(1),
        max_retries: 10,
        ..Default::default()
    };
    let mut builder =
        Pulsar::builder(args.url.as_str(), TokioExecutor).with_connection_retry_options(retries);
    if let Some(size) = outbound {
        builder = builder.with_outbound_channel_size(size);
    }
    if let Some(path) = &args.tls_trust_certs {
        builder = builder
            .with_certificate_chain_file(path)
            .with_context(|| format!("reading {}", path.display()))?;
    }
    builder
        .build()
        .await
        .with_context(|| format!("connecting to {}", args.url))
}

/// Producer options: batching when `max_messages` > 1 (a batch is sent when
/// it holds `max_messages` messages or `max_bytes` payload bytes, or `delay`
/// after its first message), and waiting rather than failing when the
/// connection's outbound queue is full. Never compression (the crate is
/// built without it).
pub fn producer_options(
    max_messages: u32,
    max_bytes: Option<usize>,
    delay: Duration,
) -> ProducerOptions {
    let mut options = ProducerOptions {
        block_queue_if_full: true,
        ..Default::default()
    };
    if max_messages > 1 {
        options.batch_size = Some(max_messages);
        options.batch_byte_size = max_bytes;
        options.batch_timeout = Some(delay);
    }
    options
}

/// How a subscription shares its messages among its consumers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum SubscriptionType {
    /// One consumer; a second one is refused.
    Exclusive,
    /// Round robin over all consumers.
    Shared,
    /// One active consumer, the others take over when it leaves.
    Failover,
    /// Consumers share the subscription, each key goes to one of them.
    KeyShared,
}

impl From<SubscriptionType> for SubType {
    fn from(t: SubscriptionType) -> Self {
        match t {
            SubscriptionType::Exclusive => SubType::Exclusive,
            SubscriptionType::Shared => SubType::Shared,
            SubscriptionType::Failover => SubType::Failover,
            SubscriptionType::KeyShared => SubType::KeyShared,
        }
    }
}

impl SubscriptionType {
    /// Whether one cumulative ack may stand for every message before it
    /// (only when a single consumer sees the whole stream in order).
    pub fn acks_cumulatively(self) -> bool {
        matches!(
            self,
            SubscriptionType::Exclusive | SubscriptionType::Failover
        )
    }
}

/// Where a new subscription starts reading.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum StartPosition {
    /// The oldest retained message.
    Earliest,
    /// Only messages published after subscribing.
    Latest,
}

impl From<StartPosition> for InitialPosition {
    fn from(p: StartPosition) -> Self {
        match p {
            StartPosition::Earliest => InitialPosition::Earliest,
            StartPosition::Latest => InitialPosition::Latest,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_message_batches_mean_no_batching() {
        let options = producer_options(1, Some(1024), Duration::from_millis(5));
        assert_eq!(options.batch_size, None);
        assert_eq!(options.batch_byte_size, None);
        assert_eq!(options.batch_timeout, None);
        assert!(options.block_queue_if_full);
        assert!(options.compression.is_none());
    }

    #[test]
    fn batching_sets_every_limit() {
        let options = producer_options(100, Some(4096), Duration::from_millis(5));
        assert_eq!(options.batch_size, Some(100));
        assert_eq!(options.batch_byte_size, Some(4096));
        assert_eq!(options.batch_timeout, Some(Duration::from_millis(5)));
        assert!(options.block_queue_if_full);
    }

    #[test]
    fn subscription_types_map_to_the_protocol() {
        assert_eq!(
            SubType::from(SubscriptionType::Exclusive),
            SubType::Exclusive
        );
        assert_eq!(SubType::from(SubscriptionType::Shared), SubType::Shared);
        assert_eq!(SubType::from(SubscriptionType::Failover), SubType::Failover);
        assert_eq!(
            SubType::from(SubscriptionType::KeyShared),
            SubType::KeyShared
        );
        assert_eq!(
            SubscriptionType::from_str("key-shared", false),
            Ok(SubscriptionType::KeyShared)
        );
    }

    #[test]
    fn only_single_reader_subscriptions_ack_cumulatively() {
        assert!(SubscriptionType::Exclusive.acks_cumulatively());
        assert!(SubscriptionType::Failover.acks_cumulatively());
        assert!(!SubscriptionType::Shared.acks_cumulatively());
        assert!(!SubscriptionType::KeyShared.acks_cumulatively());
    }

    #[test]
    fn start_positions_map_to_the_crate() {
        assert_eq!(
            InitialPosition::from(StartPosition::Earliest),
            InitialPosition::Earliest
        );
        assert_eq!(
            InitialPosition::from(StartPosition::Latest),
            InitialPosition::Latest
        );
    }
}
