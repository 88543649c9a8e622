//! Deleting a topic's storage (admin topic deletion): its ledgers first, then
//! its ledger list, as Pulsar does, so an interrupted deletion leaves a list
//! that a retry can finish rather than ledgers nobody references.
//!
//! Only ledger metadata is deleted here; bookies garbage-collect the entries
//! of ledgers whose metadata is gone.

use std::sync::Arc;

use magnetar_metadata::MetadataStore;

use super::{LedgerListStore, ManagedLedger, ManagedLedgerError};
use crate::ledger::{LedgerClient, LedgerError, LedgerId};

impl ManagedLedger {
    /// Deletes this topic's storage. Appends fail with `Closed` from now on;
    /// the current ledger is closed (so pending adds resolve), every ledger
    /// of the list is deleted, then the list itself, by CAS on the version
    /// this broker wrote last (`Fenced` if another broker changed it).
    pub async fn delete(&self) -> Result<(), ManagedLedgerError> {
        // Holding this for the whole deletion keeps rollovers and seals from
        // writing the list back; they fail on the missing key afterwards.
        let _serial = self.list_updates.lock().await;
        let (current, queued) = {
            let mut state = self.lock();
            state.terminal = Some(ManagedLedgerError::Closed);
            (state.current.take(), std::mem::take(&mut state.queued))
        };
        for (_, reply) in queued {
            let _ = reply.send(Err(ManagedLedgerError::Closed));
        }
        if let Some(current) = current {
            if let Err(e) = current.writer.close().await {
                tracing::debug!(topic = %self.name, ledger = current.id, error = %e, "closing before delete failed");
            }
        }
        let (ids, version) = {
            let state = self.lock();
            let mut ids: Vec<LedgerId> = state.list.ledgers.iter().map(|l| l.ledger_id).collect();
            ids.extend(state.undeleted.iter().copied());
            (ids, state.version)
        };
        // A broker that lost the topic (paused past its lease, say) must
        // not delete ledgers its successor recovered and reads from.
        match self.list_store.load_versioned().await? {
            Some((_, stored)) if stored == version => {}
            _ => {
                return Err(ManagedLedgerError::Fenced(format!(
                    "{}: the ledger list changed under this broker; not deleting",
                    self.name
                )))
            }
        }
        delete_ledgers(&self.client, &ids).await?;
        for id in &ids {
            self.cache.invalidate_ledger(*id);
        }
        self.readers.lock().await.clear();
        self.list_store.delete(version).await?;
        {
            let mut state = self.lock();
            state.list.ledgers.clear();
            state.undeleted.clear();
            state.open_confirmed.clear();
            state.sealing_bytes.clear();
        }
        self.changed.send_modify(|v| *v += 1);
        tracing::info!(topic = %self.name, ledgers = ids.len(), "managed ledger deleted");
        Ok(())
    }
}

/// Deletes the storage of a topic that no broker has open: its ledgers, then
/// its list at `key`. Returns false if there is no such topic.
pub async fn delete_stored(
    store: Arc<dyn MetadataStore>,
    key: String,
    client: &LedgerClient,
) -> Result<bool, ManagedLedgerError> {
    let list_store = LedgerListStore::new(store, key);
    let Some((list, version)) = list_store.load_versioned().await? else {
        return Ok(false);
    };
    let ids: Vec<LedgerId> = list.ledgers.iter().map(|l| l.ledger_id).collect();
    delete_ledgers(client, &ids).await?;
    list_store.delete(version).await?;
    Ok(true)
}

/// Deletes each ledger's metadata; one already gone counts as deleted, so a
/// retried deletion finishes.
async fn delete_ledgers(client: &LedgerClient, ids: &[LedgerId]) -> Result<(), ManagedLedgerError> {
    for id in ids {
        match client.delete(*id).await {
            Ok(()) | Err(LedgerError::NoSuchLedger(_)) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}
