use thiserror::Error;

/// What a partition log tells its callers, whatever the architecture.
#[derive(Debug, Error, Clone)]
pub enum StorageError {
    /// Another broker took the log over (its record changed under this one,
    /// or its ledgers were fenced): this broker must stop serving it.
    #[error("fenced: {0}")]
    Fenced(String),
    #[error("log is closed")]
    Closed,
    /// Nothing can be written now (no writable ledger, no leader); clients
    /// retry.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// Fewer in-sync replicas than `min.insync.replicas` (Kafka's
    /// NOT_ENOUGH_REPLICAS): the send fails at once rather than waits.
    #[error("not enough replicas: {in_sync} in sync, {required} required")]
    NotEnoughReplicas { in_sync: usize, required: usize },
    #[error("metadata: {0}")]
    Metadata(String),
    /// The log (or the broker a request names) does not exist.
    #[error("not found: {0}")]
    NotFound(String),
    /// A request this storage cannot carry out as asked (a reassignment
    /// that conflicts with one under way, an operation the architecture
    /// has no use for); the message says why.
    #[error("{0}")]
    Rejected(String),
    /// This broker was started with another architecture than the one
    /// its cluster was initialised with.
    #[error("this cluster was initialised with the {cluster} architecture; a broker started with --architecture {broker} cannot join it (start it with --architecture {cluster}, or use another metadata root)")]
    WrongArchitecture {
        cluster: String,
        broker: super::Architecture,
    },
    /// The storage backend failed (bookie, ledger or disk I/O).
    #[error("{0}")]
    Backend(String),
}

impl From<magnetar_metadata::MetadataError> for StorageError {
    fn from(e: magnetar_metadata::MetadataError) -> Self {
        StorageError::Metadata(e.to_string())
    }
}
