use thiserror::Error;

/// Errors a metadata backend reports to its callers.
#[derive(Debug, Error)]
pub enum MetadataError {
    /// A compare-and-set found another version than expected.
    #[error("version conflict on {key}")]
    Conflict { key: String },
    /// The lease does not exist (never granted, revoked or expired).
    #[error("lease {0} not found or expired")]
    LeaseNotFound(i64),
    /// A watch asked to resume from a revision that was already compacted.
    #[error("revision {requested} compacted (oldest available {oldest})")]
    Compacted { requested: i64, oldest: i64 },
    /// The metadata URL or a key could not be understood.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The backend could not be reached or failed internally.
    #[error("metadata backend unavailable: {0}")]
    Unavailable(String),
    /// Local storage of the embedded backend failed.
    #[error("metadata storage I/O: {0}")]
    Io(#[from] std::io::Error),
    /// Stored data could not be decoded.
    #[error("corrupt metadata: {0}")]
    Corrupt(String),
}

pub type Result<T, E = MetadataError> = std::result::Result<T, E>;
