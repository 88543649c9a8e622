//! Conformance suite for [`MetadataStore`] backends: one async function per
//! property, written once against the trait and run against every backend
//! (the idea of openraft's storage test suite). A backend is correct when
//! [`run_all`] passes.
//!
//! Compiled only with the `conformance` feature. Each property gets a fresh
//! empty store and fails with a [`Failure`] saying what it saw; store errors
//! fail it too. Lease properties wait for real expiry, so they take seconds.

use std::collections::HashSet;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use tokio::time::Instant;

use crate::{
    Compare, Expect, LeaseKeeper, LedgerIdAllocator, MetadataError, MetadataStore, Op, Txn,
    WatchEvent, WatchEventKind, WatchStream,
};

/// TTL of short leases. etcd rounds it up to its minimum (about 2 s).
const SHORT_TTL: Duration = Duration::from_secs(1);
/// How long a short lease may take to end: generous for slow CI machines,
/// never reached by a correct backend unless the machine stalls.
const EXPIRY_DEADLINE: Duration = Duration::from_secs(30);
/// How long to wait for a watch event that must come.
const EVENT_DEADLINE: Duration = Duration::from_secs(10);
/// Bound on one property, so a hung backend fails instead of hanging.
const PROPERTY_DEADLINE: Duration = Duration::from_secs(180);

/// Why a property failed.
#[derive(Debug)]
pub struct Failure(pub String);

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<MetadataError> for Failure {
    fn from(e: MetadataError) -> Self {
        Failure(format!("unexpected store error: {e}"))
    }
}

pub type Outcome = Result<(), Failure>;

/// Every property that failed in a [`run_all`].
#[derive(Debug)]
pub struct SuiteFailure(pub Vec<(&'static str, Failure)>);

impl fmt::Display for SuiteFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{} metadata conformance properties failed:",
            self.0.len()
        )?;
        for (name, failure) in &self.0 {
            writeln!(f, "  {name}: {failure}")?;
        }
        Ok(())
    }
}

impl std::error::Error for SuiteFailure {}

macro_rules! ensure {
    ($cond:expr, $($msg:tt)+) => {
        if !$cond {
            return Err(Failure(format!($($msg)+)));
        }
    };
}

macro_rules! ensure_eq {
    ($left:expr, $right:expr, $($msg:tt)+) => {{
        let (left, right) = (&$left, &$right);
        if left != right {
            return Err(Failure(format!(
                "{}: {:?} != {:?}",
                format!($($msg)+),
                left,
                right
            )));
        }
    }};
}

type BoxedOutcome = Pin<Box<dyn Future<Output = Outcome> + Send>>;
type Property = fn(Arc<dyn MetadataStore>) -> BoxedOutcome;

/// Properties that need one fresh store each.
pub const PROPERTIES: &[(&str, Property)] = &[
    ("put_get_delete_round_trip", |s| {
        Box::pin(put_get_delete_round_trip(s))
    }),
    ("put_absent_fails_when_present", |s| {
        Box::pin(put_absent_fails_when_present(s))
    }),
    ("put_stale_version_fails", |s| {
        Box::pin(put_stale_version_fails(s))
    }),
    ("delete_stale_version_fails", |s| {
        Box::pin(delete_stale_version_fails(s))
    }),
    ("list_returns_prefix_in_key_order", |s| {
        Box::pin(list_returns_prefix_in_key_order(s))
    }),
    ("invalid_requests_are_rejected", |s| {
        Box::pin(invalid_requests_are_rejected(s))
    }),
    ("lease_expiry_removes_bound_keys", |s| {
        Box::pin(lease_expiry_removes_bound_keys(s))
    }),
    ("revoke_removes_bound_keys_at_once", |s| {
        Box::pin(revoke_removes_bound_keys_at_once(s))
    }),
    ("keep_alive_keeps_keys_past_ttl", |s| {
        Box::pin(keep_alive_keeps_keys_past_ttl(s))
    }),
    ("keep_alive_on_revoked_lease_fails", |s| {
        Box::pin(keep_alive_on_revoked_lease_fails(s))
    }),
    ("watch_delivers_changes_in_revision_order", |s| {
        Box::pin(watch_delivers_changes_in_revision_order(s))
    }),
    ("watch_sees_lease_expiry", |s| {
        Box::pin(watch_sees_lease_expiry(s))
    }),
    ("watch_resumes_from_revision", |s| {
        Box::pin(watch_resumes_from_revision(s))
    }),
    ("txn_is_all_or_nothing", |s| {
        Box::pin(txn_is_all_or_nothing(s))
    }),
    ("concurrent_cas_increments_lose_no_update", |s| {
        Box::pin(concurrent_cas_increments_lose_no_update(s))
    }),
    ("ledger_ids_unique_across_allocators", |s| {
        Box::pin(ledger_ids_unique_across_allocators(s))
    }),
    ("lease_keeper_refreshes_and_reports_loss", |s| {
        Box::pin(lease_keeper_refreshes_and_reports_loss(s))
    }),
];

/// Runs every property, each on a fresh empty store from `factory`, plus
/// [`stores_are_isolated`] on two of them. Reports all failures, not just
/// the first.
pub async fn run_all<F, Fut>(factory: F) -> Result<(), SuiteFailure>
where
    F: Fn() -> Fut,
    Fut: Future<Output = crate::Result<Arc<dyn MetadataStore>>>,
{
    let mut failures = Vec::new();
    let mut record = |name: &'static str, outcome: Outcome| {
        match &outcome {
            Ok(()) => eprintln!("conformance {name}: ok"),
            Err(failure) => eprintln!("conformance {name}: FAILED: {failure}"),
        }
        if let Err(failure) = outcome {
            failures.push((name, failure));
        }
    };
    for (name, property) in PROPERTIES {
        let outcome = match factory().await {
            Ok(store) => bounded(property(store)).await,
            Err(e) => Err(Failure(format!("factory failed: {e}"))),
        };
        record(name, outcome);
    }
    let outcome = match (factory().await, factory().await) {
        (Ok(a), Ok(b)) => bounded(Box::pin(stores_are_isolated(a, b))).await,
        (Err(e), _) | (_, Err(e)) => Err(Failure(format!("factory failed: {e}"))),
    };
    record("stores_are_isolated", outcome);
    if failures.is_empty() {
        Ok(())
    } else {
        Err(SuiteFailure(failures))
    }
}

async fn bounded(property: BoxedOutcome) -> Outcome {
    tokio::time::timeout(PROPERTY_DEADLINE, property)
        .await
        .unwrap_or_else(|_| {
            Err(Failure(format!(
                "did not finish within {PROPERTY_DEADLINE:?}"
            )))
        })
}

fn bytes(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

fn is_conflict(result: &crate::Result<impl fmt::Debug>, key: &str) -> bool {
    matches!(result, Err(MetadataError::Conflict { key: k }) if k == key)
}

/// Polls until `key` is gone; false if it is still there at the deadline.
async fn wait_until_absent(store: &dyn MetadataStore, key: &str) -> Result<bool, Failure> {
    let deadline = Instant::now() + EXPIRY_DEADLINE;
    while Instant::now() < deadline {
        if store.get(key).await?.is_none() {
            return Ok(true);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(false)
}

/// The next `n` events of a watch, failing if they do not come in time.
async fn next_events(watch: &mut WatchStream, n: usize) -> Result<Vec<WatchEvent>, Failure> {
    let mut events = Vec::with_capacity(n);
    while events.len() < n {
        match tokio::time::timeout(EVENT_DEADLINE, watch.next()).await {
            Ok(Some(Ok(event))) => events.push(event),
            Ok(Some(Err(e))) => return Err(Failure(format!("watch failed: {e}"))),
            Ok(None) => return Err(Failure(format!("watch ended after {events:?}"))),
            Err(_) => {
                return Err(Failure(format!(
                    "expected {n} watch events within {EVENT_DEADLINE:?}, got {events:?}"
                )))
            }
        }
    }
    Ok(events)
}

fn event(kind: WatchEventKind, key: &str, value: &str, revision: i64) -> WatchEvent {
    WatchEvent {
        kind,
        key: key.into(),
        value: bytes(value),
        revision,
    }
}

pub async fn put_get_delete_round_trip(store: Arc<dyn MetadataStore>) -> Outcome {
    ensure!(
        store.list("").await?.is_empty(),
        "a fresh store is not empty"
    );
    ensure!(store.get("/rt/k").await?.is_none(), "missing key found");

    let v1 = store.put("/rt/k", bytes("one"), Expect::Any, None).await?;
    ensure!(v1 > 0, "version {v1} of a new key is not positive");
    let kv = store.get("/rt/k").await?;
    let kv = kv.ok_or_else(|| Failure("key missing after put".into()))?;
    ensure_eq!(kv.key, "/rt/k", "key as read back");
    ensure_eq!(kv.value, bytes("one"), "value as read back");
    ensure_eq!(kv.version, v1, "version as read back");
    ensure_eq!(kv.create_revision, v1, "create revision of a new key");
    ensure_eq!(kv.lease, None, "lease of an unleased key");

    let v2 = store.put("/rt/k", bytes("two"), Expect::Any, None).await?;
    ensure!(v2 > v1, "overwrite version {v2} not above {v1}");
    let kv = store.get("/rt/k").await?;
    let kv = kv.ok_or_else(|| Failure("key missing after overwrite".into()))?;
    ensure_eq!(kv.value, bytes("two"), "value after overwrite");
    ensure_eq!(kv.version, v2, "version after overwrite");
    ensure_eq!(kv.create_revision, v1, "create revision kept by overwrite");
    ensure!(
        store.revision().await? >= v2,
        "store revision behind a write"
    );

    ensure!(
        store.delete("/rt/k", Expect::Any).await?,
        "delete said nothing deleted"
    );
    ensure!(
        store.get("/rt/k").await?.is_none(),
        "key still there after delete"
    );
    ensure!(
        !store.delete("/rt/k", Expect::Any).await?,
        "second delete said it deleted"
    );

    let v3 = store
        .put("/rt/k", bytes("three"), Expect::Any, None)
        .await?;
    let kv = store.get("/rt/k").await?;
    let kv = kv.ok_or_else(|| Failure("key missing after re-create".into()))?;
    ensure_eq!(
        kv.create_revision,
        v3,
        "create revision of a re-created key"
    );
    Ok(())
}

pub async fn put_absent_fails_when_present(store: Arc<dyn MetadataStore>) -> Outcome {
    let v1 = store
        .put("/cas/k", bytes("first"), Expect::Absent, None)
        .await?;
    let second = store
        .put("/cas/k", bytes("second"), Expect::Absent, None)
        .await;
    ensure!(
        is_conflict(&second, "/cas/k"),
        "create-if-absent over an existing key gave {second:?}"
    );
    let kv = store.get("/cas/k").await?;
    ensure_eq!(
        kv.map(|kv| (kv.value, kv.version)),
        Some((bytes("first"), v1)),
        "key after a failed create"
    );
    Ok(())
}

pub async fn put_stale_version_fails(store: Arc<dyn MetadataStore>) -> Outcome {
    let v1 = store.put("/cas/k", bytes("1"), Expect::Any, None).await?;
    let v2 = store
        .put("/cas/k", bytes("2"), Expect::Version(v1), None)
        .await?;
    ensure!(v2 > v1, "CAS version {v2} not above {v1}");
    let stale = store
        .put("/cas/k", bytes("3"), Expect::Version(v1), None)
        .await;
    ensure!(
        is_conflict(&stale, "/cas/k"),
        "put on a stale version gave {stale:?}"
    );
    let kv = store.get("/cas/k").await?;
    ensure_eq!(
        kv.map(|kv| kv.value),
        Some(bytes("2")),
        "value after a failed CAS"
    );
    store
        .put("/cas/k", bytes("4"), Expect::Version(v2), None)
        .await?;
    let absent = store
        .put("/cas/none", bytes("x"), Expect::Version(v2), None)
        .await;
    ensure!(
        is_conflict(&absent, "/cas/none"),
        "put expecting a version of a missing key gave {absent:?}"
    );
    ensure!(
        store.get("/cas/none").await?.is_none(),
        "failed CAS created a key"
    );
    Ok(())
}

pub async fn delete_stale_version_fails(store: Arc<dyn MetadataStore>) -> Outcome {
    let v1 = store.put("/cas/k", bytes("1"), Expect::Any, None).await?;
    let v2 = store.put("/cas/k", bytes("2"), Expect::Any, None).await?;
    let stale = store.delete("/cas/k", Expect::Version(v1)).await;
    ensure!(
        is_conflict(&stale, "/cas/k"),
        "delete on a stale version gave {stale:?}"
    );
    ensure!(
        store.get("/cas/k").await?.is_some(),
        "failed CAS delete removed the key"
    );
    let present = store.delete("/cas/k", Expect::Absent).await;
    ensure!(
        is_conflict(&present, "/cas/k"),
        "delete expecting absence of a present key gave {present:?}"
    );
    ensure!(
        store.delete("/cas/k", Expect::Version(v2)).await?,
        "delete on the current version deleted nothing"
    );
    ensure!(
        store.get("/cas/k").await?.is_none(),
        "key still there after CAS delete"
    );
    ensure!(
        !store.delete("/cas/k", Expect::Absent).await?,
        "delete expecting absence of a missing key said it deleted"
    );
    Ok(())
}

pub async fn list_returns_prefix_in_key_order(store: Arc<dyn MetadataStore>) -> Outcome {
    for key in ["/a/2", "/b/1", "/a/10", "/ab/x", "/a", "/a/1", "/a/1/deep"] {
        store.put(key, bytes(key), Expect::Any, None).await?;
    }
    let keys = |list: Vec<crate::KeyValue>| list.into_iter().map(|kv| kv.key).collect::<Vec<_>>();
    ensure_eq!(
        keys(store.list("/a/").await?),
        ["/a/1", "/a/1/deep", "/a/10", "/a/2"],
        "list /a/"
    );
    ensure_eq!(
        keys(store.list("/a").await?),
        ["/a", "/a/1", "/a/1/deep", "/a/10", "/a/2", "/ab/x"],
        "list /a"
    );
    ensure_eq!(
        keys(store.list("").await?),
        ["/a", "/a/1", "/a/1/deep", "/a/10", "/a/2", "/ab/x", "/b/1"],
        "list everything"
    );
    ensure!(
        store.list("/zz/").await?.is_empty(),
        "list of an unused prefix"
    );
    let listed = store.list("/b/").await?;
    ensure!(
        listed.len() == 1 && listed[0].value == bytes("/b/1"),
        "list returned {listed:?}"
    );
    Ok(())
}

pub async fn invalid_requests_are_rejected(store: Arc<dyn MetadataStore>) -> Outcome {
    let relative = store.put("relative", bytes("x"), Expect::Any, None).await;
    ensure!(
        matches!(relative, Err(MetadataError::InvalidArgument(_))),
        "put of a key without a leading '/' gave {relative:?}"
    );
    let listed = store.list("relative").await;
    ensure!(
        matches!(listed, Err(MetadataError::InvalidArgument(_))),
        "list of a prefix without a leading '/' gave {listed:?}"
    );
    let twice = store
        .txn(Txn {
            compares: vec![],
            ops: vec![
                Op::Put {
                    key: "/t/a".into(),
                    value: bytes("1"),
                    lease: None,
                },
                Op::Delete { key: "/t/a".into() },
            ],
        })
        .await;
    ensure!(
        matches!(twice, Err(MetadataError::InvalidArgument(_))),
        "txn writing one key twice gave {twice:?}"
    );
    ensure!(
        store.get("/t/a").await?.is_none(),
        "rejected txn wrote a key"
    );
    let unknown = store
        .put("/k", bytes("x"), Expect::Any, Some(987_654_321))
        .await;
    ensure!(
        matches!(unknown, Err(MetadataError::LeaseNotFound(987_654_321))),
        "put bound to an unknown lease gave {unknown:?}"
    );
    Ok(())
}

pub async fn lease_expiry_removes_bound_keys(store: Arc<dyn MetadataStore>) -> Outcome {
    let lease = store.grant_lease(SHORT_TTL).await?;
    store
        .put("/l/bound", bytes("x"), Expect::Any, Some(lease))
        .await?;
    store.put("/l/free", bytes("y"), Expect::Any, None).await?;
    let kv = store.get("/l/bound").await?;
    ensure_eq!(
        kv.and_then(|kv| kv.lease),
        Some(lease),
        "lease of a bound key"
    );

    ensure!(
        wait_until_absent(store.as_ref(), "/l/bound").await?,
        "leased key still there {EXPIRY_DEADLINE:?} after its lease's TTL"
    );
    ensure!(
        store.get("/l/free").await?.is_some(),
        "lease expiry removed an unleased key"
    );
    let refreshed = store.keep_alive(lease).await;
    ensure!(
        matches!(refreshed, Err(MetadataError::LeaseNotFound(id)) if id == lease),
        "keep_alive on an expired lease gave {refreshed:?}"
    );
    Ok(())
}

pub async fn revoke_removes_bound_keys_at_once(store: Arc<dyn MetadataStore>) -> Outcome {
    let lease = store.grant_lease(Duration::from_secs(60)).await?;
    let other = store.grant_lease(Duration::from_secs(60)).await?;
    ensure!(lease != other, "two grants returned lease {lease}");
    store
        .put("/r/1", bytes("1"), Expect::Any, Some(lease))
        .await?;
    store
        .put("/r/2", bytes("2"), Expect::Any, Some(lease))
        .await?;
    store
        .put("/r/3", bytes("3"), Expect::Any, Some(other))
        .await?;
    // Re-binding a key to another lease unbinds it from the first.
    store
        .put("/r/moved", bytes("m"), Expect::Any, Some(lease))
        .await?;
    store
        .put("/r/moved", bytes("m"), Expect::Any, Some(other))
        .await?;

    store.revoke_lease(lease).await?;
    ensure!(store.get("/r/1").await?.is_none(), "/r/1 survived revoke");
    ensure!(store.get("/r/2").await?.is_none(), "/r/2 survived revoke");
    ensure!(
        store.get("/r/3").await?.is_some(),
        "revoke removed another lease's key"
    );
    ensure!(
        store.get("/r/moved").await?.is_some(),
        "revoke removed a re-bound key"
    );

    let again = store.revoke_lease(lease).await;
    ensure!(
        matches!(again, Err(MetadataError::LeaseNotFound(id)) if id == lease),
        "second revoke gave {again:?}"
    );
    let put = store
        .put("/r/4", bytes("4"), Expect::Any, Some(lease))
        .await;
    ensure!(
        matches!(put, Err(MetadataError::LeaseNotFound(id)) if id == lease),
        "put bound to a revoked lease gave {put:?}"
    );
    store.revoke_lease(other).await?;
    Ok(())
}

pub async fn keep_alive_keeps_keys_past_ttl(store: Arc<dyn MetadataStore>) -> Outcome {
    let ttl = Duration::from_secs(2);
    let lease = store.grant_lease(ttl).await?;
    store
        .put("/ka/k", bytes("x"), Expect::Any, Some(lease))
        .await?;
    let until = Instant::now() + ttl * 3;
    while Instant::now() < until {
        store.keep_alive(lease).await?;
        ensure!(
            store.get("/ka/k").await?.is_some(),
            "key of a refreshed lease vanished"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // Proof the key was leased at all: without refreshes it goes.
    ensure!(
        wait_until_absent(store.as_ref(), "/ka/k").await?,
        "key outlived its lease once refreshes stopped"
    );
    Ok(())
}

pub async fn keep_alive_on_revoked_lease_fails(store: Arc<dyn MetadataStore>) -> Outcome {
    let lease = store.grant_lease(Duration::from_secs(60)).await?;
    store.keep_alive(lease).await?;
    store.revoke_lease(lease).await?;
    let result = store.keep_alive(lease).await;
    ensure!(
        matches!(result, Err(MetadataError::LeaseNotFound(id)) if id == lease),
        "keep_alive on a revoked lease gave {result:?}"
    );
    Ok(())
}

pub async fn watch_delivers_changes_in_revision_order(store: Arc<dyn MetadataStore>) -> Outcome {
    store
        .put("/w/before", bytes("old"), Expect::Any, None)
        .await?;
    let mut watch = store.watch("/w/", None).await?;
    let r1 = store.put("/w/a", bytes("1"), Expect::Any, None).await?;
    let r2 = store.put("/w/b", bytes("2"), Expect::Any, None).await?;
    store
        .put("/x/outside", bytes("no"), Expect::Any, None)
        .await?;
    store.delete("/w/a", Expect::Any).await?;
    let txn = store
        .txn(Txn {
            compares: vec![],
            ops: vec![
                Op::Put {
                    key: "/w/c".into(),
                    value: bytes("3"),
                    lease: None,
                },
                Op::Delete { key: "/w/b".into() },
            ],
        })
        .await?;
    ensure!(txn.succeeded, "unconditional txn failed");
    let r4 = txn.revision;
    let marker = store.put("/w/end", bytes("end"), Expect::Any, None).await?;

    let events = next_events(&mut watch, 6).await?;
    let delete_revision = events[2].revision;
    ensure!(
        r2 < delete_revision && delete_revision < r4,
        "delete revision {delete_revision} not between {r2} and {r4}"
    );
    ensure_eq!(
        events,
        vec![
            event(WatchEventKind::Put, "/w/a", "1", r1),
            event(WatchEventKind::Put, "/w/b", "2", r2),
            event(WatchEventKind::Delete, "/w/a", "", delete_revision),
            event(WatchEventKind::Put, "/w/c", "3", r4),
            event(WatchEventKind::Delete, "/w/b", "", r4),
            event(WatchEventKind::Put, "/w/end", "end", marker),
        ],
        "watched events"
    );
    Ok(())
}

pub async fn watch_sees_lease_expiry(store: Arc<dyn MetadataStore>) -> Outcome {
    let lease = store.grant_lease(SHORT_TTL).await?;
    let put = store
        .put("/wl/k", bytes("x"), Expect::Any, Some(lease))
        .await?;
    let mut watch = store.watch("/wl/", Some(put)).await?;
    let first = next_events(&mut watch, 1).await?;
    ensure_eq!(
        first,
        vec![event(WatchEventKind::Put, "/wl/k", "x", put)],
        "replayed put"
    );
    match tokio::time::timeout(EXPIRY_DEADLINE, watch.next()).await {
        Ok(Some(Ok(e))) => {
            ensure!(
                e.kind == WatchEventKind::Delete && e.key == "/wl/k" && e.revision > put,
                "expected the expiry delete of /wl/k, got {e:?}"
            );
            Ok(())
        }
        Ok(other) => Err(Failure(format!(
            "watch gave {other:?} instead of the expiry"
        ))),
        Err(_) => Err(Failure(format!(
            "no expiry delete within {EXPIRY_DEADLINE:?}"
        ))),
    }
}

pub async fn watch_resumes_from_revision(store: Arc<dyn MetadataStore>) -> Outcome {
    let r1 = store.put("/rw/1", bytes("1"), Expect::Any, None).await?;
    let r2 = store.put("/rw/2", bytes("2"), Expect::Any, None).await?;
    store.put("/other/x", bytes("x"), Expect::Any, None).await?;
    store.delete("/rw/1", Expect::Any).await?;
    let r4 = store.put("/rw/3", bytes("3"), Expect::Any, None).await?;

    let mut from_r2 = store.watch("/rw/", Some(r2)).await?;
    let replayed = next_events(&mut from_r2, 3).await?;
    let deleted_at = replayed[1].revision;
    ensure!(
        r2 < deleted_at && deleted_at < r4,
        "delete revision {deleted_at} out of place"
    );
    ensure_eq!(
        replayed,
        vec![
            event(WatchEventKind::Put, "/rw/2", "2", r2),
            event(WatchEventKind::Delete, "/rw/1", "", deleted_at),
            event(WatchEventKind::Put, "/rw/3", "3", r4),
        ],
        "events replayed from revision {r2}"
    );
    let r5 = store.put("/rw/4", bytes("4"), Expect::Any, None).await?;
    ensure_eq!(
        next_events(&mut from_r2, 1).await?,
        vec![event(WatchEventKind::Put, "/rw/4", "4", r5)],
        "live event after the replay"
    );

    let mut from_r1 = store.watch("/rw/", Some(r1)).await?;
    let all = next_events(&mut from_r1, 5).await?;
    let revisions: Vec<i64> = all.iter().map(|e| e.revision).collect();
    ensure_eq!(
        revisions,
        vec![r1, r2, deleted_at, r4, r5],
        "revisions replayed from {r1}"
    );

    let mut from_next = store.watch("/rw/", Some(r5 + 1)).await?;
    let r6 = store.put("/rw/5", bytes("5"), Expect::Any, None).await?;
    ensure_eq!(
        next_events(&mut from_next, 1).await?,
        vec![event(WatchEventKind::Put, "/rw/5", "5", r6)],
        "watch from the next revision"
    );
    Ok(())
}

pub async fn txn_is_all_or_nothing(store: Arc<dyn MetadataStore>) -> Outcome {
    let va = store.put("/t/a", bytes("a0"), Expect::Any, None).await?;
    store.put("/t/b", bytes("b0"), Expect::Any, None).await?;
    let before = store.revision().await?;
    let ops = vec![
        Op::Put {
            key: "/t/a".into(),
            value: bytes("a1"),
            lease: None,
        },
        Op::Put {
            key: "/t/c".into(),
            value: bytes("c1"),
            lease: None,
        },
        Op::Delete { key: "/t/b".into() },
    ];

    // One compare fails (b exists): nothing applies.
    let failed = store
        .txn(Txn {
            compares: vec![
                Compare {
                    key: "/t/a".into(),
                    expect: Expect::Version(va),
                },
                Compare {
                    key: "/t/b".into(),
                    expect: Expect::Absent,
                },
            ],
            ops: ops.clone(),
        })
        .await?;
    ensure!(!failed.succeeded, "txn with a false compare succeeded");
    ensure_eq!(
        store.get("/t/a").await?.map(|kv| kv.value),
        Some(bytes("a0")),
        "/t/a after failed txn"
    );
    ensure!(
        store.get("/t/b").await?.is_some(),
        "failed txn deleted /t/b"
    );
    ensure!(
        store.get("/t/c").await?.is_none(),
        "failed txn created /t/c"
    );
    ensure_eq!(
        store.revision().await?,
        before,
        "revision after a failed txn"
    );

    // All compares hold: every op applies at one revision.
    let done = store
        .txn(Txn {
            compares: vec![
                Compare {
                    key: "/t/a".into(),
                    expect: Expect::Version(va),
                },
                Compare {
                    key: "/t/c".into(),
                    expect: Expect::Absent,
                },
            ],
            ops: ops.clone(),
        })
        .await?;
    ensure!(done.succeeded, "txn with true compares failed");
    ensure!(
        done.revision > before,
        "txn revision {} not above {before}",
        done.revision
    );
    let a = store.get("/t/a").await?;
    let c = store.get("/t/c").await?;
    ensure_eq!(
        a.map(|kv| (kv.value, kv.version)),
        Some((bytes("a1"), done.revision)),
        "/t/a after txn"
    );
    ensure_eq!(
        c.map(|kv| (kv.value, kv.version)),
        Some((bytes("c1"), done.revision)),
        "/t/c after txn"
    );
    ensure!(
        store.get("/t/b").await?.is_none(),
        "txn did not delete /t/b"
    );
    Ok(())
}

pub async fn concurrent_cas_increments_lose_no_update(store: Arc<dyn MetadataStore>) -> Outcome {
    const TASKS: u64 = 8;
    const INCREMENTS: u64 = 20;
    let key = "/counter";
    let mut tasks = Vec::new();
    for _ in 0..TASKS {
        let store = Arc::clone(&store);
        tasks.push(tokio::spawn(async move {
            let mut versions = Vec::new();
            for _ in 0..INCREMENTS {
                loop {
                    let current = store.get(key).await?;
                    let (n, expect) = match current {
                        None => (0, Expect::Absent),
                        Some(kv) => {
                            let n: u64 = std::str::from_utf8(&kv.value)
                                .ok()
                                .and_then(|s| s.parse().ok())
                                .ok_or_else(|| Failure(format!("counter holds {:?}", kv.value)))?;
                            (n, Expect::Version(kv.version))
                        }
                    };
                    match store
                        .put(key, bytes(&(n + 1).to_string()), expect, None)
                        .await
                    {
                        Ok(v) => {
                            versions.push(v);
                            break;
                        }
                        Err(MetadataError::Conflict { .. }) => continue,
                        Err(e) => return Err(Failure::from(e)),
                    }
                }
            }
            Ok::<_, Failure>(versions)
        }));
    }
    let mut versions = HashSet::new();
    for task in tasks {
        let task_versions = task
            .await
            .map_err(|e| Failure(format!("increment task died: {e}")))??;
        for v in task_versions {
            ensure!(
                versions.insert(v),
                "two successful CAS writes returned version {v}"
            );
        }
    }
    let value = store.get(key).await?.map(|kv| kv.value);
    ensure_eq!(
        value,
        Some(bytes(&(TASKS * INCREMENTS).to_string())),
        "counter after {TASKS}x{INCREMENTS} increments"
    );
    Ok(())
}

pub async fn ledger_ids_unique_across_allocators(store: Arc<dyn MetadataStore>) -> Outcome {
    const IDS_PER_TASK: usize = 15;
    let allocators: Vec<Arc<LedgerIdAllocator>> = [1, 1, 3, 7]
        .into_iter()
        .map(|block| {
            Arc::new(LedgerIdAllocator::with_block_size(
                Arc::clone(&store),
                block,
            ))
        })
        .collect();
    let mut tasks = Vec::new();
    // Two tasks per allocator: ids must be unique within one allocator too.
    for allocator in allocators.iter().chain(allocators.iter()) {
        let allocator = Arc::clone(allocator);
        tasks.push(tokio::spawn(async move {
            let mut ids = Vec::with_capacity(IDS_PER_TASK);
            for _ in 0..IDS_PER_TASK {
                ids.push(allocator.next().await?);
            }
            Ok::<_, MetadataError>(ids)
        }));
    }
    let mut seen = HashSet::new();
    for task in tasks {
        let ids = task
            .await
            .map_err(|e| Failure(format!("allocation task died: {e}")))??;
        for id in ids {
            ensure!(id >= 1, "allocated id {id}");
            ensure!(seen.insert(id), "id {id} allocated twice");
        }
    }
    ensure_eq!(seen.len(), 8 * IDS_PER_TASK, "number of ids");
    // A new allocator (a restarted broker) continues past every id given.
    let max = seen.iter().copied().max().unwrap_or(0);
    let fresh = LedgerIdAllocator::new(Arc::clone(&store)).next().await?;
    ensure!(fresh > max, "fresh allocator gave {fresh}, not above {max}");
    Ok(())
}

pub async fn lease_keeper_refreshes_and_reports_loss(store: Arc<dyn MetadataStore>) -> Outcome {
    let keeper = LeaseKeeper::start(Arc::clone(&store), SHORT_TTL).await?;
    store
        .put("/keeper/k", bytes("x"), Expect::Any, Some(keeper.id()))
        .await?;
    // Several TTLs (etcd's minimum TTL included): only refreshes keep it.
    tokio::time::sleep(Duration::from_secs(5)).await;
    ensure!(
        store.get("/keeper/k").await?.is_some(),
        "kept lease's key vanished"
    );
    ensure!(!keeper.is_lost(), "kept lease reported lost");

    // Someone else ends the lease: the keeper must notice.
    let mut lost = keeper.lost();
    store.revoke_lease(keeper.id()).await?;
    let noticed = matches!(
        tokio::time::timeout(EXPIRY_DEADLINE, lost.wait_for(|lost| *lost)).await,
        Ok(Ok(_))
    );
    ensure!(noticed, "keeper did not report a revoked lease as lost");

    let second = LeaseKeeper::start(Arc::clone(&store), Duration::from_secs(60)).await?;
    store
        .put("/keeper/k2", bytes("y"), Expect::Any, Some(second.id()))
        .await?;
    second.revoke().await?;
    ensure!(
        store.get("/keeper/k2").await?.is_none(),
        "revoke() left the key"
    );
    Ok(())
}

/// Two stores from one factory share nothing (for etcd: different root
/// prefixes on one cluster).
pub async fn stores_are_isolated(a: Arc<dyn MetadataStore>, b: Arc<dyn MetadataStore>) -> Outcome {
    let mut b_watch = b.watch("", None).await?;
    a.put("/iso/k", bytes("a"), Expect::Any, None).await?;
    ensure!(
        b.get("/iso/k").await?.is_none(),
        "store b sees store a's key"
    );
    ensure!(b.list("").await?.is_empty(), "store b lists store a's keys");
    let listed = a.list("").await?;
    ensure!(
        listed.len() == 1 && listed[0].key == "/iso/k",
        "store a lists {listed:?}"
    );
    let created = b.put("/iso/k", bytes("b"), Expect::Absent, None).await;
    ensure!(
        created.is_ok(),
        "create in b of a key only a has gave {created:?}"
    );
    let marker = b.put("/iso/marker", bytes("m"), Expect::Any, None).await?;
    let events = next_events(&mut b_watch, 2).await?;
    ensure_eq!(
        events.iter().map(|e| e.key.as_str()).collect::<Vec<_>>(),
        vec!["/iso/k", "/iso/marker"],
        "store b's watch"
    );
    ensure_eq!(events[1].revision, marker, "marker revision");
    ensure_eq!(
        a.get("/iso/k").await?.map(|kv| kv.value),
        Some(bytes("a")),
        "store a's key after b wrote its own"
    );
    Ok(())
}
