//! A position in a topic: (ledger id, entry id). Ledger ids are allocated in
//! increasing order cluster-wide and a topic only ever appends newer ledgers,
//! so ordering positions by (ledger, entry) is topic order.

use serde::{Deserialize, Serialize};

use crate::ledger::{EntryId, LedgerId};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Position {
    pub ledger_id: LedgerId,
    pub entry_id: EntryId,
}

impl Position {
    pub const fn new(ledger_id: LedgerId, entry_id: EntryId) -> Self {
        Position {
            ledger_id,
            entry_id,
        }
    }

    /// Before every entry of every ledger.
    pub const EARLIEST: Position = Position::new(0, -1);
    /// After every entry that will ever exist.
    pub const LATEST: Position = Position::new(u64::MAX, i64::MAX);
}

impl std::fmt::Display for Position {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.ledger_id, self.entry_id)
    }
}
