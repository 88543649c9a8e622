//! The on-disk log of one partition in the monolithic (Kafka-style)
//! architecture: a directory of append-only segment files, each with a sparse
//! offset index and a time index, plus the leader-epoch cache (KIP-101/279).
//!
//! This crate owns the bytes in that directory and their crash recovery. It is
//! pure, synchronous storage: it never does network IO, never spawns threads or
//! uses an async runtime, and never interprets an entry (entries are opaque
//! bytes; Pulsar messages, high watermarks and ISR belong to the broker). It
//! never fsyncs data on append: durability is the caller's [`Log::flush`], so a
//! group-commit layer above can share one fsync between many appends. One
//! process, one [`Log`] per directory: the caller guarantees exclusivity.
//!
//! # On-disk format
//!
//! ```text
//! <dir>/00000000000000000000.log        segment: batches back to back
//! <dir>/00000000000000000000.index      offset index of a sealed segment
//! <dir>/00000000000000000000.timeindex  time index of a sealed segment
//! <dir>/leader-epoch-checkpoint         epoch cache (text, Kafka's layout)
//! ```
//!
//! A segment is named after the offset of its first entry (20 digits). Its
//! batches have consecutive offsets; the next segment starts where it ends.
//!
//! A **batch** (all integers big-endian):
//!
//! ```text
//! offset size field
//!  0     4    crc32c       CRC32C of bytes 4..33 and of the payload
//!  4     1    magic        format version, 1
//!  5     8    base_offset  offset of the first entry
//! 13     4    epoch        leader epoch the batch was written in
//! 17     4    entry_count  >= 1; entry i has offset base_offset + i
//! 21     8    max_timestamp_ms   largest entry timestamp in the batch
//! 29     4    payload_len  bytes of the entries that follow
//! 33          payload: entry_count × { timestamp_ms u64, length u32, bytes }
//! ```
//!
//! The **offset index** holds 8-byte entries `{relative offset u32, file
//! position u32}`: one for a batch whenever `index_interval_bytes` have been
//! written since the previous entry (the first batch, at position 0, needs
//! none). The **time index** holds 12-byte entries `{timestamp u64, relative
//! offset u32}`, written at offset-index points when the value grows: the
//! timestamp is the largest entry timestamp of *every batch before* that one.
//! When a segment is sealed (rolled) its time index gets a last entry holding
//! the segment's largest timestamp at the relative offset one past its end;
//! a sealed segment's index files are trusted on open only if that entry is
//! there and a scan of the segment's tail agrees with them.
//!
//! The active (last) segment keeps its indexes in memory only and is scanned,
//! CRC by CRC, on every open: the file is cut at the first torn or corrupt
//! batch.

mod batch;
mod config;
mod epoch;
mod error;
mod index;
mod log;
mod read;
mod recovery;
mod segment;
mod truncate;

pub use batch::{BatchError, BATCH_HEADER_LEN, ENTRY_OVERHEAD};
pub use config::LogConfig;
pub use error::LogError;
pub use log::Log;

use bytes::Bytes;

/// One entry to append; the log assigns its offset.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppendEntry {
    /// Producer or broker time, kept for time-based lookups and retention.
    pub timestamp_ms: u64,
    /// Opaque payload.
    pub data: Bytes,
}

/// One entry as stored, with the offset and leader epoch it was written at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredEntry {
    pub offset: u64,
    /// Leader epoch of the batch that carried the entry.
    pub epoch: u32,
    pub timestamp_ms: u64,
    pub data: Bytes,
}

/// What retention and admin need to know about one segment file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentInfo {
    /// Offset of the segment's first entry (also its file name).
    pub base_offset: u64,
    /// One past the segment's last entry.
    pub next_offset: u64,
    /// Size of the `.log` file.
    pub bytes: u64,
    /// When the segment file was created (filesystem birth time, or its
    /// modification time where birth time is unknown, after a reopen).
    pub created_ms: u64,
    /// Largest entry timestamp in the segment, 0 when empty.
    pub max_timestamp_ms: u64,
}

/// Whole batches exactly as stored, for a follower to append verbatim with
/// [`Log::append_raw`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawBatches {
    /// Concatenated batches; empty at the log end.
    pub data: Bytes,
    /// Base offset of the first batch (at or below the requested offset).
    pub first_offset: u64,
    /// One past the last entry of the last batch.
    pub next_offset: u64,
}
