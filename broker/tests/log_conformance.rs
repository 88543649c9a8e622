//! The partition-log conformance suite (`storage::conformance`) against
//! every architecture: managed ledgers over a real etcd and real bookie
//! processes, and local logs (segment files) over embedded metadata.

use std::sync::Arc;

use async_trait::async_trait;
use magnetar_broker::ledger::bookie_client::{BookieClientConfig, BookieClients};
use magnetar_broker::ledger::{LedgerClient, LedgerConfig};
use magnetar_broker::local_log::{LocalLogConfig, LocalLogStore};
use magnetar_broker::managed_ledger::{LedgerLogStore, ManagedLedgerConfig};
use magnetar_broker::storage::conformance::{self, Harness};
use magnetar_broker::storage::{LogStore, StorageError};
use magnetar_metadata::{EmbeddedStore, MetadataStore};
use magnetar_tests::{BookieProcess, Etcd};

const ENTRIES_PER_SEGMENT: u64 = 5;

/// Each store is a broker process's: its own metadata session and bookie
/// clients over the shared etcd and bookies.
struct ManagedLedgers {
    url: String,
}

#[async_trait]
impl Harness for ManagedLedgers {
    async fn store(&self) -> Result<Arc<dyn LogStore>, StorageError> {
        let metadata = magnetar_metadata::connect(&self.url).await?;
        let client = LedgerClient::new(
            metadata.clone(),
            BookieClients::new(BookieClientConfig::default()),
        );
        let config = ManagedLedgerConfig {
            ledger: LedgerConfig::new(2, 2, 2),
            max_entries_per_ledger: ENTRIES_PER_SEGMENT,
            ..Default::default()
        };
        Ok(Arc::new(LedgerLogStore::new(metadata, client, config)))
    }

    fn entries_per_segment(&self) -> u64 {
        ENTRIES_PER_SEGMENT
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn managed_ledgers_conform() {
    let etcd = Etcd::start().await.unwrap();
    let url = etcd.metadata_url("log-conformance");
    let _bookies = [
        BookieProcess::start(&url, &[]).await.unwrap(),
        BookieProcess::start(&url, &[]).await.unwrap(),
    ];
    let harness = ManagedLedgers { url };
    if let Err(failure) = conformance::run_all(&harness).await {
        panic!("{failure}");
    }
}

/// Each store is a broker restarted over the same data directory and
/// metadata: opening a log fences the handle an earlier store left open.
struct LocalLogs {
    metadata: Arc<dyn MetadataStore>,
    data_dir: std::path::PathBuf,
}

#[async_trait]
impl Harness for LocalLogs {
    async fn store(&self) -> Result<Arc<dyn LogStore>, StorageError> {
        let mut config = LocalLogConfig::default();
        config.segment.segment_entries = Some(ENTRIES_PER_SEGMENT);
        Ok(Arc::new(LocalLogStore::new(
            self.metadata.clone(),
            self.data_dir.clone(),
            "broker-1".into(),
            config,
            false,
        )))
    }

    fn entries_per_segment(&self) -> u64 {
        ENTRIES_PER_SEGMENT
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_logs_conform() {
    let dir = tempfile::tempdir().unwrap();
    let metadata: Arc<dyn MetadataStore> = Arc::new(
        EmbeddedStore::open(dir.path().join("metadata"))
            .await
            .unwrap(),
    );
    let harness = LocalLogs {
        metadata,
        data_dir: dir.path().join("data"),
    };
    if let Err(failure) = conformance::run_all(&harness).await {
        panic!("{failure}");
    }
}
