//! One partition's local log, led by this broker, as a [`PartitionLog`]:
//! segment files on this broker's disk (`magnetar_log`), written by one
//! group-commit task.
//!
//! Appends take their offsets in call order under one lock and queue; the
//! writer task takes the whole queue per round, writes it as batches and
//! (with [`FlushPolicy::Fsync`]) makes it durable with one fsync. An entry
//! is confirmed when the high watermark passes it: at once with a single
//! replica, after every in-sync follower has fetched it otherwise (see
//! `leader`). Readers see confirmed entries only. Fencing, closing and
//! deleting wait for a round under way, so nothing is confirmed after they
//! return.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use magnetar_log::{AppendEntry, Log, SegmentInfo};
use tokio::sync::{oneshot, watch, Notify};

use super::isr::IsrState;
use super::record::{PartitionRecord, RecordStore};
use super::trim::segments_to_trim;
use super::{registry, FlushPolicy, LocalLogConfig};
use crate::clock::now_ms;
use crate::storage::{
    AppendFuture, Entry, LogStats, PartitionLog, Position, PositionOrder, PositionRun,
    RetentionLimits, SegmentStats, StorageError,
};

/// Bytes returned by one read at most (at least one entry).
const MAX_READ_BYTES: usize = 8 << 20;

type Reply = oneshot::Sender<Result<Position, StorageError>>;

struct WriteState {
    /// Appended but not yet written, in offset order.
    queue: Vec<(Bytes, Reply)>,
    /// Written, waiting for the high watermark: (offset, reply), in order.
    waiting: VecDeque<(u64, Reply)>,
    /// Set once closed, fenced or failed: every later append fails with it.
    terminal: Option<StorageError>,
}

/// How this broker leads a log: who it is, the record it was elected
/// with, and the ISR rules.
pub struct Leadership {
    /// This broker's replica id.
    pub me: String,
    pub record: PartitionRecord,
    pub min_insync: usize,
    /// Kafka's `replica.lag.time.max.ms`.
    pub lag_max: Duration,
    /// The high watermark this broker knew as a follower, if it was one.
    pub known_high_watermark: Option<u64>,
    /// Other brokers may hold replicas (not a standalone broker).
    pub clustered: bool,
}

pub struct LocalLog {
    pub(super) name: String,
    pub(super) log_id: u64,
    pub(super) epoch: u32,
    dir: PathBuf,
    pub(super) log: Arc<Log>,
    config: LocalLogConfig,
    state: Mutex<WriteState>,
    wake: Notify,
    /// Held by the writer for a whole round; fencing takes it to wait
    /// for the round under way.
    writing: tokio::sync::Mutex<()>,
    /// Offsets below this are confirmed (the high watermark).
    confirmed_end: AtomicU64,
    /// Offsets below this are durable here (written, and fsynced under
    /// the fsync policy).
    pub(super) durable_end: AtomicU64,
    changed: watch::Sender<u64>,
    /// Bumped after every write round, for followers' long-polls.
    pub(super) appended: watch::Sender<u64>,
    pub(super) records: Arc<RecordStore>,
    pub(super) record_key: String,
    pub(super) me: String,
    pub(super) isr: Mutex<IsrState>,
    /// `isr.writable()`, read without the lock on every append.
    writable: AtomicBool,
    /// An ISR change is being written to the record.
    pub(super) isr_changing: AtomicBool,
    pub(super) lag_max: Duration,
}

fn backend(e: impl std::fmt::Display) -> StorageError {
    StorageError::Backend(format!("local log: {e}"))
}

impl LocalLog {
    /// Opens the log in `dir` as leader in the record's epoch and starts
    /// its writer (and, with followers, its ISR check). The caller has
    /// fenced any earlier handle on `dir` in this process.
    pub(super) async fn open(
        name: String,
        lead: Leadership,
        dir: PathBuf,
        config: LocalLogConfig,
        (records, record_key): (Arc<RecordStore>, String),
    ) -> Result<Arc<LocalLog>, StorageError> {
        let (log_id, epoch) = (lead.record.log_id, lead.record.leader_epoch);
        let segment_config = config.segment.clone();
        let open_dir = dir.clone();
        let log = tokio::task::spawn_blocking(move || Log::open(&open_dir, segment_config))
            .await
            .map_err(backend)?
            .map_err(backend)?;
        let end = log.log_end_offset();
        let replicated = lead.record.replicas.len() > 1;
        // Alone, everything that survived recovery counts as confirmed: a
        // receipt was only ever sent for entries at least this durable.
        // With followers, only what was committed before; the rest commits
        // once the ISR holds it.
        let high_watermark = match replicated {
            false => end,
            true => lead
                .known_high_watermark
                .unwrap_or(0)
                .clamp(log.log_start_offset(), end),
        };
        let mut isr = IsrState::new(
            lead.me.clone(),
            (lead.record.replicas.clone(), lead.record.isr.clone()),
            lead.min_insync,
            (high_watermark, end),
            Instant::now(),
        );
        isr.set_replicas(
            lead.record.replicas.clone(),
            lead.record.reassignment.clone(),
            Instant::now(),
        );
        let finish_move = isr.reassignment_done();
        tracing::info!(topic = %name, log_id, epoch, end, high_watermark, isr = ?isr.isr(), dir = %dir.display(), "local log open as leader");
        let local = Arc::new(LocalLog {
            name,
            log_id,
            epoch,
            dir,
            log: Arc::new(log),
            config,
            state: Mutex::new(WriteState {
                queue: Vec::new(),
                waiting: VecDeque::new(),
                terminal: None,
            }),
            wake: Notify::new(),
            writing: tokio::sync::Mutex::new(()),
            confirmed_end: AtomicU64::new(high_watermark),
            durable_end: AtomicU64::new(end),
            changed: watch::channel(0).0,
            appended: watch::channel(end).0,
            records,
            record_key,
            me: lead.me,
            writable: AtomicBool::new(isr.writable()),
            isr: Mutex::new(isr),
            isr_changing: AtomicBool::new(false),
            lag_max: lead.lag_max,
        });
        tokio::spawn(local.clone().write_rounds());
        if finish_move {
            // This broker took over a partition moving to it: the replicas
            // that go can go now.
            local.change_isr_in_background(super::leader::IsrChange::FinishReassignment);
        }
        if lead.clustered {
            // Even a log of one replica may get followers (a reassignment).
            tokio::spawn(super::leader::check_isr_periodically(Arc::downgrade(
                &local,
            )));
        }
        Ok(local)
    }

    pub(super) fn isr_state(&self) -> MutexGuard<'_, IsrState> {
        self.isr.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Applies an ISR the record now holds.
    pub(super) fn apply_isr(&self, isr: Vec<String>) {
        self.isr_state().set_isr(isr);
        self.refresh_writable();
    }

    pub(super) fn refresh_writable(&self) {
        let writable = self.isr_state().writable();
        self.writable.store(writable, Ordering::Release);
    }

    /// Applies what others changed in the record of the epoch this log
    /// leads (a reassignment started or cancelled): its replicas, and the
    /// move under way, which finishes here once its new replicas are in
    /// sync.
    pub(super) fn apply_record(self: &Arc<Self>, record: &PartitionRecord) {
        let done = {
            let mut isr = self.isr_state();
            if isr.replicas() == record.replicas.as_slice()
                && record.reassignment.is_none()
                && !isr.reassignment_done()
            {
                return;
            }
            isr.set_replicas(
                record.replicas.clone(),
                record.reassignment.clone(),
                Instant::now(),
            );
            isr.reassignment_done()
        };
        self.refresh_writable();
        self.commit();
        if done {
            self.change_isr_in_background(super::leader::IsrChange::FinishReassignment);
        }
    }

    /// Moves the high watermark as far as the ISR allows and confirms the
    /// entries it passed.
    pub(super) fn commit(&self) {
        let durable = self.durable_end.load(Ordering::Acquire);
        let hw = self.isr_state().advance(durable);
        if hw <= self.confirmed_end() {
            return;
        }
        let confirmed: Vec<(u64, Reply)> = {
            let mut state = self.lock();
            // Under the state lock, so replies go out in offset order.
            self.confirmed_end.fetch_max(hw, Ordering::AcqRel);
            let n = state.waiting.iter().take_while(|(o, _)| *o < hw).count();
            state.waiting.drain(..n).collect()
        };
        self.changed.send_modify(|v| *v += 1);
        for (offset, reply) in confirmed {
            let _ = reply.send(Ok(self.position(offset)));
        }
    }

    pub(super) fn dir(&self) -> &PathBuf {
        &self.dir
    }

    fn lock(&self) -> MutexGuard<'_, WriteState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn position(&self, offset: u64) -> Position {
        Position::new(self.log_id, offset as i64)
    }

    pub(super) fn confirmed_end(&self) -> u64 {
        self.confirmed_end.load(Ordering::Acquire)
    }

    /// The offset reading after `after` starts at (clamped to the log).
    fn offset_after(&self, after: Position) -> Option<u64> {
        let start = self.log.log_start_offset();
        if after.ledger_id < self.log_id {
            return Some(start);
        }
        if after.ledger_id > self.log_id {
            return None;
        }
        let next = u64::try_from(after.entry_id.saturating_add(1)).unwrap_or(0);
        Some(next.max(start))
    }

    /// Writes what is queued, round after round, until the log stops.
    async fn write_rounds(self: Arc<Self>) {
        loop {
            let notified = self.wake.notified();
            let wrote = {
                let _writing = self.writing.lock().await;
                let batch = {
                    let mut state = self.lock();
                    if state.terminal.is_some() {
                        return;
                    }
                    std::mem::take(&mut state.queue)
                };
                let wrote = !batch.is_empty();
                if wrote {
                    self.write_round(batch).await;
                }
                wrote
            };
            if !wrote {
                notified.await;
            }
        }
    }

    /// One group commit: write, make durable, then confirm in order.
    async fn write_round(&self, batch: Vec<(Bytes, Reply)>) {
        let log = self.log.clone();
        let epoch = self.epoch;
        let fsync = self.config.flush == FlushPolicy::Fsync;
        let (max_entries, max_bytes) = (self.config.max_batch_entries, self.config.max_batch_bytes);
        let segment_entries = self.config.segment.segment_entries;
        let timestamp_ms = now_ms();
        let entries: Vec<AppendEntry> = batch
            .iter()
            .map(|(data, _)| AppendEntry {
                timestamp_ms,
                data: data.clone(),
            })
            .collect();
        let written = tokio::task::spawn_blocking(move || {
            let mut first = None;
            for chunk in chunks(&entries, max_entries, max_bytes) {
                let mut rest = chunk;
                while !rest.is_empty() {
                    // Batches end at segment boundaries, so a segment holds
                    // exactly `segment_entries` entries.
                    let room = segment_entries.map_or(rest.len(), |n| {
                        let end = log.log_end_offset();
                        let base = log.segments().last().map_or(end, |s| s.base_offset);
                        let used = end - base;
                        let room = if used >= n { n } else { n - used };
                        (room as usize).clamp(1, rest.len())
                    });
                    let (batch, tail) = rest.split_at(room);
                    let base = log.append(epoch, batch)?;
                    first.get_or_insert(base);
                    rest = tail;
                }
            }
            if fsync {
                log.flush()?;
            }
            Ok::<_, magnetar_log::LogError>(first)
        })
        .await;
        let first = match written {
            Ok(Ok(first)) => first,
            Ok(Err(e)) => return self.fail(batch, backend(e)),
            Err(e) => return self.fail(batch, backend(e)),
        };
        let Some(first) = first else { return };
        let end = first + batch.len() as u64;
        {
            let mut state = self.lock();
            state
                .waiting
                .extend((first..).zip(batch.into_iter().map(|(_, reply)| reply)));
        }
        self.durable_end.store(end, Ordering::Release);
        self.appended.send_replace(end);
        self.commit();
    }

    /// A write failed: the log stops taking writes (like a Kafka log
    /// directory gone offline) and nothing in flight is confirmed.
    fn fail(&self, batch: Vec<(Bytes, Reply)>, error: StorageError) {
        tracing::error!(topic = %self.name, %error, "local log write failed; the log stops");
        let (queued, waiting) = {
            let mut state = self.lock();
            state.terminal = Some(error.clone());
            (
                std::mem::take(&mut state.queue),
                std::mem::take(&mut state.waiting),
            )
        };
        let replies = batch.into_iter().chain(queued).map(|(_, reply)| reply);
        for reply in replies.chain(waiting.into_iter().map(|(_, reply)| reply)) {
            let _ = reply.send(Err(error.clone()));
        }
        self.changed.send_modify(|v| *v += 1);
        self.appended.send_modify(|_| {});
    }

    /// Stops the log with `error`: waits for the round under way (which may
    /// still confirm what it wrote), then fails everything queued. Returns
    /// false if it had stopped already.
    pub(super) async fn stop(&self, error: StorageError) -> bool {
        {
            let mut state = self.lock();
            if state.terminal.is_some() {
                return false;
            }
            state.terminal = Some(error.clone());
        }
        self.wake.notify_one();
        let _writing = self.writing.lock().await;
        let (queued, waiting) = {
            let mut state = self.lock();
            (
                std::mem::take(&mut state.queue),
                std::mem::take(&mut state.waiting),
            )
        };
        // Written but not committed: their fate is unknown to the sender.
        let replies = queued.into_iter().map(|(_, reply)| reply);
        for reply in replies.chain(waiting.into_iter().map(|(_, reply)| reply)) {
            let _ = reply.send(Err(error.clone()));
        }
        self.changed.send_modify(|v| *v += 1);
        self.appended.send_modify(|_| {});
        true
    }

    /// Whether the log stopped (closed, fenced or failed).
    pub(super) fn stopped(&self) -> Option<StorageError> {
        self.lock().terminal.clone()
    }

    fn segments(&self) -> Vec<SegmentInfo> {
        self.log.segments()
    }

    /// Bytes of the entries below `offset` (estimated inside a segment).
    pub(super) fn bytes_below(&self, offset: u64) -> u64 {
        self.segments()
            .iter()
            .filter(|s| s.base_offset < offset)
            .map(|s| {
                let entries = s.next_offset - s.base_offset;
                let held = offset.min(s.next_offset) - s.base_offset;
                share(s.bytes, held, entries)
            })
            .sum()
    }

    /// How far each follower has copied this log, for the admin API.
    pub(super) fn replica_progress(&self) -> super::reassign::ReplicaProgress {
        super::reassign::ReplicaProgress {
            me: self.me.clone(),
            log_start: self.log.log_start_offset(),
            log_end: self.log.log_end_offset(),
            size_bytes: self.log.size_bytes(),
            follower_ends: self.isr_state().follower_ends(),
        }
    }
}

/// Splits a round into stored batches of at most `max_entries` entries and
/// about `max_bytes` bytes (at least one entry each).
fn chunks(
    entries: &[AppendEntry],
    max_entries: usize,
    max_bytes: usize,
) -> impl Iterator<Item = &[AppendEntry]> {
    let mut rest = entries;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let mut n = 0;
        let mut bytes = 0;
        while n < rest.len()
            && n < max_entries.max(1)
            && (n == 0 || bytes + rest[n].data.len() <= max_bytes)
        {
            bytes += rest[n].data.len();
            n += 1;
        }
        let (chunk, tail) = rest.split_at(n);
        rest = tail;
        Some(chunk)
    })
}

/// `part` of `whole` entries' share of `bytes`.
fn share(bytes: u64, part: u64, whole: u64) -> u64 {
    if whole == 0 {
        return 0;
    }
    (u128::from(bytes) * u128::from(part.min(whole)) / u128::from(whole)) as u64
}

impl PositionOrder for LocalLog {
    fn next_position(&self, after: Position) -> Option<Position> {
        let next = self.offset_after(after)?;
        (next < self.confirmed_end()).then(|| self.position(next))
    }

    fn previous_position(&self, position: Position) -> Position {
        if position.ledger_id < self.log_id {
            return self.first_position();
        }
        if position.ledger_id > self.log_id {
            return self.last_confirmed();
        }
        Position::new(self.log_id, position.entry_id.max(0) - 1)
    }
}

#[async_trait]
impl PartitionLog for LocalLog {
    fn name(&self) -> &str {
        &self.name
    }

    fn accepts_writes(&self) -> Result<(), StorageError> {
        if self.writable.load(Ordering::Acquire) {
            return Ok(());
        }
        let isr = self.isr_state();
        Err(StorageError::NotEnoughReplicas {
            in_sync: isr.isr().len(),
            required: isr.min_insync(),
        })
    }

    fn append(self: Arc<Self>, entry: Bytes) -> AppendFuture {
        let (tx, rx) = oneshot::channel();
        {
            let mut state = self.lock();
            if let Some(error) = state.terminal.clone() {
                return Box::pin(async move { Err(error) });
            }
            if let Err(error) = self.accepts_writes() {
                return Box::pin(async move { Err(error) });
            }
            state.queue.push((entry, tx));
        }
        self.wake.notify_one();
        Box::pin(async move { rx.await.unwrap_or(Err(StorageError::Closed)) })
    }

    async fn read_entries(
        &self,
        after: Position,
        max_entries: usize,
    ) -> Result<Vec<Entry>, StorageError> {
        let Some(from) = self.offset_after(after) else {
            return Ok(Vec::new());
        };
        let end = self.confirmed_end();
        if from >= end || max_entries == 0 {
            return Ok(Vec::new());
        }
        let want = max_entries.min((end - from) as usize);
        let log = self.log.clone();
        let read = tokio::task::spawn_blocking(move || log.read(from, want, MAX_READ_BYTES))
            .await
            .map_err(backend)?;
        let stored = match read {
            Ok(stored) => stored,
            // Trimmed meanwhile: the reader moves on to what is left.
            Err(magnetar_log::LogError::OffsetOutOfRange { .. }) => return Ok(Vec::new()),
            Err(e) => return Err(backend(e)),
        };
        Ok(stored
            .into_iter()
            .take_while(|e| e.offset < end)
            .map(|e| Entry {
                position: self.position(e.offset),
                data: e.data,
            })
            .collect())
    }

    fn last_confirmed(&self) -> Position {
        Position::new(self.log_id, self.confirmed_end() as i64 - 1)
    }

    async fn confirm_inherited(&self, limit: Duration) -> bool {
        let mut changes = self.changed.subscribe();
        let held = self.log.log_end_offset();
        // Not while too few replicas are in sync: nothing gets confirmed
        // then, and every cursor of a topic would wait out the limit.
        let confirmed = async {
            while self.confirmed_end() < held
                && self.stopped().is_none()
                && self.accepts_writes().is_ok()
            {
                tokio::select! {
                    changed = changes.changed() => if changed.is_err() { break },
                    _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                }
            }
        };
        let _ = tokio::time::timeout(limit, confirmed).await;
        self.confirmed_end() >= held
    }

    fn first_position(&self) -> Position {
        Position::new(self.log_id, self.log.log_start_offset() as i64 - 1)
    }

    fn entries_after(&self, after: Position) -> u64 {
        match self.offset_after(after) {
            Some(next) => self.confirmed_end().saturating_sub(next),
            None => 0,
        }
    }

    fn bytes_after(&self, after: Position) -> u64 {
        let Some(next) = self.offset_after(after) else {
            return 0;
        };
        self.segments()
            .iter()
            .filter(|s| s.next_offset > next)
            .map(|s| {
                let entries = s.next_offset - s.base_offset;
                let left = s.next_offset - next.max(s.base_offset);
                share(s.bytes, left, entries)
            })
            .sum()
    }

    fn mark_delete_leaving(&self, max_bytes: u64) -> Position {
        let mut kept = 0u64;
        for s in self.segments().iter().rev() {
            if kept + s.bytes <= max_bytes {
                kept += s.bytes;
                continue;
            }
            let entries = s.next_offset - s.base_offset;
            let average = s.bytes.div_ceil(entries.max(1)).max(1);
            let fit = ((max_bytes - kept) / average).min(entries);
            let target = Position::new(self.log_id, (s.next_offset - fit) as i64 - 1);
            return target.min(self.last_confirmed());
        }
        self.first_position()
    }

    fn subscribe_changes(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    fn position_runs(&self) -> Vec<PositionRun> {
        let start = self.log.log_start_offset();
        vec![PositionRun {
            first: self.position(start),
            count: self.confirmed_end().saturating_sub(start),
        }]
    }

    async fn trim_consumed(
        &self,
        slowest: Position,
        limits: &RetentionLimits,
    ) -> Result<usize, StorageError> {
        let consumed_end = if slowest.ledger_id > self.log_id {
            self.confirmed_end()
        } else if slowest.ledger_id < self.log_id {
            0
        } else {
            u64::try_from(slowest.entry_id.saturating_add(1))
                .unwrap_or(0)
                .min(self.confirmed_end())
        };
        let segments = self.segments();
        let doomed = segments_to_trim(&segments, consumed_end, limits, now_ms());
        let Some(last) = doomed.last() else {
            return Ok(0);
        };
        let Some(before) = segments
            .iter()
            .find(|s| s.base_offset == *last)
            .map(|s| s.next_offset)
        else {
            return Ok(0);
        };
        let log = self.log.clone();
        let deleted = tokio::task::spawn_blocking(move || log.delete_segments_before(before))
            .await
            .map_err(backend)?
            .map_err(backend)?;
        tracing::info!(topic = %self.name, segments = deleted.len(), start = before, "deleted consumed segments");
        Ok(deleted.len())
    }

    fn stats(&self) -> LogStats {
        let end = self.confirmed_end();
        let segments = self.segments();
        let last = segments.len().saturating_sub(1);
        let segments: Vec<SegmentStats> = segments
            .iter()
            .enumerate()
            .map(|(i, s)| SegmentStats {
                id: self.log_id,
                first_entry: s.base_offset as i64,
                entries: s.next_offset.min(end).saturating_sub(s.base_offset),
                size: s.bytes,
                closed: i < last,
            })
            .collect();
        LogStats {
            entries: segments.iter().map(|s| s.entries).sum(),
            size: segments.iter().map(|s| s.size).sum(),
            current: segments.last().cloned(),
            segments,
            last_confirmed: self.last_confirmed(),
        }
    }

    async fn close(&self) -> Result<(), StorageError> {
        if self.stop(StorageError::Closed).await {
            let log = self.log.clone();
            tokio::task::spawn_blocking(move || log.flush())
                .await
                .map_err(backend)?
                .map_err(backend)?;
            registry::forget(&self.dir, self);
            tracing::info!(topic = %self.name, "local log closed");
        }
        Ok(())
    }

    async fn delete(&self) -> Result<(), StorageError> {
        self.stop(StorageError::Closed).await;
        // Only the current leader deletes: a deposed one's files go, the
        // record (and so the partition) stays with its successor.
        self.records
            .delete_led(&self.record_key, (self.log_id, self.epoch))
            .await?;
        registry::forget(&self.dir, self);
        remove_dir(&self.dir).await?;
        tracing::info!(topic = %self.name, "local log deleted");
        Ok(())
    }
}

/// Removes a log directory; one already gone counts as removed.
pub(super) async fn remove_dir(dir: &std::path::Path) -> Result<(), StorageError> {
    let dir = dir.to_path_buf();
    tokio::task::spawn_blocking(move || match std::fs::remove_dir_all(&dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(backend(format!("removing {}: {e}", dir.display()))),
    })
    .await
    .map_err(backend)?
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(sizes: &[usize]) -> Vec<AppendEntry> {
        sizes
            .iter()
            .map(|n| AppendEntry {
                timestamp_ms: 0,
                data: Bytes::from(vec![0u8; *n]),
            })
            .collect()
    }

    #[test]
    fn rounds_split_into_batches_by_count_and_size() {
        let all = entries(&[10, 10, 10, 10, 10]);
        let by_count: Vec<usize> = chunks(&all, 2, 1 << 20).map(|c| c.len()).collect();
        assert_eq!(by_count, vec![2, 2, 1]);
        let by_size: Vec<usize> = chunks(&all, 100, 25).map(|c| c.len()).collect();
        assert_eq!(by_size, vec![2, 2, 1]);
        // An entry larger than the limit still goes, alone.
        let big = entries(&[100, 1]);
        let lens: Vec<usize> = chunks(&big, 100, 10).map(|c| c.len()).collect();
        assert_eq!(lens, vec![1, 1]);
    }
}
