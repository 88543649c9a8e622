//! Local logs replicated between three stores in one process, each with
//! its own data directory, replication service (real gRPC on 127.0.0.1)
//! and replica manager, sharing embedded metadata: what the leader
//! confirms is on every in-sync replica, and too few in-sync replicas
//! refuse appends.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use magnetar_broker::cursor::{CursorSnapshot, CursorStorage};
use magnetar_broker::local_log::{LocalLogConfig, LocalLogStore, ReplicationService};
use magnetar_broker::ownership::{BrokerIdentity, ReplicaEndpoint};
use magnetar_broker::storage::{
    LogName, LogPolicies, LogStore, PartitionLog, Position, Replication, StorageError,
};
use magnetar_metadata::{keys, EmbeddedStore, Expect, MetadataStore};
use tokio::task::JoinHandle;

struct Node {
    name: String,
    store: Arc<LocalLogStore>,
    server: JoinHandle<()>,
    manager: JoinHandle<()>,
}

impl Node {
    async fn start(
        metadata: &Arc<dyn MetadataStore>,
        root: &std::path::Path,
        name: &str,
        lag_max: Duration,
    ) -> Node {
        let config = LocalLogConfig {
            lag_max,
            ..LocalLogConfig::default()
        };
        let store = Arc::new(LocalLogStore::new(
            metadata.clone(),
            root.join(name),
            name.to_string(),
            config,
            true,
        ));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let service =
            ReplicationService::server(store.replicas().clone(), store.replicas().peers().clone());
        let server = tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
                .await;
        });
        let identity = BrokerIdentity {
            broker_id: name.to_string(),
            pulsar_url: format!("pulsar://{name}"),
            http_url: format!("http://{name}"),
            pulsar_url_tls: None,
            http_url_tls: None,
            replica: Some(ReplicaEndpoint {
                id: name.to_string(),
                url,
                rack: None,
            }),
        };
        metadata
            .put(
                &keys::broker_available(name),
                Bytes::from(serde_json::to_vec(&identity).unwrap()),
                Expect::Any,
                None,
            )
            .await
            .unwrap();
        let manager = tokio::spawn(store.replicas().clone().run_manager());
        Node {
            name: name.to_string(),
            store,
            server,
            manager,
        }
    }

    /// The broker dies: it leaves the registry and stops serving and
    /// following.
    async fn kill(self, metadata: &Arc<dyn MetadataStore>) {
        metadata
            .delete(&keys::broker_available(&self.name), Expect::Any)
            .await
            .unwrap();
        self.manager.abort();
        self.server.abort();
        self.store.replicas().stop_all().await;
    }
}

const RF3_MIN2: LogPolicies = LogPolicies {
    replication: Some(Replication {
        ensemble_size: 3,
        write_quorum: 3,
        ack_quorum: 2,
    }),
    unclean_leader_election: false,
    flush: None,
};

async fn cluster(lag_max: Duration) -> (tempfile::TempDir, Arc<dyn MetadataStore>, Vec<Node>) {
    let dir = tempfile::tempdir().unwrap();
    let metadata: Arc<dyn MetadataStore> = Arc::new(
        EmbeddedStore::open(dir.path().join("metadata"))
            .await
            .unwrap(),
    );
    let mut nodes = Vec::new();
    for name in ["a", "b", "c"] {
        nodes.push(Node::start(&metadata, dir.path(), name, lag_max).await);
    }
    (dir, metadata, nodes)
}

async fn append_all(log: &Arc<dyn PartitionLog>, n: usize) -> Vec<Position> {
    let futures: Vec<_> = (0..n)
        .map(|i| log.clone().append(Bytes::from(format!("entry-{i}"))))
        .collect();
    let mut positions = Vec::new();
    for f in futures {
        positions.push(f.await.expect("append confirmed"));
    }
    positions
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confirmed_entries_are_on_every_in_sync_replica() {
    // No follower can leave the ISR during this test.
    let (_dir, _metadata, nodes) = cluster(Duration::from_secs(60)).await;
    let name = LogName::new("t", "ns", "replicated");
    let key = name.metadata_key();
    let log = nodes[0].store.open(&name, &RF3_MIN2).await.unwrap();
    let positions = append_all(&log, 100).await;
    assert_eq!(positions.len(), 100);
    assert!(positions.windows(2).all(|w| w[0] < w[1]));
    assert_eq!(log.last_confirmed(), *positions.last().unwrap());
    // A receipt means every in-sync replica holds it: each follower's
    // fetch from offset 100 (sent once its copy reached it) is what
    // committed the last entry.
    for node in &nodes[1..] {
        let end = node.store.replicas().follower_end(&key);
        assert_eq!(
            end,
            Some(100),
            "{}'s copy when the last entry was confirmed",
            node.name
        );
    }
    let read = log.read_entries(Position::new(0, -1), 1000).await.unwrap();
    assert_eq!(read.len(), 100);
    assert_eq!(read[7].data, Bytes::from("entry-7"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_few_in_sync_replicas_refuse_appends() {
    let (_dir, metadata, mut nodes) = cluster(Duration::from_millis(500)).await;
    let name = LogName::new("t", "ns", "min-insync");
    let log = nodes[0].store.open(&name, &RF3_MIN2).await.unwrap();
    append_all(&log, 10).await;
    let c = nodes.pop().unwrap();
    c.kill(&metadata).await;
    // One follower gone: the ISR shrinks to two, which min.insync allows.
    let mut confirmed = 10;
    loop {
        append_all(&log, 1).await;
        confirmed += 1;
        let record = metadata.get(&name.metadata_key()).await.unwrap().unwrap();
        let record: serde_json::Value = serde_json::from_slice(&record.value).unwrap();
        if record["isr"].as_array().unwrap().len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        log.last_confirmed(),
        Position::new(log.last_confirmed().ledger_id, confirmed - 1)
    );
    let b = nodes.pop().unwrap();
    b.kill(&metadata).await;
    // The last follower gone: appends fail at once, saying why.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let refused = loop {
        // Appends made before the ISR shrank stay unconfirmed (their fate
        // is unknown): do not wait for them.
        let append = log.clone().append(Bytes::from_static(b"late"));
        match tokio::time::timeout(Duration::from_millis(100), append).await {
            Ok(Err(e @ StorageError::NotEnoughReplicas { .. })) => break e,
            _ => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "appends never refused"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    assert!(
        refused.to_string().contains("1 in sync, 2 required"),
        "{refused}"
    );
}

fn cursor_state(i: i64) -> CursorSnapshot {
    CursorSnapshot {
        mark_delete: Position::new(0, i),
        acked_ranges: vec![(0, i + 2, i + 3)],
        partial: Vec::new(),
    }
}

/// The record of the log at `key`, as JSON.
async fn log_record(metadata: &Arc<dyn MetadataStore>, key: &str) -> serde_json::Value {
    let record = metadata.get(key).await.unwrap().expect("a log record");
    serde_json::from_slice(&record.value).unwrap()
}

/// Every key written to `metadata` after `since` and before the write
/// that returned `until` (which is left out).
async fn keys_written_between(
    metadata: &Arc<dyn MetadataStore>,
    since: i64,
    until: i64,
) -> Vec<String> {
    use futures::StreamExt;
    let mut events = metadata.watch("/", Some(since + 1)).await.unwrap();
    let mut written = Vec::new();
    while let Some(event) = events.next().await {
        let event = event.unwrap();
        if event.revision >= until {
            break;
        }
        written.push(event.key);
    }
    written
}

/// The cursors of `topic` as the broker of `node` opens them: in cursor
/// logs of its local log store, rolling every 10 states.
fn cursors_on(metadata: &Arc<dyn MetadataStore>, node: &Node, topic: &LogName) -> CursorStorage {
    let logs: Arc<dyn LogStore> = node.store.clone();
    CursorStorage::new(metadata.clone(), topic.clone(), Some((logs, RF3_MIN2)))
}

/// In the monolithic architecture a cursor's state goes to a local log of
/// its own, replicated on its partition's replicas: flushes write nothing
/// to the metadata store, every in-sync replica holds the last state, the
/// next leader of the partition reads it, a reassignment of the partition
/// moves the cursor log's copies with it, and a broker that holds no
/// in-sync copy of a cursor log starts it afresh from the cursor's record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cursor_logs_follow_their_partition_replicas() {
    let (dir, metadata, mut nodes) = cluster(Duration::from_secs(60)).await;
    let topic = LogName::new("t", "ns", "cursored");
    let cursor_key = topic.cursor_log("sub").metadata_key();
    let partition = nodes[0].store.open(&topic, &RF3_MIN2).await.unwrap();
    append_all(&partition, 30).await;
    let start = Position::new(partition.last_confirmed().ledger_id, -1);
    let (cursor, _) = cursors_on(&metadata, &nodes[0], &topic)
        .open("sub", start)
        .await
        .unwrap();
    cursor.persist(|| Some(cursor_state(0))).await.unwrap();
    let record = log_record(&metadata, &cursor_key).await;
    let partition_record = log_record(&metadata, &topic.metadata_key()).await;
    assert_eq!(record["replicas"], partition_record["replicas"], "{record}");
    assert_eq!(record["leader"], "a", "{record}");

    // Eight flushes: nothing in metadata changes.
    let before = metadata
        .put("/probe", Bytes::new(), Expect::Any, None)
        .await
        .unwrap();
    for i in 1..9 {
        cursor.persist(|| Some(cursor_state(i))).await.unwrap();
    }
    let after = metadata
        .put("/probe", Bytes::new(), Expect::Any, None)
        .await
        .unwrap();
    let written = keys_written_between(&metadata, before, after).await;
    assert!(written.is_empty(), "8 cursor flushes wrote {written:?}");
    // A flush returns once every in-sync replica holds the state.
    for node in &nodes[1..] {
        assert_eq!(
            node.store.replicas().follower_end(&cursor_key),
            Some(9),
            "{}'s copy of the cursor log",
            node.name
        );
    }

    // The partition's leader dies; an in-sync replica takes both over.
    let a = nodes.remove(0);
    a.kill(&metadata).await;
    drop((cursor, partition));
    let partition = nodes[0].store.open(&topic, &RF3_MIN2).await.unwrap();
    let (cursor, state) = cursors_on(&metadata, &nodes[0], &topic)
        .open("sub", start)
        .await
        .unwrap();
    assert_eq!(state.snapshot(), cursor_state(8));
    assert_eq!(log_record(&metadata, &cursor_key).await["leader"], "b");

    // The partition moves from a (dead) to d: the cursor log moves too,
    // and d can lead the topic only once it holds both.
    nodes.push(Node::start(&metadata, dir.path(), "d", Duration::from_secs(60)).await);
    let target = ["b", "c", "d"].map(String::from);
    nodes[0]
        .store
        .reassign(&topic, &target, None)
        .await
        .unwrap();
    let moving = log_record(&metadata, &cursor_key).await;
    assert_eq!(
        moving["reassignment"]["target"],
        serde_json::json!(target),
        "{moving}"
    );
    // New states keep going to the cursor log while it moves.
    for i in 9..15 {
        cursor.persist(|| Some(cursor_state(i))).await.unwrap();
    }
    let leader = nodes[0].store.clone();
    magnetar_tests::wait_until("the move to complete", Duration::from_secs(60), || {
        let (leader, topic) = (leader.clone(), topic.clone());
        async move { leader.settled(&topic).await.unwrap() }
    })
    .await;
    let moved = log_record(&metadata, &cursor_key).await;
    assert_eq!(moved["replicas"], serde_json::json!(target), "{moved}");
    assert!(nodes[0].store.can_lead(&topic, "d").await.unwrap());

    // d takes over: it reads the latest state from its own copy.
    let b = nodes.remove(0);
    b.kill(&metadata).await;
    drop((cursor, partition));
    let d = nodes.last().unwrap();
    let _partition = d.store.open(&topic, &RF3_MIN2).await.unwrap();
    let (cursor, state) = cursors_on(&metadata, d, &topic)
        .open("sub", start)
        .await
        .unwrap();
    assert_eq!(state.snapshot(), cursor_state(14));
    drop(cursor);

    // A cursor log whose copies d cannot reach (here: a record naming
    // only a broker that is gone) is started again on the partition's
    // replicas, from the mark-delete position in the cursor's record.
    let mut lost = log_record(&metadata, &cursor_key).await;
    lost["replicas"] = serde_json::json!(["gone"]);
    lost["isr"] = serde_json::json!(["gone"]);
    lost["leader"] = serde_json::json!("gone");
    metadata
        .put(
            &cursor_key,
            Bytes::from(serde_json::to_vec(&lost).unwrap()),
            Expect::Any,
            None,
        )
        .await
        .unwrap();
    let recorded = log_record(&metadata, &keys::cursor("t", "ns", "cursored", "sub")).await;
    let (cursor, state) = cursors_on(&metadata, d, &topic)
        .open("sub", start)
        .await
        .unwrap();
    assert_eq!(
        serde_json::to_value(state.mark_delete()).unwrap(),
        recorded["mark_delete"]
    );
    let fresh = log_record(&metadata, &cursor_key).await;
    assert_eq!(fresh["leader"], "d", "{fresh}");
    assert_ne!(fresh["log_id"], lost["log_id"], "{fresh}");
    let partition_record = log_record(&metadata, &topic.metadata_key()).await;
    assert_eq!(fresh["replicas"][0], "d");
    let mut fresh_set: Vec<String> = serde_json::from_value(fresh["replicas"].clone()).unwrap();
    let mut partition_set: Vec<String> =
        serde_json::from_value(partition_record["replicas"].clone()).unwrap();
    fresh_set.sort();
    partition_set.sort();
    assert_eq!(fresh_set, partition_set);
    cursor.persist(|| Some(cursor_state(20))).await.unwrap();
}
