//! On-disk format of the embedded store: a write-ahead log of committed
//! changes plus a snapshot of the whole state, both made of checksummed
//! frames. This module owns files and bytes only; it never interprets a
//! change (that is `state.rs`).
//!
//! Frame: `len: u32 LE | crc32c(payload): u32 LE | payload` where the payload
//! is a prost-encoded [`WalRecord`] or [`Snapshot`]. A log whose tail does not
//! parse was cut by a crash mid-append; recovery truncates it there.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;

use bytes::Bytes;
use prost::Message;

/// Log of committed changes since the snapshot.
pub const WAL_FILE: &str = "wal.log";
/// Full state as of some log index.
pub const SNAPSHOT_FILE: &str = "snapshot.bin";
/// Held with `flock` while a store has the directory open.
pub const LOCK_FILE: &str = "LOCK";
/// A snapshot being written; renamed over [`SNAPSHOT_FILE`] once durable.
const SNAPSHOT_TMP: &str = "snapshot.tmp";

const HEADER_LEN: usize = 8;

/// One committed change, numbered by `index` (consecutive from 1), so replay
/// can skip what a snapshot already contains.
#[derive(Clone, PartialEq, Message)]
pub(crate) struct WalRecord {
    #[prost(uint64, tag = "1")]
    pub index: u64,
    #[prost(oneof = "Change", tags = "2, 3, 4")]
    pub change: Option<Change>,
}

#[derive(Clone, PartialEq, prost::Oneof)]
pub(crate) enum Change {
    /// Writes applied atomically at one revision.
    #[prost(message, tag = "2")]
    Txn(TxnRecord),
    #[prost(message, tag = "3")]
    Grant(GrantRecord),
    /// Lease ended (revoked or expired); its keys are deleted at `revision`.
    #[prost(message, tag = "4")]
    Revoke(RevokeRecord),
}

#[derive(Clone, PartialEq, Message)]
pub(crate) struct TxnRecord {
    #[prost(int64, tag = "1")]
    pub revision: i64,
    #[prost(message, repeated, tag = "2")]
    pub mutations: Vec<Mutation>,
}

/// A put (`delete == false`) or a delete of an existing key.
#[derive(Clone, PartialEq, Message)]
pub(crate) struct Mutation {
    #[prost(string, tag = "1")]
    pub key: String,
    #[prost(bytes = "bytes", tag = "2")]
    pub value: Bytes,
    /// 0 for none, like etcd.
    #[prost(int64, tag = "3")]
    pub lease: i64,
    #[prost(bool, tag = "4")]
    pub delete: bool,
}

#[derive(Clone, PartialEq, Message)]
pub(crate) struct GrantRecord {
    #[prost(int64, tag = "1")]
    pub lease: i64,
    #[prost(uint64, tag = "2")]
    pub ttl_ms: u64,
}

#[derive(Clone, PartialEq, Message)]
pub(crate) struct RevokeRecord {
    #[prost(int64, tag = "1")]
    pub lease: i64,
    #[prost(int64, tag = "2")]
    pub revision: i64,
}

#[derive(Clone, PartialEq, Message)]
pub(crate) struct Snapshot {
    /// Last log index included.
    #[prost(uint64, tag = "1")]
    pub index: u64,
    #[prost(int64, tag = "2")]
    pub revision: i64,
    #[prost(int64, tag = "3")]
    pub next_lease: i64,
    #[prost(message, repeated, tag = "4")]
    pub entries: Vec<SnapshotEntry>,
    #[prost(message, repeated, tag = "5")]
    pub leases: Vec<GrantRecord>,
}

#[derive(Clone, PartialEq, Message)]
pub(crate) struct SnapshotEntry {
    #[prost(string, tag = "1")]
    pub key: String,
    #[prost(bytes = "bytes", tag = "2")]
    pub value: Bytes,
    #[prost(int64, tag = "3")]
    pub create_revision: i64,
    #[prost(int64, tag = "4")]
    pub mod_revision: i64,
    #[prost(int64, tag = "5")]
    pub lease: i64,
}

/// Appends one frame holding `message` to `out`.
pub(crate) fn encode_frame(message: &impl Message, out: &mut Vec<u8>) -> io::Result<()> {
    let payload = message.encode_to_vec();
    let len = u32::try_from(payload.len()).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("metadata frame of {} bytes exceeds 4 GiB", payload.len()),
        )
    })?;
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&crc32c::crc32c(&payload).to_le_bytes());
    out.extend_from_slice(&payload);
    Ok(())
}

/// Parses the frame at the start of `bytes`: the message and the frame's
/// length, or `None` if it is incomplete, fails its checksum or its decoding.
fn decode_frame<M: Message + Default>(bytes: &[u8]) -> Option<(M, usize)> {
    let header = bytes.get(..HEADER_LEN)?;
    let len = u32::from_le_bytes(header[..4].try_into().ok()?) as usize;
    let crc = u32::from_le_bytes(header[4..].try_into().ok()?);
    let payload = bytes.get(HEADER_LEN..HEADER_LEN.checked_add(len)?)?;
    if crc32c::crc32c(payload) != crc {
        return None;
    }
    let message = M::decode(payload).ok()?;
    Some((message, HEADER_LEN + len))
}

/// Every whole, valid record of a log and the length they span; whatever
/// follows is a torn or corrupt tail.
pub(crate) fn decode_log(bytes: &[u8]) -> (Vec<WalRecord>, usize) {
    let mut records = Vec::new();
    let mut offset = 0;
    while offset < bytes.len() {
        match decode_frame::<WalRecord>(&bytes[offset..]) {
            Some((record, len)) => {
                records.push(record);
                offset += len;
            }
            None => break,
        }
    }
    (records, offset)
}

/// The open log, positioned at its end.
pub(crate) struct Wal {
    file: File,
    len: u64,
}

impl Wal {
    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    /// Appends frames and makes them durable before returning.
    pub(crate) fn append(&mut self, frames: &[u8]) -> io::Result<()> {
        self.file.write_all(frames)?;
        self.file.sync_data()?;
        self.len += frames.len() as u64;
        Ok(())
    }

    /// Empties the log once a snapshot holds everything in it.
    pub(crate) fn clear(&mut self) -> io::Result<()> {
        self.file.set_len(0)?;
        self.file.sync_all()?;
        self.len = 0;
        Ok(())
    }
}

/// What a directory held at open.
pub(crate) struct Recovered {
    pub snapshot: Option<Snapshot>,
    pub records: Vec<WalRecord>,
    pub wal: Wal,
    /// Bytes cut from the end of the log (a torn append).
    pub truncated: u64,
}

/// Reads the snapshot and the log of `dir`, cutting a torn log tail so new
/// records follow the last good one.
pub(crate) fn recover(dir: &Path) -> Result<Recovered, RecoverError> {
    let snapshot = match fs::read(dir.join(SNAPSHOT_FILE)) {
        Ok(bytes) => match decode_frame::<Snapshot>(&bytes) {
            // The snapshot was durable before it got its name, so damage
            // here is not a crash artefact: refuse rather than lose state.
            Some((snapshot, len)) if len == bytes.len() => Some(snapshot),
            _ => return Err(RecoverError::CorruptSnapshot),
        },
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(RecoverError::Io(e)),
    };
    let path = dir.join(WAL_FILE);
    let existed = path.exists();
    let mut file = OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .open(&path)?;
    if !existed {
        sync_dir(dir)?;
    }
    let bytes = {
        use std::io::Read;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        bytes
    };
    let (records, valid) = decode_log(&bytes);
    let truncated = (bytes.len() - valid) as u64;
    if truncated > 0 {
        file.set_len(valid as u64)?;
        file.sync_all()?;
    }
    Ok(Recovered {
        snapshot,
        records,
        wal: Wal {
            file,
            len: valid as u64,
        },
        truncated,
    })
}

#[derive(Debug)]
pub(crate) enum RecoverError {
    Io(io::Error),
    CorruptSnapshot,
}

impl From<io::Error> for RecoverError {
    fn from(e: io::Error) -> Self {
        RecoverError::Io(e)
    }
}

/// Replaces the snapshot atomically: write a temporary file, make it durable,
/// rename it over the old one and make the rename durable.
pub(crate) fn write_snapshot(dir: &Path, snapshot: &Snapshot) -> io::Result<()> {
    let mut frame = Vec::new();
    encode_frame(snapshot, &mut frame)?;
    let tmp = dir.join(SNAPSHOT_TMP);
    {
        let mut file = File::create(&tmp)?;
        file.write_all(&frame)?;
        file.sync_all()?;
    }
    fs::rename(&tmp, dir.join(SNAPSHOT_FILE))?;
    sync_dir(dir)
}

/// Makes a directory's entries (created or renamed files) durable.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(index: u64, key: &str) -> WalRecord {
        WalRecord {
            index,
            change: Some(Change::Txn(TxnRecord {
                revision: index as i64,
                mutations: vec![Mutation {
                    key: key.into(),
                    value: Bytes::from_static(b"value"),
                    lease: 0,
                    delete: false,
                }],
            })),
        }
    }

    fn log_of(records: &[WalRecord]) -> Vec<u8> {
        let mut out = Vec::new();
        for r in records {
            encode_frame(r, &mut out).unwrap();
        }
        out
    }

    #[test]
    fn whole_log_decodes() {
        let records = vec![record(1, "/a"), record(2, "/b"), record(3, "/c")];
        let bytes = log_of(&records);
        assert_eq!(decode_log(&bytes), (records, bytes.len()));
    }

    #[test]
    fn torn_tail_stops_at_last_whole_record() {
        let records = vec![record(1, "/a"), record(2, "/b")];
        let bytes = log_of(&records);
        let first_len = log_of(&records[..1]).len();
        for cut in first_len..bytes.len() {
            let (decoded, valid) = decode_log(&bytes[..cut]);
            assert_eq!(decoded, records[..1].to_vec(), "cut at {cut}");
            assert_eq!(valid, first_len);
        }
    }

    #[test]
    fn flipped_byte_fails_checksum() {
        let records = vec![record(1, "/a"), record(2, "/b")];
        let mut bytes = log_of(&records);
        let last = bytes.len() - 1;
        bytes[last] ^= 0x40;
        let (decoded, _) = decode_log(&bytes);
        assert_eq!(decoded, records[..1].to_vec());
    }
}
