//! `magnetar standalone`: embedded metadata and a bookie in one process keep
//! their data across kill -9: entries written to the bookie over gRPC read
//! back the same, and what the broker keeps in the embedded metadata store
//! (a namespace created over admin REST, a topic's ledgers and cursor) is
//! still there, so the topic's messages are all delivered again.

use bytes::Bytes;
use magnetar_proto::bookie::{AddBatch, AddEntry, ErrorCode, ReadEntriesRequest};
use magnetar_tests::{clients, wire, BookieProcess};
use pulsar::consumer::{ConsumerOptions, InitialPosition};
use tokio_stream::StreamExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standalone_keeps_entries_across_kill9() {
    let mut standalone = BookieProcess::start_standalone(&[]).await.unwrap();
    let mut client = standalone.client().await.unwrap();
    let entries: Vec<AddEntry> = (0..50)
        .map(|e| AddEntry {
            ledger_id: 42,
            entry_id: e,
            lac: e - 1,
            master_key: Bytes::from_static(b"k"),
            recovery: false,
            payload: Bytes::from(format!("standalone-{e}")),
        })
        .collect();
    let batch = AddBatch {
        batch_id: 1,
        entries,
    };
    let mut replies = client
        .add_entries(tokio_stream::iter(vec![batch]))
        .await
        .unwrap()
        .into_inner();
    let reply = replies.next().await.unwrap().unwrap();
    assert!(reply.results.iter().all(|r| r.code == ErrorCode::Ok as i32));
    // Read back through the bookie's read RPC before the crash...
    for e in [0, 17, 49] {
        let (code, payload) = wire::read_entry(&mut client, 42, e).await.unwrap();
        assert_eq!(code, ErrorCode::Ok);
        assert_eq!(payload, Bytes::from(format!("standalone-{e}")));
    }

    // Metadata the broker writes: a namespace, a topic's ledgers and its
    // subscription's cursor.
    let admin = reqwest::Client::new();
    let namespace = format!(
        "{}/admin/v2/namespaces/public/survivor",
        standalone.broker_http_url()
    );
    let created = admin.put(&namespace).send().await.unwrap();
    assert!(created.status().is_success(), "{}", created.status());
    let topic = "persistent://public/survivor/kept";
    let pulsar = clients::client(&standalone.pulsar_url()).await;
    let consumer = clients::subscribe(&pulsar, topic).await;
    let sent = clients::send_stored(&pulsar, topic, 0..20).await;
    assert_eq!(sent.len(), 20);
    drop(consumer);
    drop(pulsar);

    standalone.restart().await.unwrap();
    let mut client = standalone.client().await.unwrap();
    let read = client
        .read_entries(ReadEntriesRequest {
            ledger_id: 42,
            first_entry_id: 0,
            last_entry_id: 49,
            max_bytes: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(read.code, ErrorCode::Ok as i32, "{}", read.message);
    let payloads: Vec<Bytes> = read.entries.into_iter().map(|e| e.payload).collect();
    let expected: Vec<Bytes> = (0..50)
        .map(|e| Bytes::from(format!("standalone-{e}")))
        .collect();
    assert_eq!(payloads, expected);

    // The namespace and the topic's messages and subscription are still there: a new
    // subscription from the earliest gets all 20, where they were stored.
    let listed: Vec<String> = serde_json::from_str(
        &reqwest::get(format!(
            "{}/admin/v2/namespaces/public",
            standalone.broker_http_url()
        ))
        .await
        .unwrap()
        .text()
        .await
        .unwrap(),
    )
    .unwrap();
    assert!(
        listed.contains(&"public/survivor".to_string()),
        "{listed:?}"
    );
    let pulsar = clients::client(&standalone.pulsar_url()).await;
    let mut fresh = pulsar
        .consumer()
        .with_topic(topic)
        .with_subscription("fresh")
        .with_options(ConsumerOptions::default().with_initial_position(InitialPosition::Earliest))
        .build::<Vec<u8>>()
        .await
        .unwrap();
    let got = clients::receive_all_stored(&mut fresh, 20).await;
    assert_eq!(got, sent, "the topic's messages after kill -9");
    let internal: serde_json::Value = serde_json::from_str(
        &reqwest::get(format!(
            "{}/admin/v2/persistent/public/survivor/kept/internalStats",
            standalone.broker_http_url()
        ))
        .await
        .unwrap()
        .text()
        .await
        .unwrap(),
    )
    .unwrap();
    assert!(
        internal["cursors"]["sub"].is_object(),
        "the subscription made before the crash is gone: {internal}"
    );
}
