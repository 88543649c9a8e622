//! Managed ledgers and durable cursors over a real etcd and real bookie
//! processes: rollover, reads across ledgers, takeover of a topic whose
//! owner vanished without closing it, a zombie owner fenced, and a cursor
//! that survives its subscription being reopened.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
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
    _etcd: Etcd,
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
            _etcd: etcd,
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
    // Its failure must not touch the new owner's list (CAS fences it).
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = append_all(&new, 40..50).await;
    let read = read_all(&new).await;
    assert_eq!(read.len(), 50);
    assert_eq!(read.last().unwrap().0, *after.last().unwrap());
    assert!(read.iter().all(|(_, d)| d.as_ref() != b"zombie"));
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
