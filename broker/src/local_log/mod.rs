//! Local logs: the monolithic (Kafka-style) architecture's side of the
//! storage seam. A topic's data lives in segment files on the disk of the
//! broker that leads it (`magnetar_log` owns the files); its record in
//! metadata (`record`) names the log, its leader epoch and the brokers
//! holding it.
//!
//! Today a local log has one replica, on the broker that created it:
//! replication to followers with an in-sync replica set is not built yet,
//! so a namespace asking for more than one replica is refused, and a broker
//! that does not hold a partition's data refuses to open it rather than
//! start it empty.

mod log;
mod record;
mod registry;
mod trim;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use magnetar_metadata::{LedgerIdAllocator, MetadataStore};

pub use log::LocalLog;
pub use record::PartitionRecord;
pub use trim::segments_to_trim;

use record::RecordStore;

use crate::storage::{Architecture, LogName, LogStore, PartitionLog, Replication, StorageError};

/// When a receipt goes out, relative to the disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlushPolicy {
    /// After an fsync of the group of appends it was written with: the
    /// same durability as a bookie's journal (the default).
    Fsync,
    /// After the write reaches the OS, before any fsync, as Kafka does by
    /// default: a power loss can lose acknowledged entries. Reports must
    /// say when this was used.
    Os,
}

impl std::str::FromStr for FlushPolicy {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "fsync" => Ok(FlushPolicy::Fsync),
            "os" => Ok(FlushPolicy::Os),
            other => Err(format!("unknown flush policy {other:?} (fsync or os)")),
        }
    }
}

/// How local logs store and confirm entries.
#[derive(Clone, Debug)]
pub struct LocalLogConfig {
    /// Segment size and age, index density (Kafka's defaults).
    pub segment: magnetar_log::LogConfig,
    pub flush: FlushPolicy,
    /// Entries and bytes of one stored batch; a group commit writes as many
    /// batches as it needs.
    pub max_batch_entries: usize,
    pub max_batch_bytes: usize,
}

impl Default for LocalLogConfig {
    fn default() -> Self {
        LocalLogConfig {
            segment: magnetar_log::LogConfig::default(),
            flush: FlushPolicy::Fsync,
            max_batch_entries: 10_000,
            max_batch_bytes: 4 << 20,
        }
    }
}

/// Opens topics as local logs under `data_dir/logs/{log id}`.
pub struct LocalLogStore {
    records: Arc<RecordStore>,
    data_dir: PathBuf,
    broker_id: String,
    config: LocalLogConfig,
}

impl LocalLogStore {
    /// `broker_id` names this broker in partition records; it must stay the
    /// same across restarts of a broker with the same `data_dir` (see
    /// [`broker_id`]).
    pub fn new(
        metadata: Arc<dyn MetadataStore>,
        data_dir: PathBuf,
        broker_id: String,
        config: LocalLogConfig,
    ) -> Self {
        let ids = Arc::new(LedgerIdAllocator::new(metadata.clone()));
        LocalLogStore {
            records: Arc::new(RecordStore::new(metadata, ids)),
            data_dir,
            broker_id,
            config,
        }
    }

    fn dir_of(&self, log_id: u64) -> PathBuf {
        self.data_dir.join("logs").join(log_id.to_string())
    }
}

/// This broker's stable id, kept in `data_dir/broker-id` (as Kafka keeps
/// `meta.properties`): made on first start, read on every later one.
pub fn broker_id(data_dir: &Path) -> Result<String, StorageError> {
    let path = data_dir.join("broker-id");
    match std::fs::read_to_string(&path) {
        Ok(id) if !id.trim().is_empty() => return Ok(id.trim().to_string()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(StorageError::Backend(format!("{}: {e}", path.display()))),
    }
    let id = uuid::Uuid::new_v4().to_string();
    std::fs::create_dir_all(data_dir)
        .and_then(|()| std::fs::write(&path, &id))
        .map_err(|e| StorageError::Backend(format!("{}: {e}", path.display())))?;
    Ok(id)
}

#[async_trait]
impl LogStore for LocalLogStore {
    fn architecture(&self) -> Architecture {
        Architecture::Monolithic
    }

    async fn open(
        &self,
        name: &LogName,
        replication: Option<Replication>,
    ) -> Result<Arc<dyn PartitionLog>, StorageError> {
        if let Some(r) = replication.filter(|r| r.ensemble_size > 1) {
            return Err(StorageError::Unavailable(format!(
                "{} asks for {} replicas; local logs have one replica until ISR replication is built: set the namespace's persistence to 1/1/1",
                name.full_name(),
                r.ensemble_size
            )));
        }
        let key = name.metadata_key();
        let record = self.records.take_leadership(&key, &self.broker_id).await?;
        let dir = self.dir_of(record.log_id);
        registry::fence(
            &dir,
            &format!(
                "{} was opened again in epoch {}",
                name.full_name(),
                record.leader_epoch
            ),
        )
        .await;
        let log = LocalLog::open(
            name.full_name(),
            (record.log_id, record.leader_epoch),
            dir,
            self.config.clone(),
            (self.records.clone(), key),
        )
        .await?;
        registry::register(&log);
        Ok(log)
    }

    async fn create(&self, name: &LogName) -> Result<bool, StorageError> {
        self.records.create(&name.metadata_key()).await
    }

    async fn exists(&self, name: &LogName) -> Result<bool, StorageError> {
        Ok(self.records.load(&name.metadata_key()).await?.is_some())
    }

    async fn delete_stored(&self, name: &LogName) -> Result<bool, StorageError> {
        let key = name.metadata_key();
        let Some((record, _)) = self.records.load(&key).await? else {
            return Ok(false);
        };
        let dir = self.dir_of(record.log_id);
        registry::fence(&dir, "deleted").await;
        log::remove_dir(&dir).await?;
        self.records.delete(&key, record.log_id).await
    }
}
