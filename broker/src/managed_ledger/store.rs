//! Managed ledgers as a [`LogStore`]: a topic's record in metadata is its
//! ledger list; its data lives on bookies.

use std::sync::Arc;

use async_trait::async_trait;
use magnetar_metadata::MetadataStore;

use super::{delete_stored, LedgerListStore, ManagedLedger, ManagedLedgerConfig};
use crate::ledger::{LedgerClient, LedgerConfig};
use crate::storage::{Architecture, LogName, LogPolicies, LogStore, PartitionLog, StorageError};

/// Opens topics as managed ledgers over one ledger client.
pub struct LedgerLogStore {
    metadata: Arc<dyn MetadataStore>,
    client: LedgerClient,
    /// Rollover, cache and the replication of namespaces that set none.
    config: ManagedLedgerConfig,
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

    async fn open(
        &self,
        name: &LogName,
        policies: &LogPolicies,
    ) -> Result<Arc<dyn PartitionLog>, StorageError> {
        let mut config = self.config.clone();
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
