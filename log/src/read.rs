//! Reading: entries for consumers, raw batches for followers, and the
//! offset for a timestamp.
//!
//! A read holds the append lock only to find its segment and the extent of
//! whole batches it may read, then does its disk IO with positional reads on
//! the shared handle, so appends never wait for a reader's disk. It never
//! returns bytes past the log end it saw when it started.

use std::sync::{Arc, PoisonError};

use bytes::Bytes;

use crate::batch::{self, BatchError};
use crate::log::State;
use crate::segment::{BatchReader, SegmentFile, READ_WINDOW};
use crate::{Log, LogError, RawBatches, StoredEntry};

/// The part of one segment a read may look at, taken under the lock.
struct View {
    seg: Arc<SegmentFile>,
    /// Position and offset of an indexed batch at or before the target.
    start_pos: u64,
    start_offset: u64,
    /// Bytes of whole batches at the time of the lookup.
    limit: u64,
    next_offset: u64,
}

impl View {
    /// Where to start reading for `offset`, which must be in `[start, end)`.
    fn at(st: &State, offset: u64) -> View {
        let s = &st.segments[st.segment_for(offset)];
        let (rel, pos) = s.index.floor(s.rel(offset));
        View {
            seg: s.seg.clone(),
            start_pos: pos,
            start_offset: s.base() + u64::from(rel),
            limit: s.bytes,
            next_offset: s.next_offset,
        }
    }

    fn corrupt(&self, position: u64, source: BatchError) -> LogError {
        let path = self.seg.path.clone();
        LogError::Corrupt {
            path,
            position,
            source,
        }
    }

    /// Checks that the batch at `pos` has the offset the previous one ended at.
    fn expect(&self, pos: u64, expected: u64, found: u64) -> Result<(), LogError> {
        match found == expected {
            true => Ok(()),
            false => Err(self.corrupt(pos, BatchError::UnexpectedOffset { expected, found })),
        }
    }
}

/// A read window a bit larger than the caller wants, within reason.
fn window_for(max_bytes: usize) -> usize {
    max_bytes
        .saturating_add(16 * 1024)
        .clamp(16 * 1024, 4 * READ_WINDOW)
}

impl Log {
    /// Entries with offset >= `from`, in order: at most `max_entries`, and
    /// entry data adding up to about `max_bytes` (always at least one entry
    /// when any exists). Empty at the log end; `OffsetOutOfRange` below the
    /// log start or past the end.
    pub fn read(
        &self,
        from: u64,
        max_entries: usize,
        max_bytes: usize,
    ) -> Result<Vec<StoredEntry>, LogError> {
        let _no_truncation = self
            .truncation
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        let (end, mut view) = {
            let st = self.lock_state();
            st.check_range(from)?;
            let end = st.log_end();
            (end, (from < end).then(|| View::at(&st, from)))
        };
        let mut out = Vec::new();
        let mut bytes = 0usize;
        while let Some(v) = view.take() {
            let mut reader = BatchReader::new(&v.seg, v.limit, window_for(max_bytes));
            let (mut pos, mut expected) = (v.start_pos, v.start_offset);
            while pos < v.limit && expected < end {
                let (h, data) = reader.batch_at(pos)?;
                v.expect(pos, expected, h.base_offset)?;
                let batch_pos = pos;
                pos += h.total_len();
                expected = h.next_offset();
                if expected <= from {
                    continue;
                }
                let entries = batch::entries(data, h).filter(|e| e.0 >= from && e.0 < end);
                for (offset, timestamp_ms, data) in entries {
                    let full = !out.is_empty() && bytes.saturating_add(data.len()) > max_bytes;
                    if out.len() >= max_entries || full {
                        return Ok(out);
                    }
                    bytes += data.len();
                    let epoch = h.epoch;
                    out.push(StoredEntry {
                        offset,
                        epoch,
                        timestamp_ms,
                        data,
                    });
                }
                if expected > end {
                    return Err(v.corrupt(batch_pos, BatchError::Malformed("batch past log end")));
                }
            }
            if expected < end && out.len() < max_entries {
                // On to the next segment, unless retention removed it.
                let st = self.lock_state();
                if expected >= st.log_start() && expected == v.next_offset {
                    view = Some(View::at(&st, expected));
                }
            }
        }
        Ok(out)
    }

    /// Whole stored batches starting with the one that holds `from`, up to
    /// about `max_bytes` (at least one batch when any exists), from one
    /// segment, for a follower to pass to [`Log::append_raw`]. Every batch is
    /// CRC-checked before it is sent.
    pub fn read_raw(&self, from: u64, max_bytes: usize) -> Result<RawBatches, LogError> {
        let _no_truncation = self
            .truncation
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        let v = {
            let st = self.lock_state();
            st.check_range(from)?;
            if from == st.log_end() {
                let (first_offset, next_offset) = (from, from);
                return Ok(RawBatches {
                    data: Bytes::new(),
                    first_offset,
                    next_offset,
                });
            }
            View::at(&st, from)
        };
        let mut reader = BatchReader::new(&v.seg, v.limit, window_for(max_bytes));
        let (mut pos, mut expected) = (v.start_pos, v.start_offset);
        loop {
            let h = reader.header_at(pos)?;
            v.expect(pos, expected, h.base_offset)?;
            if h.next_offset() > from {
                break;
            }
            pos += h.total_len();
            expected = h.next_offset();
        }
        let (first_pos, first_offset) = (pos, expected);
        while pos < v.limit {
            let h = reader.header_at(pos)?;
            if pos > first_pos && pos + h.total_len() - first_pos > max_bytes as u64 {
                break;
            }
            let (h, _) = reader.batch_at(pos)?;
            v.expect(pos, expected, h.base_offset)?;
            pos += h.total_len();
            expected = h.next_offset();
        }
        Ok(RawBatches {
            data: reader.bytes(first_pos, pos)?,
            first_offset,
            next_offset: expected,
        })
    }

    /// The first offset whose entry has timestamp >= `ts_ms`, or None if no
    /// entry is that recent. Timestamps need not grow with offsets: the time
    /// index records the largest timestamp so far (as Kafka's does), which
    /// bounds where to start, then batches are scanned.
    pub fn offset_for_timestamp(&self, ts_ms: u64) -> Result<Option<u64>, LogError> {
        let _no_truncation = self
            .truncation
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        let mut after = 0;
        loop {
            let v = {
                let st = self.lock_state();
                let candidate = st.segments.iter().find(|s| {
                    s.next_offset > after.max(s.base()) && s.index.max_timestamp() >= ts_ms
                });
                let Some(s) = candidate else {
                    return Ok(None);
                };
                let (rel, pos) = s.index.floor(s.index.time_start(ts_ms));
                View {
                    seg: s.seg.clone(),
                    start_pos: pos,
                    start_offset: s.base() + u64::from(rel),
                    limit: s.bytes,
                    next_offset: s.next_offset,
                }
            };
            let mut reader = BatchReader::new(&v.seg, v.limit, READ_WINDOW);
            let (mut pos, mut expected) = (v.start_pos, v.start_offset);
            while pos < v.limit {
                let h = reader.header_at(pos)?;
                v.expect(pos, expected, h.base_offset)?;
                if h.max_timestamp_ms >= ts_ms && h.next_offset() > after {
                    let (h, data) = reader.batch_at(pos)?;
                    let mut entries = batch::entries(data, h);
                    if let Some(e) = entries.find(|e| e.1 >= ts_ms && e.0 >= after) {
                        return Ok(Some(e.0));
                    }
                }
                pos += h.total_len();
                expected = h.next_offset();
            }
            // Only a segment changed under us gets here; look further on.
            after = v.next_offset.max(after + 1);
        }
    }
}
