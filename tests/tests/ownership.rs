//! Several `magnetar broker` processes on one etcd and one set of bookies:
//! namespace bundles are owned through lease-bound keys, lookups redirect
//! clients to the owner, and when the owner is killed (-9) or paused past its
//! lease another broker takes its bundles over by fencing, without losing an
//! acknowledged message; the paused one, resumed, acknowledges nothing more.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use magnetar_tests::clients::{client, receive_all, send, subscribe};
use magnetar_tests::cluster::Cluster;

const LEASE_TTL: &str = "3s";

async fn cluster(brokers: usize) -> Cluster {
    Cluster::start(
        1,
        brokers,
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
    .unwrap()
}

/// Bundle owners of public/default: broker id by bundle.
async fn owners(cluster: &Cluster) -> BTreeMap<String, String> {
    cluster.owners("public", "default").await.unwrap()
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
    let owned = owners(&cluster).await;
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
    let owner_id = owners(&cluster)
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
    let new_owner: HashSet<String> = owners(&cluster).await.into_values().collect();
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
    let owner_id = owners(&cluster).await.into_values().next().unwrap();
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
    let owned: HashSet<String> = owners(&cluster).await.into_values().collect();
    assert!(
        !owned.contains(&zombie.broker_addr()),
        "the resumed broker still owns bundles: {owned:?}"
    );
}
