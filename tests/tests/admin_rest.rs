//! The broker's admin REST API over real processes: a partitioned topic
//! created over REST and used by the Rust `pulsar` crate, and topic deletion
//! checked against the metadata in etcd (ledgers, cursors, the topic's
//! ledger list) and against the bookie's data.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use futures::TryStreamExt;
use magnetar_metadata::{keys, MetadataStore};
use magnetar_proto::bookie::ErrorCode;
use magnetar_tests::{log_tail, wire, BookieProcess, Etcd, StandaloneProcess};
use pulsar::consumer::{ConsumerOptions, InitialPosition};
use pulsar::{Consumer, Pulsar, SubType, TokioExecutor};
use reqwest::{Method, StatusCode};
use serde_json::Value;

const RECEIVE_TIMEOUT: Duration = Duration::from_secs(30);

/// One admin call: the status and the JSON answer (Null when empty).
async fn admin(method: Method, url: &str, body: Option<&str>) -> (StatusCode, Value) {
    let mut request = reqwest::Client::new().request(method, url);
    if let Some(body) = body {
        request = request
            .header("content-type", "application/json")
            .body(body.to_string());
    }
    let response = request.send().await.expect("admin request");
    let status = response.status();
    let bytes = response.bytes().await.expect("admin answer");
    let json = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).expect("JSON answer")
    };
    (status, json)
}

async fn client(url: String) -> Pulsar<TokioExecutor> {
    Pulsar::builder(url, TokioExecutor)
        .build()
        .await
        .expect("client connects")
}

async fn subscribe(
    pulsar: &Pulsar<TokioExecutor>,
    topic: &str,
    subscription: &str,
) -> Consumer<Vec<u8>, TokioExecutor> {
    pulsar
        .consumer()
        .with_topic(topic)
        .with_subscription(subscription)
        .with_subscription_type(SubType::Shared)
        .with_options(ConsumerOptions::default().with_initial_position(InitialPosition::Earliest))
        .build()
        .await
        .expect("subscribes")
}

/// Sends `count` messages one at a time, each confirmed before the next.
async fn produce(pulsar: &Pulsar<TokioExecutor>, topic: &str, count: usize) {
    let mut producer = pulsar.producer().with_topic(topic).build().await.unwrap();
    for i in 0..count {
        producer
            .send_non_blocking(format!("msg-{i:04}").into_bytes())
            .await
            .expect("queued")
            .await
            .expect("receipt");
    }
    producer.close().await.unwrap();
}

/// Receives and acknowledges `n` messages: (payload, topic) of each.
async fn receive(
    consumer: &mut Consumer<Vec<u8>, TokioExecutor>,
    n: usize,
) -> Vec<(String, String)> {
    let mut got = Vec::new();
    while got.len() < n {
        let msg = tokio::time::timeout(RECEIVE_TIMEOUT, consumer.try_next())
            .await
            .unwrap_or_else(|_| panic!("timed out after {} of {n}", got.len()))
            .expect("receive")
            .expect("open");
        consumer.ack(&msg).await.expect("ack");
        got.push((
            String::from_utf8(msg.payload.data.clone()).unwrap(),
            msg.topic.clone(),
        ));
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pulsar_crate_uses_a_partitioned_topic_created_over_rest() {
    let standalone = StandaloneProcess::start_standalone(&[]).await.unwrap();
    let topic = "persistent://public/default/rust-partitioned";
    let path = format!(
        "{}/admin/v2/persistent/public/default/rust-partitioned",
        standalone.broker_http_url()
    );
    let (status, answer) = admin(Method::PUT, &format!("{path}/partitions"), Some("3")).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{answer}");
    let (_, metadata) = admin(Method::GET, &format!("{path}/partitions"), None).await;
    assert_eq!(metadata, serde_json::json!({"partitions": 3}));

    let pulsar = client(standalone.pulsar_url()).await;
    assert_eq!(
        pulsar.lookup_partitioned_topic_number(topic).await.unwrap(),
        3
    );
    let mut consumer = subscribe(&pulsar, topic, "all").await;
    produce(&pulsar, topic, 30).await;
    let got = receive(&mut consumer, 30).await;
    let payloads: BTreeSet<&str> = got.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(payloads.len(), 30, "duplicates or losses: {got:?}");
    let per_topic: BTreeMap<&str, usize> = got.iter().fold(BTreeMap::new(), |mut m, (_, t)| {
        *m.entry(t.as_str()).or_default() += 1;
        m
    });
    let partitions: Vec<String> = (0..3).map(|i| format!("{topic}-partition-{i}")).collect();
    assert_eq!(
        per_topic.keys().copied().collect::<Vec<_>>(),
        partitions,
        "messages came from {per_topic:?}"
    );

    let (status, stats) = admin(Method::GET, &format!("{path}/partitioned-stats"), None).await;
    assert_eq!(status, StatusCode::OK, "{stats}");
    assert_eq!(stats["msgInCounter"], 30);
    assert_eq!(stats["metadata"]["partitions"], 3);
    for partition in &partitions {
        let count = stats["partitions"][partition]["msgInCounter"]
            .as_u64()
            .unwrap_or_else(|| panic!("no stats of {partition}: {stats}"));
        assert_eq!(count as usize, per_topic[partition.as_str()]);
    }
    // Shrinking is refused; the REST answer carries Pulsar's reason field.
    let (status, answer) = admin(Method::POST, &format!("{path}/partitions"), Some("2")).await;
    assert_eq!(status, StatusCode::PRECONDITION_FAILED);
    assert!(answer["reason"].as_str().is_some(), "{answer}");
}

/// Ledger ids of a topic, from its internal stats.
async fn ledgers_of(path: &str) -> Vec<u64> {
    let (status, stats) = admin(Method::GET, &format!("{path}/internalStats"), None).await;
    assert_eq!(status, StatusCode::OK, "{stats}");
    stats["ledgers"]
        .as_array()
        .expect("ledgers")
        .iter()
        .map(|l| l["ledgerId"].as_u64().expect("ledgerId"))
        .collect()
}

async fn assert_gone(metadata: &dyn MetadataStore, local: &str, ledgers: &[u64]) {
    for id in ledgers {
        assert!(
            metadata.get(&keys::ledger(*id)).await.unwrap().is_none(),
            "ledger {id} of {local} still has metadata"
        );
    }
    assert!(metadata
        .get(&keys::topic("public", "default", local))
        .await
        .unwrap()
        .is_none());
    assert!(metadata
        .list(&keys::cursors_prefix("public", "default", local))
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_topics_removes_their_ledgers_and_cursors_from_metadata() {
    let etcd = Etcd::start().await.unwrap();
    let url = etcd.metadata_url("admin");
    let bookie = BookieProcess::start(&url, &[]).await.unwrap();
    let mut broker = BookieProcess::start_broker(
        &url,
        &[
            "--ensemble-size",
            "1",
            "--write-quorum",
            "1",
            "--ack-quorum",
            "1",
            "--max-entries-per-ledger",
            "10",
        ],
    )
    .await
    .unwrap();
    let metadata = magnetar_metadata::connect(&url).await.unwrap();
    let base = format!(
        "{}/admin/v2/persistent/public/default",
        broker.broker_http_url()
    );

    // A topic open on the broker, over several ledgers, with a cursor.
    let hot = "persistent://public/default/hot";
    let pulsar = client(broker.pulsar_url()).await;
    let mut consumer = subscribe(&pulsar, hot, "s").await;
    produce(&pulsar, hot, 35).await;
    receive(&mut consumer, 5).await;
    // A rollover lets appends continue on the old ledger until the new one
    // is in place, so on a loaded machine a ledger may hold many more than
    // 10: produce on until the topic spans three ledgers.
    let mut ledgers = ledgers_of(&format!("{base}/hot")).await;
    for round in 0.. {
        if ledgers.len() >= 3 {
            break;
        }
        assert!(
            round < 50,
            "still {ledgers:?} after {round} more rounds of 10"
        );
        produce(&pulsar, hot, 10).await;
        ledgers = ledgers_of(&format!("{base}/hot")).await;
    }
    for id in &ledgers {
        assert!(metadata.get(&keys::ledger(*id)).await.unwrap().is_some());
    }
    let cursor = keys::cursor("public", "default", "hot", "s");
    assert!(metadata.get(&cursor).await.unwrap().is_some());

    // Refused while the consumer is attached; then deleted for good.
    let (status, answer) = admin(Method::DELETE, &format!("{base}/hot"), None).await;
    assert_eq!(status, StatusCode::PRECONDITION_FAILED, "{answer}");
    assert!(metadata.get(&cursor).await.unwrap().is_some());
    consumer.close().await.unwrap();
    let (status, answer) = admin(Method::DELETE, &format!("{base}/hot"), None).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{answer}");
    assert_gone(metadata.as_ref(), "hot", &ledgers).await;
    let (status, _) = admin(Method::GET, &format!("{base}/hot/internalStats"), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // The bookie was told to drop the data too (and its GC would anyway).
    let mut bookie_client = bookie.client().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    for id in &ledgers {
        loop {
            let (code, _) = wire::read_entry(&mut bookie_client, *id, 0).await.unwrap();
            if code == ErrorCode::NoSuchLedger {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "bookie still serves ledger {id} ({code:?}):\n{}",
                log_tail(&bookie.log_path(), 30)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    // A topic the broker does not have open (it crashed since) is deleted
    // from metadata directly, its unclosed ledger included.
    let cold = "persistent://public/default/cold";
    let cold_consumer = subscribe(&pulsar, cold, "s").await;
    produce(&pulsar, cold, 12).await;
    let cold_ledgers = ledgers_of(&format!("{base}/cold")).await;
    drop(cold_consumer);
    drop(pulsar);
    broker.restart().await.unwrap();
    let (status, answer) = admin(Method::DELETE, &format!("{base}/cold"), None).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{answer}");
    assert_gone(metadata.as_ref(), "cold", &cold_ledgers).await;
    let (status, topics) = admin(Method::GET, &base, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(topics, serde_json::json!([]));

    // The name is free again: a producer creates a new, empty topic.
    let pulsar = client(broker.pulsar_url()).await;
    produce(&pulsar, hot, 1).await;
    let fresh = ledgers_of(&format!("{base}/hot")).await;
    assert!(fresh.iter().all(|id| !ledgers.contains(id)), "{fresh:?}");
    let (_, stats) = admin(Method::GET, &format!("{base}/hot/internalStats"), None).await;
    assert_eq!(stats["numberOfEntries"], 1, "{stats}");
    assert_eq!(stats["cursors"], serde_json::json!({}));
}
