//! A `magnetar bookie` process against a real etcd: durability across
//! kill -9, fencing, master keys, concurrency, bad input, registration.

use std::time::{Duration, Instant};

use bytes::Bytes;
use magnetar_metadata::keys;
use magnetar_proto::bookie::{
    AddBatch, AddBatchResult, AddEntry, DeleteLedgerRequest, ErrorCode, FenceRequest,
    ReadEntriesRequest, ReadLacRequest,
};
use magnetar_tests::wire::{self, entry, payload_for, MASTER_KEY as KEY};
use magnetar_tests::{BookieProcess, Etcd};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

/// One stream's batch results (the test kit's helper, unwrapped).
async fn add_batches(
    client: &mut wire::BookieRpc,
    batches: Vec<Vec<AddEntry>>,
) -> Vec<AddBatchResult> {
    wire::add_batches(client, batches).await.unwrap()
}

async fn add_one(client: &mut wire::BookieRpc, e: AddEntry) -> ErrorCode {
    let results = add_batches(client, vec![vec![e]]).await;
    ErrorCode::try_from(results[0].results[0].code).unwrap()
}

async fn read(client: &mut wire::BookieRpc, ledger_id: u64, entry_id: i64) -> (ErrorCode, Bytes) {
    wire::read_entry(client, ledger_id, entry_id).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_entries_survive_kill9_byte_for_byte() {
    let etcd = Etcd::start().await.unwrap();
    let mut bookie = BookieProcess::start(&etcd.metadata_url("kill9"), &[])
        .await
        .unwrap();

    // Several writers stream adds; the bookie is killed while they are in flight.
    let acks_seen = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut writers = Vec::new();
    for w in 0..4u64 {
        let mut client = bookie.client().await.unwrap();
        let acks_seen = acks_seen.clone();
        writers.push(tokio::spawn(async move {
            let (tx, rx) = mpsc::channel::<AddBatch>(8);
            let mut responses = client
                .add_entries(ReceiverStream::new(rx))
                .await?
                .into_inner();
            let ledger = 100 + w;
            let sender = tokio::spawn(async move {
                for batch_id in 0..10_000u64 {
                    let entries = (0..10)
                        .map(|i| {
                            let e = (batch_id * 10 + i) as i64;
                            entry(ledger, e, payload_for(ledger, e, 700 + (e as usize % 300)))
                        })
                        .collect();
                    if tx.send(AddBatch { batch_id, entries }).await.is_err() {
                        break;
                    }
                }
            });
            let mut acked = Vec::new();
            while let Ok(Some(r)) = responses.message().await {
                for (i, res) in r.results.iter().enumerate() {
                    if res.code == ErrorCode::Ok as i32 {
                        acked.push((ledger, (r.batch_id * 10 + i as u64) as i64));
                        acks_seen.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                }
            }
            sender.abort();
            anyhow::Ok(acked)
        }));
    }
    // Let writers see some acknowledgements, then kill without warning.
    let started = Instant::now();
    while acks_seen.load(std::sync::atomic::Ordering::Relaxed) < 2000 {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "no progress before the kill"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    bookie.kill9().unwrap();
    let mut acked = Vec::new();
    for w in writers {
        acked.extend(w.await.unwrap().unwrap());
    }
    assert!(
        acked.len() >= 1000,
        "too few acks before the kill: {}",
        acked.len()
    );

    bookie.restart().await.unwrap();
    let mut client = bookie.client().await.unwrap();
    let mut by_ledger: std::collections::BTreeMap<u64, Vec<i64>> = Default::default();
    for (ledger, e) in acked {
        by_ledger.entry(ledger).or_default().push(e);
    }
    for (ledger, mut ids) in by_ledger {
        ids.sort_unstable();
        let mut stored = std::collections::HashMap::new();
        let mut next = 0i64;
        let last = *ids.last().unwrap();
        while next <= last {
            let r = client
                .read_entries(ReadEntriesRequest {
                    ledger_id: ledger,
                    first_entry_id: next,
                    last_entry_id: last,
                    max_bytes: 0,
                })
                .await
                .unwrap()
                .into_inner();
            if r.entries.is_empty() {
                break;
            }
            next = r.entries.last().unwrap().entry_id + 1;
            stored.extend(r.entries.into_iter().map(|e| (e.entry_id, e.payload)));
        }
        for e in ids {
            let data = stored
                .get(&e)
                .unwrap_or_else(|| panic!("acknowledged entry {ledger}/{e} lost"));
            assert_eq!(*data, payload_for(ledger, e, 700 + (e as usize % 300)));
        }
    }
}

async fn reqwest_metrics(bookie: &BookieProcess) -> String {
    http_get(&bookie.http_addr(), "/metrics")
        .await
        .unwrap_or_default()
}

async fn http_get(addr: &str, path: &str) -> anyhow::Result<String> {
    Ok(reqwest::get(format!("http://{addr}{path}"))
        .await?
        .text()
        .await?)
}

fn metric(body: &str, name: &str) -> f64 {
    body.lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fence_refuses_later_adds_durably_and_returns_lac() {
    let etcd = Etcd::start().await.unwrap();
    let mut bookie = BookieProcess::start(&etcd.metadata_url("fence"), &[])
        .await
        .unwrap();
    let mut client = bookie.client().await.unwrap();
    let ledger = 7;
    let batch: Vec<_> = (0..5)
        .map(|e| entry(ledger, e, payload_for(ledger, e, 64)))
        .collect();
    let results = add_batches(&mut client, vec![batch]).await;
    assert!(results[0]
        .results
        .iter()
        .all(|r| r.code == ErrorCode::Ok as i32));

    let fenced = client
        .fence(FenceRequest {
            ledger_id: ledger,
            master_key: Bytes::from_static(KEY),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(fenced.code, ErrorCode::Ok as i32, "{}", fenced.message);
    // The last add piggybacked LAC 3 (entry 4's predecessor).
    assert_eq!(fenced.lac, 3);
    assert_eq!(fenced.last_entry_id, 4);

    assert_eq!(
        add_one(&mut client, entry(ledger, 5, payload_for(ledger, 5, 64))).await,
        ErrorCode::Fenced
    );
    // A recovering writer passes the fence.
    let mut recovery = entry(ledger, 5, payload_for(ledger, 5, 64));
    recovery.recovery = true;
    assert_eq!(add_one(&mut client, recovery).await, ErrorCode::Ok);

    // The fence is durable: still refused after kill -9 and restart.
    bookie.restart().await.unwrap();
    let mut client = bookie.client().await.unwrap();
    assert_eq!(
        add_one(&mut client, entry(ledger, 6, payload_for(ledger, 6, 64))).await,
        ErrorCode::Fenced
    );
    let lac = client
        .read_lac(ReadLacRequest {
            ledger_id: ledger,
            wait_past: None,
            timeout_ms: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(lac.fenced);
    assert_eq!(lac.last_entry_id, 5);

    // Fencing a ledger the bookie never saw still blocks the old writer.
    let unseen = client
        .fence(FenceRequest {
            ledger_id: 8,
            master_key: Bytes::from_static(KEY),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(unseen.code, ErrorCode::Ok as i32);
    assert_eq!(unseen.lac, -1);
    assert_eq!(
        add_one(&mut client, entry(8, 0, payload_for(8, 0, 8))).await,
        ErrorCode::Fenced
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_master_key_is_refused() {
    let etcd = Etcd::start().await.unwrap();
    let bookie = BookieProcess::start(&etcd.metadata_url("mkey"), &[])
        .await
        .unwrap();
    let mut client = bookie.client().await.unwrap();
    assert_eq!(
        add_one(&mut client, entry(3, 0, payload_for(3, 0, 10))).await,
        ErrorCode::Ok
    );
    let mut bad = entry(3, 1, payload_for(3, 1, 10));
    bad.master_key = Bytes::from_static(b"someone-else");
    assert_eq!(add_one(&mut client, bad).await, ErrorCode::BadMasterKey);
    let fence = client
        .fence(FenceRequest {
            ledger_id: 3,
            master_key: Bytes::from_static(b"someone-else"),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(fence.code, ErrorCode::BadMasterKey as i32);
    // The refused add stored nothing, and the ledger is still writable.
    assert_eq!(read(&mut client, 3, 1).await.0, ErrorCode::NoSuchEntry);
    assert_eq!(
        add_one(&mut client, entry(3, 1, payload_for(3, 1, 10))).await,
        ErrorCode::Ok
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writers_on_many_ledgers() {
    let etcd = Etcd::start().await.unwrap();
    let bookie = BookieProcess::start(&etcd.metadata_url("conc"), &[])
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for w in 0..16u64 {
        let mut client = bookie.client().await.unwrap();
        tasks.push(tokio::spawn(async move {
            // Each writer owns 8 ledgers and interleaves them in every batch.
            let batches: Vec<Vec<AddEntry>> = (0..25i64)
                .map(|b| {
                    (0..8u64)
                        .flat_map(|l| {
                            let ledger = 1000 + w * 8 + l;
                            (0..4).map(move |i| {
                                let e = b * 4 + i;
                                entry(ledger, e, payload_for(ledger, e, 256))
                            })
                        })
                        .collect()
                })
                .collect();
            let results = add_batches(&mut client, batches).await;
            assert_eq!(results.len(), 25);
            for (i, r) in results.iter().enumerate() {
                assert_eq!(r.batch_id, i as u64, "results out of order");
                assert!(r.results.iter().all(|x| x.code == ErrorCode::Ok as i32));
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let mut client = bookie.client().await.unwrap();
    for ledger in 1000..1000 + 16 * 8 {
        let r = client
            .read_entries(ReadEntriesRequest {
                ledger_id: ledger,
                first_entry_id: 0,
                last_entry_id: 99,
                max_bytes: 0,
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(r.code, ErrorCode::Ok as i32, "{}", r.message);
        let ids: Vec<i64> = r.entries.iter().map(|e| e.entry_id).collect();
        assert_eq!(ids, (0..100).collect::<Vec<_>>(), "ledger {ledger}");
        for e in &r.entries {
            assert_eq!(e.payload, payload_for(ledger, e.entry_id, 256));
        }
        assert_eq!(r.lac, 98);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_clear_errors_and_the_bookie_keeps_serving() {
    let etcd = Etcd::start().await.unwrap();
    let bookie = BookieProcess::start(&etcd.metadata_url("bad"), &["--max-entry-bytes", "1024"])
        .await
        .unwrap();
    let mut client = bookie.client().await.unwrap();

    // One batch mixing good and bad entries: each gets its own answer.
    let mut negative = entry(5, 1, Bytes::from_static(b"x"));
    negative.entry_id = -3;
    let mut no_key = entry(5, 2, Bytes::from_static(b"x"));
    no_key.master_key = Bytes::new();
    let mut bad_lac = entry(5, 3, Bytes::from_static(b"x"));
    bad_lac.lac = -7;
    let batch = vec![
        entry(5, 0, payload_for(5, 0, 1024)),
        entry(5, 1, Bytes::from(vec![0u8; 1025])),
        negative,
        no_key,
        entry(0, 0, Bytes::from_static(b"x")),
        bad_lac,
        entry(5, 4, payload_for(5, 4, 10)),
    ];
    let results = add_batches(&mut client, vec![batch]).await;
    let codes: Vec<ErrorCode> = results[0]
        .results
        .iter()
        .map(|r| ErrorCode::try_from(r.code).unwrap())
        .collect();
    assert_eq!(
        codes,
        vec![
            ErrorCode::Ok,
            ErrorCode::TooLarge,
            ErrorCode::InvalidRequest,
            ErrorCode::InvalidRequest,
            ErrorCode::InvalidRequest,
            ErrorCode::InvalidRequest,
            ErrorCode::Ok,
        ]
    );
    assert!(results[0].results[1].message.contains("1024"));
    assert_eq!(read(&mut client, 5, 1).await.0, ErrorCode::NoSuchEntry);

    // Reads of what does not exist, and nonsense ranges.
    assert_eq!(read(&mut client, 999, 0).await.0, ErrorCode::NoSuchLedger);
    assert_eq!(read(&mut client, 5, 77).await.0, ErrorCode::NoSuchEntry);
    let range = client
        .read_entries(ReadEntriesRequest {
            ledger_id: 5,
            first_entry_id: 9,
            last_entry_id: 2,
            max_bytes: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(range.code, ErrorCode::InvalidRequest as i32);

    // Garbage on the gRPC port: a raw TCP peer, then a gRPC call whose body
    // is not a valid protobuf message. Both fail for that caller only.
    {
        use tokio::io::AsyncWriteExt;
        let mut raw = tokio::net::TcpStream::connect(bookie.grpc_addr())
            .await
            .unwrap();
        let _ = raw.write_all(b"\x00\xffthis is not http2\r\n\r\n").await;
        let _ = raw.write_all(&[0xAB; 4096]).await;
    }
    let garbage = grpc_raw_call(
        &bookie.grpc_addr(),
        "/magnetar.bookie.v1.Bookie/ReadEntry",
        &[0x0a, 0xff, 0xff],
    )
    .await;
    assert!(
        garbage.is_err() || garbage.as_ref().is_ok_and(|s| s != "0"),
        "garbage accepted: {garbage:?}"
    );

    // Still serving, with the good entries intact.
    let mut client = bookie.client().await.unwrap();
    let (code, data) = read(&mut client, 5, 0).await;
    assert_eq!(code, ErrorCode::Ok);
    assert_eq!(data, payload_for(5, 0, 1024));
    assert_eq!(
        add_one(&mut client, entry(5, 5, payload_for(5, 5, 10))).await,
        ErrorCode::Ok
    );
}

/// Sends one gRPC request with an arbitrary body over HTTP/2 and returns the
/// grpc-status the server answered.
async fn grpc_raw_call(addr: &str, path: &str, body: &[u8]) -> anyhow::Result<String> {
    let mut framed = vec![0u8];
    framed.extend_from_slice(&(body.len() as u32).to_be_bytes());
    framed.extend_from_slice(body);
    let client = reqwest::Client::builder().http2_prior_knowledge().build()?;
    let resp = client
        .post(format!("http://{addr}{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(framed)
        .send()
        .await?;
    let status = resp
        .headers()
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let _ = resp.bytes().await;
    Ok(status.unwrap_or_else(|| "trailers-only-or-missing".into()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lac_long_poll_waits_for_a_newer_lac() {
    let etcd = Etcd::start().await.unwrap();
    let bookie = BookieProcess::start(&etcd.metadata_url("lac"), &[])
        .await
        .unwrap();
    let mut client = bookie.client().await.unwrap();
    assert_eq!(
        add_one(&mut client, entry(9, 0, payload_for(9, 0, 10))).await,
        ErrorCode::Ok
    );

    let mut poller = bookie.client().await.unwrap();
    let poll = tokio::spawn(async move {
        poller
            .read_lac(ReadLacRequest {
                ledger_id: 9,
                wait_past: Some(1),
                timeout_ms: 30_000,
            })
            .await
            .map(|r| r.into_inner())
    });
    for e in 1..=3 {
        assert_eq!(
            add_one(&mut client, entry(9, e, payload_for(9, e, 10))).await,
            ErrorCode::Ok
        );
    }
    let answer = poll.await.unwrap().unwrap();
    assert_eq!(answer.code, ErrorCode::Ok as i32);
    assert!(
        answer.lac > 1,
        "long poll answered before LAC passed 1: {}",
        answer.lac
    );

    // Nothing newer arrives: the poll ends at its timeout with the old LAC.
    let quiet = client
        .read_lac(ReadLacRequest {
            ledger_id: 9,
            wait_past: Some(100),
            timeout_ms: 300,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(quiet.lac, 2);
    assert_eq!(quiet.last_entry_id, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_ledger_drops_its_entries_across_restart() {
    let etcd = Etcd::start().await.unwrap();
    let mut bookie = BookieProcess::start(&etcd.metadata_url("del"), &[])
        .await
        .unwrap();
    let mut client = bookie.client().await.unwrap();
    for l in [21u64, 22] {
        let batch = (0..3).map(|e| entry(l, e, payload_for(l, e, 32))).collect();
        add_batches(&mut client, vec![batch]).await;
    }
    let r = client
        .delete_ledger(DeleteLedgerRequest {
            ledger_id: 21,
            master_key: Bytes::from_static(KEY),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.code, ErrorCode::Ok as i32);
    bookie.restart().await.unwrap();
    let mut client = bookie.client().await.unwrap();
    assert_eq!(read(&mut client, 21, 0).await.0, ErrorCode::NoSuchLedger);
    assert_eq!(read(&mut client, 22, 2).await.0, ErrorCode::Ok);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registration_follows_the_process_lifetime() {
    let etcd = Etcd::start().await.unwrap();
    let url = etcd.metadata_url("reg");
    let mut bookie = BookieProcess::start(&url, &["--lease-ttl-ms", "2000"])
        .await
        .unwrap();
    let store = magnetar_metadata::connect(&url).await.unwrap();
    let key = keys::bookie_available(&bookie.grpc_addr());
    let kv = store.get(&key).await.unwrap().expect("bookie registered");
    let reg: keys::BookieRegistration = serde_json::from_slice(&kv.value).unwrap();
    assert_eq!(reg.address, bookie.grpc_addr());
    assert!(!reg.read_only);
    assert!(reg.total_disk_bytes > 0);

    // Graceful stop: the lease is revoked, the key goes at once.
    bookie.terminate().unwrap();
    assert!(
        store.get(&key).await.unwrap().is_none(),
        "registration left after SIGTERM"
    );

    // kill -9: the key goes when the lease expires.
    bookie.restart().await.unwrap();
    assert!(store.get(&key).await.unwrap().is_some());
    bookie.kill9().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while store.get(&key).await.unwrap().is_some() {
        assert!(Instant::now() < deadline, "registration outlived its lease");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_disk_turns_the_bookie_read_only_but_reads_go_on() {
    let etcd = Etcd::start().await.unwrap();
    let url = etcd.metadata_url("ro");
    let mut bookie = BookieProcess::start(&url, &[]).await.unwrap();
    let mut client = bookie.client().await.unwrap();
    assert_eq!(
        add_one(&mut client, entry(4, 0, payload_for(4, 0, 10))).await,
        ErrorCode::Ok
    );

    // Water marks below any real usage: the disk counts as full.
    bookie.set_extra_args(&[
        "--disk-high-water",
        "0.000001",
        "--disk-low-water",
        "0.0000005",
    ]);
    bookie.restart().await.unwrap();
    let mut client = bookie.client().await.unwrap();
    assert_eq!(
        add_one(&mut client, entry(4, 1, payload_for(4, 1, 10))).await,
        ErrorCode::ReadOnly
    );
    assert_eq!(read(&mut client, 4, 0).await.0, ErrorCode::Ok);
    let health = http_get(&bookie.http_addr(), "/health").await.unwrap();
    assert!(health.contains("\"writable\":false"), "{health}");
    let store = magnetar_metadata::connect(&url).await.unwrap();
    let kv = store
        .get(&keys::bookie_available(&bookie.grpc_addr()))
        .await
        .unwrap()
        .unwrap();
    let reg: keys::BookieRegistration = serde_json::from_slice(&kv.value).unwrap();
    assert!(reg.read_only);
    let metrics = reqwest_metrics(&bookie).await;
    assert_eq!(metric(&metrics, "magnetar_bookie_read_only"), 1.0);
}
