//! One segment file: its names on disk, creating and removing its files,
//! positional batch reads, and the batch-by-batch scan that recovery and
//! truncation use.
//!
//! Reads here use `read_at` only (no shared cursor), so any number of readers
//! and the appender share one handle. Nothing here writes batches: appends
//! belong to the log, under its lock. A read never extends past the `limit`
//! its caller took from the log's state, which only covers whole batches.

use std::fs::{self, File, OpenOptions};
use std::io::ErrorKind;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use crate::batch::{self, BatchError, BatchHeader};
use crate::index::SegmentIndex;
use crate::{LogError, BATCH_HEADER_LEN};

/// An open segment. Shared (`Arc`) between the log's state and readers, so a
/// reader keeps a handle even if retention deletes the file meanwhile.
#[derive(Debug)]
pub(crate) struct SegmentFile {
    pub base: u64,
    pub path: PathBuf,
    pub file: File,
}

/// The kinds of file the log keeps in its directory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FileKind {
    Log,
    Index,
    TimeIndex,
}

const NAME_DIGITS: usize = 20;

pub(crate) fn file_path(dir: &Path, base: u64, kind: FileKind) -> PathBuf {
    let ext = match kind {
        FileKind::Log => "log",
        FileKind::Index => "index",
        FileKind::TimeIndex => "timeindex",
    };
    dir.join(format!("{base:020}.{ext}"))
}

/// The base offset and kind of a segment file name, None for other files.
pub(crate) fn parse_name(name: &str) -> Option<(u64, FileKind)> {
    let (stem, ext) = name.split_once('.')?;
    let kind = match ext {
        "log" => FileKind::Log,
        "index" => FileKind::Index,
        "timeindex" => FileKind::TimeIndex,
        _ => return None,
    };
    if stem.len() != NAME_DIGITS || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((stem.parse().ok()?, kind))
}

/// Opens an existing segment file for reading and appending.
pub(crate) fn open(dir: &Path, base: u64) -> Result<SegmentFile, LogError> {
    let path = file_path(dir, base, FileKind::Log);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .map_err(|e| LogError::io(&path, e))?;
    Ok(SegmentFile { base, path, file })
}

/// Creates a new, empty segment file; refuses to reuse an existing name.
pub(crate) fn create(dir: &Path, base: u64) -> Result<SegmentFile, LogError> {
    let path = file_path(dir, base, FileKind::Log);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(|e| LogError::io(&path, e))?;
    Ok(SegmentFile { base, path, file })
}

/// Removes a file that may already be gone.
pub(crate) fn remove_if_present(path: &Path) -> Result<(), LogError> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != ErrorKind::NotFound => Err(LogError::io(path, e)),
        _ => Ok(()),
    }
}

/// Removes a segment's index files (the in-memory index is authoritative
/// for the active segment, so stale files must not survive it).
pub(crate) fn remove_index_files(dir: &Path, base: u64) -> Result<(), LogError> {
    remove_if_present(&file_path(dir, base, FileKind::Index))?;
    remove_if_present(&file_path(dir, base, FileKind::TimeIndex))
}

/// Removes all files of a segment.
pub(crate) fn remove_files(dir: &Path, base: u64) -> Result<(), LogError> {
    remove_index_files(dir, base)?;
    remove_if_present(&file_path(dir, base, FileKind::Log))
}

/// Writes (without fsync) the index files of a sealed segment; returns their
/// paths for the next flush to sync.
pub(crate) fn write_index_files(
    dir: &Path,
    base: u64,
    index: &SegmentIndex,
) -> Result<[PathBuf; 2], LogError> {
    let offsets = file_path(dir, base, FileKind::Index);
    let times = file_path(dir, base, FileKind::TimeIndex);
    fs::write(&offsets, index.encode_offsets()).map_err(|e| LogError::io(&offsets, e))?;
    fs::write(&times, index.encode_times()).map_err(|e| LogError::io(&times, e))?;
    Ok([offsets, times])
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// When a file was created: birth time where the filesystem keeps it,
/// otherwise its last modification, otherwise now.
pub(crate) fn created_ms(file: &File) -> u64 {
    let Ok(meta) = file.metadata() else {
        return now_ms();
    };
    meta.created()
        .or_else(|_| meta.modified())
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or_else(now_ms, |d| d.as_millis() as u64)
}

/// Window for full reads: enough for many batches per syscall.
pub(crate) const READ_WINDOW: usize = 256 * 1024;
/// Window for header-only scans, which skip payloads.
const HEADER_WINDOW: usize = 4096;

/// Reads batches of one segment below `limit` through a window of bytes read
/// with one `read_at`; returned batches share the window's buffer.
pub(crate) struct BatchReader<'a> {
    seg: &'a SegmentFile,
    limit: u64,
    hint: usize,
    window: Bytes,
    window_pos: u64,
}

impl<'a> BatchReader<'a> {
    pub fn new(seg: &'a SegmentFile, limit: u64, hint: usize) -> Self {
        BatchReader {
            seg,
            limit,
            hint,
            window: Bytes::new(),
            window_pos: 0,
        }
    }

    fn corrupt(&self, position: u64, source: BatchError) -> LogError {
        LogError::Corrupt {
            path: self.seg.path.clone(),
            position,
            source,
        }
    }

    /// Makes `[pos, pos + len)` readable from the window; `len` must fit
    /// below `limit` (callers check, so the allocation is bounded by the file).
    fn ensure(&mut self, pos: u64, len: u64) -> Result<(), LogError> {
        let end = self.window_pos + self.window.len() as u64;
        if pos >= self.window_pos && pos + len <= end {
            return Ok(());
        }
        let n = len.max(self.hint as u64).min(self.limit - pos) as usize;
        let mut buf = vec![0u8; n];
        self.seg
            .file
            .read_exact_at(&mut buf, pos)
            .map_err(|e| LogError::io(&self.seg.path, e))?;
        self.window = Bytes::from(buf);
        self.window_pos = pos;
        Ok(())
    }

    fn slice(&self, pos: u64, len: u64) -> Bytes {
        let start = (pos - self.window_pos) as usize;
        self.window.slice(start..start + len as usize)
    }

    /// The header of the batch at `pos`, checked to fit below the limit.
    pub fn header_at(&mut self, pos: u64) -> Result<BatchHeader, LogError> {
        let available = self.limit.saturating_sub(pos);
        if available < BATCH_HEADER_LEN as u64 {
            let needed = BATCH_HEADER_LEN as u64;
            return Err(self.corrupt(pos, BatchError::Incomplete { needed, available }));
        }
        self.ensure(pos, BATCH_HEADER_LEN as u64)?;
        let header = BatchHeader::parse(&self.slice(pos, BATCH_HEADER_LEN as u64))
            .map_err(|e| self.corrupt(pos, e))?;
        if header.total_len() > available {
            let needed = header.total_len();
            return Err(self.corrupt(pos, BatchError::Incomplete { needed, available }));
        }
        Ok(header)
    }

    /// The whole batch at `pos`, CRC and entries checked.
    pub fn batch_at(&mut self, pos: u64) -> Result<(BatchHeader, Bytes), LogError> {
        let header = self.header_at(pos)?;
        self.ensure(pos, header.total_len())?;
        let bytes = self.slice(pos, header.total_len());
        batch::check(&bytes).map_err(|e| self.corrupt(pos, e))?;
        Ok((header, bytes))
    }

    /// Raw bytes `[from, to)`, below the limit.
    pub fn bytes(&mut self, from: u64, to: u64) -> Result<Bytes, LogError> {
        self.ensure(from, to - from)?;
        Ok(self.slice(from, to - from))
    }
}

/// Where a scan stopped.
#[derive(Debug)]
pub(crate) struct ScanEnd {
    /// Position after the last good batch.
    pub pos: u64,
    /// Offset after the last good batch.
    pub next_offset: u64,
    /// Why the scan stopped before `limit`, if it did.
    pub corrupt: Option<BatchError>,
}

/// Walks the batches in `[pos, limit)`, the first expected at offset
/// `expected`, calling `on_batch(position, header)` for each good one. With
/// `verify` every CRC and entry is checked; otherwise only headers and
/// offsets. Stops at the first bad batch; IO errors are returned.
pub(crate) fn scan(
    seg: &SegmentFile,
    mut pos: u64,
    limit: u64,
    mut expected: u64,
    verify: bool,
    mut on_batch: impl FnMut(u64, &BatchHeader),
) -> Result<ScanEnd, LogError> {
    let hint = if verify { READ_WINDOW } else { HEADER_WINDOW };
    let mut reader = BatchReader::new(seg, limit, hint);
    while pos < limit {
        let read = if verify {
            reader.batch_at(pos).map(|(h, _)| h)
        } else {
            reader.header_at(pos)
        };
        let header = match read {
            Ok(h) if h.base_offset != expected => {
                let found = h.base_offset;
                let corrupt = Some(BatchError::UnexpectedOffset { expected, found });
                return Ok(ScanEnd {
                    pos,
                    next_offset: expected,
                    corrupt,
                });
            }
            // `expected` is never below the base, so neither is the batch.
            Ok(h) if h.next_offset().saturating_sub(seg.base) > u64::from(u32::MAX) => {
                let corrupt = Some(BatchError::Malformed("segment spans over 2^32 offsets"));
                return Ok(ScanEnd {
                    pos,
                    next_offset: expected,
                    corrupt,
                });
            }
            Ok(h) => h,
            Err(LogError::Corrupt { source, .. }) => {
                let corrupt = Some(source);
                return Ok(ScanEnd {
                    pos,
                    next_offset: expected,
                    corrupt,
                });
            }
            Err(e) => return Err(e),
        };
        on_batch(pos, &header);
        pos += header.total_len();
        expected = header.next_offset();
    }
    Ok(ScanEnd {
        pos,
        next_offset: expected,
        corrupt: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_strangers_are_ignored() {
        let dir = Path::new("/d");
        let p = file_path(dir, 42, FileKind::TimeIndex);
        assert_eq!(p, Path::new("/d/00000000000000000042.timeindex"));
        let name = p.file_name().unwrap().to_str().unwrap();
        assert_eq!(parse_name(name), Some((42, FileKind::TimeIndex)));
        assert_eq!(parse_name("00000000000000000042.log.deleted"), None);
        assert_eq!(parse_name("42.log"), None);
        assert_eq!(parse_name("0000000000000000004x.log"), None);
        assert_eq!(parse_name("99999999999999999999.log"), None);
        assert_eq!(parse_name("leader-epoch-checkpoint"), None);
    }
}
