//! Managed ledgers and durable cursors over a real etcd and real bookie
//! processes: rollover, reads across ledgers, takeover of a topic whose
//! owner vanished without closing it, a zombie owner fenced, and a cursor
//! that survives its subscription being reopened, a graceful broker restart,
//! and a kill -9 of a broker process inside the flush window.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::TryStreamExt;
use magnetar_broker::ledger::bookie_client::{BookieClientConfig, BookieClients};
use magnetar_broker::ledger::{LedgerClient, LedgerConfig};
use magnetar_broker::managed_ledger::{
    LedgerLogStore, ManagedLedger, ManagedLedgerConfig, ManagedLedgerError, Position,
};
use magnetar_broker::metrics::BrokerMetrics;
use magnetar_broker::topic::{
    Acknowledgement, BrokerConfig, BrokerService, ConsumerHandle, InitialPosition,
    NamespacePolicies, SubscribeRequest, SubscriptionType, TenantInfo, TopicName,
};
use magnetar_metadata::MetadataStore;
use magnetar_tests::{BookieProcess, Etcd};

struct Cluster {
    etcd: Etcd,
    url: String,
    _bookies: Vec<BookieProcess>,
}

impl Cluster {
    async fn start(bookies: usize) -> Cluster {
        let etcd = Etcd::start().await.unwrap();
        let url = etcd.metadata_url("ml");
        let mut started = Vec::new();
        for _ in 0..bookies {
            started.push(BookieProcess::start(&url, &[]).await.unwrap());
        }
        Cluster {
            etcd,
            url,
            _bookies: started,
        }
    }

    /// What a broker process has: its own metadata session and bookie pool.
    async fn broker_parts(&self) -> (Arc<dyn MetadataStore>, LedgerClient) {
        let metadata = magnetar_metadata::connect(&self.url).await.unwrap();
        let client = LedgerClient::new(
            metadata.clone(),
            BookieClients::new(BookieClientConfig::default()),
        );
        (metadata, client)
    }
}

fn config(max_entries: u64) -> ManagedLedgerConfig {
    ManagedLedgerConfig {
        ledger: LedgerConfig::new(2, 2, 2),
        max_entries_per_ledger: max_entries,
        ..Default::default()
    }
}

fn entry(i: usize) -> Bytes {
    Bytes::from(format!("entry-{i:06}"))
}

async fn open(cluster: &Cluster, max_entries: u64) -> Arc<ManagedLedger> {
    let (metadata, client) = cluster.broker_parts().await;
    ManagedLedger::open(
        "t".into(),
        metadata,
        "/topics/t/ns/t".into(),
        client,
        config(max_entries),
    )
    .await
    .unwrap()
}

/// Reads every readable entry from the start.
async fn read_all(ml: &ManagedLedger) -> Vec<(Position, Bytes)> {
    let mut out = Vec::new();
    let mut after = ml.first_position();
    loop {
        let batch = ml.read_entries(after, 50).await.unwrap();
        let Some(last) = batch.last() else { break };
        after = last.position;
        out.extend(batch.into_iter().map(|e| (e.position, e.data)));
    }
    out
}

async fn append_all(ml: &Arc<ManagedLedger>, range: std::ops::Range<usize>) -> Vec<Position> {
    let pending: Vec<_> = range.map(|i| ml.append(entry(i))).collect();
    let mut positions = Vec::new();
    for p in pending {
        positions.push(p.await.unwrap());
    }
    positions
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_roll_over_and_read_back_in_order_across_ledgers() {
    let cluster = Cluster::start(2).await;
    let ml = open(&cluster, 25).await;
    // Rollover is asynchronous (appends keep going to the old ledger until
    // the new one exists), so wait for each before the next round.
    let mut positions = Vec::new();
    for round in 0..4 {
        positions.extend(append_all(&ml, round * 30..round * 30 + 30).await);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while ml.ledgers().len() < round + 2 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "no rollover after 30 entries"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    // Positions increase strictly, in call order, over several ledgers.
    assert!(positions.windows(2).all(|w| w[0] < w[1]));
    let ledgers: std::collections::BTreeSet<u64> = positions.iter().map(|p| p.ledger_id).collect();
    assert_eq!(ledgers.len(), 4, "one ledger per round, got {ledgers:?}");
    // Sealed ledgers record their entry count (the last seal runs after
    // the switch, so wait for it).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while ml.ledgers()[..4].iter().any(|l| l.entries.is_none()) {
        assert!(tokio::time::Instant::now() < deadline, "ledgers not sealed");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let sealed: Vec<Option<u64>> = ml.ledgers().iter().map(|l| l.entries).collect();
    assert_eq!(sealed[..4], [Some(30), Some(30), Some(30), Some(30)]);
    assert_eq!(sealed[4], None);
    // Give the last rollover time to seal its predecessor.
    let read = read_all(&ml).await;
    assert_eq!(read.len(), 120);
    for (i, (position, data)) in read.iter().enumerate() {
        assert_eq!(*position, positions[i]);
        assert_eq!(*data, entry(i));
    }
    assert_eq!(ml.last_confirmed(), *positions.last().unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_owner_recovers_an_unclosed_topic_and_fences_the_old_one() {
    let cluster = Cluster::start(2).await;
    let old = open(&cluster, 1000).await;
    let written = append_all(&old, 0..40).await;

    // Another broker takes the topic over while the old one still runs
    // (as after a lease expiry): it recovers the open ledger.
    let new = open(&cluster, 1000).await;
    let read = read_all(&new).await;
    assert_eq!(read.len(), 40, "every confirmed entry is there");
    assert_eq!(read.last().unwrap().0, *written.last().unwrap());

    // The zombie can get nothing acknowledged any more.
    let zombie = old.append(Bytes::from_static(b"zombie")).await;
    assert!(
        matches!(
            zombie,
            Err(ManagedLedgerError::Ledger(_)) | Err(ManagedLedgerError::Fenced(_))
        ),
        "zombie append must fail, got {zombie:?}"
    );
    // Its failure makes it try to replace its ledger, which must not touch
    // the new owner's list (CAS fences it): wait until it has given up, so
    // its appends fail as fenced at once.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match old.append(Bytes::from_static(b"zombie")).await {
            Err(ManagedLedgerError::Fenced(_)) => break,
            Err(_) => assert!(
                tokio::time::Instant::now() < deadline,
                "the zombie never learned it is fenced"
            ),
            Ok(position) => panic!("zombie append acknowledged at {position:?}"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let after = append_all(&new, 40..50).await;
    // Nor may it delete the topic (inactive-topic deletion on a broker that
    // has not yet noticed it lost the topic): the ledgers stay.
    let deleted = old.delete().await;
    assert!(
        matches!(deleted, Err(ManagedLedgerError::Fenced(_))),
        "a zombie's delete must be fenced, got {deleted:?}"
    );
    let read = read_all(&new).await;
    assert_eq!(read.len(), 50);
    assert_eq!(read.last().unwrap().0, *after.last().unwrap());
    assert!(read.iter().all(|(_, d)| d.as_ref() != b"zombie"));
    let reopened = open(&cluster, 1000).await;
    assert_eq!(
        read_all(&reopened).await.len(),
        50,
        "the zombie deleted ledgers"
    );
}

async fn service(cluster: &Cluster) -> Arc<BrokerService> {
    let (metadata, client) = cluster.broker_parts().await;
    magnetar_broker::topic::create_namespace_if_absent(
        metadata.as_ref(),
        "t",
        "ns",
        &TenantInfo::default(),
        &NamespacePolicies::default(),
    )
    .await
    .unwrap();
    let ml_config = ManagedLedgerConfig {
        max_entries_per_ledger: 10,
        ..ManagedLedgerConfig::default()
    };
    let logs = Arc::new(LedgerLogStore::new(metadata.clone(), client, ml_config));
    BrokerService::new(
        BrokerConfig::default(),
        metadata,
        logs,
        BrokerMetrics::new().unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledgements_survive_a_broker_restart() {
    let cluster = Cluster::start(2).await;
    let name = TopicName::parse("persistent://t/ns/acks").unwrap();
    let request = SubscribeRequest {
        subscription: "sub".into(),
        sub_type: SubscriptionType::Exclusive,
        durable: true,
        initial: InitialPosition::Earliest,
        start: None,
    };
    let positions;
    {
        let broker = service(&cluster).await;
        let topic = broker.topic(&name).await.unwrap();
        let mut published = Vec::new();
        for i in 0..30 {
            published.push(topic.publish(entry(i)).await.unwrap());
        }
        positions = published;
        let (tx, _rx) = magnetar_broker::protocol::outbound_queue(16 * 1024 * 1024);
        let handle = ConsumerHandle {
            key: (1, 1),
            name: "c".into(),
            priority: 0,
            outbound: tx,
            key_shared: Default::default(),
        };
        let sub = topic.subscribe(&request, handle).await.unwrap();
        // Ack 0..10 (contiguous) and 15, 20 individually.
        let acks: Vec<Acknowledgement> = (0..10)
            .chain([15, 20])
            .map(|i| Acknowledgement {
                position: positions[i],
                batch_index: -1,
                ack_set: Vec::new(),
            })
            .collect();
        sub.acknowledge(false, &acks);
        assert_eq!(sub.mark_delete_position(), positions[9]);
        broker.shutdown().await;
    }
    let broker = service(&cluster).await;
    let topic = broker.topic(&name).await.unwrap();
    let (tx, mut rx) = magnetar_broker::protocol::outbound_queue(16 * 1024 * 1024);
    let handle = ConsumerHandle {
        key: (2, 1),
        name: "c".into(),
        priority: 0,
        outbound: tx,
        key_shared: Default::default(),
    };
    let sub = topic.subscribe(&request, handle).await.unwrap();
    assert_eq!(sub.mark_delete_position(), positions[9]);
    sub.add_permits((2, 1), 100);
    // Exactly the unacknowledged entries come, in order.
    let expected: Vec<Position> = (10..30)
        .filter(|i| *i != 15 && *i != 20)
        .map(|i| positions[i])
        .collect();
    let mut got = Vec::new();
    while got.len() < expected.len() {
        let (frame, bytes) = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .expect("delivery")
            .expect("open");
        rx.written(bytes);
        if let magnetar_broker::protocol::Outbound::Message { command, .. } = frame {
            let id = command.message.unwrap().message_id;
            got.push(Position::new(id.ledger_id, id.entry_id as i64));
        }
    }
    assert_eq!(got, expected);
    broker.shutdown().await;
}

/// The crash path of acknowledgement persistence, over real processes
/// (etcd, a bookie, a `magnetar broker`): acknowledgements the broker
/// flushed before a kill -9 stay; those inside the last flush window may
/// be lost, so their messages come again (at least once); every message
/// never acknowledged is redelivered, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledgements_flushed_before_a_kill9_survive_and_the_rest_is_redelivered() {
    use magnetar_tests::clients::{client, send_stored, RECEIVE_TIMEOUT};

    let mut cluster = magnetar_tests::cluster::Cluster::start(
        1,
        1,
        &[
            "--ensemble-size",
            "1",
            "--write-quorum",
            "1",
            "--ack-quorum",
            "1",
            "--lease-ttl",
            "3s",
        ],
    )
    .await
    .unwrap();
    let topic = "persistent://public/default/acks-crash";
    let pulsar = client(&cluster.brokers[0].pulsar_url()).await;
    let mut consumer = subscribe_retrying(&pulsar, topic).await;
    let sent = send_stored(&pulsar, topic, 0..100).await;
    assert_eq!(sent.len(), 100);
    let mut messages = Vec::new();
    while messages.len() < 100 {
        let msg = tokio::time::timeout(RECEIVE_TIMEOUT, consumer.try_next())
            .await
            .expect("delivery")
            .expect("receive")
            .expect("open");
        messages.push(msg);
    }
    let number = |data: &[u8]| -> u32 {
        let text = String::from_utf8_lossy(data);
        text.trim_start_matches("msg-").parse().unwrap()
    };
    let numbers: Vec<u32> = messages.iter().map(|m| number(&m.payload.data)).collect();
    assert_eq!(numbers, (0..100).collect::<Vec<_>>());

    // Acks of 0..50, then wait until the broker has persisted them: the
    // state it last stored has its mark-delete at message 49.
    for msg in &messages[..50] {
        consumer.ack(msg).await.unwrap();
    }
    let (ledger, entry) = sent[49].1;
    let took = magnetar_tests::cluster::wait_cursor_persisted(
        &cluster.brokers[0].broker_http_url(),
        topic,
        "sub",
        (ledger, entry),
    )
    .await;
    eprintln!("acks of 0..50 persisted {took:?} after they were sent");

    // Acks of 50..60 and of 70 alone, then kill -9 right away: inside the
    // flush window (100 ms), so some or all of them may not be persisted.
    let in_window: Vec<u32> = (50..60).chain([70]).collect();
    for &i in &in_window {
        consumer.ack(&messages[i as usize]).await.unwrap();
    }
    cluster.brokers[0].kill9().unwrap();
    drop(consumer);
    drop(pulsar);
    cluster.brokers[0].restart().await.unwrap();

    let pulsar = client(&cluster.brokers[0].pulsar_url()).await;
    let mut consumer = subscribe_retrying(&pulsar, topic).await;
    let mut again = Vec::new();
    loop {
        let wait = if again.len() < 39 {
            RECEIVE_TIMEOUT
        } else {
            Duration::from_secs(2)
        };
        let Ok(next) = tokio::time::timeout(wait, consumer.try_next()).await else {
            break;
        };
        let msg = next.expect("receive").expect("open");
        again.push(number(&msg.payload.data));
    }
    // Never acknowledged: every one comes again, in order.
    let never_acked: Vec<u32> = (60..100).filter(|i| *i != 70).collect();
    let redelivered_unacked: Vec<u32> = again
        .iter()
        .copied()
        .filter(|i| never_acked.contains(i))
        .collect();
    assert_eq!(
        redelivered_unacked, never_acked,
        "unacknowledged messages lost or out of order after the crash: got {again:?}"
    );
    // Flushed before the crash: none comes again.
    let replayed_flushed: Vec<&u32> = again.iter().filter(|i| **i < 50).collect();
    assert!(
        replayed_flushed.is_empty(),
        "acknowledgements persisted before the crash were lost: {replayed_flushed:?}"
    );
    // Only what was acknowledged inside the last flush window may be
    // replayed, once, in order.
    let replayed: Vec<u32> = again
        .iter()
        .copied()
        .filter(|i| in_window.contains(i))
        .collect();
    let mut sorted = again.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(
        sorted, again,
        "redelivered out of order or twice: {again:?}"
    );
    assert_eq!(
        again.len(),
        never_acked.len() + replayed.len(),
        "unexpected messages after the crash: {again:?}"
    );
    eprintln!("acks inside the flush window replayed after kill -9: {replayed:?}");
}

/// An Exclusive consumer of `sub` from the earliest message, retried while
/// the broker (just restarted) has not yet claimed the topic's bundle.
async fn subscribe_retrying(
    pulsar: &pulsar::Pulsar<pulsar::TokioExecutor>,
    topic: &str,
) -> pulsar::Consumer<Vec<u8>, pulsar::TokioExecutor> {
    let deadline = tokio::time::Instant::now() + magnetar_tests::clients::RECEIVE_TIMEOUT;
    loop {
        let built = pulsar
            .consumer()
            .with_topic(topic)
            .with_subscription("sub")
            .with_subscription_type(pulsar::SubType::Exclusive)
            .with_options(
                pulsar::consumer::ConsumerOptions::default()
                    .with_initial_position(pulsar::consumer::InitialPosition::Earliest),
            )
            .build()
            .await;
        match built {
            Ok(consumer) => return consumer,
            Err(e) if tokio::time::Instant::now() < deadline => {
                eprintln!("not subscribed yet: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("no consumer on {topic}: {e}"),
        }
    }
}

/// A cursor state with mark-delete at entry `i` of ledger 1 and two
/// acknowledged runs beyond it.
fn cursor_state(i: i64) -> magnetar_broker::cursor::CursorSnapshot {
    magnetar_broker::cursor::CursorSnapshot {
        mark_delete: Position::new(1, i),
        acked_ranges: vec![(1, i + 2, i + 3), (1, i + 5, i + 5)],
        partial: Vec::new(),
    }
}

/// Cursor state in a cursor log on the bookies (Pulsar's cursor ledger):
/// flushes append to the log and write nothing to etcd (a new cursor's
/// first one included), where the same
/// flushes in metadata-only mode write once each; another broker opening
/// the cursor reads the latest state and fences the first, whose next
/// write fails; rollovers trim superseded ledgers and refresh the
/// mark-delete position in the cursor's record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cursor_flushes_append_to_a_cursor_log_and_write_nothing_to_etcd() {
    use magnetar_broker::cursor::CursorStorage;
    use magnetar_broker::storage::{LogName, LogPolicies, LogStore};
    use magnetar_metadata::keys;

    let cluster = Cluster::start(2).await;
    let topic = LogName::new("t", "ns", "cursor-log");
    // What one broker opens cursors with: its own metadata session and
    // bookie pool, cursor logs rolling over every 10 states.
    let cursors_of = |(metadata, client): (Arc<dyn MetadataStore>, LedgerClient)| {
        let logs: Arc<dyn LogStore> = Arc::new(
            LedgerLogStore::new(metadata.clone(), client, config(1000))
                .with_cursor_log_max_entries(10),
        );
        CursorStorage::new(
            metadata,
            topic.clone(),
            Some((logs, LogPolicies::default())),
        )
    };
    let (metadata, client) = cluster.broker_parts().await;
    let storage = cursors_of((metadata.clone(), client));
    let (cursor, state) = storage.open("sub", Position::new(1, -1)).await.unwrap();
    assert_eq!(state.mark_delete(), Position::new(1, -1));
    // Bookies refresh their registrations meanwhile: count the writes of
    // everything else.
    let writes_since = |revision: i64| {
        let etcd = &cluster.etcd;
        async move {
            etcd.keys_written_since(revision)
                .await
                .unwrap()
                .into_iter()
                .filter(|key| !key.contains("/bookies/"))
                .collect::<Vec<_>>()
        }
    };
    // Nine flushes of the new cursor, so the first ledger (10 states) is
    // not yet full: a full one rolls over, which writes the log's record.
    // Not even the first one rewrites the cursor's record, written at open.
    let before = cluster.etcd.revision().await.unwrap();
    for i in 0..9 {
        cursor.persist(|| Some(cursor_state(i))).await.unwrap();
    }
    let in_log_writes = writes_since(before).await;
    assert!(
        in_log_writes.is_empty(),
        "9 flushes into a new cursor's log wrote to etcd: {in_log_writes:?}"
    );

    // The same flushes with the cursor in metadata alone: one write each.
    let in_metadata = CursorStorage::new(metadata.clone(), topic.clone(), None);
    let (plain, _) = in_metadata
        .open("plain", Position::new(1, -1))
        .await
        .unwrap();
    let before = cluster.etcd.revision().await.unwrap();
    for i in 1..10 {
        plain.persist(|| Some(cursor_state(i))).await.unwrap();
    }
    let written = writes_since(before).await;
    assert_eq!(written.len(), 9, "{written:?}");

    // 25 states in all: the log rolls over at least once.
    for i in 9..25 {
        cursor.persist(|| Some(cursor_state(i))).await.unwrap();
    }
    let record = metadata
        .get(&keys::cursor("t", "ns", "cursor-log", "sub"))
        .await
        .unwrap()
        .unwrap();
    let record: serde_json::Value = serde_json::from_slice(&record.value).unwrap();
    assert_eq!(record["in_log"], true, "{record}");
    // A ledger rolls over once full, while appends go on into it until the
    // next one is listed: the record was refreshed by a rollover past the
    // first ledger's ten states.
    let refreshed = record["mark_delete"]["entry_id"].as_i64().unwrap();
    assert!(
        (10..25).contains(&refreshed),
        "the record's mark-delete is not one of a rollover: {record}"
    );
    // Another broker takes the cursor over: it reads the latest state.
    let storage2 = cursors_of(cluster.broker_parts().await);
    let (taken, state) = storage2.open("sub", Position::new(1, -1)).await.unwrap();
    assert_eq!(state.snapshot(), cursor_state(24));
    // The first owner is fenced: its next write fails and changes nothing.
    assert!(cursor.persist(|| Some(cursor_state(99))).await.is_err());
    taken.persist(|| Some(cursor_state(30))).await.unwrap();
    // Superseded ledgers are trimmed: the cursor log keeps only the one
    // its new owner writes.
    let log_record = metadata
        .get(&topic.cursor_log("sub").metadata_key())
        .await
        .unwrap()
        .unwrap();
    let list: serde_json::Value = serde_json::from_slice(&log_record.value).unwrap();
    assert_eq!(list["ledgers"].as_array().map(Vec::len), Some(1), "{list}");
    taken.close().await;
    let (_, state) = storage2.open("sub", Position::new(1, -1)).await.unwrap();
    assert_eq!(state.snapshot(), cursor_state(30));

    // Deleting the cursors deletes their logs (every ledger of the log's
    // list) and records.
    let log_record = metadata
        .get(&topic.cursor_log("sub").metadata_key())
        .await
        .unwrap()
        .unwrap();
    let list: serde_json::Value = serde_json::from_slice(&log_record.value).unwrap();
    let listed: Vec<u64> = list["ledgers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["ledger_id"].as_u64().unwrap())
        .collect();
    assert!(!listed.is_empty());
    assert_eq!(storage2.delete_all().await.unwrap(), 2);
    for id in listed {
        assert!(
            metadata.get(&keys::ledger(id)).await.unwrap().is_none(),
            "ledger {id} of the deleted cursor log is still there"
        );
    }
    assert!(metadata
        .list(&keys::cursors_prefix("t", "ns", "cursor-log"))
        .await
        .unwrap()
        .is_empty());
    assert!(metadata
        .get(
            &LogName::new("t", "ns", "cursor-log")
                .cursor_log("sub")
                .metadata_key()
        )
        .await
        .unwrap()
        .is_none());
}
