use magnetar_proto::bookie::ErrorCode;
use thiserror::Error;

/// Why a bookie refused or failed a request. Each maps to one wire
/// [`ErrorCode`], so a writer can tell a fenced ledger from a full disk.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum BookieError {
    #[error("ledger {0} not found")]
    NoSuchLedger(u64),
    #[error("entry {1} of ledger {0} not found")]
    NoSuchEntry(u64, i64),
    #[error("ledger {0} is fenced")]
    Fenced(u64),
    #[error("master key does not match ledger {0}")]
    BadMasterKey(u64),
    #[error("entry of {size} bytes exceeds the limit of {limit} bytes")]
    TooLarge { size: usize, limit: usize },
    #[error("bookie is read-only (disk nearly full)")]
    ReadOnly,
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    #[error("storage failure: {0}")]
    Storage(String),
}

impl BookieError {
    pub fn code(&self) -> ErrorCode {
        match self {
            BookieError::NoSuchLedger(_) => ErrorCode::NoSuchLedger,
            BookieError::NoSuchEntry(..) => ErrorCode::NoSuchEntry,
            BookieError::Fenced(_) => ErrorCode::Fenced,
            BookieError::BadMasterKey(_) => ErrorCode::BadMasterKey,
            BookieError::TooLarge { .. } => ErrorCode::TooLarge,
            BookieError::ReadOnly => ErrorCode::ReadOnly,
            BookieError::InvalidRequest(_) => ErrorCode::InvalidRequest,
            BookieError::Storage(_) => ErrorCode::Storage,
        }
    }
}

/// Why a bookie could not start.
#[derive(Debug, Error)]
pub enum StartError {
    #[error("cannot bind {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot open the entry store in {path}: {message}")]
    Store { path: String, message: String },
    #[error("metadata: {0}")]
    Metadata(#[from] magnetar_metadata::MetadataError),
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error("the gRPC port's TLS certificate or key: {0}")]
    Tls(String),
}
