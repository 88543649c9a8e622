//! A read-only summary of a topic's storage for admin stats (Pulsar's
//! `internalStats`): its ledgers with their entry counts and sizes.

use super::{ManagedLedger, Position};
use crate::ledger::LedgerId;

/// One ledger of a topic as admin stats show it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LedgerStats {
    pub ledger_id: LedgerId,
    /// Entries readable now (all of them once the ledger is closed).
    pub entries: u64,
    /// Bytes stored: the final length once closed; for the ledger being
    /// written, the bytes appended so far.
    pub size: u64,
    /// Sealed: its final entry count is recorded.
    pub closed: bool,
}

/// A topic's storage at one moment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StorageStats {
    pub ledgers: Vec<LedgerStats>,
    /// Sum over `ledgers`.
    pub entries: u64,
    pub size: u64,
    /// The ledger being written, if any.
    pub current_ledger: Option<LedgerStats>,
    pub last_confirmed: Position,
}

impl ManagedLedger {
    pub fn storage_stats(&self) -> StorageStats {
        let last_confirmed = self.last_confirmed();
        let state = self.lock();
        let current = state.current.as_ref().map(|c| (c.id, c.bytes));
        let ledgers: Vec<LedgerStats> = state
            .list
            .ledgers
            .iter()
            .map(|info| {
                let (entries, _) = Self::readable_entries(&state, info);
                let size = match current {
                    Some((id, bytes)) if id == info.ledger_id => bytes,
                    _ => state
                        .sealing_bytes
                        .get(&info.ledger_id)
                        .copied()
                        .unwrap_or(info.size),
                };
                LedgerStats {
                    ledger_id: info.ledger_id,
                    entries,
                    size,
                    closed: info.entries.is_some(),
                }
            })
            .collect();
        let current_ledger =
            current.and_then(|(id, _)| ledgers.iter().find(|l| l.ledger_id == id).cloned());
        StorageStats {
            entries: ledgers.iter().map(|l| l.entries).sum(),
            size: ledgers.iter().map(|l| l.size).sum(),
            ledgers,
            current_ledger,
            last_confirmed,
        }
    }
}
