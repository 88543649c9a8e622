//! Garbage collection of deleted ledgers against cluster metadata.
//!
//! Every `gc_interval` the collector lists the ledgers this bookie holds and
//! the ledger keys in metadata. A ledger held here whose metadata is absent
//! in two consecutive scans is deleted through the journal (so the deletion
//! is ordered with adds and durable before it counts).
//!
//! It must never delete on doubt: a scan whose metadata listing fails is
//! skipped entirely, and the local listing is taken before the metadata one,
//! so a ledger created meanwhile (metadata is always written before its
//! first add) is seen in metadata. The second scan is a grace period on top.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use magnetar_metadata::{keys, MetadataStore};
use tokio::sync::watch;

use crate::journal::Journal;
use crate::ledger_state::LedgerTable;
use crate::metrics::BookieMetrics;

/// What one scan decided.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct ScanPlan {
    /// Missing from metadata in this scan and the previous one.
    pub delete: Vec<u64>,
    /// Missing from metadata for the first time; deleted next scan if still so.
    pub suspects: HashSet<u64>,
}

/// Pure decision of one scan: `local` ledgers absent from `in_metadata` are
/// deleted if they were already `previous_suspects`, else become suspects.
/// Only ids the cluster's allocator has handed out (`<= max_allocated`) are
/// candidates: a ledger this metadata never allocated is not ours to judge.
pub(crate) fn plan(
    previous_suspects: &HashSet<u64>,
    local: &[u64],
    in_metadata: &HashSet<u64>,
    max_allocated: u64,
) -> ScanPlan {
    let mut out = ScanPlan::default();
    for &ledger in local {
        if in_metadata.contains(&ledger) || ledger > max_allocated {
            continue;
        }
        if previous_suspects.contains(&ledger) {
            out.delete.push(ledger);
        } else {
            out.suspects.insert(ledger);
        }
    }
    out.delete.sort_unstable();
    out
}

pub(crate) struct GarbageCollector {
    metadata: Arc<dyn MetadataStore>,
    table: Arc<LedgerTable>,
    journal: Journal,
    metrics: BookieMetrics,
    /// Ledgers the previous scan found without metadata.
    suspects: HashSet<u64>,
}

impl GarbageCollector {
    pub fn new(
        metadata: Arc<dyn MetadataStore>,
        table: Arc<LedgerTable>,
        journal: Journal,
        metrics: BookieMetrics,
    ) -> Self {
        GarbageCollector {
            metadata,
            table,
            journal,
            metrics,
            suspects: HashSet::new(),
        }
    }

    /// Scans every `interval` (the first one an interval after start) until
    /// shutdown. Dropping the collector releases its journal handle.
    pub async fn run(mut self, interval: Duration, mut stop: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = crate::server::stopped(&mut stop) => return,
            }
            tokio::select! {
                _ = self.scan() => {}
                _ = crate::server::stopped(&mut stop) => return,
            }
        }
    }

    /// One scan; returns the ledgers it deleted.
    pub async fn scan(&mut self) -> Vec<u64> {
        // Local first: anything added after this listing had its metadata
        // written before, so the listing below sees it.
        let local = self.table.ledger_ids();
        let listed = match self.metadata.list(&keys::ledgers_prefix()).await {
            Ok(listed) => listed,
            Err(e) => {
                tracing::warn!(error = %e, "ledger GC skipped: cannot list ledger metadata");
                return Vec::new();
            }
        };
        // A bookie pointed at the wrong metadata (another prefix, a fresh
        // etcd) would otherwise see none of its ledgers and delete them all.
        let max_allocated = match self.metadata.get(&keys::ledger_id_counter()).await {
            Ok(Some(kv)) => match std::str::from_utf8(&kv.value)
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok())
            {
                Some(max) => max,
                None => {
                    tracing::warn!("ledger GC skipped: unreadable ledger-id counter");
                    return Vec::new();
                }
            },
            Ok(None) => {
                tracing::debug!("ledger GC skipped: no ledger was ever allocated in this metadata");
                return Vec::new();
            }
            Err(e) => {
                tracing::warn!(error = %e, "ledger GC skipped: cannot read the ledger-id counter");
                return Vec::new();
            }
        };
        let in_metadata: HashSet<u64> = listed
            .iter()
            .filter_map(|kv| keys::parse_ledger_key(&kv.key))
            .collect();
        let ScanPlan {
            delete,
            mut suspects,
        } = plan(&self.suspects, &local, &in_metadata, max_allocated);
        let mut deleted = Vec::with_capacity(delete.len());
        for ledger in delete {
            match self.journal.delete(ledger).await {
                Ok(()) => {
                    tracing::info!(
                        ledger,
                        "ledger garbage collected: no metadata in two consecutive scans"
                    );
                    self.metrics.gc_deleted_ledgers.inc();
                    deleted.push(ledger);
                }
                Err(e) => {
                    tracing::warn!(ledger, error = %e, "ledger GC delete failed; retrying next scan");
                    suspects.insert(ledger);
                }
            }
        }
        if !suspects.is_empty() {
            tracing::debug!(
                ?suspects,
                "ledgers without metadata, deleted next scan if still so"
            );
        }
        self.suspects = suspects;
        deleted
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;

    use bytes::Bytes;
    use magnetar_metadata::{EmbeddedStore, Expect};
    use magnetar_proto::bookie::AddEntry;

    use crate::journal::JournalConfig;
    use crate::store::{EntryStore, RocksEntryStore, RocksOptions};

    #[test]
    fn a_ledger_needs_two_scans_without_metadata() {
        let in_md: HashSet<u64> = [1, 2].into();
        let first = plan(&HashSet::new(), &[1, 2, 3, 4], &in_md, 10);
        assert_eq!(first.delete, Vec::<u64>::new());
        assert_eq!(first.suspects, [3, 4].into());
        // 4 got metadata meanwhile (it can only appear, never reappear after
        // deletion, but either way it is kept); 5 is new.
        let in_md: HashSet<u64> = [1, 2, 4].into();
        let second = plan(&first.suspects, &[1, 2, 3, 4, 5], &in_md, 10);
        assert_eq!(second.delete, vec![3]);
        assert_eq!(second.suspects, [5].into());
    }

    #[test]
    fn ledgers_this_metadata_never_allocated_are_left_alone() {
        let none: HashSet<u64> = HashSet::new();
        let first = plan(&HashSet::new(), &[5, 50, 500], &none, 50);
        assert_eq!(first.suspects, [5, 50].into());
        let second = plan(&first.suspects, &[5, 50, 500], &none, 50);
        assert_eq!(second.delete, vec![5, 50]);
        assert!(second.suspects.is_empty());
    }

    #[tokio::test]
    async fn without_an_allocator_counter_nothing_is_collected() {
        let f = fixture().await;
        f.add(7).await;
        let mut gc = f.collector();
        assert!(gc.scan().await.is_empty());
        assert!(gc.scan().await.is_empty());
        assert!(f.table.get(7).is_some());
    }

    struct Fixture {
        _dir: tempfile::TempDir,
        metadata: Arc<EmbeddedStore>,
        store: Arc<RocksEntryStore>,
        table: Arc<LedgerTable>,
        journal: Journal,
        metrics: BookieMetrics,
    }

    async fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let metadata = Arc::new(EmbeddedStore::open(dir.path().join("md")).await.unwrap());
        let store = Arc::new(
            RocksEntryStore::open(&dir.path().join("entries"), &RocksOptions::default()).unwrap(),
        );
        let table = Arc::new(LedgerTable::new(vec![]));
        let metrics = BookieMetrics::new().unwrap();
        let (journal, _thread) = Journal::start(
            store.clone(),
            table.clone(),
            Arc::new(AtomicBool::new(false)),
            JournalConfig::default(),
            metrics.clone(),
        )
        .unwrap();
        Fixture {
            _dir: dir,
            metadata,
            store,
            table,
            journal,
            metrics,
        }
    }

    impl Fixture {
        fn collector(&self) -> GarbageCollector {
            GarbageCollector::new(
                self.metadata.clone(),
                self.table.clone(),
                self.journal.clone(),
                self.metrics.clone(),
            )
        }

        async fn add(&self, ledger_id: u64) {
            self.journal
                .add(vec![AddEntry {
                    ledger_id,
                    entry_id: 0,
                    lac: -1,
                    master_key: Bytes::from_static(b"k"),
                    recovery: false,
                    payload: Bytes::from_static(b"payload"),
                }])
                .await
                .unwrap();
        }

        async fn put_metadata(&self, ledger_id: u64) {
            self.metadata
                .put(
                    &keys::ledger_id_counter(),
                    Bytes::from_static(b"1000"),
                    Expect::Any,
                    None,
                )
                .await
                .unwrap();
            self.metadata
                .put(
                    &keys::ledger(ledger_id),
                    Bytes::from_static(b"{}"),
                    Expect::Any,
                    None,
                )
                .await
                .unwrap();
        }
    }

    #[tokio::test]
    async fn ledgers_without_metadata_are_deleted_on_the_second_scan() {
        let f = fixture().await;
        f.put_metadata(1).await;
        f.put_metadata(2).await;
        f.add(1).await;
        f.add(2).await;
        f.add(3).await;
        let mut gc = f.collector();
        assert_eq!(gc.scan().await, Vec::<u64>::new());
        f.metadata
            .delete(&keys::ledger(1), Expect::Any)
            .await
            .unwrap();
        // 3 was missing twice; 1 only once so far.
        assert_eq!(gc.scan().await, vec![3]);
        assert_eq!(gc.scan().await, vec![1]);
        assert_eq!(gc.scan().await, Vec::<u64>::new());
        assert_eq!(f.table.ledger_ids(), vec![2]);
        assert!(f.store.get_entry(1, 0).unwrap().is_none());
        assert!(f.store.get_entry(2, 0).unwrap().is_some());
        assert_eq!(f.metrics.gc_deleted_ledgers.get(), 2);
    }

    #[tokio::test]
    async fn a_metadata_error_deletes_nothing() {
        let f = fixture().await;
        f.add(4).await;
        let mut gc = f.collector();
        assert_eq!(gc.scan().await, Vec::<u64>::new());
        f.metadata.close().await.unwrap();
        assert_eq!(gc.scan().await, Vec::<u64>::new());
        assert_eq!(gc.scan().await, Vec::<u64>::new());
        assert_eq!(f.table.ledger_ids(), vec![4]);
        assert_eq!(f.metrics.gc_deleted_ledgers.get(), 0);
    }
}
