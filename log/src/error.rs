//! The one error type of this crate's API.

use std::path::PathBuf;

use crate::BatchError;

/// Everything a log operation can refuse or fail with.
#[derive(thiserror::Error, Debug)]
pub enum LogError {
    #[error("I/O error on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Stored bytes fail their checks where recovery did not cut them off
    /// (a sealed segment damaged after it was written, or a bad checkpoint).
    #[error("corrupt data in {path} at byte {position}: {source}")]
    Corrupt {
        path: PathBuf,
        position: u64,
        #[source]
        source: BatchError,
    },
    /// Bytes handed to `append_raw` are not valid batches; nothing was
    /// appended.
    #[error("invalid batch at byte {position} of the input: {source}")]
    InvalidBatch {
        position: u64,
        #[source]
        source: BatchError,
    },
    /// A write in an epoch older than the log's latest: a fenced leader, or a
    /// follower that skipped truncation.
    #[error("epoch {epoch} is older than the log's latest epoch {latest}")]
    EpochRegression { epoch: u32, latest: u32 },
    /// A replicated batch does not start at this log's end.
    #[error("batch base offset {found} does not continue the log end {expected}")]
    OffsetMismatch { expected: u64, found: u64 },
    #[error("offset {offset} is outside the log [{start}, {end}]")]
    OffsetOutOfRange { offset: u64, start: u64, end: u64 },
    /// Truncation must cut between batches; `offset` is inside one.
    #[error("offset {offset} is inside the batch [{batch_base}, {batch_next})")]
    NotBatchBoundary {
        offset: u64,
        batch_base: u64,
        batch_next: u64,
    },
    #[error("a batch needs at least one entry")]
    EmptyBatch,
    #[error("batch too large: {entries} entries, {bytes} payload bytes (format limit 4 GiB)")]
    BatchTooLarge { entries: u64, bytes: u64 },
    #[error("invalid log config: {0}")]
    InvalidConfig(String),
    /// An earlier fsync or write failed: the kernel may have dropped dirty
    /// pages, so the log refuses writes until it is reopened and recovered.
    #[error("log is failed after an earlier write or fsync error; reopen it")]
    Failed,
}

impl LogError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> LogError {
        LogError::Io {
            path: path.into(),
            source,
        }
    }
}
