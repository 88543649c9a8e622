//! Ledger metadata over both metadata backends (a real etcd and the
//! embedded store): the same checks, written once, run against each.
//! Compare-and-set must make concurrent writers lose rather than overwrite.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use magnetar_broker::ledger::metadata::{
    LedgerMetadata, LedgerMetadataError, LedgerMetadataStore, LedgerState,
};
use magnetar_metadata::{EmbeddedStore, LedgerIdAllocator, MetadataStore};
use magnetar_tests::Etcd;

fn ensemble(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| s.to_string()).collect()
}

fn new_ledger() -> LedgerMetadata {
    LedgerMetadata::new(
        2,
        2,
        ensemble(&["10.0.0.1:3181", "10.0.0.2:3181", "10.0.0.3:3181"]),
        Bytes::from_static(b"secret"),
        BTreeMap::new(),
    )
    .unwrap()
}

async fn suite(raw: Arc<dyn MetadataStore>) {
    let store = LedgerMetadataStore::new(raw.clone());
    let ids = LedgerIdAllocator::new(raw.clone());
    lifecycle(&store, ids.next().await.unwrap()).await;
    concurrent_creates_have_one_winner(&store, ids.next().await.unwrap()).await;
    concurrent_updates_lose_nothing(&store, ids.next().await.unwrap()).await;
    concurrent_closes_converge(&store, ids.next().await.unwrap()).await;
    let listed = store.list_ids().await.unwrap();
    assert_eq!(listed.len(), 4, "{listed:?}");
}

/// Create, ensemble change, recovery, close, delete: each a CAS on the
/// version read before it; a stale version always loses.
async fn lifecycle(store: &LedgerMetadataStore, id: u64) {
    let md = new_ledger();
    let v0 = store.create(id, &md).await.unwrap();
    assert!(matches!(
        store.create(id, &md).await,
        Err(LedgerMetadataError::Conflict)
    ));

    let (mut changed, version) = store.read(id).await.unwrap();
    assert_eq!((changed.clone(), version), (md.clone(), v0));
    changed
        .replace_bookie(5, "10.0.0.2:3181", "10.0.0.4:3181".into())
        .unwrap();
    let v1 = store.update(id, &changed, v0).await.unwrap();
    assert_eq!(
        store.read(id).await.unwrap().0.write_set(5),
        ensemble(&["10.0.0.3:3181", "10.0.0.1:3181"])
    );
    assert_eq!(
        store.read(id).await.unwrap().0.write_set(4),
        ensemble(&["10.0.0.2:3181", "10.0.0.3:3181"])
    );

    // A recovering reader marks it; the writer's next change (on v1) loses.
    let mut recovering = changed.clone();
    recovering.start_recovery().unwrap();
    let v2 = store.update(id, &recovering, v1).await.unwrap();
    let mut writer_view = changed.clone();
    writer_view
        .replace_bookie(9, "10.0.0.1:3181", "10.0.0.5:3181".into())
        .unwrap();
    assert!(matches!(
        store.update(id, &writer_view, v1).await,
        Err(LedgerMetadataError::Conflict)
    ));

    let mut closed = recovering.clone();
    closed.close(7, 700).unwrap();
    store.update(id, &closed, v2).await.unwrap();
    let (stored, _) = store.read(id).await.unwrap();
    assert_eq!(stored.state, LedgerState::Closed);
    assert_eq!((stored.last_entry_id, stored.length), (7, 700));
    assert_eq!(stored.master_key, Bytes::from_static(b"secret"));

    let victim = id + 1_000_000;
    store.create(victim, &md).await.unwrap();
    store.delete(victim).await.unwrap();
    assert!(matches!(
        store.read(victim).await,
        Err(LedgerMetadataError::NotFound(v)) if v == victim
    ));
}

async fn concurrent_creates_have_one_winner(store: &LedgerMetadataStore, id: u64) {
    let attempts: Vec<_> = (0..8)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut md = new_ledger();
                md.custom.insert("creator".into(), i.to_string());
                store.create(id, &md).await
            })
        })
        .collect();
    let mut winners = 0;
    for attempt in attempts {
        match attempt.await.unwrap() {
            Ok(_) => winners += 1,
            Err(LedgerMetadataError::Conflict) => {}
            Err(e) => panic!("unexpected error {e}"),
        }
    }
    assert_eq!(winners, 1);
    assert!(store
        .read(id)
        .await
        .unwrap()
        .0
        .custom
        .contains_key("creator"));
}

async fn concurrent_updates_lose_nothing(store: &LedgerMetadataStore, id: u64) {
    store.create(id, &new_ledger()).await.unwrap();
    let writers: Vec<_> = (0..8)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .update_with(id, |current| {
                        let mut next = current.clone();
                        next.custom.insert(format!("writer-{i}"), i.to_string());
                        Ok(Some(next))
                    })
                    .await
            })
        })
        .collect();
    for w in writers {
        w.await.unwrap().unwrap();
    }
    let (md, _) = store.read(id).await.unwrap();
    assert_eq!(md.custom.len(), 8, "{:?}", md.custom);
}

/// Several recoveries close one ledger with different ends; exactly one
/// close sticks and every other recovery adopts it.
async fn concurrent_closes_converge(store: &LedgerMetadataStore, id: u64) {
    store.create(id, &new_ledger()).await.unwrap();
    let closers: Vec<_> = (0..6i64)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                let (md, _) = store
                    .update_with(id, |current| {
                        if current.is_closed() {
                            return Ok(None);
                        }
                        let mut next = current.clone();
                        next.close(i, i as u64 * 10)?;
                        Ok(Some(next))
                    })
                    .await
                    .unwrap();
                (md.last_entry_id, md.length)
            })
        })
        .collect();
    let mut outcomes = Vec::new();
    for c in closers {
        outcomes.push(c.await.unwrap());
    }
    let (stored, _) = store.read(id).await.unwrap();
    assert!(outcomes
        .iter()
        .all(|o| *o == (stored.last_entry_id, stored.length)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ledger_metadata_on_etcd() {
    let etcd = Etcd::start().await.unwrap();
    let store = magnetar_metadata::connect(&etcd.metadata_url("ledger-metadata"))
        .await
        .unwrap();
    suite(store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ledger_metadata_on_the_embedded_store() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path()).await.unwrap();
    suite(Arc::new(store)).await;
}

#[tokio::test]
async fn corrupt_or_invalid_records_surface_as_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let raw: Arc<dyn MetadataStore> = Arc::new(EmbeddedStore::open(dir.path()).await.unwrap());
    let store = LedgerMetadataStore::new(raw.clone());
    let mut invalid = serde_json::to_value(new_ledger()).unwrap();
    invalid["ack_quorum"] = 5.into();
    raw.put(
        &magnetar_metadata::keys::ledger(1),
        Bytes::from(invalid.to_string()),
        magnetar_metadata::Expect::Any,
        None,
    )
    .await
    .unwrap();
    assert!(matches!(
        store.read(1).await,
        Err(LedgerMetadataError::Corrupt(_))
    ));
}
