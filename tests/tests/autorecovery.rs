//! Autorecovery over real processes (etcd, four bookies, two brokers): a
//! bookie killed for good under load, a bookie decommissioned under load,
//! and the auditor killed in the middle of a copy. Each ends with every
//! entry of every closed ledger read back from each bookie of its write
//! set directly (so it is on a full write quorum again), no ledger naming
//! the bookie that left, and every acknowledged message delivered in order.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use magnetar_broker::autorecovery::{BookieRecovery, RecoveryState};
use magnetar_broker::ledger::metadata::LedgerMetadata;
use magnetar_metadata::{keys, MetadataStore};
use magnetar_proto::bookie::ErrorCode;
use magnetar_tests::clients::{client, producer, subscribe, RECEIVE_TIMEOUT};
use magnetar_tests::cluster::Cluster;
use magnetar_tests::{wait_until, wire};

const TOPICS: usize = 3;
/// Bytes per message: enough that the copy has something to pace.
const PAYLOAD_BYTES: usize = 1024;

async fn cluster(extra: &[&str]) -> Cluster {
    let mut args = vec![
        "--ensemble-size",
        "3",
        "--write-quorum",
        "2",
        "--ack-quorum",
        "2",
        "--max-entries-per-ledger",
        "100",
        "--lease-ttl",
        "3s",
        "--lost-bookie-recovery-delay",
        "1s",
    ];
    args.extend_from_slice(extra);
    Cluster::start(4, 2, &args).await.unwrap()
}

fn topic(t: usize) -> String {
    format!("persistent://public/default/recovery-{t}")
}

fn payload(i: u32) -> Vec<u8> {
    let mut bytes = format!("msg-{i:06}-").into_bytes();
    bytes.resize(PAYLOAD_BYTES, b'x');
    bytes
}

fn index_of(payload: &[u8]) -> u32 {
    std::str::from_utf8(&payload[4..10])
        .ok()
        .and_then(|s| s.parse().ok())
        .expect("a numbered payload")
}

/// Producers on every topic, sending pipelined bursts until told to stop
/// (and at least `min_each` acknowledged each); the numbers acknowledged
/// per topic, in order.
struct Load {
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<Vec<u32>>>,
}

impl Load {
    fn start(url: String) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let tasks = (0..TOPICS)
            .map(|t| {
                let (url, stop) = (url.clone(), stop.clone());
                tokio::spawn(async move {
                    let pulsar = client(&url).await;
                    // A durable subscription first, so retention keeps
                    // every ledger until it is consumed.
                    let mut consumer = subscribe(&pulsar, &topic(t)).await;
                    let _ = consumer.close().await;
                    let mut producer = producer(&pulsar, &topic(t)).await;
                    let mut acked = Vec::new();
                    let mut next = 0u32;
                    while !stop.load(Ordering::Relaxed) {
                        let mut receipts = Vec::new();
                        for _ in 0..50 {
                            if let Ok(receipt) = producer.send_non_blocking(payload(next)).await {
                                receipts.push((next, receipt));
                            }
                            next += 1;
                        }
                        for (i, receipt) in receipts {
                            if receipt.await.is_ok() {
                                acked.push(i);
                            }
                        }
                    }
                    let _ = producer.close().await;
                    acked
                })
            })
            .collect();
        Load { stop, tasks }
    }

    async fn finish(self) -> Vec<Vec<u32>> {
        self.stop.store(true, Ordering::Relaxed);
        let mut out = Vec::new();
        for task in self.tasks {
            out.push(task.await.unwrap());
        }
        out
    }
}

async fn ledgers(store: &dyn MetadataStore) -> BTreeMap<u64, LedgerMetadata> {
    store
        .list(&keys::ledgers_prefix())
        .await
        .unwrap()
        .iter()
        .filter_map(|kv| {
            let id = keys::parse_ledger_key(&kv.key)?;
            Some((id, LedgerMetadata::from_bytes(&kv.value).unwrap()))
        })
        .collect()
}

/// Entries stored so far on closed ledgers, across all topics.
async fn closed_entries(store: &dyn MetadataStore) -> i64 {
    ledgers(store)
        .await
        .values()
        .filter(|md| md.is_closed())
        .map(|md| md.last_entry_id + 1)
        .sum()
}

/// Waits until closed ledgers hold at least `entries` entries in all.
async fn wait_closed_entries(cluster: &Cluster, what: &str, entries: i64) {
    let store = cluster.metadata.clone();
    wait_until(what, Duration::from_secs(60), || {
        let store = store.clone();
        async move { closed_entries(store.as_ref()).await >= entries }
    })
    .await;
}

/// The bookie named in the most ensembles: the one whose loss costs most.
async fn busiest_bookie(cluster: &Cluster) -> usize {
    let all = ledgers(cluster.metadata.as_ref()).await;
    (0..cluster.bookies.len())
        .max_by_key(|&i| {
            let id = cluster.bookies[i].grpc_addr();
            all.values()
                .filter(|md| md.ensembles.iter().any(|(_, e)| e.contains(&id)))
                .count()
        })
        .unwrap()
}

async fn record(store: &dyn MetadataStore, bookie: &str) -> Option<BookieRecovery> {
    let kv = store.get(&keys::bookie_recovery(bookie)).await.unwrap()?;
    Some(serde_json::from_slice(&kv.value).unwrap())
}

async fn wait_recovered(cluster: &Cluster, bookie: &str, limit: Duration) -> BookieRecovery {
    let store = cluster.metadata.clone();
    let deadline = Instant::now() + limit;
    wait_until(&format!("{bookie} is re-replicated"), limit, || {
        let store = store.clone();
        async move {
            let record = record(store.as_ref(), bookie).await;
            if Instant::now() + Duration::from_millis(100) >= deadline {
                eprintln!("{bookie} not recovered yet: {record:?}");
            }
            record.is_some_and(|r| r.state == RecoveryState::Done)
        }
    })
    .await;
    record(cluster.metadata.as_ref(), bookie).await.unwrap()
}

/// Every entry of every closed ledger, read from each bookie of its write
/// set; no ledger names `gone`. Returns the entries checked.
async fn assert_fully_replicated(cluster: &Cluster, gone: &str) -> u64 {
    let mut rpcs = BTreeMap::new();
    for bookie in &cluster.bookies {
        if bookie.grpc_addr() != gone {
            rpcs.insert(bookie.grpc_addr(), bookie.client().await.unwrap());
        }
    }
    let mut checked = 0;
    for (id, md) in ledgers(cluster.metadata.as_ref()).await {
        for (first, ensemble) in &md.ensembles {
            assert!(
                !ensemble.iter().any(|b| b == gone),
                "ledger {id} still names {gone} in its ensemble at {first}: {md:?}"
            );
        }
        if !md.is_closed() {
            continue;
        }
        for entry in 0..=md.last_entry_id {
            let mut copies = Vec::new();
            for bookie in md.write_set(entry) {
                let rpc = rpcs.get_mut(&bookie).expect("a live bookie");
                let (code, body) = wire::read_entry(rpc, id, entry).await.unwrap();
                assert_eq!(
                    code,
                    ErrorCode::Ok,
                    "entry {entry} of ledger {id} missing on {bookie}: {md:?}"
                );
                copies.push(body);
            }
            assert!(
                copies.windows(2).all(|w| w[0] == w[1]),
                "entry {entry} of ledger {id} differs between its copies"
            );
            checked += 1;
        }
    }
    checked
}

/// Every acknowledged message of every topic arrives, in order.
async fn assert_delivered(cluster: &Cluster, acked: &[Vec<u32>]) {
    let pulsar = client(&cluster.brokers[0].pulsar_url()).await;
    for (t, acked) in acked.iter().enumerate() {
        let mut consumer = subscribe(&pulsar, &topic(t)).await;
        // Sends that failed may still be stored: only acknowledged ones count.
        let wanted: HashSet<u32> = acked.iter().copied().collect();
        let mut seen = Vec::new();
        while seen.len() < acked.len() {
            let next = futures::TryStreamExt::try_next(&mut consumer);
            let message = tokio::time::timeout(RECEIVE_TIMEOUT, next)
                .await
                .unwrap_or_else(|_| {
                    panic!(
                        "topic {t}: {} of {} acknowledged messages arrived",
                        seen.len(),
                        acked.len()
                    )
                })
                .unwrap()
                .expect("the stream goes on");
            let i = index_of(&message.payload.data);
            consumer.ack(&message).await.unwrap();
            if wanted.contains(&i) {
                seen.push(i);
            }
        }
        assert_eq!(
            &seen, acked,
            "topic {t}: acknowledged messages lost or reordered"
        );
    }
}

fn rate(record: &BookieRecovery, elapsed: Duration) -> String {
    format!(
        "{} fragments, {} entries, {} bytes in {:.1}s ({:.2} MB/s)",
        record.fragments_copied,
        record.entries_copied,
        record.bytes_copied,
        elapsed.as_secs_f64(),
        record.bytes_copied as f64 / elapsed.as_secs_f64() / 1e6
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bookie_killed_for_good_under_load_is_re_replicated_to_a_full_write_quorum() {
    let mut cluster = cluster(&[]).await;
    let load = Load::start(cluster.brokers[0].pulsar_url());
    let store = cluster.metadata.clone();
    wait_closed_entries(&cluster, "some ledgers are closed", 600).await;
    let victim = busiest_bookie(&cluster).await;
    let gone = cluster.bookies[victim].grpc_addr();
    cluster.bookies[victim].kill9().unwrap();
    let killed = Instant::now();
    // Writes go on (ensemble changes) while the auditor copies.
    let before = closed_entries(store.as_ref()).await;
    wait_closed_entries(&cluster, "writes go on after the loss", before + 600).await;
    let acked = load.finish().await;
    let record = wait_recovered(&cluster, &gone, Duration::from_secs(120)).await;
    eprintln!("re-replicated {gone}: {}", rate(&record, killed.elapsed()));
    assert!(record.entries_copied > 0, "{record:?}");
    let checked = assert_fully_replicated(&cluster, &gone).await;
    assert!(checked >= 1200, "only {checked} entries checked");
    assert_delivered(&cluster, &acked).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decommissioned_bookie_is_drained_under_load_while_it_still_runs() {
    let cluster = cluster(&[]).await;
    let load = Load::start(cluster.brokers[0].pulsar_url());
    wait_closed_entries(&cluster, "some ledgers are closed", 600).await;
    let victim = busiest_bookie(&cluster).await;
    let draining = cluster.bookies[victim].grpc_addr();
    let url = format!(
        "{}/admin/v2/bookies/{draining}/decommission",
        cluster.brokers[1].broker_http_url()
    );
    let http = reqwest::Client::new();
    let unknown = http
        .put(format!(
            "{}/admin/v2/bookies/nobody:1/decommission",
            cluster.brokers[1].broker_http_url()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404, "an unknown bookie is refused");
    let asked = http.put(&url).send().await.unwrap();
    assert_eq!(asked.status(), 204, "{:?}", asked.text().await);
    let started = Instant::now();
    let record = wait_recovered(&cluster, &draining, Duration::from_secs(120)).await;
    eprintln!("drained {draining}: {}", rate(&record, started.elapsed()));
    // Ledgers created after the drain never used it; the load still ran.
    let acked = load.finish().await;
    let checked = assert_fully_replicated(&cluster, &draining).await;
    assert!(checked >= 600, "only {checked} entries checked");
    assert!(
        cluster.bookies[victim].client().await.is_ok(),
        "the drained bookie still runs"
    );
    assert_delivered(&cluster, &acked).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_auditor_killed_in_the_middle_of_a_copy_is_succeeded_by_one_that_finishes_it() {
    // About 1 MiB to copy at 64 KiB/s: the copy takes long enough to be
    // cut off half way.
    let mut cluster = cluster(&["--rereplication-rate", "64K"]).await;
    let load = Load::start(cluster.brokers[0].pulsar_url());
    let store = cluster.metadata.clone();
    wait_closed_entries(&cluster, "some ledgers are closed", 1500).await;
    let acked = load.finish().await;
    let victim = busiest_bookie(&cluster).await;
    let gone = cluster.bookies[victim].grpc_addr();
    cluster.bookies[victim].kill9().unwrap();
    wait_until(
        "the auditor has copied part of it",
        Duration::from_secs(90),
        || {
            let store = store.clone();
            let gone = gone.clone();
            async move {
                record(store.as_ref(), &gone)
                    .await
                    .is_some_and(|r| r.state == RecoveryState::Copying && r.entries_copied > 0)
            }
        },
    )
    .await;
    let auditor = store
        .get(&keys::auditor_leader())
        .await
        .unwrap()
        .expect("an auditor");
    let auditor_id = String::from_utf8(auditor.value.to_vec()).unwrap();
    let index = cluster
        .broker_index(&auditor_id)
        .expect("the auditor is one of the brokers");
    let partial = record(store.as_ref(), &gone).await.unwrap();
    cluster.brokers[index].kill9().unwrap();
    let resumed = Instant::now();
    let done = wait_recovered(&cluster, &gone, Duration::from_secs(180)).await;
    eprintln!(
        "{gone}: {} of {} entries copied before the auditor died; done {:.1}s after",
        partial.entries_copied,
        done.entries_copied,
        resumed.elapsed().as_secs_f64()
    );
    assert!(
        done.entries_copied > partial.entries_copied,
        "the successor copied the rest"
    );
    let successor = store
        .get(&keys::auditor_leader())
        .await
        .unwrap()
        .expect("an auditor");
    assert_ne!(successor.value, auditor.value, "another broker finished it");
    assert_fully_replicated(&cluster, &gone).await;
    let survivor = 1 - index;
    let pulsar_url = cluster.brokers[survivor].pulsar_url();
    cluster.brokers.swap(0, survivor);
    assert_eq!(cluster.brokers[0].pulsar_url(), pulsar_url);
    assert_delivered(&cluster, &acked).await;
}
