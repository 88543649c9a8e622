//! The entry point to ledgers: create (pick an ensemble, allocate an id,
//! write OPEN metadata by create-if-absent CAS), open for reading, recover,
//! delete.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use magnetar_metadata::{LedgerIdAllocator, MetadataStore};
use rand::RngCore;

use super::append::LedgerWriter;
use super::bookie_client::BookieClients;
use super::error::LedgerError;
use super::metadata::{LedgerMetadata, LedgerMetadataStore};
use super::placement;
use super::read::LedgerReader;
use super::LedgerId;

/// Replication settings of a new ledger (Pulsar's defaults: 2/2/2).
#[derive(Clone, Debug)]
pub struct LedgerConfig {
    pub ensemble_size: u32,
    pub write_quorum: u32,
    pub ack_quorum: u32,
    pub custom: BTreeMap<String, String>,
}

impl Default for LedgerConfig {
    fn default() -> Self {
        LedgerConfig {
            ensemble_size: 2,
            write_quorum: 2,
            ack_quorum: 2,
            custom: BTreeMap::new(),
        }
    }
}

impl LedgerConfig {
    pub fn new(ensemble_size: u32, write_quorum: u32, ack_quorum: u32) -> Self {
        LedgerConfig {
            ensemble_size,
            write_quorum,
            ack_quorum,
            custom: BTreeMap::new(),
        }
    }

    fn validate(&self) -> Result<(), LedgerError> {
        let (e, qw, qa) = (self.ensemble_size, self.write_quorum, self.ack_quorum);
        if qa == 0 || qw < qa || e < qw {
            return Err(LedgerError::InvalidConfig(format!(
                "need E >= Qw >= Qa >= 1, got E={e} Qw={qw} Qa={qa}"
            )));
        }
        Ok(())
    }
}

/// Creates, opens, recovers and deletes ledgers. Cheap to clone.
#[derive(Clone)]
pub struct LedgerClient {
    pub(super) store: LedgerMetadataStore,
    pub(super) clients: BookieClients,
    ids: Arc<LedgerIdAllocator>,
}

impl LedgerClient {
    pub fn new(metadata: Arc<dyn MetadataStore>, clients: BookieClients) -> Self {
        LedgerClient {
            store: LedgerMetadataStore::new(metadata.clone()),
            ids: Arc::new(LedgerIdAllocator::new(metadata)),
            clients,
        }
    }

    /// The bookie connections this client writes and reads through.
    pub fn bookie_clients(&self) -> &BookieClients {
        &self.clients
    }

    pub fn metadata(&self) -> &LedgerMetadataStore {
        &self.store
    }

    /// Creates an OPEN ledger on E live, writable bookies (spread across racks
    /// where racks are set) and returns its writer.
    pub async fn create(&self, config: &LedgerConfig) -> Result<LedgerWriter, LedgerError> {
        config.validate()?;
        let candidates = placement::available_bookies(self.store.store().as_ref())
            .await
            .map_err(|e| LedgerError::Metadata(e.to_string()))?;
        let ensemble = placement::choose_ensemble(&candidates, config.ensemble_size as usize, &[])?;
        let id = self
            .ids
            .next()
            .await
            .map_err(|e| LedgerError::Metadata(e.to_string()))?;
        let mut master_key = vec![0u8; 16];
        rand::rng().fill_bytes(&mut master_key);
        let metadata = LedgerMetadata::new(
            config.write_quorum as usize,
            config.ack_quorum as usize,
            ensemble,
            Bytes::from(master_key),
            config.custom.clone(),
        )
        .map_err(|e| LedgerError::InvalidConfig(e.to_string()))?;
        let version = self
            .store
            .create(id, &metadata)
            .await
            .map_err(|e| LedgerError::from_metadata(id, e))?;
        tracing::debug!(ledger = id, ensemble = ?metadata.ensembles[0].1, "ledger created");
        Ok(LedgerWriter::start(
            id,
            metadata,
            version,
            self.clients.clone(),
            self.store.clone(),
        ))
    }

    /// A reader of a ledger as it is in metadata now. Reading an open ledger
    /// never goes past its LAC.
    pub async fn open_reader(&self, id: LedgerId) -> Result<LedgerReader, LedgerError> {
        let (metadata, _) = self
            .store
            .read(id)
            .await
            .map_err(|e| LedgerError::from_metadata(id, e))?;
        Ok(LedgerReader::new(id, metadata, self.clients.clone()))
    }

    /// Fences and recovers the ledger, then closes it; see [`super::recovery`].
    pub async fn recover(&self, id: LedgerId) -> Result<LedgerMetadata, LedgerError> {
        super::recovery::recover(self, id).await
    }

    /// Deletes the ledger's metadata; bookies drop its entries on their next
    /// garbage-collection scans. Best effort, it also asks them directly.
    pub async fn delete(&self, id: LedgerId) -> Result<(), LedgerError> {
        // Without the metadata there is no master key to prove ownership
        // with; bookies' garbage collection then drops the entries.
        let (bookies, master_key): (Vec<String>, Bytes) = match self.store.read(id).await {
            Ok((metadata, _)) => {
                let mut all: Vec<String> = metadata
                    .ensembles
                    .iter()
                    .flat_map(|(_, e)| e.iter().cloned())
                    .collect();
                all.sort();
                all.dedup();
                (all, metadata.master_key.clone())
            }
            Err(_) => (Vec::new(), Bytes::new()),
        };
        self.store
            .delete(id)
            .await
            .map_err(|e| LedgerError::from_metadata(id, e))?;
        for bookie in bookies {
            if let Err(e) = self
                .clients
                .get(&bookie)
                .delete_ledger(id, master_key.clone())
                .await
            {
                tracing::debug!(ledger = id, %bookie, error = %e, "direct delete failed; bookie GC will do it");
            }
        }
        Ok(())
    }
}
