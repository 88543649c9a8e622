//! A position in a partition's log: (ledger id, entry id), the pair a
//! Pulsar MessageId carries, so positions go to clients and come back as
//! they are.
//!
//! Ordering positions by (ledger, entry) must be log order in every
//! architecture:
//! - a managed ledger only ever appends ledgers with newer ids (allocated in
//!   increasing order cluster-wide), entries numbered from 0 in each;
//! - a local log has one id for its whole life (allocated from the same
//!   counter when the log is created, so a topic deleted and created again
//!   orders after its old self) and its offsets as entry ids.

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Position {
    pub ledger_id: u64,
    pub entry_id: i64,
}

impl Position {
    pub const fn new(ledger_id: u64, entry_id: i64) -> Self {
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
