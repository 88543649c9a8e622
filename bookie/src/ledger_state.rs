//! In-memory view of every ledger's durable state (fenced, LAC, master key,
//! last entry). Only the journal thread changes it, and only after the change
//! is durable; readers (LAC reads, long-polls) never see undurable state.

use std::collections::HashMap;
use std::sync::RwLock;

use tokio::sync::watch;

use crate::store::LedgerStateRecord;

pub struct LedgerTable {
    states: RwLock<HashMap<u64, LedgerStateRecord>>,
    /// Bumped after each durable round, waking LAC long-polls.
    rounds: watch::Sender<u64>,
}

impl LedgerTable {
    pub fn new(initial: Vec<(u64, LedgerStateRecord)>) -> Self {
        LedgerTable {
            states: RwLock::new(initial.into_iter().collect()),
            rounds: watch::channel(0).0,
        }
    }

    pub fn get(&self, ledger_id: u64) -> Option<LedgerStateRecord> {
        self.read().get(&ledger_id).cloned()
    }

    pub fn len(&self) -> usize {
        self.read().len()
    }

    /// Every ledger with durable state here, in no particular order.
    pub fn ledger_ids(&self) -> Vec<u64> {
        self.read().keys().copied().collect()
    }

    /// Applies a durable round's changes (`None` = deleted) and wakes waiters.
    pub fn apply(&self, changes: HashMap<u64, Option<LedgerStateRecord>>) {
        if changes.is_empty() {
            return;
        }
        {
            let mut states = self.states.write().unwrap_or_else(|p| p.into_inner());
            for (ledger, change) in changes {
                match change {
                    Some(state) => states.insert(ledger, state),
                    None => states.remove(&ledger),
                };
            }
        }
        self.rounds.send_modify(|r| *r += 1);
    }

    pub fn subscribe_rounds(&self) -> watch::Receiver<u64> {
        self.rounds.subscribe()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<u64, LedgerStateRecord>> {
        // A panic elsewhere while holding the lock leaves consistent data
        // (each insert is whole), so poisoning is ignored.
        self.states.read().unwrap_or_else(|p| p.into_inner())
    }
}
