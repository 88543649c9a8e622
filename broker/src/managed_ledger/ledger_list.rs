//! A topic's ledger list as stored in metadata (`keys::topic`): the ledgers in
//! order, the last one possibly still open. Changed only by compare-and-set,
//! so a broker that lost the topic to another one finds out on its next change.

use std::sync::Arc;

use bytes::Bytes;
use magnetar_metadata::{Expect, MetadataError, MetadataStore, Version};
use serde::{Deserialize, Serialize};

use super::ManagedLedgerError;
use crate::ledger::LedgerId;

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerList {
    pub ledgers: Vec<LedgerInfo>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerInfo {
    pub ledger_id: LedgerId,
    /// Number of entries once the ledger is closed; `None` while open.
    pub entries: Option<u64>,
    /// Bytes stored, once closed.
    #[serde(default)]
    pub size: u64,
    /// Creation time, milliseconds since the Unix epoch.
    #[serde(default)]
    pub created_ms: u64,
    /// Time the ledger was closed (its age for retention), milliseconds
    /// since the Unix epoch; 0 while open, or in lists written before it was
    /// recorded (then `created_ms` stands in).
    #[serde(default)]
    pub closed_ms: u64,
}

impl LedgerList {
    fn to_bytes(&self) -> Result<Bytes, ManagedLedgerError> {
        serde_json::to_vec(self)
            .map(Bytes::from)
            .map_err(|e| ManagedLedgerError::Metadata(e.to_string()))
    }

    fn from_bytes(bytes: &[u8]) -> Result<Self, ManagedLedgerError> {
        serde_json::from_slice(bytes)
            .map_err(|e| ManagedLedgerError::Metadata(format!("corrupt ledger list: {e}")))
    }

    pub fn info_mut(&mut self, id: LedgerId) -> Option<&mut LedgerInfo> {
        self.ledgers.iter_mut().find(|l| l.ledger_id == id)
    }
}

/// Reads and CAS-writes one topic's [`LedgerList`].
#[derive(Clone)]
pub struct LedgerListStore {
    store: Arc<dyn MetadataStore>,
    key: String,
}

impl LedgerListStore {
    pub fn new(store: Arc<dyn MetadataStore>, key: String) -> Self {
        LedgerListStore { store, key }
    }

    /// The list and its version, creating an empty one for a new topic.
    pub async fn load_or_create(&self) -> Result<(LedgerList, Version), ManagedLedgerError> {
        loop {
            if let Some(kv) = self.store.get(&self.key).await? {
                return Ok((LedgerList::from_bytes(&kv.value)?, kv.version));
            }
            let empty = LedgerList::default();
            match self
                .store
                .put(&self.key, empty.to_bytes()?, Expect::Absent, None)
                .await
            {
                Ok(version) => return Ok((empty, version)),
                Err(MetadataError::Conflict { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// The list if the topic exists.
    pub async fn load(&self) -> Result<Option<LedgerList>, ManagedLedgerError> {
        match self.store.get(&self.key).await? {
            Some(kv) => Ok(Some(LedgerList::from_bytes(&kv.value)?)),
            None => Ok(None),
        }
    }

    /// Replaces the list if it is still at `expected`; `Fenced` otherwise.
    pub async fn update(
        &self,
        list: &LedgerList,
        expected: Version,
    ) -> Result<Version, ManagedLedgerError> {
        match self
            .store
            .put(&self.key, list.to_bytes()?, Expect::Version(expected), None)
            .await
        {
            Ok(version) => Ok(version),
            Err(MetadataError::Conflict { .. }) => Err(ManagedLedgerError::Fenced(format!(
                "{} changed under this broker",
                self.key
            ))),
            Err(e) => Err(e.into()),
        }
    }

    /// Creates an empty list (a new topic without ledgers); false if the
    /// topic already exists.
    pub async fn create_empty(&self) -> Result<bool, ManagedLedgerError> {
        match self
            .store
            .put(
                &self.key,
                LedgerList::default().to_bytes()?,
                Expect::Absent,
                None,
            )
            .await
        {
            Ok(_) => Ok(true),
            Err(MetadataError::Conflict { .. }) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// The list and its version if the topic exists.
    pub async fn load_versioned(
        &self,
    ) -> Result<Option<(LedgerList, Version)>, ManagedLedgerError> {
        match self.store.get(&self.key).await? {
            Some(kv) => Ok(Some((LedgerList::from_bytes(&kv.value)?, kv.version))),
            None => Ok(None),
        }
    }

    /// Deletes the list if it is still at `expected`; `Fenced` otherwise.
    pub async fn delete(&self, expected: Version) -> Result<(), ManagedLedgerError> {
        match self
            .store
            .delete(&self.key, Expect::Version(expected))
            .await
        {
            Ok(true) => Ok(()),
            Ok(false) | Err(MetadataError::Conflict { .. }) => Err(ManagedLedgerError::Fenced(
                format!("{} changed under this broker", self.key),
            )),
            Err(e) => Err(e.into()),
        }
    }
}
