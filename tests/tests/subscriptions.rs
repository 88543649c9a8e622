//! Key_Shared and Failover subscriptions with the Rust `pulsar` crate against
//! a real `magnetar standalone`: a key stays with one consumer and in order,
//! and a Failover standby takes over exactly the unacknowledged messages.

use std::collections::HashMap;
use std::time::Duration;

use futures::TryStreamExt;
use magnetar_tests::{wait_until, StandaloneProcess};
use pulsar::consumer::{ConsumerOptions, InitialPosition};
use pulsar::producer::Message;
use pulsar::{Consumer, Pulsar, SubType, TokioExecutor};

const RECEIVE_TIMEOUT: Duration = Duration::from_secs(20);
const KEYS: usize = 8;

async fn client(standalone: &StandaloneProcess) -> Pulsar<TokioExecutor> {
    Pulsar::builder(standalone.pulsar_url(), TokioExecutor)
        .build()
        .await
        .expect("client connects")
}

async fn consumer(
    pulsar: &Pulsar<TokioExecutor>,
    topic: &str,
    sub_type: SubType,
    name: &str,
) -> Consumer<Vec<u8>, TokioExecutor> {
    consumer_with(pulsar, topic, sub_type, name, ConsumerOptions::default()).await
}

async fn consumer_with(
    pulsar: &Pulsar<TokioExecutor>,
    topic: &str,
    sub_type: SubType,
    name: &str,
    options: ConsumerOptions,
) -> Consumer<Vec<u8>, TokioExecutor> {
    pulsar
        .consumer()
        .with_topic(topic)
        .with_subscription("sub")
        .with_subscription_type(sub_type)
        .with_consumer_name(name)
        .with_options(options.with_initial_position(InitialPosition::Earliest))
        .build()
        .await
        .expect("consumer subscribes")
}

/// Waits until the broker's stats show `backlog` messages unacknowledged on
/// `subscription` of `public/default/{topic}`.
async fn wait_for_backlog(
    standalone: &StandaloneProcess,
    topic: &str,
    subscription: &str,
    backlog: u64,
) {
    let url = format!(
        "{}/admin/v2/persistent/public/default/{topic}/stats",
        standalone.broker_http_url()
    );
    wait_until(
        &format!("{subscription} has a backlog of {backlog}"),
        Duration::from_secs(10),
        || async {
            let Ok(answer) = reqwest::get(&url).await else {
                return false;
            };
            let body = answer.text().await.unwrap_or_default();
            let stats: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
            stats["subscriptions"][subscription]["msgBacklog"].as_u64() == Some(backlog)
        },
    )
    .await;
}

/// Sends message `i` as the text `i` with key `key-{i % KEYS}`, unbatched.
async fn produce_keyed(pulsar: &Pulsar<TokioExecutor>, topic: &str, range: std::ops::Range<usize>) {
    let mut producer = pulsar
        .producer()
        .with_topic(topic)
        .build()
        .await
        .expect("producer created");
    for i in range {
        let message = Message {
            payload: i.to_string().into_bytes(),
            partition_key: Some(format!("key-{}", i % KEYS)),
            ..Default::default()
        };
        producer
            .send_non_blocking(message)
            .await
            .expect("queued")
            .await
            .expect("receipt");
    }
    producer.close().await.expect("producer closes");
}

/// Receives until `n` messages arrived, acknowledging each; their numbers in
/// arrival order.
async fn receive(consumer: &mut Consumer<Vec<u8>, TokioExecutor>, n: usize) -> Vec<usize> {
    let mut got = Vec::with_capacity(n);
    while got.len() < n {
        let msg = tokio::time::timeout(RECEIVE_TIMEOUT, consumer.try_next())
            .await
            .unwrap_or_else(|_| panic!("timed out after {} of {n} messages", got.len()))
            .expect("receive")
            .expect("stream open");
        let text = String::from_utf8(msg.payload.data.clone()).expect("utf-8");
        got.push(text.parse().expect("a number"));
        consumer.ack(&msg).await.expect("ack");
    }
    got
}

/// Receives whatever arrives until nothing has for `quiet`.
async fn receive_until_quiet(
    consumer: &mut Consumer<Vec<u8>, TokioExecutor>,
    quiet: Duration,
) -> Vec<usize> {
    let mut got = Vec::new();
    while let Ok(next) = tokio::time::timeout(quiet, consumer.try_next()).await {
        let msg = next.expect("receive").expect("stream open");
        let text = String::from_utf8(msg.payload.data.clone()).expect("utf-8");
        got.push(text.parse().expect("a number"));
        consumer.ack(&msg).await.expect("ack");
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_shared_keeps_each_key_on_one_consumer_in_order() {
    let standalone = StandaloneProcess::start_standalone(&[]).await.unwrap();
    let pulsar = client(&standalone).await;
    let topic = "persistent://public/default/key-shared-crate";
    let mut a = consumer(&pulsar, topic, SubType::KeyShared, "a").await;
    let mut b = consumer(&pulsar, topic, SubType::KeyShared, "b").await;
    produce_keyed(&pulsar, topic, 0..400).await;
    let quiet = Duration::from_secs(3);
    let (got_a, got_b) = tokio::join!(
        receive_until_quiet(&mut a, quiet),
        receive_until_quiet(&mut b, quiet)
    );
    let mut all: Vec<usize> = got_a.iter().chain(&got_b).copied().collect();
    all.sort_unstable();
    assert_eq!(
        all,
        (0..400).collect::<Vec<_>>(),
        "lost or duplicated messages"
    );
    assert!(
        !got_a.is_empty() && !got_b.is_empty(),
        "keys were not spread"
    );
    let mut owner = HashMap::new();
    for (name, got) in [("a", &got_a), ("b", &got_b)] {
        let mut last: HashMap<usize, usize> = HashMap::new();
        for &i in got.iter() {
            let key = i % KEYS;
            assert_eq!(*owner.entry(key).or_insert(name), name, "key {key} on both");
            if let Some(previous) = last.insert(key, i) {
                assert!(previous < i, "key {key} out of order: {previous} then {i}");
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_standby_takes_over_the_unacknowledged_messages() {
    let standalone = StandaloneProcess::start_standalone(&[]).await.unwrap();
    let pulsar = client(&standalone).await;
    let topic = "persistent://public/default/failover-crate";
    let mut standby = consumer(&pulsar, topic, SubType::Failover, "consumer-b").await;
    let mut active = consumer(&pulsar, topic, SubType::Failover, "consumer-a").await;
    produce_keyed(&pulsar, topic, 0..50).await;
    assert_eq!(receive(&mut active, 25).await, (0..25).collect::<Vec<_>>());
    assert!(
        receive_until_quiet(&mut standby, Duration::from_millis(500))
            .await
            .is_empty(),
        "the standby received while the active consumer was attached"
    );
    // The crate sends acks asynchronously: wait until the broker has them
    // (25 of 50 left) before leaving.
    wait_for_backlog(&standalone, "failover-crate", "sub", 25).await;
    active.close().await.expect("consumer closes");
    drop(active);
    assert_eq!(
        receive(&mut standby, 25).await,
        (25..50).collect::<Vec<_>>()
    );
    assert!(
        receive_until_quiet(&mut standby, Duration::from_millis(500))
            .await
            .is_empty()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_prefers_the_best_priority_level_over_the_name() {
    let standalone = StandaloneProcess::start_standalone(&[]).await.unwrap();
    let pulsar = client(&standalone).await;
    let topic = "persistent://public/default/failover-priority";
    let low = ConsumerOptions::default().with_priority_level(1);
    let high = ConsumerOptions::default().with_priority_level(0);
    let mut standby = consumer_with(&pulsar, topic, SubType::Failover, "a-low", low).await;
    let mut active = consumer_with(&pulsar, topic, SubType::Failover, "z-high", high).await;
    produce_keyed(&pulsar, topic, 0..20).await;
    assert_eq!(receive(&mut active, 20).await, (0..20).collect::<Vec<_>>());
    assert!(
        receive_until_quiet(&mut standby, Duration::from_millis(500))
            .await
            .is_empty(),
        "the lower priority level received"
    );
}
