//! Replicated ledgers on bookies: the BookKeeper write protocol as seen from a
//! writer and a recovering reader. One file per protocol step
//! (`create`, `append`, `ensemble_change`, `recovery`, `read`).
//!
//! This module owns ledger metadata and the bookie wire; it must never know
//! what a topic or a message is.

mod append;
pub mod bookie_client;
mod create;
mod ensemble_change;
mod error;
pub mod metadata;
pub mod placement;
mod read;
mod recovery;
pub mod rereplication;

pub use append::LedgerWriter;
pub use create::{LedgerClient, LedgerConfig};
pub use error::LedgerError;
pub use read::LedgerReader;

/// Ledger ids are allocated cluster-wide (`LedgerIdAllocator`); 0 is never used.
pub type LedgerId = u64;
/// Entry ids start at 0; -1 means "none" (e.g. LAC of an empty ledger).
pub type EntryId = i64;
