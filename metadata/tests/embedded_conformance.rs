//! The conformance suite on the embedded backend, plus what only it has:
//! durability across restarts, torn-log recovery, snapshots, the directory
//! lock and bounded watch history.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use magnetar_metadata::{
    conformance, EmbeddedOptions, EmbeddedStore, Expect, MetadataError, MetadataStore,
    WatchEventKind, WAL_FILE,
};
use tokio::time::Instant;

fn bytes(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

async fn value_of(store: &EmbeddedStore, key: &str) -> Option<Bytes> {
    store.get(key).await.unwrap().map(|kv| kv.value)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_suite() {
    let root = tempfile::tempdir().unwrap();
    let next = AtomicUsize::new(0);
    let result = conformance::run_all(|| {
        let dir = root
            .path()
            .join(format!("store-{}", next.fetch_add(1, Ordering::SeqCst)));
        async move {
            let store: Arc<dyn MetadataStore> = Arc::new(EmbeddedStore::open(dir).await?);
            Ok(store)
        }
    })
    .await;
    if let Err(failures) = result {
        panic!("{failures}");
    }
}

/// The suite again with a snapshot after every batch, so every property
/// also runs across log compactions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_suite_with_constant_snapshots() {
    let root = tempfile::tempdir().unwrap();
    let next = AtomicUsize::new(0);
    let options = EmbeddedOptions {
        snapshot_after_bytes: 1,
        ..EmbeddedOptions::default()
    };
    let result = conformance::run_all(|| {
        let dir = root
            .path()
            .join(format!("store-{}", next.fetch_add(1, Ordering::SeqCst)));
        let options = options.clone();
        async move {
            let store: Arc<dyn MetadataStore> =
                Arc::new(EmbeddedStore::open_with(dir, options).await?);
            Ok(store)
        }
    })
    .await;
    if let Err(failures) = result {
        panic!("{failures}");
    }
}

#[tokio::test]
async fn restart_keeps_keys_versions_and_revision() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path()).await.unwrap();
    let v1 = store
        .put("/a", bytes("1"), Expect::Any, None)
        .await
        .unwrap();
    let v2 = store
        .put("/a", bytes("2"), Expect::Version(v1), None)
        .await
        .unwrap();
    store
        .put("/b", bytes("b"), Expect::Any, None)
        .await
        .unwrap();
    store.delete("/b", Expect::Any).await.unwrap();
    store
        .put("/c", bytes("c"), Expect::Any, None)
        .await
        .unwrap();
    let revision = store.revision().await.unwrap();
    let before = store.list("").await.unwrap();
    store.close().await.unwrap();

    let store = EmbeddedStore::open(dir.path()).await.unwrap();
    assert_eq!(store.list("").await.unwrap(), before);
    assert_eq!(store.revision().await.unwrap(), revision);
    let a = store.get("/a").await.unwrap().unwrap();
    assert_eq!((a.version, a.create_revision), (v2, v1));
    // CAS continues from the recovered versions.
    let stale = store.put("/a", bytes("3"), Expect::Version(v1), None).await;
    assert!(
        matches!(stale, Err(MetadataError::Conflict { .. })),
        "{stale:?}"
    );
    let v3 = store
        .put("/a", bytes("3"), Expect::Version(v2), None)
        .await
        .unwrap();
    assert_eq!(v3, revision + 1);
}

#[tokio::test]
async fn restart_gives_leases_a_fresh_ttl() {
    let ttl = Duration::from_secs(4);
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path()).await.unwrap();
    let granted_at = Instant::now();
    let lease = store.grant_lease(ttl).await.unwrap();
    let revoked = store.grant_lease(ttl).await.unwrap();
    store
        .put("/leased", bytes("x"), Expect::Any, Some(lease))
        .await
        .unwrap();
    store
        .put("/revoked", bytes("y"), Expect::Any, Some(revoked))
        .await
        .unwrap();
    store.revoke_lease(revoked).await.unwrap();
    // Most of the TTL passes before the restart.
    tokio::time::sleep(Duration::from_secs(3)).await;
    store.close().await.unwrap();

    let store = EmbeddedStore::open(dir.path()).await.unwrap();
    let reopened_at = Instant::now();
    let kv = store.get("/leased").await.unwrap();
    assert_eq!(
        kv.and_then(|kv| kv.lease),
        Some(lease),
        "leased key lost at restart"
    );
    assert!(store.get("/revoked").await.unwrap().is_none());
    assert!(matches!(
        store.keep_alive(revoked).await,
        Err(MetadataError::LeaseNotFound(_))
    ));
    // Past the original deadline, the key lives on: the TTL started over.
    tokio::time::sleep_until(granted_at + ttl + Duration::from_secs(1)).await;
    assert!(
        store.get("/leased").await.unwrap().is_some(),
        "lease kept its pre-restart deadline"
    );
    // And it still ends, a fresh TTL after the restart.
    let deadline = reopened_at + ttl + Duration::from_secs(20);
    while store.get("/leased").await.unwrap().is_some() {
        assert!(
            Instant::now() < deadline,
            "lease never expired after restart"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(matches!(
        store.keep_alive(lease).await,
        Err(MetadataError::LeaseNotFound(_))
    ));
    // New leases never reuse a granted id.
    let fresh = store.grant_lease(ttl).await.unwrap();
    assert!(fresh != lease && fresh != revoked);
}

/// Cuts `cut` bytes off the end of the log, as a crash mid-append would.
fn cut_log(dir: &Path, cut: u64) {
    let file = OpenOptions::new()
        .write(true)
        .open(dir.join(WAL_FILE))
        .unwrap();
    let len = file.metadata().unwrap().len();
    file.set_len(len - cut).unwrap();
}

#[tokio::test]
async fn torn_log_tail_is_cut_and_earlier_records_survive() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path()).await.unwrap();
    store
        .put("/1", bytes("one"), Expect::Any, None)
        .await
        .unwrap();
    let v2 = store
        .put("/2", bytes("two"), Expect::Any, None)
        .await
        .unwrap();
    store
        .put("/3", bytes("three"), Expect::Any, None)
        .await
        .unwrap();
    store.close().await.unwrap();
    cut_log(dir.path(), 3);

    let store = EmbeddedStore::open(dir.path()).await.unwrap();
    assert_eq!(value_of(&store, "/1").await, Some(bytes("one")));
    assert_eq!(value_of(&store, "/2").await, Some(bytes("two")));
    assert_eq!(value_of(&store, "/3").await, None, "torn record applied");
    assert_eq!(store.revision().await.unwrap(), v2);
    // New records go after the last good one, not after the garbage.
    let v = store
        .put("/4", bytes("four"), Expect::Any, None)
        .await
        .unwrap();
    assert_eq!(v, v2 + 1);
    store.close().await.unwrap();

    let store = EmbeddedStore::open(dir.path()).await.unwrap();
    assert_eq!(value_of(&store, "/4").await, Some(bytes("four")));
    assert_eq!(store.list("").await.unwrap().len(), 3);
}

#[tokio::test]
async fn corrupt_log_tail_is_cut() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path()).await.unwrap();
    store
        .put("/1", bytes("one"), Expect::Any, None)
        .await
        .unwrap();
    store
        .put("/2", bytes("two"), Expect::Any, None)
        .await
        .unwrap();
    store.close().await.unwrap();
    // Garbage after the records, as a crash while extending the file leaves.
    let mut file = OpenOptions::new()
        .append(true)
        .open(dir.path().join(WAL_FILE))
        .unwrap();
    file.write_all(&[7, 0, 0, 0, 1, 2, 3, 4, 9, 9]).unwrap();
    drop(file);
    let len_with_garbage = std::fs::metadata(dir.path().join(WAL_FILE)).unwrap().len();

    let store = EmbeddedStore::open(dir.path()).await.unwrap();
    assert_eq!(value_of(&store, "/1").await, Some(bytes("one")));
    assert_eq!(value_of(&store, "/2").await, Some(bytes("two")));
    let len = std::fs::metadata(dir.path().join(WAL_FILE)).unwrap().len();
    assert_eq!(len, len_with_garbage - 10, "garbage not truncated");
}

#[tokio::test]
async fn snapshots_compact_the_log_and_survive_restart() {
    let dir = tempfile::tempdir().unwrap();
    let options = EmbeddedOptions {
        snapshot_after_bytes: 512,
        ..EmbeddedOptions::default()
    };
    let store = EmbeddedStore::open_with(dir.path(), options.clone())
        .await
        .unwrap();
    let lease = store.grant_lease(Duration::from_secs(60)).await.unwrap();
    for i in 0..100 {
        let key = format!("/k/{i:03}");
        store
            .put(&key, bytes(&"v".repeat(i)), Expect::Any, None)
            .await
            .unwrap();
        if i % 3 == 0 {
            store.delete(&key, Expect::Any).await.unwrap();
        }
    }
    store
        .put("/leased", bytes("l"), Expect::Any, Some(lease))
        .await
        .unwrap();
    let before = store.list("").await.unwrap();
    let revision = store.revision().await.unwrap();
    store.close().await.unwrap();
    let wal_len = std::fs::metadata(dir.path().join(WAL_FILE)).unwrap().len();
    assert!(wal_len < 1024, "log of {wal_len} bytes was never compacted");

    let store = EmbeddedStore::open_with(dir.path(), options).await.unwrap();
    assert_eq!(store.list("").await.unwrap(), before);
    assert_eq!(store.revision().await.unwrap(), revision);
    // The lease came back from the snapshot with its key binding.
    store.revoke_lease(lease).await.unwrap();
    assert!(store.get("/leased").await.unwrap().is_none());
    // History older than the snapshot is gone after a restart.
    let old = store.watch("/k/", Some(1)).await;
    assert!(
        matches!(old, Err(MetadataError::Compacted { .. })),
        "{:?}",
        old.err()
    );
}

#[tokio::test]
async fn second_open_of_a_directory_fails() {
    let dir = tempfile::tempdir().unwrap();
    let first = EmbeddedStore::open(dir.path()).await.unwrap();
    let second = EmbeddedStore::open(dir.path()).await;
    let error = second.expect_err("a second store opened a locked directory");
    assert!(error.to_string().contains("already open"), "{error}");
    // The first store is unharmed, and the directory frees up on close.
    first
        .put("/k", bytes("v"), Expect::Any, None)
        .await
        .unwrap();
    first.close().await.unwrap();
    assert!(matches!(
        first.get("/k").await,
        Err(MetadataError::Unavailable(_))
    ));
    let again = EmbeddedStore::open(dir.path()).await.unwrap();
    assert_eq!(value_of(&again, "/k").await, Some(bytes("v")));
}

#[tokio::test]
async fn dropped_store_releases_its_directory() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path()).await.unwrap();
    store
        .put("/k", bytes("v"), Expect::Any, None)
        .await
        .unwrap();
    drop(store);
    let deadline = Instant::now() + Duration::from_secs(10);
    let store = loop {
        match EmbeddedStore::open(dir.path()).await {
            Ok(store) => break store,
            Err(e) => {
                assert!(Instant::now() < deadline, "directory never released: {e}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    assert_eq!(value_of(&store, "/k").await, Some(bytes("v")));
}

#[tokio::test]
async fn watch_before_the_history_is_compacted() {
    let dir = tempfile::tempdir().unwrap();
    let options = EmbeddedOptions {
        history_limit: 4,
        ..EmbeddedOptions::default()
    };
    let store = EmbeddedStore::open_with(dir.path(), options).await.unwrap();
    let first = store
        .put("/h/0", bytes("0"), Expect::Any, None)
        .await
        .unwrap();
    let mut last = first;
    for i in 1..10 {
        last = store
            .put(&format!("/h/{i}"), bytes("x"), Expect::Any, None)
            .await
            .unwrap();
    }
    match store.watch("/h/", Some(first)).await {
        Err(MetadataError::Compacted { requested, oldest }) => {
            assert_eq!(requested, first);
            assert_eq!(oldest, last - 3);
        }
        other => panic!("watch from a dropped revision gave {:?}", other.err()),
    }
    let mut recent = store.watch("/h/", Some(last - 3)).await.unwrap();
    for expected in last - 3..=last {
        let event = recent.next().await.unwrap().unwrap();
        assert_eq!(
            (event.kind, event.revision),
            (WatchEventKind::Put, expected)
        );
    }
}

#[tokio::test]
async fn closing_ends_watches() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path()).await.unwrap();
    let mut watch = store.watch("", None).await.unwrap();
    store.close().await.unwrap();
    let end = tokio::time::timeout(Duration::from_secs(10), watch.next()).await;
    assert!(matches!(end, Ok(None)), "watch outlived its store: {end:?}");
}

#[tokio::test]
async fn connect_opens_embedded_urls() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("embedded://{}", dir.path().join("meta").display());
    let store = magnetar_metadata::connect(&url).await.unwrap();
    store
        .put("/k", bytes("v"), Expect::Any, None)
        .await
        .unwrap();
    assert!(dir.path().join("meta").join(WAL_FILE).exists());
    for bad in ["zookeeper://x:2181", "embedded://", "etcd://"] {
        let result = magnetar_metadata::connect(bad).await;
        assert!(
            matches!(result, Err(MetadataError::InvalidArgument(_))),
            "{bad} gave {:?}",
            result.err()
        );
    }
}
