//! Managed ledgers as a [`LogStore`]: a topic's record in metadata is its
//! ledger list; its data lives on bookies.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, Weak};

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
    /// Every managed ledger opened here that is still alive (topics and
    /// cursor logs), so ledgers on a lost bookie can be rolled over.
    opened: Mutex<Vec<Weak<ManagedLedger>>>,
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
            opened: Mutex::new(Vec::new()),
        }
    }

    /// The ledger client (and through it the bookie connections) topics
    /// are written with.
    pub fn client(&self) -> &LedgerClient {
        &self.client
    }

    /// Rolls over every open managed ledger whose current ledger depends
    /// on one of `bookies`; returns how many rollovers started.
    pub async fn roll_over_ledgers_on(&self, bookies: &HashSet<String>) -> usize {
        let open: Vec<Arc<ManagedLedger>> = {
            let mut opened = self.opened.lock().unwrap_or_else(|p| p.into_inner());
            opened.retain(|ml| ml.strong_count() > 0);
            opened.iter().filter_map(Weak::upgrade).collect()
        };
        let mut started = 0;
        for ml in open {
            if ml.roll_over_if_on(bookies).await {
                started += 1;
            }
        }
        started
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
        let mut opened = self.opened.lock().unwrap_or_else(|p| p.into_inner());
        // Closed ones are dropped now and then, so the list stays as long
        // as what is open (plus at most one round of closed ones).
        if opened.len() >= 1024 && opened.len().is_power_of_two() {
            opened.retain(|ml| ml.strong_count() > 0);
        }
        opened.push(Arc::downgrade(&ml));
        drop(opened);
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
