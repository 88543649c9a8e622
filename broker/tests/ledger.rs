//! The ledger client over a real etcd and real bookie processes: appends,
//! ensemble changes on kill -9 and SIGSTOP, fencing a zombie writer,
//! recovery, and a seeded random mix of all of them.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use magnetar_broker::ledger::bookie_client::{BookieClientConfig, BookieClients};
use magnetar_broker::ledger::metadata::LedgerState;
use magnetar_broker::ledger::{EntryId, LedgerClient, LedgerConfig, LedgerError};
use magnetar_tests::{BookieProcess, Etcd};

struct Cluster {
    _etcd: Etcd,
    url: String,
    bookies: Vec<BookieProcess>,
}

impl Cluster {
    async fn start(bookies: usize) -> Cluster {
        let etcd = Etcd::start().await.unwrap();
        let url = etcd.metadata_url("ledgers");
        let mut started = Vec::new();
        for _ in 0..bookies {
            started.push(
                BookieProcess::start(&url, &["--lease-ttl-ms", "3000"])
                    .await
                    .unwrap(),
            );
        }
        Cluster {
            _etcd: etcd,
            url,
            bookies: started,
        }
    }

    /// A ledger client of its own (as another broker would have).
    async fn client(&self) -> LedgerClient {
        let metadata = magnetar_metadata::connect(&self.url).await.unwrap();
        let config = BookieClientConfig {
            add_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(2),
            ..Default::default()
        };
        LedgerClient::new(metadata, BookieClients::new(config))
    }

    fn bookie(&mut self, id: &str) -> &mut BookieProcess {
        self.bookies
            .iter_mut()
            .find(|b| b.grpc_addr() == id)
            .expect("bookie of the ensemble")
    }
}

fn payload(i: u64) -> Bytes {
    Bytes::from(format!("entry-{i:08}-{}", "x".repeat((i % 97) as usize)))
}

/// Reads a closed ledger whole and checks it is exactly `payload(0..=last)`.
async fn assert_ledger_is_prefix(
    client: &LedgerClient,
    id: u64,
    confirmed: &BTreeSet<EntryId>,
) -> EntryId {
    let mut reader = client.open_reader(id).await.unwrap();
    let last = reader.last_add_confirmed().await.unwrap();
    if let Some(max_confirmed) = confirmed.iter().next_back() {
        assert!(
            last >= *max_confirmed,
            "confirmed entry {max_confirmed} missing: ledger ends at {last}"
        );
    }
    if last >= 0 {
        let entries = reader.read_range(0, last).await.unwrap();
        for (e, data) in entries {
            assert_eq!(data, payload(e as u64), "entry {e} differs");
        }
    }
    last
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn append_close_and_read_back() {
    let cluster = Cluster::start(3).await;
    let client = cluster.client().await;
    let writer = client.create(&LedgerConfig::new(3, 2, 2)).await.unwrap();
    let futures: Vec<_> = (0..500u64).map(|i| writer.append(payload(i))).collect();
    for (i, f) in futures.into_iter().enumerate() {
        assert_eq!(
            f.await.unwrap(),
            i as EntryId,
            "entry ids follow append order"
        );
    }
    let closed = writer.close().await.unwrap();
    assert_eq!(closed.state, LedgerState::Closed);
    assert_eq!(closed.last_entry_id, 499);
    assert_eq!(
        closed.length,
        (0..500u64).map(|i| payload(i).len() as u64).sum::<u64>()
    );
    let confirmed: BTreeSet<EntryId> = (0..500).collect();
    assert_eq!(
        assert_ledger_is_prefix(&client, writer.id(), &confirmed).await,
        499
    );
    // Appending after close is refused.
    assert!(matches!(
        writer.append(payload(500)).await,
        Err(LedgerError::Closed(_) | LedgerError::WriterStopped(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_configurations_are_refused() {
    let cluster = Cluster::start(2).await;
    let client = cluster.client().await;
    for (e, qw, qa) in [(2, 3, 2), (3, 2, 3), (2, 2, 0)] {
        assert!(matches!(
            client.create(&LedgerConfig::new(e, qw, qa)).await,
            Err(LedgerError::InvalidConfig(_))
        ));
    }
    assert!(matches!(
        client.create(&LedgerConfig::new(3, 2, 2)).await,
        Err(LedgerError::NotEnoughBookies(_))
    ));
}

/// Appends `count` entries one after another (keeping `window` in flight),
/// recording which ones were confirmed; stops at the first error.
async fn append_stream(
    writer: magnetar_broker::ledger::LedgerWriter,
    count: u64,
    window: usize,
    confirmed: Arc<Mutex<BTreeSet<EntryId>>>,
) -> Option<LedgerError> {
    let mut in_flight = std::collections::VecDeque::new();
    for i in 0..count {
        in_flight.push_back((i, writer.append(payload(i))));
        if in_flight.len() >= window {
            let (i, f) = in_flight.pop_front()?;
            match f.await {
                Ok(e) => {
                    assert_eq!(e, i as EntryId);
                    confirmed.lock().unwrap().insert(e);
                }
                Err(err) => return Some(err),
            }
        }
    }
    for (i, f) in in_flight {
        match f.await {
            Ok(e) => {
                assert_eq!(e, i as EntryId);
                confirmed.lock().unwrap().insert(e);
            }
            Err(err) => return Some(err),
        }
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill9_of_a_bookie_mid_stream_triggers_an_ensemble_change() {
    let mut cluster = Cluster::start(4).await;
    let client = cluster.client().await;
    let writer = client.create(&LedgerConfig::new(3, 2, 2)).await.unwrap();
    let id = writer.id();
    let confirmed = Arc::new(Mutex::new(BTreeSet::new()));
    let stream = tokio::spawn(append_stream(writer.clone(), 3000, 32, confirmed.clone()));
    while confirmed.lock().unwrap().len() < 500 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (metadata, _) = client.metadata().read(id).await.unwrap();
    let victim = metadata.current_ensemble()[0].clone();
    cluster.bookie(&victim).kill9().unwrap();
    assert!(
        stream.await.unwrap().is_none(),
        "writer stopped after one bookie died"
    );
    let closed = writer.close().await.unwrap();
    assert_eq!(closed.last_entry_id, 2999);
    assert!(closed.ensembles.len() >= 2, "no ensemble change recorded");
    assert!(!closed.current_ensemble().contains(&victim));
    let confirmed = confirmed.lock().unwrap().clone();
    assert_eq!(confirmed.len(), 3000);
    assert_eq!(assert_ledger_is_prefix(&client, id, &confirmed).await, 2999);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_paused_bookie_is_replaced_without_gaps_or_duplicates() {
    let mut cluster = Cluster::start(4).await;
    let client = cluster.client().await;
    let writer = client.create(&LedgerConfig::new(3, 2, 2)).await.unwrap();
    let id = writer.id();
    let confirmed = Arc::new(Mutex::new(BTreeSet::new()));
    let stream = tokio::spawn(append_stream(writer.clone(), 2000, 16, confirmed.clone()));
    while confirmed.lock().unwrap().len() < 300 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (metadata, _) = client.metadata().read(id).await.unwrap();
    let victim = metadata.current_ensemble()[1].clone();
    cluster.bookie(&victim).pause().unwrap();
    let result = stream.await.unwrap();
    cluster.bookie(&victim).resume().unwrap();
    assert!(result.is_none(), "writer failed: {result:?}");
    let closed = writer.close().await.unwrap();
    assert_eq!(closed.last_entry_id, 1999);
    let confirmed = confirmed.lock().unwrap().clone();
    assert_eq!(confirmed, (0..2000).collect::<BTreeSet<_>>());
    assert_eq!(assert_ledger_is_prefix(&client, id, &confirmed).await, 1999);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn recovery_fences_a_zombie_writer_and_keeps_every_confirmed_entry() {
    let cluster = Cluster::start(3).await;
    let zombie_client = cluster.client().await;
    let writer = zombie_client
        .create(&LedgerConfig::new(3, 2, 2))
        .await
        .unwrap();
    let id = writer.id();
    let confirmed = Arc::new(Mutex::new(BTreeSet::new()));
    let stream = tokio::spawn(append_stream(
        writer.clone(),
        1_000_000,
        32,
        confirmed.clone(),
    ));
    while confirmed.lock().unwrap().len() < 400 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Another broker takes over while the zombie keeps writing.
    let new_owner = cluster.client().await;
    let recovered = new_owner.recover(id).await.unwrap();
    assert_eq!(recovered.state, LedgerState::Closed);
    let zombie_error = stream.await.unwrap();
    assert!(
        matches!(
            zombie_error,
            Some(LedgerError::Fenced(_) | LedgerError::MetadataConflict(_))
        ),
        "zombie was not fenced: {zombie_error:?}"
    );
    let confirmed = confirmed.lock().unwrap().clone();
    let max_confirmed = *confirmed.iter().next_back().unwrap();
    assert!(
        recovered.last_entry_id >= max_confirmed,
        "recovery lost confirmed entry {max_confirmed} (closed at {})",
        recovered.last_entry_id
    );
    assert_ledger_is_prefix(&new_owner, id, &confirmed).await;
    // The zombie gets nothing more confirmed.
    assert!(writer.append(payload(0)).await.is_err());
    // Recovering a closed ledger changes nothing.
    let again = new_owner.recover(id).await.unwrap();
    assert_eq!(again.last_entry_id, recovered.last_entry_id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_recoveries_agree() {
    let cluster = Cluster::start(3).await;
    let client = cluster.client().await;
    let writer = client.create(&LedgerConfig::new(3, 3, 2)).await.unwrap();
    let id = writer.id();
    for i in 0..200u64 {
        writer.append(payload(i)).await.unwrap();
    }
    let (a, b) = (cluster.client().await, cluster.client().await);
    let (ra, rb) = tokio::join!(a.recover(id), b.recover(id));
    let (ra, rb) = (ra.unwrap(), rb.unwrap());
    assert_eq!(ra.last_entry_id, rb.last_entry_id);
    assert!(ra.last_entry_id >= 199);
    let (stored, _) = client.metadata().read(id).await.unwrap();
    assert_eq!(stored.last_entry_id, ra.last_entry_id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reading_an_open_ledger_stops_at_the_lac() {
    let cluster = Cluster::start(2).await;
    let client = cluster.client().await;
    let writer = client.create(&LedgerConfig::new(2, 2, 2)).await.unwrap();
    for i in 0..10u64 {
        writer.append(payload(i)).await.unwrap();
    }
    let mut reader = client.open_reader(writer.id()).await.unwrap();
    // The LAC piggybacks on the next add, so bookies know entries 0..=8.
    let lac = reader.last_add_confirmed().await.unwrap();
    assert_eq!(lac, 8);
    assert_eq!(reader.read(8).await.unwrap(), payload(8));
    assert!(matches!(
        reader.read(9).await,
        Err(LedgerError::BeyondLastConfirmed { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_removes_metadata_and_bookie_data() {
    let cluster = Cluster::start(2).await;
    let client = cluster.client().await;
    let writer = client.create(&LedgerConfig::new(2, 2, 1)).await.unwrap();
    for i in 0..5u64 {
        writer.append(payload(i)).await.unwrap();
    }
    writer.close().await.unwrap();
    let id = writer.id();
    client.delete(id).await.unwrap();
    assert!(matches!(
        client.open_reader(id).await,
        Err(LedgerError::NoSuchLedger(_))
    ));
    for bookie in &cluster.bookies {
        let mut raw = bookie.client().await.unwrap();
        let r = raw
            .read_entry(magnetar_proto::bookie::ReadEntryRequest {
                ledger_id: id,
                entry_id: 0,
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            r.code,
            magnetar_proto::bookie::ErrorCode::NoSuchLedger as i32
        );
    }
}

/// A seeded random mix of appends, bookie kills and restarts, ending in a
/// recovery by another client while the writer may still be writing. The
/// recovered ledger must be a prefix of the append sequence holding every
/// confirmed entry. The seed is printed so a failure can be replayed with
/// `LEDGER_CHAOS_SEED=<seed>`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn random_appends_kills_and_recovery_keep_a_confirmed_prefix() {
    use rand::{Rng, SeedableRng};
    let seed: u64 = std::env::var("LEDGER_CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| rand::rng().random());
    println!("LEDGER_CHAOS_SEED={seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut cluster = Cluster::start(5).await;
    for round in 0..3 {
        let client = cluster.client().await;
        let writer = client.create(&LedgerConfig::new(3, 2, 2)).await.unwrap();
        let id = writer.id();
        let confirmed = Arc::new(Mutex::new(BTreeSet::new()));
        let total = rng.random_range(200..2000u64);
        let stream = tokio::spawn(append_stream(
            writer.clone(),
            total,
            rng.random_range(1..64),
            confirmed.clone(),
        ));
        let mut killed = None;
        for _ in 0..rng.random_range(1..4) {
            tokio::time::sleep(Duration::from_millis(rng.random_range(10..300))).await;
            match killed.take() {
                None => {
                    let i = rng.random_range(0..cluster.bookies.len());
                    cluster.bookies[i].kill9().unwrap();
                    killed = Some(i);
                }
                Some(i) => cluster.bookies[i].restart().await.unwrap(),
            }
        }
        if rng.random_bool(0.5) {
            // Recover while the writer is (maybe) still going.
            let recovered = cluster.client().await.recover(id).await;
            let outcome = stream.await.unwrap();
            let recovered = recovered
                .unwrap_or_else(|e| panic!("seed {seed} round {round}: recovery failed: {e}"));
            let confirmed = confirmed.lock().unwrap().clone();
            if let Some(max) = confirmed.iter().next_back() {
                assert!(
                    recovered.last_entry_id >= *max,
                    "seed {seed} round {round}: lost confirmed {max}, outcome {outcome:?}"
                );
            }
            assert_ledger_is_prefix(&cluster.client().await, id, &confirmed).await;
        } else {
            let outcome = stream.await.unwrap();
            assert!(
                outcome.is_none(),
                "seed {seed} round {round}: writer failed: {outcome:?}"
            );
            let closed = writer.close().await.unwrap();
            assert_eq!(closed.last_entry_id as u64, total - 1);
            let confirmed = confirmed.lock().unwrap().clone();
            assert_ledger_is_prefix(&client, id, &confirmed).await;
        }
        if let Some(i) = killed {
            cluster.bookies[i].restart().await.unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_no_spare_bookie_a_writer_with_qw_above_qa_writes_on() {
    let mut cluster = Cluster::start(3).await;
    let client = cluster.client().await;
    let writer = client.create(&LedgerConfig::new(3, 3, 2)).await.unwrap();
    let id = writer.id();
    let confirmed = Arc::new(Mutex::new(BTreeSet::new()));
    let stream = tokio::spawn(append_stream(writer.clone(), 2000, 16, confirmed.clone()));
    while confirmed.lock().unwrap().len() < 300 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let victim = cluster.bookies[0].grpc_addr();
    cluster.bookie(&victim).kill9().unwrap();
    let outcome = stream.await.unwrap();
    assert!(
        outcome.is_none(),
        "writer failed without a spare bookie: {outcome:?}"
    );
    let closed = writer.close().await.unwrap();
    assert_eq!(closed.last_entry_id, 1999);
    let confirmed = confirmed.lock().unwrap().clone();
    assert_eq!(confirmed.len(), 2000);
    assert_eq!(assert_ledger_is_prefix(&client, id, &confirmed).await, 1999);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_no_spare_bookie_and_qw_equal_qa_the_writer_fails_cleanly() {
    let mut cluster = Cluster::start(2).await;
    let client = cluster.client().await;
    let writer = client.create(&LedgerConfig::new(2, 2, 2)).await.unwrap();
    let id = writer.id();
    let confirmed = Arc::new(Mutex::new(BTreeSet::new()));
    let stream = tokio::spawn(append_stream(
        writer.clone(),
        1_000_000,
        16,
        confirmed.clone(),
    ));
    while confirmed.lock().unwrap().len() < 200 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let victim = cluster.bookies[1].grpc_addr();
    cluster.bookie(&victim).kill9().unwrap();
    let outcome = stream.await.unwrap();
    assert!(
        matches!(outcome, Some(LedgerError::NotEnoughBookies(_))),
        "expected NotEnoughBookies, got {outcome:?}"
    );
    // What was confirmed survives on the remaining copy once the bookie is back.
    cluster.bookie(&victim).restart().await.unwrap();
    let recovered = cluster.client().await.recover(id).await.unwrap();
    let confirmed = confirmed.lock().unwrap().clone();
    assert!(recovered.last_entry_id >= *confirmed.iter().next_back().unwrap());
}
