use thiserror::Error;

use super::bookie_client::BookieClientError;
use super::metadata::LedgerMetadataError;
use super::placement::PlacementError;
use super::{EntryId, LedgerId};

/// What a ledger writer or reader tells its caller.
#[derive(Debug, Error, Clone)]
pub enum LedgerError {
    /// Another writer recovered (fenced) the ledger; this writer must stop.
    /// An add that got this error may or may not be stored.
    #[error("ledger {0} is fenced by another writer")]
    Fenced(LedgerId),
    /// Someone else changed the ledger's metadata (recovery, close).
    #[error("ledger {0} metadata changed under this writer")]
    MetadataConflict(LedgerId),
    #[error("ledger {0} is closed")]
    Closed(LedgerId),
    #[error("not enough bookies: {0}")]
    NotEnoughBookies(String),
    #[error("invalid ledger configuration: {0}")]
    InvalidConfig(String),
    #[error("entry {entry} is beyond the last confirmed entry {lac} of ledger {ledger}")]
    BeyondLastConfirmed {
        ledger: LedgerId,
        entry: EntryId,
        lac: EntryId,
    },
    #[error("entry {1} of ledger {0} is not readable from any bookie")]
    EntryUnavailable(LedgerId, EntryId),
    #[error("ledger {0} not found")]
    NoSuchLedger(LedgerId),
    #[error("metadata: {0}")]
    Metadata(String),
    #[error("bookie: {0}")]
    Bookie(String),
    /// The writer task is gone (the ledger failed earlier or was dropped).
    #[error("ledger {0} writer has stopped")]
    WriterStopped(LedgerId),
}

impl From<PlacementError> for LedgerError {
    fn from(e: PlacementError) -> Self {
        LedgerError::NotEnoughBookies(e.to_string())
    }
}

impl LedgerError {
    pub(crate) fn from_metadata(ledger: LedgerId, e: LedgerMetadataError) -> Self {
        match e {
            LedgerMetadataError::Conflict => LedgerError::MetadataConflict(ledger),
            LedgerMetadataError::NotFound(id) => LedgerError::NoSuchLedger(id),
            other => LedgerError::Metadata(other.to_string()),
        }
    }

    pub(crate) fn from_bookie(e: &BookieClientError) -> Self {
        LedgerError::Bookie(e.to_string())
    }
}
