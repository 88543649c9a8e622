//! Managed ledgers as a [`LogStore`]: a topic's record in metadata is its
//! ledger list; its data lives on bookies.

use std::sync::Arc;

use async_trait::async_trait;
use magnetar_metadata::MetadataStore;

use super::{delete_stored, EntryCache, LedgerListStore, ManagedLedger, ManagedLedgerConfig};
use crate::ledger::{LedgerClient, LedgerConfig};
use crate::storage::{
    Architecture, LogName, LogPolicies, LogStore, PartitionLog, StorageError, CURSOR_LOG_MAX_BYTES,
    CURSOR_LOG_MAX_ENTRIES,
};

/// Opens topics as managed ledgers over one ledger client.
pub struct LedgerLogStore {
    metadata: Arc<dyn MetadataStore>,
    client: LedgerClient,
    /// Rollover, cache and the replication of namespaces that set none.
    config: ManagedLedgerConfig,
    /// Entries per ledger of a cursor log.
    cursor_log_max_entries: u64,
}

impl LedgerLogStore {
    pub fn new(
        metadata: Arc<dyn MetadataStore>,
        client: LedgerClient,
        config: ManagedLedgerConfig,
    ) -> Self {
        LedgerLogStore {
            metadata,
            client,
            config,
            cursor_log_max_entries: CURSOR_LOG_MAX_ENTRIES,
        }
    }

    /// Rolls cursor logs over after `entries` states instead of
    /// [`CURSOR_LOG_MAX_ENTRIES`].
    pub fn with_cursor_log_max_entries(mut self, entries: u64) -> Self {
        self.cursor_log_max_entries = entries.max(1);
        self
    }

    /// A cursor log holds one small entry per cursor flush, read back
    /// only when the cursor is opened: it rolls over often so superseded
    /// states are trimmed, and it stays out of the entry cache.
    fn cursor_log_config(&self) -> ManagedLedgerConfig {
        ManagedLedgerConfig {
            max_entries_per_ledger: self.cursor_log_max_entries,
            max_ledger_bytes: CURSOR_LOG_MAX_BYTES,
            cache: EntryCache::new(0),
            ..self.config.clone()
        }
    }

    fn list_store(&self, name: &LogName) -> LedgerListStore {
        LedgerListStore::new(self.metadata.clone(), name.metadata_key())
    }
}

#[async_trait]
impl LogStore for LedgerLogStore {
    fn architecture(&self) -> Architecture {
        Architecture::Decoupled
    }

    fn keeps_cursor_logs(&self) -> bool {
        true
    }

    async fn open(
        &self,
        name: &LogName,
        policies: &LogPolicies,
    ) -> Result<Arc<dyn PartitionLog>, StorageError> {
        let mut config = match name.cursor_of {
            None => self.config.clone(),
            Some(_) => self.cursor_log_config(),
        };
        if let Some(r) = policies.replication {
            config.ledger = LedgerConfig::new(r.ensemble_size, r.write_quorum, r.ack_quorum);
        }
        let ml = ManagedLedger::open(
            name.full_name(),
            self.metadata.clone(),
            name.metadata_key(),
            self.client.clone(),
            config,
        )
        .await?;
        Ok(ml)
    }

    async fn create(&self, name: &LogName) -> Result<bool, StorageError> {
        Ok(self.list_store(name).create_empty().await?)
    }

    async fn exists(&self, name: &LogName) -> Result<bool, StorageError> {
        Ok(self.list_store(name).load_versioned().await?.is_some())
    }

    async fn delete_stored(&self, name: &LogName) -> Result<bool, StorageError> {
        Ok(delete_stored(self.metadata.clone(), name.metadata_key(), &self.client).await?)
    }
}
