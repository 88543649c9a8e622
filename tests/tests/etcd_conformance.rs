//! The conformance suite against a real etcd started from the `etcd` binary
//! (set `ETCD_BIN` to use another than the one on `PATH`), plus what only the
//! etcd backend has: root prefixes and etcd's own compaction.
//!
//! A missing `etcd` binary fails these tests: CI installs it, and a silent
//! skip would hide that the backend went untested.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures::StreamExt;
use magnetar_metadata::{
    conformance, EtcdOptions, EtcdStore, Expect, MetadataError, MetadataStore,
};
use magnetar_tests::{free_port, Etcd};

/// Opens the etcd backend on `etcd` under `root`.
async fn open_store(etcd: &Etcd, root: &str) -> EtcdStore {
    EtcdStore::connect(EtcdOptions::new(vec![etcd.endpoint()], root))
        .await
        .unwrap()
}

/// A root prefix no earlier run used.
fn random_root(n: usize) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("/conformance-{}-{nanos}-{n}", std::process::id())
}

fn bytes(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_suite() {
    let etcd = Etcd::start().await.unwrap();
    let next = AtomicUsize::new(0);
    let result = conformance::run_all(|| {
        let root = random_root(next.fetch_add(1, Ordering::SeqCst));
        let options = EtcdOptions::new(vec![etcd.endpoint()], root);
        async move {
            let store: Arc<dyn MetadataStore> = Arc::new(EtcdStore::connect(options).await?);
            Ok(store)
        }
    })
    .await;
    if let Err(failures) = result {
        panic!("{failures}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn root_prefix_is_invisible_and_exact() {
    let etcd = Etcd::start().await.unwrap();
    let a = open_store(&etcd, "/a").await;
    let ab = open_store(&etcd, "/ab/").await;
    let bare = open_store(&etcd, "").await;
    assert_eq!(ab.root_prefix(), "/ab");

    let mut a_watch = a.watch("", None).await.unwrap();
    ab.put("/k", bytes("ab"), Expect::Any, None).await.unwrap();
    let v = a.put("/k", bytes("a"), Expect::Any, None).await.unwrap();

    // `/a` must not see `/ab`'s keys although `/ab/k` starts with `/a`.
    let listed = a.list("").await.unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(
        (listed[0].key.as_str(), &listed[0].value),
        ("/k", &bytes("a"))
    );
    let event = a_watch.next().await.unwrap().unwrap();
    assert_eq!((event.key.as_str(), event.revision), ("/k", v));

    // Without a root, the real keys show.
    let keys: Vec<String> = bare
        .list("")
        .await
        .unwrap()
        .into_iter()
        .map(|kv| kv.key)
        .collect();
    assert_eq!(keys, ["/a/k", "/ab/k"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_from_a_compacted_revision_reports_compacted() {
    let etcd = Etcd::start().await.unwrap();
    let store = open_store(&etcd, "/compaction").await;
    let first = store
        .put("/k", bytes("1"), Expect::Any, None)
        .await
        .unwrap();
    store
        .put("/k", bytes("2"), Expect::Any, None)
        .await
        .unwrap();
    let last = store
        .put("/k", bytes("3"), Expect::Any, None)
        .await
        .unwrap();

    let mut raw = etcd_client::Client::connect([etcd.endpoint().as_str()], None)
        .await
        .unwrap();
    raw.compact(last, None).await.unwrap();

    // etcd may refuse at creation or cancel right after: accept both.
    let error = match store.watch("/", Some(first)).await {
        Err(e) => e,
        Ok(mut watch) => match tokio::time::timeout(Duration::from_secs(10), watch.next()).await {
            Ok(Some(Err(e))) => e,
            other => panic!("watch from a compacted revision gave {other:?}"),
        },
    };
    assert!(
        matches!(error, MetadataError::Compacted { oldest, .. } if oldest == last),
        "{error:?}"
    );

    // From the compaction point on, history is still served.
    let mut watch = store.watch("/", Some(last)).await.unwrap();
    let event = watch.next().await.unwrap().unwrap();
    assert_eq!((event.key.as_str(), event.revision), ("/k", last));
}

#[tokio::test]
async fn unreachable_etcd_is_unavailable() {
    let mut options = EtcdOptions::new(vec![format!("127.0.0.1:{}", free_port())], "/x");
    options.connect_timeout = Duration::from_millis(500);
    options.request_timeout = Duration::from_secs(2);
    let result = match EtcdStore::connect(options).await {
        Ok(store) => store.get("/k").await.map(|_| ()),
        Err(e) => Err(e),
    };
    assert!(
        matches!(result, Err(MetadataError::Unavailable(_))),
        "{result:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_parses_etcd_urls() {
    let etcd = Etcd::start().await.unwrap();
    let endpoint = etcd.endpoint();
    let host = endpoint.trim_start_matches("http://");
    let store = magnetar_metadata::connect(&format!("etcd://{host}/via-url"))
        .await
        .unwrap();
    store
        .put("/k", bytes("v"), Expect::Any, None)
        .await
        .unwrap();
    let bare = open_store(&etcd, "").await;
    assert!(bare.get("/via-url/k").await.unwrap().is_some());
}
