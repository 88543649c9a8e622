//! [`Log`]: the state of one partition's segments, the append path (local and
//! replicated), segment rolling and flush.
//!
//! Locks, always taken in this order:
//! 1. `truncation` (RwLock): readers and flush share it; `truncate_to` takes
//!    it exclusively so nobody reads bytes while they are cut and rewritten.
//! 2. `flush_lock`: one flush at a time, so a flush never reports an offset
//!    another flush is still syncing.
//! 3. `state` (Mutex): the append lock. Held for writes into the page cache
//!    and for quick lookups, never across an fsync of segment data nor
//!    across a read's disk IO. (An epoch change persists the small
//!    checkpoint under it: rare, and it must precede the batch's bytes.)

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};

use std::os::unix::fs::FileExt;

use crate::batch::{self, BatchHeader, PendingBatch};
use crate::epoch::{sync_dir, EpochCache};
use crate::index::SegmentIndex;
use crate::segment::{self, now_ms, SegmentFile};
use crate::{recovery, AppendEntry, LogConfig, LogError, SegmentInfo};

/// One segment as the log tracks it. Only `bytes` of the file are part of
/// the log: readers never look further.
#[derive(Debug)]
pub(crate) struct SegmentState {
    pub seg: Arc<SegmentFile>,
    pub bytes: u64,
    pub next_offset: u64,
    pub created_ms: u64,
    pub index: SegmentIndex,
    /// Bytes written since the last fsync of this file.
    pub unsynced: bool,
}

impl SegmentState {
    pub fn base(&self) -> u64 {
        self.seg.base
    }

    /// `offset` relative to the base; callers keep segments under 2^32
    /// offsets (a roll happens before).
    pub fn rel(&self, offset: u64) -> u32 {
        (offset - self.base()) as u32
    }

    pub fn info(&self) -> SegmentInfo {
        SegmentInfo {
            base_offset: self.base(),
            next_offset: self.next_offset,
            bytes: self.bytes,
            created_ms: self.created_ms,
            max_timestamp_ms: self.index.max_timestamp(),
        }
    }
}

/// Everything the append lock protects.
#[derive(Debug)]
pub(crate) struct State {
    /// Ordered by base offset, contiguous, never empty; the last is active.
    pub segments: Vec<SegmentState>,
    pub epochs: EpochCache,
    /// A file was created, renamed or removed since the last flush.
    pub dir_unsynced: bool,
    /// Index files written since the last flush.
    pub index_unsynced: Vec<PathBuf>,
}

impl State {
    pub fn active(&self) -> &SegmentState {
        &self.segments[self.segments.len() - 1]
    }

    fn active_mut(&mut self) -> &mut SegmentState {
        let last = self.segments.len() - 1;
        &mut self.segments[last]
    }

    pub fn log_start(&self) -> u64 {
        self.segments[0].base()
    }

    pub fn log_end(&self) -> u64 {
        self.active().next_offset
    }

    /// The segment holding `offset`, which must be in `[log_start, log_end]`.
    pub fn segment_for(&self, offset: u64) -> usize {
        self.segments
            .partition_point(|s| s.base() <= offset)
            .saturating_sub(1)
    }

    /// Refuses offsets outside `[log_start, log_end]`.
    pub fn check_range(&self, offset: u64) -> Result<(), LogError> {
        let (start, end) = (self.log_start(), self.log_end());
        if offset < start || offset > end {
            return Err(LogError::OffsetOutOfRange { offset, start, end });
        }
        Ok(())
    }
}

/// The log of one partition. `Send + Sync`; every method takes `&self` and
/// locks internally, so one writer, a flusher and many readers can share it.
#[derive(Debug)]
pub struct Log {
    pub(crate) dir: PathBuf,
    pub(crate) config: LogConfig,
    pub(crate) truncation: RwLock<()>,
    flush_lock: Mutex<()>,
    state: Mutex<State>,
    pub(crate) flushed: AtomicU64,
    pub(crate) failed: AtomicBool,
}

impl Log {
    /// Opens (creating if missing) the log in `dir` and recovers it: the
    /// active segment is cut at its first torn or corrupt batch, index files
    /// that disagree with their segment are rebuilt, and the epoch cache is
    /// made to match the surviving batches. Nothing is assumed durable until
    /// the first [`Log::flush`].
    pub fn open(dir: &Path, config: LogConfig) -> Result<Log, LogError> {
        config.validate()?;
        let mut state = recovery::recover(dir, &config)?;
        for s in &mut state.segments {
            s.unsynced = true;
        }
        let start = state.log_start();
        Ok(Log {
            dir: dir.to_path_buf(),
            config,
            truncation: RwLock::new(()),
            flush_lock: Mutex::new(()),
            state: Mutex::new(state),
            flushed: AtomicU64::new(start),
            failed: AtomicBool::new(false),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn config(&self) -> &LogConfig {
        &self.config
    }

    /// The append lock. A panic while holding it cannot leave a half-applied
    /// change (state is updated after IO succeeds), so poisoning is ignored.
    pub(crate) fn lock_state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn check_not_failed(&self) -> Result<(), LogError> {
        match self.failed.load(Ordering::Acquire) {
            true => Err(LogError::Failed),
            false => Ok(()),
        }
    }

    /// Appends `entries` as one batch written in leader epoch `epoch` (one
    /// write syscall) and returns the offset of the first. `epoch` must not be
    /// older than the log's latest; a newer one is recorded (durably) in the
    /// epoch cache first. Rolls to a new segment when the active one is full
    /// or old. Does not fsync: see [`Log::flush`].
    pub fn append(&self, epoch: u32, entries: &[AppendEntry]) -> Result<u64, LogError> {
        self.check_not_failed()?;
        let mut pending = PendingBatch::encode(entries)?;
        let mut st = self.lock_state();
        check_epoch(&st, epoch)?;
        let base = st.log_end();
        let (header, bytes) = pending.seal(base, epoch);
        self.write_batches(&mut st, bytes, &[(0, header)])?;
        Ok(base)
    }

    /// Follower side of replication: appends batches exactly as another
    /// log's [`Log::read_raw`] returned them. All of `batches` is checked
    /// first (CRC and structure, base offsets continuing this log's end,
    /// epochs never going down); on any error nothing is appended. Returns
    /// the new log end.
    pub fn append_raw(&self, batches: &[u8]) -> Result<u64, LogError> {
        self.check_not_failed()?;
        let mut headers = Vec::new();
        let mut pos = 0;
        while pos < batches.len() {
            let header =
                batch::check(&batches[pos..]).map_err(|source| LogError::InvalidBatch {
                    position: pos as u64,
                    source,
                })?;
            headers.push((pos, header));
            pos += header.total_len() as usize;
        }
        let mut st = self.lock_state();
        let mut expected = st.log_end();
        let mut latest = st.epochs.latest().map(|(e, _)| e);
        for (_, h) in &headers {
            if h.base_offset != expected {
                let found = h.base_offset;
                return Err(LogError::OffsetMismatch { expected, found });
            }
            if let Some(latest) = latest.filter(|&l| h.epoch < l) {
                return Err(LogError::EpochRegression {
                    epoch: h.epoch,
                    latest,
                });
            }
            latest = Some(h.epoch);
            expected = h.next_offset();
        }
        if !headers.is_empty() {
            self.write_batches(&mut st, batches, &headers)?;
        }
        Ok(st.log_end())
    }

    /// Writes checked batches (`(position in buf, header)`, contiguous from
    /// the log end) into the active segment, rolling between batches as
    /// needed; one write per segment touched.
    fn write_batches(
        &self,
        st: &mut State,
        buf: &[u8],
        batches: &[(usize, BatchHeader)],
    ) -> Result<(), LogError> {
        let log_end = st.log_end();
        let mut epochs_changed = false;
        for (_, h) in batches {
            epochs_changed |= st.epochs.assign(h.epoch, h.base_offset);
        }
        if epochs_changed {
            if let Err(e) = st.epochs.persist(&self.dir) {
                st.epochs.truncate_from_end(log_end);
                return Err(e);
            }
        }
        let written = self.write_runs(st, buf, batches);
        if written.is_err() && epochs_changed && st.epochs.truncate_from_end(st.log_end()) {
            // Best effort: a stale checkpoint only over-claims offsets past
            // the log end, which recovery drops.
            if let Err(e) = st.epochs.persist(&self.dir) {
                tracing::warn!(dir = %self.dir.display(), error = %e, "epoch checkpoint not reverted");
            }
        }
        written
    }

    fn write_runs(
        &self,
        st: &mut State,
        buf: &[u8],
        batches: &[(usize, BatchHeader)],
    ) -> Result<(), LogError> {
        let now = now_ms();
        let mut run = 0..0;
        for (i, (pos, h)) in batches.iter().enumerate() {
            let run_bytes = (pos - batches[run.start].0) as u64;
            if self.should_roll(st.active(), run_bytes, h, now) {
                self.write_run(st, buf, &batches[run.clone()])?;
                self.roll(st, h.base_offset, now)?;
                run = i..i;
            }
            run.end = i + 1;
        }
        self.write_run(st, buf, &batches[run])?;
        // A segment full by entry count rolls at once, as a ledger does, so
        // it is closed (and can be retained or deleted) without waiting for
        // the next append.
        let active = st.active();
        let full = self
            .config
            .segment_entries
            .is_some_and(|n| active.next_offset - active.base() >= n);
        if full {
            let next = active.next_offset;
            self.roll(st, next, now)?;
        }
        Ok(())
    }

    fn should_roll(
        &self,
        active: &SegmentState,
        run_bytes: u64,
        h: &BatchHeader,
        now: u64,
    ) -> bool {
        let bytes = active.bytes + run_bytes;
        if bytes == 0 {
            return false;
        }
        bytes + h.total_len() > self.config.segment_bytes
            || now.saturating_sub(active.created_ms) >= self.config.segment_age.as_millis() as u64
            || h.next_offset() - active.base() > u64::from(u32::MAX)
            || self
                .config
                .segment_entries
                .is_some_and(|n| h.next_offset() - active.base() > n)
    }

    /// Writes consecutive batches to the active segment with one write.
    fn write_run(
        &self,
        st: &mut State,
        buf: &[u8],
        run: &[(usize, BatchHeader)],
    ) -> Result<(), LogError> {
        let (Some(first), Some(last)) = (run.first(), run.last()) else {
            return Ok(());
        };
        let bytes = &buf[first.0..last.0 + last.1.total_len() as usize];
        let interval = self.config.index_interval_bytes;
        let active = st.active_mut();
        let start = active.bytes;
        if let Err(e) = active.seg.file.write_all_at(bytes, start) {
            // Cut any partial write so the file holds whole batches only.
            if active.seg.file.set_len(start).is_err() {
                self.failed.store(true, Ordering::Release);
            }
            return Err(LogError::io(&active.seg.path, e));
        }
        if start == 0 {
            // A segment's age counts from its first batch.
            active.created_ms = now_ms();
        }
        for (pos, h) in run {
            let rel = active.rel(h.base_offset);
            let at = start + (pos - first.0) as u64;
            active.index.observe(at, rel, h.max_timestamp_ms, interval);
        }
        active.bytes += bytes.len() as u64;
        active.next_offset = last.1.next_offset();
        active.unsynced = true;
        Ok(())
    }

    /// Seals the active segment (index files written, synced at the next
    /// flush) and starts a new one at `base`.
    fn roll(&self, st: &mut State, base: u64, now: u64) -> Result<(), LogError> {
        let active = st.active();
        let mut sealed = active.index.clone();
        sealed.seal(active.rel(active.next_offset));
        let paths = segment::write_index_files(&self.dir, active.base(), &sealed)?;
        let seg = segment::create(&self.dir, base)?;
        st.active_mut().index = sealed;
        st.index_unsynced.extend(paths);
        st.dir_unsynced = true;
        st.segments.push(SegmentState {
            seg: Arc::new(seg),
            bytes: 0,
            next_offset: base,
            created_ms: now,
            index: SegmentIndex::default(),
            unsynced: true,
        });
        tracing::debug!(dir = %self.dir.display(), base, "rolled to a new segment");
        Ok(())
    }

    /// Makes everything appended so far durable: fsyncs each segment with
    /// unsynced bytes, new index files and the directory after creations or
    /// deletions. Appends go on meanwhile (the append lock is not held while
    /// syncing). Returns the flushed end offset, which only grows except
    /// through [`Log::truncate_to`]. After an fsync error the log is failed.
    pub fn flush(&self) -> Result<u64, LogError> {
        let _no_truncation = self
            .truncation
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        let _one_flush = self
            .flush_lock
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        self.check_not_failed()?;
        let (files, index_files, dir, end) = {
            let mut st = self.lock_state();
            let files: Vec<Arc<SegmentFile>> = st
                .segments
                .iter_mut()
                .filter(|s| s.unsynced)
                .map(|s| {
                    s.unsynced = false;
                    s.seg.clone()
                })
                .collect();
            let index_files = std::mem::take(&mut st.index_unsynced);
            let dir = std::mem::take(&mut st.dir_unsynced);
            (files, index_files, dir, st.log_end())
        };
        let synced = sync_all(&files, &index_files).and_then(|()| match dir {
            true => sync_dir(&self.dir),
            false => Ok(()),
        });
        if let Err(e) = synced {
            self.failed.store(true, Ordering::Release);
            tracing::error!(dir = %self.dir.display(), error = %e, "fsync failed; log refuses writes until reopened");
            return Err(e);
        }
        Ok(self.flushed.fetch_max(end, Ordering::AcqRel).max(end))
    }

    /// First offset still stored.
    pub fn log_start_offset(&self) -> u64 {
        self.lock_state().log_start()
    }

    /// Offset the next appended entry gets.
    pub fn log_end_offset(&self) -> u64 {
        self.lock_state().log_end()
    }

    /// End of what the last successful [`Log::flush`] made durable (the log
    /// start right after open).
    pub fn flushed_offset(&self) -> u64 {
        self.flushed.load(Ordering::Acquire)
    }

    /// The epoch cache as (epoch, start offset) pairs, oldest first.
    pub fn epochs(&self) -> Vec<(u32, u64)> {
        self.lock_state().epochs.entries().to_vec()
    }

    /// KIP-101/279 OffsetForLeaderEpoch: the largest epoch <= `epoch` this
    /// log knows and the offset where it ended (the next epoch's start, or
    /// the log end for the latest). None when no known epoch is <= `epoch`.
    pub fn end_offset_for_epoch(&self, epoch: u32) -> Option<(u32, u64)> {
        let st = self.lock_state();
        st.epochs.end_offset_for(epoch, st.log_end())
    }

    /// Epoch of the newest batch, None for a log without batches.
    pub fn latest_epoch(&self) -> Option<u32> {
        self.lock_state().epochs.latest().map(|(e, _)| e)
    }

    /// All segments, oldest first; the last is active.
    pub fn segments(&self) -> Vec<SegmentInfo> {
        self.lock_state()
            .segments
            .iter()
            .map(SegmentState::info)
            .collect()
    }

    /// Bytes of all segment files.
    pub fn size_bytes(&self) -> u64 {
        self.lock_state().segments.iter().map(|s| s.bytes).sum()
    }

    /// Removes the log's directory (a replica moved away or a deleted
    /// partition).
    pub fn delete(self) -> Result<(), LogError> {
        let dir = self.dir.clone();
        drop(self);
        std::fs::remove_dir_all(&dir).map_err(|e| LogError::io(&dir, e))
    }
}

fn check_epoch(st: &State, epoch: u32) -> Result<(), LogError> {
    match st.epochs.latest() {
        Some((latest, _)) if epoch < latest => Err(LogError::EpochRegression { epoch, latest }),
        _ => Ok(()),
    }
}

fn sync_all(files: &[Arc<SegmentFile>], index_files: &[PathBuf]) -> Result<(), LogError> {
    for f in files {
        f.file.sync_data().map_err(|e| LogError::io(&f.path, e))?;
    }
    for path in index_files {
        match std::fs::File::open(path) {
            // Retention or truncation removed it meanwhile.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(LogError::io(path, e)),
            Ok(f) => f.sync_all().map_err(|e| LogError::io(path, e))?,
        }
    }
    Ok(())
}
