//! The managed ledger as a [`PartitionLog`]: the decoupled architecture's
//! side of the storage seam.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::watch;

use super::{ManagedLedger, ManagedLedgerError};
use crate::storage::{
    AppendFuture, Entry, LogStats, PartitionLog, Position, PositionRun, RetentionLimits,
    SegmentStats, StorageError,
};

impl From<ManagedLedgerError> for StorageError {
    fn from(e: ManagedLedgerError) -> Self {
        match e {
            ManagedLedgerError::Fenced(why) => StorageError::Fenced(why),
            ManagedLedgerError::Closed => StorageError::Closed,
            ManagedLedgerError::NoWritableLedger(why) => StorageError::Unavailable(why),
            ManagedLedgerError::Metadata(why) => StorageError::Metadata(why),
            ManagedLedgerError::Ledger(e) => StorageError::Backend(format!("ledger: {e}")),
        }
    }
}

#[async_trait]
impl PartitionLog for ManagedLedger {
    fn name(&self) -> &str {
        ManagedLedger::name(self)
    }

    fn append(self: Arc<Self>, entry: Bytes) -> AppendFuture {
        let confirmed = ManagedLedger::append(&self, entry);
        Box::pin(async move { confirmed.await.map_err(StorageError::from) })
    }

    async fn read_entries(
        &self,
        after: Position,
        max_entries: usize,
    ) -> Result<Vec<Entry>, StorageError> {
        Ok(ManagedLedger::read_entries(self, after, max_entries).await?)
    }

    fn last_confirmed(&self) -> Position {
        ManagedLedger::last_confirmed(self)
    }

    fn first_position(&self) -> Position {
        ManagedLedger::first_position(self)
    }

    fn entries_after(&self, after: Position) -> u64 {
        ManagedLedger::entries_after(self, after)
    }

    fn bytes_after(&self, after: Position) -> u64 {
        ManagedLedger::bytes_after(self, after)
    }

    fn mark_delete_leaving(&self, max_bytes: u64) -> Position {
        ManagedLedger::mark_delete_leaving(self, max_bytes)
    }

    fn subscribe_changes(&self) -> watch::Receiver<u64> {
        ManagedLedger::subscribe_changes(self)
    }

    fn position_runs(&self) -> Vec<PositionRun> {
        self.storage_stats()
            .ledgers
            .iter()
            .map(|l| PositionRun {
                first: Position::new(l.ledger_id, 0),
                count: l.entries,
            })
            .collect()
    }

    async fn trim_consumed(
        &self,
        slowest: Position,
        limits: &RetentionLimits,
    ) -> Result<usize, StorageError> {
        Ok(ManagedLedger::trim_consumed(self, slowest, limits)
            .await?
            .len())
    }

    fn stats(&self) -> LogStats {
        let stats = self.storage_stats();
        let segment = |l: &super::LedgerStats| SegmentStats {
            id: l.ledger_id,
            first_entry: 0,
            entries: l.entries,
            size: l.size,
            closed: l.closed,
        };
        LogStats {
            segments: stats.ledgers.iter().map(segment).collect(),
            entries: stats.entries,
            size: stats.size,
            current: stats.current_ledger.as_ref().map(segment),
            last_confirmed: stats.last_confirmed,
        }
    }

    async fn close(&self) -> Result<(), StorageError> {
        Ok(ManagedLedger::close(self).await?)
    }

    async fn delete(&self) -> Result<(), StorageError> {
        Ok(ManagedLedger::delete(self).await?)
    }
}
