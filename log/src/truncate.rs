//! Removing entries: follower truncation to a batch boundary (KIP-101),
//! starting over at another offset, and retention of whole old segments.
//!
//! Truncation excludes readers and flushes (they must not see bytes being cut
//! and then rewritten) and is durable when it returns. Retention never
//! touches the active segment and never waits for readers: they keep their
//! handles to files deleted under them. An error halfway through a
//! truncation fails the log, since the files may no longer match its state.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError};

use crate::epoch::sync_dir;
use crate::index::SegmentIndex;
use crate::log::{SegmentState, State};
use crate::segment::{self, file_path, now_ms, scan, BatchReader, FileKind};
use crate::{BatchError, Log, LogError, SegmentInfo};

impl Log {
    /// Drops every entry at offset >= `offset` and epochs starting there
    /// (a follower discarding a divergent tail, KIP-101). `offset` must be a
    /// batch boundary, as epoch end offsets are; a no-op at or past the log
    /// end. Below the log start the log restarts empty at `offset`. Durable
    /// on return; lowers the flushed offset to `offset` if it was above.
    pub fn truncate_to(&self, offset: u64) -> Result<(), LogError> {
        let _exclusive = self
            .truncation
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        let mut st = self.lock_state();
        self.check_not_failed()?;
        if offset >= st.log_end() {
            return Ok(());
        }
        if offset < st.log_start() {
            let restarted = self.restart(&mut st, offset);
            return self.fail_on_error(restarted);
        }
        let i = st.segment_for(offset);
        let pos = batch_boundary(&st.segments[i], offset)?;
        let cut = self.cut(&mut st, i, pos, offset);
        self.fail_on_error(cut)
    }

    /// Deletes every entry and epoch and restarts the log, empty, at
    /// `offset` (a follower whose leader no longer has its offsets, or a new
    /// replica starting at the leader's log start). Durable on return.
    pub fn truncate_fully_and_start_at(&self, offset: u64) -> Result<(), LogError> {
        let _exclusive = self
            .truncation
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        let mut st = self.lock_state();
        self.check_not_failed()?;
        let restarted = self.restart(&mut st, offset);
        self.fail_on_error(restarted)
    }

    /// Retention: deletes the oldest segments whose entries are all below
    /// `offset`, never the active one, and returns them. The log start
    /// becomes the first remaining segment's base offset.
    pub fn delete_segments_before(&self, offset: u64) -> Result<Vec<SegmentInfo>, LogError> {
        let (removed, doomed) = {
            let mut st = self.lock_state();
            let sealed = st.segments.len() - 1;
            let mut doomed = Vec::new();
            let mut count = 0;
            for s in st.segments[..sealed]
                .iter()
                .take_while(|s| s.next_offset <= offset)
            {
                // Renamed now (cheap), unlinked after the lock is released.
                match mark_deleted(&self.dir, s.base()) {
                    Ok(paths) => doomed.extend(paths),
                    Err(e) if count == 0 => return Err(e),
                    Err(e) => {
                        tracing::warn!(dir = %self.dir.display(), error = %e, "retention stopped early");
                        break;
                    }
                }
                count += 1;
            }
            let removed: Vec<SegmentInfo> = st.segments.drain(..count).map(|s| s.info()).collect();
            // In memory only: a stale checkpoint is cut to the log start on
            // open anyway.
            let start = st.log_start();
            st.epochs.truncate_from_start(start);
            st.dir_unsynced |= count > 0;
            (removed, doomed)
        };
        for path in doomed {
            if let Err(e) = fs::remove_file(&path) {
                tracing::warn!(path = %path.display(), error = %e, "could not remove deleted segment file");
            }
        }
        if let Some(last) = removed.last() {
            tracing::info!(dir = %self.dir.display(), segments = removed.len(), log_start = last.next_offset, "retention deleted segments");
        }
        Ok(removed)
    }

    fn fail_on_error(&self, result: Result<(), LogError>) -> Result<(), LogError> {
        if let Err(e) = &result {
            self.failed.store(true, Ordering::Release);
            tracing::error!(dir = %self.dir.display(), error = %e, "truncation failed midway; log refuses writes until reopened");
        }
        result
    }

    /// Cuts segment `i` at `pos` (offset `offset`) and removes every later
    /// segment; segment `i` becomes the active one.
    fn cut(&self, st: &mut State, i: usize, pos: u64, offset: u64) -> Result<(), LogError> {
        for later in st.segments[i + 1..].iter().rev() {
            segment::remove_files(&self.dir, later.base())?;
        }
        st.segments.truncate(i + 1);
        let interval = self.config.index_interval_bytes;
        let s = &mut st.segments[i];
        let base = s.base();
        s.seg
            .file
            .set_len(pos)
            .and_then(|()| s.seg.file.sync_data())
            .map_err(|e| LogError::io(&s.seg.path, e))?;
        let (from, rel) = s.index.rewind(pos);
        let index = &mut s.index;
        let end = scan(&s.seg, from, pos, base + u64::from(rel), false, |p, h| {
            index.observe(
                p,
                (h.base_offset - base) as u32,
                h.max_timestamp_ms,
                interval,
            )
        })?;
        if let Some(source) = end.corrupt {
            let path = s.seg.path.clone();
            return Err(LogError::Corrupt {
                path,
                position: end.pos,
                source,
            });
        }
        s.bytes = pos;
        s.next_offset = offset;
        s.unsynced = false;
        segment::remove_index_files(&self.dir, base)?;
        sync_dir(&self.dir)?;
        if st.epochs.truncate_from_end(offset) {
            st.epochs.persist(&self.dir)?;
        }
        self.flushed.fetch_min(offset, Ordering::AcqRel);
        tracing::info!(dir = %self.dir.display(), offset, "log truncated");
        Ok(())
    }

    /// Removes every segment and starts an empty one at `offset`.
    fn restart(&self, st: &mut State, offset: u64) -> Result<(), LogError> {
        for s in st.segments.iter().rev() {
            segment::remove_files(&self.dir, s.base())?;
        }
        let seg = segment::create(&self.dir, offset)?;
        st.segments = vec![SegmentState {
            next_offset: offset,
            seg: Arc::new(seg),
            bytes: 0,
            created_ms: now_ms(),
            index: SegmentIndex::default(),
            unsynced: false,
        }];
        sync_dir(&self.dir)?;
        if st.epochs.clear() {
            st.epochs.persist(&self.dir)?;
        }
        self.flushed.store(offset, Ordering::Release);
        tracing::info!(dir = %self.dir.display(), offset, "log restarted empty");
        Ok(())
    }
}

/// Position of the batch starting at `offset` in segment `s`, or
/// `NotBatchBoundary` if `offset` is inside a batch.
fn batch_boundary(s: &SegmentState, offset: u64) -> Result<u64, LogError> {
    let (rel, mut pos) = s.index.floor(s.rel(offset));
    let mut expected = s.base() + u64::from(rel);
    let mut reader = BatchReader::new(&s.seg, s.bytes, 4096);
    loop {
        let h = reader.header_at(pos)?;
        if h.base_offset != expected {
            let found = h.base_offset;
            let source = BatchError::UnexpectedOffset { expected, found };
            let path = s.seg.path.clone();
            return Err(LogError::Corrupt {
                path,
                position: pos,
                source,
            });
        }
        if h.base_offset == offset {
            return Ok(pos);
        }
        if h.next_offset() > offset {
            return Err(LogError::NotBatchBoundary {
                offset,
                batch_base: h.base_offset,
                batch_next: h.next_offset(),
            });
        }
        pos += h.total_len();
        expected = h.next_offset();
    }
}

/// Renames a segment's files to `*.deleted`; returns the new paths.
fn mark_deleted(dir: &Path, base: u64) -> Result<Vec<PathBuf>, LogError> {
    let mut renamed = Vec::new();
    for kind in [FileKind::Log, FileKind::Index, FileKind::TimeIndex] {
        let from = file_path(dir, base, kind);
        let mut to = from.clone().into_os_string();
        to.push(".deleted");
        match fs::rename(&from, &to) {
            Ok(()) => renamed.push(PathBuf::from(to)),
            Err(e) if kind != FileKind::Log && e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(LogError::io(&from, e)),
        }
    }
    Ok(renamed)
}
