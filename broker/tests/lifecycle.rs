//! Topic lifecycle over a real etcd and a real bookie process: trimming
//! deletes consumed ledgers (their metadata is gone) and keeps unconsumed
//! ones, retention keeps consumed ledgers within its limits, and a trimmed
//! topic reopens after a restart with its consumers continuing where they
//! were, without loss.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use magnetar_broker::ledger::bookie_client::{BookieClientConfig, BookieClients};
use magnetar_broker::ledger::{LedgerClient, LedgerConfig, LedgerId};
use magnetar_broker::managed_ledger::{LedgerLogStore, ManagedLedger, ManagedLedgerConfig};
use magnetar_broker::metrics::BrokerMetrics;
use magnetar_broker::protocol::{outbound_queue, Outbound, OutboundFrames};
use magnetar_broker::storage::{PartitionLog, Position, Replication, RetentionLimits};
use magnetar_broker::topic::{
    Acknowledgement, BrokerConfig, BrokerService, ConsumerHandle, InitialPosition,
    NamespacePolicies, SubscribeRequest, Subscription, SubscriptionType, TenantInfo, Topic,
    TopicName,
};
use magnetar_metadata::{keys, MetadataStore};
use magnetar_tests::{BookieProcess, Etcd};

const ENTRIES_PER_LEDGER: u64 = 10;

struct Cluster {
    _etcd: Etcd,
    url: String,
    _bookie: BookieProcess,
}

impl Cluster {
    async fn start() -> Cluster {
        let etcd = Etcd::start().await.unwrap();
        let url = etcd.metadata_url("lifecycle");
        let bookie = BookieProcess::start(&url, &[]).await.unwrap();
        Cluster {
            _etcd: etcd,
            url,
            _bookie: bookie,
        }
    }

    async fn broker_parts(&self) -> (Arc<dyn MetadataStore>, LedgerClient) {
        let metadata = magnetar_metadata::connect(&self.url).await.unwrap();
        let client = LedgerClient::new(
            metadata.clone(),
            BookieClients::new(BookieClientConfig::default()),
        );
        (metadata, client)
    }
}

fn ml_config() -> ManagedLedgerConfig {
    ManagedLedgerConfig {
        ledger: LedgerConfig::new(1, 1, 1),
        max_entries_per_ledger: ENTRIES_PER_LEDGER,
        ..Default::default()
    }
}

fn entry(i: usize) -> Bytes {
    Bytes::from(format!("entry-{i:06}"))
}

async fn ledger_exists(store: &dyn MetadataStore, id: LedgerId) -> bool {
    store.get(&keys::ledger(id)).await.unwrap().is_some()
}

/// Waits until the topic has `count` ledgers and every one but the last is
/// sealed (rollover and sealing run in the background).
async fn wait_for_sealed_ledgers(log: &dyn PartitionLog, count: usize) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let ledgers = log.stats().segments;
        let sealed =
            ledgers.len() >= count && ledgers[..ledgers.len() - 1].iter().all(|l| l.closed);
        if sealed {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no {count} sealed ledgers: {ledgers:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Appends `ledgers` full ledgers of entries, one ledger at a time, so each
/// closed ledger holds exactly ENTRIES_PER_LEDGER entries; returns their
/// positions.
async fn fill_ledgers(ml: &Arc<dyn PartitionLog>, ledgers: usize) -> Vec<Position> {
    let start = ml.stats().segments.len();
    let mut positions = Vec::new();
    for round in 0..ledgers {
        let from = round * ENTRIES_PER_LEDGER as usize;
        let pending: Vec<_> = (from..from + ENTRIES_PER_LEDGER as usize)
            .map(|i| ml.clone().append(entry(i)))
            .collect();
        for p in pending {
            positions.push(p.await.unwrap());
        }
        wait_for_sealed_ledgers(ml.as_ref(), start + round + 1).await;
    }
    positions
}

/// Reads every readable entry from the start.
async fn read_all(ml: &ManagedLedger) -> Vec<Position> {
    let mut out = Vec::new();
    let mut after = ml.first_position();
    loop {
        let batch = ml.read_entries(after, 50).await.unwrap();
        let Some(last) = batch.last() else { break };
        after = last.position;
        out.extend(batch.into_iter().map(|e| e.position));
    }
    out
}

async fn open_ml(cluster: &Cluster, name: &str) -> (Arc<ManagedLedger>, Arc<dyn MetadataStore>) {
    let (metadata, client) = cluster.broker_parts().await;
    let ml = ManagedLedger::open(
        name.into(),
        metadata.clone(),
        format!("/topics/t/ns/{name}"),
        client,
        ml_config(),
    )
    .await
    .unwrap();
    (ml, metadata)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trimming_deletes_consumed_ledgers_and_keeps_unconsumed_ones() {
    let cluster = Cluster::start().await;
    let (ml, store) = open_ml(&cluster, "trim").await;
    let positions = fill_ledgers(&(ml.clone() as Arc<dyn PartitionLog>), 4).await;
    let ids: Vec<LedgerId> = ml.ledgers().iter().map(|l| l.ledger_id).collect();
    assert_eq!(ids.len(), 5, "four full ledgers and the current one");

    // The cursor is inside the second ledger: only the first is consumed.
    let trimmed = ml
        .trim_consumed(positions[15], &RetentionLimits::NONE)
        .await
        .unwrap();
    assert_eq!(trimmed, vec![ids[0]]);
    assert!(!ledger_exists(store.as_ref(), ids[0]).await);
    for id in &ids[1..] {
        assert!(ledger_exists(store.as_ref(), *id).await, "ledger {id} kept");
    }
    assert_eq!(
        ml.ledgers().iter().map(|l| l.ledger_id).collect::<Vec<_>>(),
        ids[1..]
    );
    // Reading skips what is gone, from any position in it.
    assert_eq!(read_all(&ml).await, positions[10..]);
    assert_eq!(ml.first_position(), Position::new(ids[1], -1));
    assert_eq!(ml.next_readable(positions[3]), Some(positions[10]));
    assert_eq!(ml.entries_after(positions[3]), 30);
    assert_eq!(ml.position_before(positions[10]), Position::new(ids[1], -1));
    // The stored list is the trimmed one.
    let stored = magnetar_broker::managed_ledger::LedgerListStore::new(
        store.clone(),
        "/topics/t/ns/trim".into(),
    )
    .load()
    .await
    .unwrap()
    .unwrap();
    assert_eq!(stored.ledgers, ml.ledgers());

    // Nothing more is consumed: nothing more goes.
    let again = ml
        .trim_consumed(positions[15], &RetentionLimits::NONE)
        .await
        .unwrap();
    assert!(again.is_empty());

    // Everything consumed: every closed ledger goes, the current one stays
    // and takes new entries.
    let trimmed = ml
        .trim_consumed(ml.last_confirmed(), &RetentionLimits::NONE)
        .await
        .unwrap();
    assert_eq!(trimmed, ids[1..4]);
    for id in &ids[..4] {
        assert!(!ledger_exists(store.as_ref(), *id).await);
    }
    assert!(ledger_exists(store.as_ref(), ids[4]).await);
    assert!(read_all(&ml).await.is_empty());
    let next = ml.clone().append(entry(40)).await.unwrap();
    assert_eq!(next, Position::new(ids[4], 0));
    assert_eq!(read_all(&ml).await, vec![next]);
    ml.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_keeps_consumed_ledgers_within_its_limits() {
    let cluster = Cluster::start().await;
    let (ml, store) = open_ml(&cluster, "retain").await;
    let positions = fill_ledgers(&(ml.clone() as Arc<dyn PartitionLog>), 4).await;
    let ledgers = ml.ledgers();
    let ids: Vec<LedgerId> = ledgers.iter().map(|l| l.ledger_id).collect();
    let all_read = ml.last_confirmed();

    // Unlimited, or limits the consumed ledgers are within: all kept.
    for limits in [
        RetentionLimits::UNLIMITED,
        RetentionLimits {
            max_age: Some(Duration::from_secs(3600)),
            max_bytes: None,
        },
        RetentionLimits {
            max_age: None,
            max_bytes: Some(1 << 20),
        },
    ] {
        let trimmed = ml.trim_consumed(all_read, &limits).await.unwrap();
        assert!(trimmed.is_empty(), "{limits:?} trimmed {trimmed:?}");
    }
    assert_eq!(read_all(&ml).await, positions);

    // Room for the two newest consumed ledgers: the two oldest go.
    let newest_two = ledgers[2].size + ledgers[3].size;
    assert!(newest_two > 0);
    let by_size = RetentionLimits {
        max_age: Some(Duration::from_secs(3600)),
        max_bytes: Some(newest_two),
    };
    assert_eq!(
        ml.trim_consumed(all_read, &by_size).await.unwrap(),
        ids[..2]
    );
    assert!(!ledger_exists(store.as_ref(), ids[1]).await);
    assert!(ledger_exists(store.as_ref(), ids[2]).await);
    assert_eq!(read_all(&ml).await, positions[20..]);

    // Backlog size estimates from the remaining ledgers' sizes.
    assert_eq!(ml.bytes_after(Position::new(ids[2], -1)), newest_two);
    assert_eq!(
        ml.bytes_after(positions[24]),
        ledgers[2].size / 2 + ledgers[3].size
    );
    assert_eq!(ml.mark_delete_leaving(ledgers[3].size), positions[29]);
    assert_eq!(
        ml.mark_delete_leaving(newest_two),
        Position::new(ids[2], -1)
    );

    // Unconsumed ledgers stay whatever the limits.
    assert!(ml
        .trim_consumed(Position::new(ids[2], -1), &RetentionLimits::NONE)
        .await
        .unwrap()
        .is_empty());
    // A time limit of zero keeps nothing consumed.
    let by_time = RetentionLimits {
        max_age: Some(Duration::ZERO),
        max_bytes: None,
    };
    assert_eq!(
        ml.trim_consumed(all_read, &by_time).await.unwrap(),
        ids[2..4]
    );
    ml.close().await.unwrap();
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
    let logs = Arc::new(LedgerLogStore::new(metadata.clone(), client, ml_config()));
    let config = BrokerConfig {
        default_replication: Replication {
            ensemble_size: 1,
            write_quorum: 1,
            ack_quorum: 1,
        },
        // Policies are applied by the test, not by the periodic task.
        housekeeping_interval: Duration::from_secs(3600),
        ..BrokerConfig::default()
    };
    BrokerService::new(config, metadata, logs, BrokerMetrics::new().unwrap())
}

fn subscribe_request(name: &str) -> SubscribeRequest {
    SubscribeRequest {
        subscription: name.into(),
        sub_type: SubscriptionType::Exclusive,
        durable: true,
        initial: InitialPosition::Earliest,
        start: None,
    }
}

async fn attach(
    topic: &Topic,
    subscription: &str,
    key: (u64, u64),
) -> (Arc<Subscription>, OutboundFrames) {
    let (tx, rx) = outbound_queue(16 * 1024 * 1024);
    let handle = ConsumerHandle {
        key,
        name: "c".into(),
        priority: 0,
        outbound: tx,
        key_shared: Default::default(),
    };
    let sub = topic
        .subscribe(&subscribe_request(subscription), handle)
        .await
        .unwrap();
    sub.add_permits(key, 1000);
    (sub, rx)
}

/// Receives `count` deliveries and returns their positions.
async fn receive(rx: &mut OutboundFrames, count: usize) -> Vec<Position> {
    let mut got = Vec::new();
    while got.len() < count {
        let (frame, bytes) = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .unwrap_or_else(|_| panic!("only {} of {count} deliveries", got.len()))
            .expect("consumer channel open");
        rx.written(bytes);
        if let Outbound::Message { command, .. } = frame {
            let id = command.message.expect("MESSAGE").message_id;
            got.push(Position::new(id.ledger_id, id.entry_id as i64));
        }
    }
    got
}

fn ack_through(sub: &Subscription, position: Position) {
    sub.acknowledge(
        true,
        &[Acknowledgement {
            position,
            batch_index: -1,
            ack_set: Vec::new(),
        }],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trimmed_topic_reopens_and_its_consumers_continue_without_loss() {
    let cluster = Cluster::start().await;
    let name = TopicName::parse("persistent://t/ns/restart").unwrap();
    let no_retention = NamespacePolicies::default();
    let (positions, ids) = {
        let broker = service(&cluster).await;
        let topic = broker.topic(&name).await.unwrap();
        let (sub, mut rx) = attach(&topic, "sub", (1, 1)).await;
        let positions = fill_ledgers(topic.log(), 4).await;
        let ids: Vec<LedgerId> = topic.log().stats().segments.iter().map(|l| l.id).collect();
        assert_eq!(receive(&mut rx, 40).await, positions);
        // Consumed through entry 24, in the third ledger.
        ack_through(&sub, positions[24]);
        topic.apply_policies(&no_retention).await.unwrap();
        let store = broker.metadata();
        assert!(!ledger_exists(store.as_ref(), ids[0]).await);
        assert!(!ledger_exists(store.as_ref(), ids[1]).await);
        assert!(ledger_exists(store.as_ref(), ids[2]).await);
        broker.shutdown().await;
        (positions, ids)
    };

    let broker = service(&cluster).await;
    let store = broker.metadata().clone();
    let topic = broker.topic(&name).await.unwrap();
    // No consumer has come back yet, but its stored cursor still holds the
    // ledgers it has not consumed.
    topic.apply_policies(&no_retention).await.unwrap();
    assert!(ledger_exists(store.as_ref(), ids[2]).await);
    assert!(ledger_exists(store.as_ref(), ids[3]).await);

    let (sub, mut rx) = attach(&topic, "sub", (2, 1)).await;
    assert_eq!(sub.mark_delete_position(), positions[24]);
    assert_eq!(receive(&mut rx, 15).await, positions[25..]);
    // A new subscription from the earliest starts at the first entry left.
    let (late, mut late_rx) = attach(&topic, "late", (2, 2)).await;
    assert_eq!(receive(&mut late_rx, 20).await, positions[20..]);

    // Once both have consumed everything, every closed ledger goes.
    let last = topic.log().last_confirmed();
    ack_through(&sub, last);
    ack_through(&late, last);
    topic.apply_policies(&no_retention).await.unwrap();
    for id in &ids {
        assert!(!ledger_exists(store.as_ref(), *id).await, "ledger {id}");
    }
    let remaining = topic.log().stats().segments;
    assert_eq!(remaining.len(), 1, "only the current ledger: {remaining:?}");
    assert!(!remaining[0].closed);
    broker.shutdown().await;
}
