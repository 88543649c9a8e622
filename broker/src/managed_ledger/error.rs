use thiserror::Error;

use crate::ledger::LedgerError;

/// What a managed ledger (topic storage) tells its callers.
#[derive(Debug, Error, Clone)]
pub enum ManagedLedgerError {
    #[error("ledger: {0}")]
    Ledger(#[from] LedgerError),
    #[error("metadata: {0}")]
    Metadata(String),
    /// The topic's ledger list is corrupt or was changed by someone else
    /// (another broker took the topic over).
    #[error("topic metadata conflict: {0}")]
    Fenced(String),
    #[error("managed ledger is closed")]
    Closed,
    #[error("no ledger is available for writing: {0}")]
    NoWritableLedger(String),
}

impl From<magnetar_metadata::MetadataError> for ManagedLedgerError {
    fn from(e: magnetar_metadata::MetadataError) -> Self {
        ManagedLedgerError::Metadata(e.to_string())
    }
}
