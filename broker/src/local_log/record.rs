//! A local log's record in metadata (at the topic's key): which log it is,
//! which epoch of leadership it is in, and which brokers hold its replicas.
//! Changed only by compare-and-set, so two brokers can never both believe
//! they took the same epoch.

use std::sync::Arc;

use bytes::Bytes;
use magnetar_metadata::{Expect, LedgerIdAllocator, MetadataError, MetadataStore, Version};
use serde::{Deserialize, Serialize};

use crate::storage::StorageError;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionRecord {
    /// The ledger id of every position in this log: allocated from the
    /// cluster's ledger-id counter when the log is created, so a topic
    /// created again orders after its old self.
    pub log_id: u64,
    /// Bumped by every new leader; batches carry the epoch that wrote them.
    pub leader_epoch: u32,
    /// The broker leading the partition (`None` until one opens it).
    #[serde(default)]
    pub leader: Option<String>,
    /// Brokers holding a copy, the leader's included.
    #[serde(default)]
    pub replicas: Vec<String>,
}

impl PartitionRecord {
    fn to_bytes(&self) -> Result<Bytes, StorageError> {
        serde_json::to_vec(self)
            .map(Bytes::from)
            .map_err(|e| StorageError::Metadata(e.to_string()))
    }

    fn from_bytes(key: &str, bytes: &[u8]) -> Result<Self, StorageError> {
        serde_json::from_slice(bytes).map_err(|e| {
            StorageError::Metadata(format!(
                "{key} is not a local-log record ({e}); was this topic written by a decoupled cluster?"
            ))
        })
    }
}

/// Reads and CAS-writes one partition's record.
pub struct RecordStore {
    store: Arc<dyn MetadataStore>,
    ids: Arc<LedgerIdAllocator>,
}

impl RecordStore {
    pub fn new(store: Arc<dyn MetadataStore>, ids: Arc<LedgerIdAllocator>) -> Self {
        RecordStore { store, ids }
    }

    pub async fn load(
        &self,
        key: &str,
    ) -> Result<Option<(PartitionRecord, Version)>, StorageError> {
        match self.store.get(key).await? {
            Some(kv) => Ok(Some((
                PartitionRecord::from_bytes(key, &kv.value)?,
                kv.version,
            ))),
            None => Ok(None),
        }
    }

    /// Creates the record of a new, empty log; false if one exists.
    pub async fn create(&self, key: &str) -> Result<bool, StorageError> {
        if self.store.get(key).await?.is_some() {
            return Ok(false);
        }
        let record = PartitionRecord {
            log_id: self.ids.next().await?,
            leader_epoch: 0,
            leader: None,
            replicas: Vec::new(),
        };
        match self
            .store
            .put(key, record.to_bytes()?, Expect::Absent, None)
            .await
        {
            Ok(_) => Ok(true),
            Err(MetadataError::Conflict { .. }) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Makes `broker` the leader in a new epoch (creating the record if
    /// needed) and returns the record as written. Refuses when the
    /// partition's data lives on other brokers: moving it copies data,
    /// which is reassignment, not a takeover.
    pub async fn take_leadership(
        &self,
        key: &str,
        broker: &str,
    ) -> Result<PartitionRecord, StorageError> {
        loop {
            let Some((mut record, version)) = self.load(key).await? else {
                self.create(key).await?;
                continue;
            };
            if !record.replicas.is_empty() && !record.replicas.iter().any(|r| r == broker) {
                return Err(StorageError::Unavailable(format!(
                    "the replicas of {key} are on {:?}, not on this broker ({broker}); moving a partition needs reassignment",
                    record.replicas
                )));
            }
            record.leader_epoch = record
                .leader_epoch
                .checked_add(1)
                .ok_or_else(|| StorageError::Metadata(format!("{key}: leader epoch exhausted")))?;
            record.leader = Some(broker.to_string());
            if record.replicas.is_empty() {
                record.replicas.push(broker.to_string());
            }
            match self
                .store
                .put(key, record.to_bytes()?, Expect::Version(version), None)
                .await
            {
                Ok(_) => return Ok(record),
                Err(MetadataError::Conflict { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Deletes the record if it is still the log `log_id`; false if it is
    /// gone (or is already another log of the same name).
    pub async fn delete(&self, key: &str, log_id: u64) -> Result<bool, StorageError> {
        let Some((record, version)) = self.load(key).await? else {
            return Ok(false);
        };
        if record.log_id != log_id {
            return Ok(false);
        }
        match self.store.delete(key, Expect::Version(version)).await {
            Ok(deleted) => Ok(deleted),
            Err(MetadataError::Conflict { .. }) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }
}
