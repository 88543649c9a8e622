//! Local logs: the monolithic (Kafka-style) architecture's side of the
//! storage seam. A topic's data lives in segment files on the disks of the
//! brokers holding its replicas (`magnetar_log` owns the files); its record
//! in metadata (`record`) names the log, its leader and leader epoch, its
//! replicas and its in-sync replicas (ISR).
//!
//! The broker that owns a topic's bundle leads it: opening the log takes a
//! new leader epoch by compare-and-set on the record, which only an ISR
//! member may do (`record`). Followers on the other replicas fetch from the
//! leader over gRPC (`follower`, `service`), run by each broker's replica
//! manager (`replicas`); the leader confirms an entry once every in-sync
//! replica holds it and at least `min.insync.replicas` are in sync
//! (`leader`, `isr`).

mod follower;
mod isr;
mod leader;
mod log;
mod peers;
mod reassign;
mod record;
mod registry;
mod replicas;
mod service;
mod trim;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use magnetar_metadata::{LedgerIdAllocator, MetadataStore};

pub use log::LocalLog;
pub use record::PartitionRecord;
pub use replicas::Replicas;
pub use service::ReplicationService;
pub use trim::segments_to_trim;

use log::Leadership;
use record::{Placement, RecordStore};

pub use crate::storage::FlushPolicy;
use crate::storage::{
    Architecture, LogName, LogPolicies, LogStore, PartitionLog, ReplicaSet, StorageError,
    CURSOR_LOG_MAX_BYTES, CURSOR_LOG_MAX_ENTRIES,
};

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
    /// Kafka's `replica.lag.time.max.ms`: an in-sync follower that has not
    /// caught up with the leader's log end for this long leaves the ISR.
    /// Kafka's default is 30 s; ours is 10 s, the broker lease TTL, so a
    /// stalled follower holds receipts up no longer than a stalled leader
    /// holds its partitions.
    pub lag_max: Duration,
    /// Who may fetch from this broker's replication service.
    pub peers: magnetar_auth::PeerPolicy,
    /// What this broker presents when it fetches from a leader.
    pub credentials: magnetar_auth::PeerCredentials,
    /// TLS to leaders that serve `https://` replication URLs (their
    /// certificate verified, this broker's presented).
    pub tls: Option<tonic::transport::ClientTlsConfig>,
}

impl Default for LocalLogConfig {
    fn default() -> Self {
        LocalLogConfig {
            segment: magnetar_log::LogConfig::default(),
            flush: FlushPolicy::Fsync,
            max_batch_entries: 10_000,
            max_batch_bytes: 4 << 20,
            lag_max: Duration::from_secs(10),
            peers: magnetar_auth::PeerPolicy::Open,
            credentials: magnetar_auth::PeerCredentials::none(),
            tls: None,
        }
    }
}

/// Opens topics as local logs under `data_dir/logs/{log id}`.
pub struct LocalLogStore {
    records: Arc<RecordStore>,
    replicas: Arc<Replicas>,
    broker_id: String,
    config: LocalLogConfig,
    /// Whether other brokers may hold replicas (a cluster, not standalone).
    clustered: bool,
    /// States a cursor log's segment holds before it rolls.
    cursor_log_max_entries: u64,
}

impl LocalLogStore {
    /// `broker_id` names this broker in partition records; it must stay the
    /// same across restarts of a broker with the same `data_dir` (see
    /// [`broker_id`]). Alone (`clustered` false) every log has one replica.
    pub fn new(
        metadata: Arc<dyn MetadataStore>,
        data_dir: PathBuf,
        broker_id: String,
        config: LocalLogConfig,
        clustered: bool,
    ) -> Self {
        // One id per compare-and-set: a key's later log always has the
        // higher id, which the replica manager relies on to tell a late
        // watch event of a replaced log from a newer log.
        let ids = Arc::new(LedgerIdAllocator::new(metadata.clone()));
        let replicas = Arc::new(Replicas::new(
            broker_id.clone(),
            metadata.clone(),
            data_dir,
            config.clone(),
        ));
        LocalLogStore {
            records: Arc::new(RecordStore::new(metadata, ids)),
            replicas,
            broker_id,
            config,
            clustered,
            cursor_log_max_entries: CURSOR_LOG_MAX_ENTRIES,
        }
    }

    /// Rolls cursor logs' segments after `entries` states instead of
    /// [`CURSOR_LOG_MAX_ENTRIES`].
    pub fn with_cursor_log_max_entries(mut self, entries: u64) -> Self {
        self.cursor_log_max_entries = entries.max(1);
        self
    }

    /// How the cursor log of a subscription is stored: small segments, so
    /// superseded states are trimmed, and written without fsync, as
    /// Kafka writes its consumer offsets. A cursor's state only says what
    /// not to deliver again: losing the last of it on every replica at
    /// once (a power loss, not a crash of the process) redelivers
    /// acknowledged messages, which at-least-once delivery allows, and
    /// thousands of cursors do not each cost an fsync per flush.
    fn cursor_log_config(&self) -> LocalLogConfig {
        let mut config = self.config.clone();
        config.segment.segment_bytes = CURSOR_LOG_MAX_BYTES;
        config.segment.segment_entries = Some(self.cursor_log_max_entries);
        config.flush = FlushPolicy::Os;
        config
    }

    /// The replicas of the partition whose cursor log `name` is, which a
    /// new cursor log takes as its own.
    async fn partition_replicas(
        &self,
        name: &LogName,
    ) -> Result<Option<Vec<String>>, StorageError> {
        let partition = LogName {
            cursor_of: None,
            ..name.clone()
        };
        Ok(self
            .records
            .load(&partition.metadata_key())
            .await?
            .map(|(record, _)| record.replicas)
            .filter(|replicas| !replicas.is_empty()))
    }

    /// Drops the cursor log at `key` if this broker, about to lead its
    /// partition, holds no in-sync copy of it (its copies did not follow
    /// the partition's, or fell behind): a new one is made on the
    /// partition's replicas and the cursor starts again from its record
    /// in metadata, delivering again what was acknowledged since.
    async fn drop_cursor_log_out_of_reach(&self, key: &str) -> Result<(), StorageError> {
        let Some((record, _)) = self.records.load(key).await? else {
            return Ok(());
        };
        let isr = match record.isr.is_empty() {
            true => &record.replicas,
            false => &record.isr,
        };
        if record.replicas.is_empty() || isr.contains(&self.broker_id) {
            return Ok(());
        }
        tracing::warn!(
            cursor_log = key,
            isr = ?record.isr,
            "this broker holds no in-sync copy of the cursor log: starting a new one from the cursor's record, so acknowledgements since it was written are delivered again"
        );
        let dir = self.dir_of(record.log_id);
        registry::fence(&dir, "its cursor log was replaced").await;
        log::remove_dir(&dir).await?;
        self.records.delete(key, record.log_id).await?;
        Ok(())
    }

    /// This broker's replicas, for the replication service and the
    /// replica manager ([`Replicas::run_manager`]).
    pub fn replicas(&self) -> &Arc<Replicas> {
        &self.replicas
    }

    pub fn broker_id(&self) -> &str {
        &self.broker_id
    }

    fn dir_of(&self, log_id: u64) -> PathBuf {
        self.replicas.dir_of(log_id)
    }

    /// The brokers alive now, this one's included, as a placement sees
    /// them (replica ids and racks).
    async fn placement(&self, policies: &LogPolicies) -> Result<Placement, StorageError> {
        let factor = policies
            .replication
            .map_or(1, |r| r.ensemble_size as usize)
            .max(1);
        let mut placement = Placement {
            replication_factor: factor,
            live: vec![self.broker_id.clone()],
            unclean_leader_election: policies.unclean_leader_election,
            ..Placement::default()
        };
        if self.clustered {
            for peer in self.replicas.peers.live().await? {
                if let Some(rack) = peer.rack {
                    placement.racks.insert(peer.replica_id.clone(), rack);
                }
                if peer.replica_id != self.broker_id {
                    placement.live.push(peer.replica_id);
                }
            }
        }
        Ok(placement)
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

    fn keeps_cursor_logs(&self) -> bool {
        true
    }

    async fn open(
        &self,
        name: &LogName,
        policies: &LogPolicies,
    ) -> Result<Arc<dyn PartitionLog>, StorageError> {
        let replication = policies.replication;
        let factor = replication.map_or(1, |r| r.ensemble_size as usize).max(1);
        let min_insync = replication.map_or(1, |r| r.ack_quorum as usize).max(1);
        if factor > 1 && !self.clustered {
            return Err(StorageError::Unavailable(format!(
                "{} asks for {factor} replicas; a standalone monolithic broker keeps one: set the namespace's persistence to 1/1/1",
                name.full_name(),
            )));
        }
        let key = name.metadata_key();
        let mut placement = self.placement(policies).await?;
        let config = match name.cursor_of {
            None => {
                let mut config = self.config.clone();
                config.flush = policies.flush.unwrap_or(config.flush);
                config
            }
            Some(_) => {
                placement.follow = self.partition_replicas(name).await?;
                self.cursor_log_config()
            }
        };
        let _transition = self.replicas.transitions.lock().await;
        if name.cursor_of.is_some() {
            self.drop_cursor_log_out_of_reach(&key).await?;
        }
        let record = self
            .records
            .take_leadership(&key, &self.broker_id, &placement, config.flush)
            .await?;
        let known_high_watermark = self.replicas.stop_follower(&key).await;
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
        let min_insync = min_insync.min(record.replicas.len().max(1));
        let log = LocalLog::open(
            name.full_name(),
            Leadership {
                me: self.broker_id.clone(),
                record,
                min_insync,
                lag_max: self.config.lag_max,
                known_high_watermark,
                clustered: self.clustered,
            },
            dir,
            config,
            (self.records.clone(), key.clone()),
        )
        .await?;
        registry::register(&log);
        self.replicas.register_leader(&key, &log);
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

    async fn replica_set(&self, name: &LogName) -> Result<ReplicaSet, StorageError> {
        self.replicas_of(name).await
    }

    async fn reassign(
        &self,
        name: &LogName,
        target: &[String],
        throttle: Option<u64>,
    ) -> Result<ReplicaSet, StorageError> {
        self.start_reassignment(name, target, throttle).await
    }

    async fn cancel_reassignment(&self, name: &LogName) -> Result<ReplicaSet, StorageError> {
        self.stop_reassignment(name).await
    }

    async fn make_leader_ready(
        &self,
        name: &LogName,
        broker: &str,
        throttle: Option<u64>,
    ) -> Result<(), StorageError> {
        self.copy_for_leader(name, broker, throttle).await
    }

    async fn logs_with_copy_on(&self, broker: &str) -> Result<Vec<(LogName, bool)>, StorageError> {
        self.copies_on(broker).await
    }

    async fn move_copy_off(
        &self,
        name: &LogName,
        broker: &str,
        throttle: Option<u64>,
    ) -> Result<bool, StorageError> {
        self.evacuate(name, broker, throttle).await
    }

    async fn settled(&self, name: &LogName) -> Result<bool, StorageError> {
        self.reassignments_done(name).await
    }

    async fn can_lead(&self, name: &LogName, broker: &str) -> Result<bool, StorageError> {
        self.in_sync_at(name, broker).await
    }

    async fn eligible_leaders(
        &self,
        name: &LogName,
        unclean: bool,
    ) -> Result<Option<Vec<String>>, StorageError> {
        if !self.clustered {
            return Ok(None);
        }
        let Some((record, _)) = self.records.load(&name.metadata_key()).await? else {
            return Ok(None);
        };
        if record.replicas.is_empty() {
            return Ok(None);
        }
        let isr = match record.isr.is_empty() {
            true => &record.replicas,
            false => &record.isr,
        };
        let peers = self.replicas.peers.live().await?;
        // The current leader first (a lookup then keeps it), then the
        // other in-sync replicas that are alive.
        let mut ordered: Vec<&String> = record.leader.iter().filter(|l| isr.contains(l)).collect();
        ordered.extend(isr.iter().filter(|r| Some(*r) != record.leader.as_ref()));
        let live = |ids: Vec<&String>| -> Vec<String> {
            ids.into_iter()
                .filter_map(|id| peers.iter().find(|p| p.replica_id == *id))
                .map(|p| p.broker_id.clone())
                .collect()
        };
        let in_sync = live(ordered);
        if in_sync.is_empty() && unclean {
            // Unclean election: any live replica, as Kafka's controller
            // picks one when the whole ISR is gone.
            return Ok(Some(live(record.replicas.iter().collect())));
        }
        Ok(Some(in_sync))
    }
}
