//! `magnetar broker` against etcd and separate bookie processes (the
//! disaggregated deployment), driven by the Rust `pulsar` crate: replicated
//! topics survive a broker kill -9 and a bookie kill -9.

use std::time::Duration;

use futures::TryStreamExt;
use magnetar_tests::clients::subscribe;
use magnetar_tests::cluster::wait_cursor_persisted;
use magnetar_tests::{BookieProcess, Etcd};
use pulsar::{Consumer, Pulsar, TokioExecutor};

const RECEIVE_TIMEOUT: Duration = Duration::from_secs(30);

async fn client(broker: &BookieProcess) -> Pulsar<TokioExecutor> {
    Pulsar::builder(broker.pulsar_url(), TokioExecutor)
        .build()
        .await
        .expect("client connects")
}

async fn send_all(pulsar: &Pulsar<TokioExecutor>, topic: &str, range: std::ops::Range<u32>) {
    let mut producer = pulsar.producer().with_topic(topic).build().await.unwrap();
    for i in range {
        producer
            .send_non_blocking(format!("msg-{i:05}").into_bytes())
            .await
            .expect("queued")
            .await
            .expect("receipt");
    }
    producer.close().await.unwrap();
}

/// Receives and acknowledges `n` messages; their payloads, and where the
/// last one is stored.
async fn receive_acked(
    consumer: &mut Consumer<Vec<u8>, TokioExecutor>,
    n: usize,
) -> (Vec<String>, (u64, u64)) {
    let mut got = Vec::new();
    let mut last = (0, 0);
    while got.len() < n {
        let msg = tokio::time::timeout(RECEIVE_TIMEOUT, consumer.try_next())
            .await
            .unwrap_or_else(|_| panic!("timed out after {} of {n}", got.len()))
            .expect("receive")
            .expect("open");
        consumer.ack(&msg).await.expect("ack");
        last = (msg.message_id().ledger_id, msg.message_id().entry_id);
        got.push(String::from_utf8(msg.payload.data.clone()).unwrap());
    }
    (got, last)
}

fn expected(range: std::ops::Range<u32>) -> Vec<String> {
    range.map(|i| format!("msg-{i:05}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_on_etcd_and_four_bookies_survives_broker_and_bookie_crashes() {
    let etcd = Etcd::start().await.unwrap();
    let url = etcd.metadata_url("cluster");
    let mut bookies = Vec::new();
    for _ in 0..4 {
        bookies.push(
            BookieProcess::start(&url, &["--lease-ttl-ms", "2000"])
                .await
                .unwrap(),
        );
    }
    let mut broker = BookieProcess::start_broker(
        &url,
        &[
            "--ensemble-size",
            "3",
            "--write-quorum",
            "2",
            "--ack-quorum",
            "2",
        ],
    )
    .await
    .unwrap();
    let topic = "persistent://public/default/replicated";

    let pulsar = client(&broker).await;
    let mut consumer = subscribe(&pulsar, topic).await;
    send_all(&pulsar, topic, 0..200).await;
    let (got, last) = receive_acked(&mut consumer, 100).await;
    assert_eq!(got, expected(0..100));
    // Wait until the broker has persisted the acks, then crash it.
    wait_cursor_persisted(&broker.broker_http_url(), topic, "sub", last).await;
    drop(consumer);
    drop(pulsar);
    broker.kill9().unwrap();

    // A bookie dies too: recovery of the open ledger and new 3/2/2 ledgers
    // work on the remaining three, and every entry still has a copy.
    bookies[0].kill9().unwrap();
    broker.restart().await.unwrap();
    let pulsar = client(&broker).await;
    let mut consumer = subscribe(&pulsar, topic).await;
    send_all(&pulsar, topic, 200..250).await;
    assert_eq!(
        receive_acked(&mut consumer, 150).await.0,
        expected(100..250)
    );
}
