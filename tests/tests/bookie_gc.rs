//! A `magnetar bookie` against a real etcd garbage collects ledgers whose
//! metadata is gone (after two consecutive scans without it), keeps the
//! others, and the collection survives a restart.

use std::time::{Duration, Instant};

use bytes::Bytes;
use magnetar_metadata::{keys, Expect};
use magnetar_proto::bookie::ErrorCode;
use magnetar_tests::{log_tail, wire, BookieProcess, Etcd};

/// Adds entries 0..count of `ledger_id` in one batch; returns their codes.
async fn add_entries(client: &mut wire::BookieRpc, ledger_id: u64, count: i64) -> Vec<ErrorCode> {
    let entries = (0..count)
        .map(|entry_id| {
            wire::entry(
                ledger_id,
                entry_id,
                Bytes::from(format!("ledger {ledger_id} entry {entry_id}")),
            )
        })
        .collect();
    wire::add_batches(client, vec![entries])
        .await
        .unwrap()
        .iter()
        .flat_map(|r| r.results.iter())
        .map(|x| ErrorCode::try_from(x.code).unwrap())
        .collect()
}

async fn read_code(client: &mut wire::BookieRpc, ledger_id: u64, entry_id: i64) -> ErrorCode {
    wire::read_entry(client, ledger_id, entry_id)
        .await
        .unwrap()
        .0
}

async fn wait_until_gone(bookie: &BookieProcess, ledger_id: u64) {
    let mut client = bookie.client().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if read_code(&mut client, ledger_id, 0).await == ErrorCode::NoSuchLedger {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "ledger {ledger_id} was never garbage collected:\n{}",
            log_tail(&bookie.log_path(), 30)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn gc_deleted_metric(bookie: &BookieProcess) -> f64 {
    let body = reqwest::get(format!("http://{}/metrics", bookie.http_addr()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    body.lines()
        .find(|l| l.starts_with("magnetar_bookie_gc_deleted_ledgers_total"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no GC metric in:\n{body}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ledgers_whose_metadata_is_gone_are_collected_and_stay_gone() {
    let etcd = Etcd::start().await.unwrap();
    let url = etcd.metadata_url("gc");
    let metadata = magnetar_metadata::connect(&url).await.unwrap();
    // Ids up to 3 were handed out by this cluster's allocator.
    metadata
        .put(
            &keys::ledger_id_counter(),
            Bytes::from_static(b"3"),
            Expect::Absent,
            None,
        )
        .await
        .unwrap();
    // The bookie only checks that the key exists; the value is the broker's.
    for ledger in [1u64, 2] {
        metadata
            .put(
                &keys::ledger(ledger),
                Bytes::from_static(b"{}"),
                Expect::Absent,
                None,
            )
            .await
            .unwrap();
    }
    let mut bookie = BookieProcess::start(&url, &["--gc-interval-ms", "500"])
        .await
        .unwrap();
    let mut client = bookie.client().await.unwrap();
    // Ledger 3 never had metadata: it goes after two scans, like a deleted one.
    for ledger in [1u64, 2, 3] {
        assert_eq!(
            add_entries(&mut client, ledger, 3).await,
            vec![ErrorCode::Ok; 3],
            "adds to ledger {ledger}"
        );
    }
    wait_until_gone(&bookie, 3).await;
    assert_eq!(read_code(&mut client, 1, 2).await, ErrorCode::Ok);
    assert_eq!(read_code(&mut client, 2, 2).await, ErrorCode::Ok);

    assert!(metadata
        .delete(&keys::ledger(1), Expect::Any)
        .await
        .unwrap());
    wait_until_gone(&bookie, 1).await;
    assert_eq!(read_code(&mut client, 1, 1).await, ErrorCode::NoSuchLedger);
    assert_eq!(read_code(&mut client, 2, 0).await, ErrorCode::Ok);
    assert_eq!(gc_deleted_metric(&bookie).await, 2.0);
    let log = std::fs::read_to_string(bookie.log_path()).unwrap();
    assert_eq!(
        log.matches("ledger garbage collected").count(),
        2,
        "one log line per deletion:\n{log}"
    );

    // Several more scans leave the ledger with metadata alone. (A fixed
    // wait is the subject here: time for scans to run and delete nothing;
    // the bookie exposes no count of scans to wait on.)
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for entry in 0..3 {
        assert_eq!(read_code(&mut client, 2, entry).await, ErrorCode::Ok);
    }

    // The deletions were durable: a kill -9 and restart brings nothing back.
    bookie.restart().await.unwrap();
    let mut client = bookie.client().await.unwrap();
    assert_eq!(read_code(&mut client, 1, 0).await, ErrorCode::NoSuchLedger);
    assert_eq!(read_code(&mut client, 3, 0).await, ErrorCode::NoSuchLedger);
    for entry in 0..3 {
        assert_eq!(read_code(&mut client, 2, entry).await, ErrorCode::Ok);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zero_interval_disables_collection() {
    let etcd = Etcd::start().await.unwrap();
    let url = etcd.metadata_url("gc-off");
    let bookie = BookieProcess::start(&url, &["--gc-interval-ms", "0"])
        .await
        .unwrap();
    let mut client = bookie.client().await.unwrap();
    assert_eq!(add_entries(&mut client, 9, 1).await, vec![ErrorCode::Ok]);
    // The subject: time in which an enabled collector would have scanned
    // several times passes without a deletion.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(read_code(&mut client, 9, 0).await, ErrorCode::Ok);
    assert_eq!(gc_deleted_metric(&bookie).await, 0.0);
}
