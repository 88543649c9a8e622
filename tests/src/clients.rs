//! Pulsar clients (the `pulsar` crate) as the cluster tests use them:
//! producers that keep retrying while a bundle moves, and consumers that
//! collect numbered messages (`msg-00042`).

use std::time::Duration;

use futures::TryStreamExt;
use pulsar::consumer::{ConsumerOptions, InitialPosition};
use pulsar::{Consumer, Pulsar, SubType, TokioExecutor};

/// How long a test waits for a message or a producer before failing.
pub const RECEIVE_TIMEOUT: Duration = Duration::from_secs(40);

/// A client with few connection retries: a lookup answer naming a dead
/// broker should fail fast so the next lookup can find the new owner.
pub async fn client(url: &str) -> Pulsar<TokioExecutor> {
    let retries = pulsar::ConnectionRetryOptions {
        max_backoff: Duration::from_millis(500),
        max_retries: 3,
        ..Default::default()
    };
    Pulsar::builder(url, TokioExecutor)
        .with_connection_retry_options(retries)
        .build()
        .await
        .expect("client connects")
}

/// An Exclusive consumer of subscription `sub` from the earliest message.
pub async fn subscribe(
    pulsar: &Pulsar<TokioExecutor>,
    topic: &str,
) -> Consumer<Vec<u8>, TokioExecutor> {
    pulsar
        .consumer()
        .with_topic(topic)
        .with_subscription("sub")
        .with_subscription_type(SubType::Exclusive)
        .with_options(ConsumerOptions::default().with_initial_position(InitialPosition::Earliest))
        .build()
        .await
        .expect("subscribes")
}

/// A producer, retried until [`RECEIVE_TIMEOUT`]: until a dead owner's
/// lease expires lookups still name it and the crate gives up on
/// connecting; a real application retries, so do we.
pub async fn producer(
    pulsar: &Pulsar<TokioExecutor>,
    topic: &str,
) -> pulsar::Producer<TokioExecutor> {
    let deadline = tokio::time::Instant::now() + RECEIVE_TIMEOUT;
    loop {
        match pulsar.producer().with_topic(topic).build().await {
            Ok(producer) => return producer,
            Err(e) if tokio::time::Instant::now() < deadline => {
                eprintln!("producer not ready yet: {e}");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => panic!("no producer on {topic}: {e}"),
        }
    }
}

/// Where a message is stored: `(ledger id, entry id)` from its receipt or
/// its delivery.
pub type StoredAt = (u64, u64);

/// Sends `msg-i` for each i, one at a time; returns the ones the broker
/// acknowledged.
pub async fn send_with(
    producer: &mut pulsar::Producer<TokioExecutor>,
    range: std::ops::Range<u32>,
) -> Vec<u32> {
    send_with_receipts(producer, range)
        .await
        .into_iter()
        .map(|(i, _)| i)
        .collect()
}

/// [`send_with`], with where each receipt says the message is stored.
pub async fn send_with_receipts(
    producer: &mut pulsar::Producer<TokioExecutor>,
    range: std::ops::Range<u32>,
) -> Vec<(u32, StoredAt)> {
    let mut acked = Vec::new();
    for i in range {
        let receipt = match producer
            .send_non_blocking(format!("msg-{i:05}").into_bytes())
            .await
        {
            Ok(receipt) => receipt.await,
            Err(e) => Err(e),
        };
        if let Ok(receipt) = receipt {
            let id = receipt.message_id.expect("a receipt names its message id");
            acked.push((i, (id.ledger_id, id.entry_id)));
        }
    }
    acked
}

/// [`send_with`] on a new producer, closed afterwards.
pub async fn send(
    pulsar: &Pulsar<TokioExecutor>,
    topic: &str,
    range: std::ops::Range<u32>,
) -> Vec<u32> {
    let mut producer = producer(pulsar, topic).await;
    let acked = send_with(&mut producer, range).await;
    let _ = producer.close().await;
    acked
}

/// [`send`], with where each receipt says the message is stored.
pub async fn send_stored(
    pulsar: &Pulsar<TokioExecutor>,
    topic: &str,
    range: std::ops::Range<u32>,
) -> Vec<(u32, StoredAt)> {
    let mut producer = producer(pulsar, topic).await;
    let acked = send_with_receipts(&mut producer, range).await;
    let _ = producer.close().await;
    acked
}

/// Receives (and acknowledges) until nothing arrives for 2 s after at
/// least `at_least` messages; their numbers in order of arrival.
pub async fn receive_all(
    consumer: &mut Consumer<Vec<u8>, TokioExecutor>,
    at_least: usize,
) -> Vec<u32> {
    receive_all_stored(consumer, at_least)
        .await
        .into_iter()
        .map(|(i, _)| i)
        .collect()
}

/// [`receive_all`], with where each message is stored.
pub async fn receive_all_stored(
    consumer: &mut Consumer<Vec<u8>, TokioExecutor>,
    at_least: usize,
) -> Vec<(u32, StoredAt)> {
    let mut got = Vec::new();
    loop {
        let wait = if got.len() < at_least {
            RECEIVE_TIMEOUT
        } else {
            Duration::from_secs(2)
        };
        let Ok(next) = tokio::time::timeout(wait, consumer.try_next()).await else {
            assert!(
                got.len() >= at_least,
                "timed out after {} of {at_least}",
                got.len()
            );
            return got;
        };
        let msg = next.expect("receive").expect("open");
        consumer.ack(&msg).await.expect("ack");
        let text = String::from_utf8_lossy(&msg.payload.data).into_owned();
        let id = msg.message_id();
        got.push((
            text.trim_start_matches("msg-")
                .parse()
                .unwrap_or_else(|_| panic!("unexpected message {text:?}")),
            (id.ledger_id, id.entry_id),
        ));
    }
}
