//! `magnetar standalone`: embedded metadata and a bookie in one process keep
//! their data across kill -9.

use bytes::Bytes;
use magnetar_proto::bookie::{AddBatch, AddEntry, ErrorCode, ReadEntriesRequest};
use magnetar_tests::BookieProcess;
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

    standalone.restart().await.unwrap();
    // The embedded metadata store reopened its directory too.
    assert!(standalone.data_dir().join("metadata").is_dir());
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
}
