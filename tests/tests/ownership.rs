//! Several `magnetar broker` processes on one etcd and one set of bookies:
//! namespace bundles are owned through lease-bound keys, lookups redirect
//! clients to the owner, and when the owner is killed (-9) or paused past its
//! lease another broker takes its bundles over by fencing, without losing an
//! acknowledged message; the paused one, resumed, acknowledges nothing more.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use futures::TryStreamExt;
use magnetar_metadata::{keys, MetadataStore};
use magnetar_tests::{BookieProcess, Etcd};
use pulsar::consumer::{ConsumerOptions, InitialPosition};
use pulsar::{Consumer, Pulsar, SubType, TokioExecutor};

const RECEIVE_TIMEOUT: Duration = Duration::from_secs(40);
const LEASE_TTL: &str = "3s";

struct Cluster {
    _etcd: Etcd,
    metadata: std::sync::Arc<dyn MetadataStore>,
    _bookies: Vec<BookieProcess>,
    brokers: Vec<BookieProcess>,
}

async fn cluster(brokers: usize) -> Cluster {
    let etcd = Etcd::start().await.unwrap();
    let url = etcd.metadata_url("cluster");
    let bookie = BookieProcess::start(&url, &["--lease-ttl-ms", "2000"])
        .await
        .unwrap();
    let mut started = Vec::new();
    for _ in 0..brokers {
        started.push(
            BookieProcess::start_broker(
                &url,
                &[
                    "--ensemble-size",
                    "1",
                    "--write-quorum",
                    "1",
                    "--ack-quorum",
                    "1",
                    "--lease-ttl",
                    LEASE_TTL,
                ],
            )
            .await
            .unwrap(),
        );
    }
    let metadata = magnetar_metadata::connect(&url).await.unwrap();
    Cluster {
        _etcd: etcd,
        metadata,
        _bookies: vec![bookie],
        brokers: started,
    }
}

/// Bundle ownership keys of public/default and the broker id in each.
async fn owners(metadata: &dyn MetadataStore) -> BTreeMap<String, String> {
    let prefix = keys::bundle_owners_prefix("public", "default");
    metadata
        .list(&prefix)
        .await
        .unwrap()
        .into_iter()
        .map(|kv| {
            let owner: serde_json::Value = serde_json::from_slice(&kv.value).unwrap();
            (kv.key, owner["brokerId"].as_str().unwrap().to_string())
        })
        .collect()
}

async fn client(url: &str) -> Pulsar<TokioExecutor> {
    // Few connection retries: a lookup answer naming a dead broker should
    // fail fast so the next lookup can find the new owner.
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

async fn subscribe(
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

/// Sends `msg-i` for each i; returns the ones the broker acknowledged.
async fn send(
    pulsar: &Pulsar<TokioExecutor>,
    topic: &str,
    range: std::ops::Range<u32>,
) -> Vec<u32> {
    // Until a dead owner's lease expires, lookups still name it and the
    // crate gives up on connecting; a real application retries, so do we.
    let deadline = tokio::time::Instant::now() + RECEIVE_TIMEOUT;
    let mut producer = loop {
        match pulsar.producer().with_topic(topic).build().await {
            Ok(producer) => break producer,
            Err(e) if tokio::time::Instant::now() < deadline => {
                eprintln!("producer not ready yet: {e}");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => panic!("no producer on {topic}: {e}"),
        }
    };
    let mut acked = Vec::new();
    for i in range {
        let receipt = match producer
            .send_non_blocking(format!("msg-{i:05}").into_bytes())
            .await
        {
            Ok(receipt) => receipt.await,
            Err(e) => Err(e),
        };
        if receipt.is_ok() {
            acked.push(i);
        }
    }
    let _ = producer.close().await;
    acked
}

/// Receives until nothing arrives for a while; the numbers in order.
async fn receive_all(consumer: &mut Consumer<Vec<u8>, TokioExecutor>, at_least: usize) -> Vec<u32> {
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
        let text = String::from_utf8(msg.payload.data.clone()).unwrap();
        got.push(text.trim_start_matches("msg-").parse().unwrap());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookups_spread_bundles_and_redirect_to_the_owner() {
    let cluster = cluster(2).await;
    // Every client talks to the first broker only; topics of bundles the
    // second one owns are redirected there.
    let pulsar = client(&cluster.brokers[0].pulsar_url()).await;
    let topics: Vec<String> = (0..12)
        .map(|i| format!("persistent://public/default/spread-{i}"))
        .collect();
    for topic in &topics {
        let mut consumer = subscribe(&pulsar, topic).await;
        assert_eq!(send(&pulsar, topic, 0..5).await, (0..5).collect::<Vec<_>>());
        assert_eq!(
            receive_all(&mut consumer, 5).await,
            (0..5).collect::<Vec<_>>()
        );
    }
    let owned = owners(cluster.metadata.as_ref()).await;
    // The HTTP lookup of any broker names the same owner as the binary one.
    for topic in &topics {
        let local = topic.trim_start_matches("persistent://");
        for broker in &cluster.brokers {
            let url = format!(
                "{}/lookup/v2/topic/persistent/{local}",
                broker.broker_http_url()
            );
            let body = reqwest::get(&url).await.unwrap().text().await.unwrap();
            let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
            let owner = answer["brokerUrl"]
                .as_str()
                .unwrap()
                .trim_start_matches("pulsar://");
            assert!(owned.values().any(|id| id == owner), "{topic}: {answer}");
        }
    }
    let ids: HashSet<&String> = owned.values().collect();
    assert_eq!(
        owned.len(),
        4,
        "12 topics should touch all 4 bundles: {owned:?}"
    );
    assert_eq!(
        ids.len(),
        2,
        "bundles should be spread over both brokers: {owned:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_owner_bundles_move_and_acknowledged_messages_survive() {
    let mut cluster = cluster(2).await;
    let topic = "persistent://public/default/failover-kill";
    let first = client(&cluster.brokers[0].pulsar_url()).await;
    let mut acked = send(&first, topic, 0..100).await;
    assert_eq!(acked.len(), 100);
    let owner_id = owners(cluster.metadata.as_ref())
        .await
        .into_values()
        .next()
        .expect("a bundle is owned");
    let owner = cluster
        .brokers
        .iter()
        .position(|b| b.broker_addr() == owner_id)
        .expect("the owner is one of ours");
    let survivor = 1 - owner;
    drop(first);
    cluster.brokers[owner].kill9().unwrap();

    // A client of the survivor gets the topic once the lease has expired.
    let second = client(&cluster.brokers[survivor].pulsar_url()).await;
    acked.extend(send(&second, topic, 100..200).await);
    let mut consumer = subscribe(&second, topic).await;
    let got = receive_all(&mut consumer, acked.len()).await;
    assert_eq!(
        got, acked,
        "acknowledged messages lost, reordered or duplicated"
    );
    let new_owner: HashSet<String> = owners(cluster.metadata.as_ref())
        .await
        .into_values()
        .collect();
    assert!(new_owner.contains(&cluster.brokers[survivor].broker_addr()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_owner_is_fenced_and_acknowledges_nothing_after_resuming() {
    let cluster = cluster(2).await;
    let topic = "persistent://public/default/failover-pause";
    // Make broker 0 the owner: the first lookup of an unowned bundle that
    // reaches a broker holding the fewest bundles stays there.
    let zombie_client = client(&cluster.brokers[0].pulsar_url()).await;
    let mut acked = send(&zombie_client, topic, 0..50).await;
    let owner_id = owners(cluster.metadata.as_ref())
        .await
        .into_values()
        .next()
        .unwrap();
    let (zombie, survivor) = if owner_id == cluster.brokers[0].broker_addr() {
        (&cluster.brokers[0], &cluster.brokers[1])
    } else {
        (&cluster.brokers[1], &cluster.brokers[0])
    };
    let mut zombie_producer = zombie_client
        .producer()
        .with_topic(topic)
        .build()
        .await
        .unwrap();
    zombie.pause().unwrap();
    // Past the lease: the survivor takes the bundle and writes.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let second = client(&survivor.pulsar_url()).await;
    acked.extend(send(&second, topic, 50..100).await);
    // Sends queued at the paused owner before it wakes up.
    let mut pending = Vec::new();
    for i in 100..110u32 {
        if let Ok(receipt) = zombie_producer
            .send_non_blocking(format!("msg-{i:05}").into_bytes())
            .await
        {
            pending.push((i, receipt));
        }
    }
    zombie.resume().unwrap();
    for (i, receipt) in pending {
        if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_secs(20), receipt).await {
            acked.push(i);
        }
    }
    let mut consumer = subscribe(&second, topic).await;
    let got = receive_all(&mut consumer, acked.len()).await;
    let acked_set: HashSet<u32> = acked.iter().copied().collect();
    let got_set: HashSet<u32> = got.iter().copied().collect();
    assert!(
        acked_set.is_subset(&got_set),
        "acknowledged messages lost: {:?}",
        acked_set.difference(&got_set).collect::<Vec<_>>()
    );
    assert_eq!(got.len(), got_set.len(), "duplicates: {got:?}");
    let owned: HashSet<String> = owners(cluster.metadata.as_ref())
        .await
        .into_values()
        .collect();
    assert!(
        !owned.contains(&zombie.broker_addr()),
        "the resumed broker still owns bundles: {owned:?}"
    );
}
