//! The in-memory offset and time indexes of one segment, the rule that builds
//! them from the batches appended (or scanned), and their file encoding.
//!
//! The index is only a hint for where to start scanning: every lookup answer
//! is at or before the batch sought, so a missing entry costs a longer scan,
//! never a wrong result. This module does no IO.

use bytes::Buf;

const OFFSET_ENTRY_LEN: usize = 8;
const TIME_ENTRY_LEN: usize = 12;

/// Indexes of one segment. Relative offsets are from the segment's base.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct SegmentIndex {
    /// (relative offset of a batch's first entry, file position of the batch).
    offsets: Vec<(u32, u32)>,
    /// (largest timestamp of every batch before this one, relative offset of
    /// this batch); values grow strictly. A sealed segment ends with
    /// (largest timestamp of the segment, relative end offset).
    times: Vec<(u64, u32)>,
    /// Largest timestamp of all batches observed.
    max_ts: u64,
    /// Position of the last offset entry (0 without entries).
    last_entry_pos: u64,
}

impl SegmentIndex {
    /// Records the batch at `pos` (relative offset `rel`), indexing it when
    /// `interval` bytes have passed since the last indexed batch.
    pub fn observe(&mut self, pos: u64, rel: u32, batch_max_ts: u64, interval: u64) {
        if pos.saturating_sub(self.last_entry_pos) >= interval {
            if let Ok(pos32) = u32::try_from(pos) {
                self.offsets.push((rel, pos32));
                self.last_entry_pos = pos;
                if self.max_ts > self.times.last().map_or(0, |t| t.0) {
                    self.times.push((self.max_ts, rel));
                }
            }
        }
        self.max_ts = self.max_ts.max(batch_max_ts);
    }

    /// Largest timestamp of the batches observed, 0 for none.
    pub fn max_timestamp(&self) -> u64 {
        self.max_ts
    }

    /// Relative offset and position of the last indexed batch at or before
    /// `rel`, or the segment start.
    pub fn floor(&self, rel: u32) -> (u32, u64) {
        let i = self.offsets.partition_point(|e| e.0 <= rel);
        match i {
            0 => (0, 0),
            _ => (self.offsets[i - 1].0, u64::from(self.offsets[i - 1].1)),
        }
    }

    /// Relative offset of the batch to start scanning at for the first entry
    /// with timestamp >= `ts`: every batch before it holds only older entries.
    pub fn time_start(&self, ts: u64) -> u32 {
        let i = self.times.partition_point(|t| t.0 < ts);
        match i {
            0 => 0,
            _ => self.times[i - 1].1,
        }
    }

    /// Marks the end of a segment that will take no more batches.
    pub fn seal(&mut self, end_rel: u32) {
        if self.times.last().map(|t| t.1) != Some(end_rel) {
            self.times.push((self.max_ts, end_rel));
        }
    }

    /// Forgets every batch at or after `limit_pos` and everything derived
    /// from batches after the last kept offset entry. Returns (position,
    /// relative offset) of that entry: the caller observes batches again from
    /// there (that batch included) to rebuild the rest exactly.
    pub fn rewind(&mut self, limit_pos: u64) -> (u64, u32) {
        let kept = self.offsets.partition_point(|e| u64::from(e.1) < limit_pos);
        self.offsets.truncate(kept);
        let (rel, pos) = self
            .offsets
            .last()
            .map_or((0, 0), |e| (e.0, u64::from(e.1)));
        let kept_times = self.times.partition_point(|t| t.1 <= rel);
        self.times.truncate(kept_times);
        self.max_ts = self.times.last().map_or(0, |t| t.0);
        self.last_entry_pos = pos;
        (pos, rel)
    }

    /// Number of offset entries (to notice a rebuild that added some).
    pub fn offset_entries(&self) -> usize {
        self.offsets.len()
    }

    pub fn encode_offsets(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.offsets.len() * OFFSET_ENTRY_LEN);
        for (rel, pos) in &self.offsets {
            out.extend_from_slice(&rel.to_be_bytes());
            out.extend_from_slice(&pos.to_be_bytes());
        }
        out
    }

    pub fn encode_times(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.times.len() * TIME_ENTRY_LEN);
        for (ts, rel) in &self.times {
            out.extend_from_slice(&ts.to_be_bytes());
            out.extend_from_slice(&rel.to_be_bytes());
        }
        out
    }

    /// Parses the index files of a sealed segment of `file_len` bytes ending
    /// at relative offset `end_rel`. None unless they are internally
    /// consistent and end with the seal entry (a torn file loses it).
    pub fn decode_sealed(
        mut offsets: &[u8],
        mut times: &[u8],
        file_len: u64,
        end_rel: u32,
    ) -> Option<SegmentIndex> {
        if !offsets.len().is_multiple_of(OFFSET_ENTRY_LEN)
            || !times.len().is_multiple_of(TIME_ENTRY_LEN)
        {
            return None;
        }
        let mut idx = SegmentIndex::default();
        let mut prev = (0u32, 0u32);
        while offsets.has_remaining() {
            let e = (offsets.get_u32(), offsets.get_u32());
            if e.0 <= prev.0 || e.1 <= prev.1 || u64::from(e.1) >= file_len || e.0 >= end_rel {
                return None;
            }
            idx.offsets.push(e);
            prev = e;
        }
        let mut prev = (0u64, 0u32);
        while times.has_remaining() {
            let e = (times.get_u64(), times.get_u32());
            let is_seal = !times.has_remaining();
            if is_seal {
                if e.1 != end_rel || e.0 < prev.0 {
                    return None;
                }
            } else if e.0 <= prev.0
                || e.1 <= prev.1
                || idx.offsets.binary_search_by_key(&e.1, |o| o.0).is_err()
            {
                return None;
            }
            idx.times.push(e);
            prev = e;
        }
        let seal = idx.times.last()?;
        idx.max_ts = seal.0;
        idx.last_entry_pos = idx.offsets.last().map_or(0, |e| u64::from(e.1));
        Some(idx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Batches of 100 bytes, one offset each, timestamps as given.
    fn build(timestamps: &[u64], interval: u64) -> SegmentIndex {
        let mut idx = SegmentIndex::default();
        for (i, ts) in timestamps.iter().enumerate() {
            idx.observe(i as u64 * 100, i as u32, *ts, interval);
        }
        idx
    }

    #[test]
    fn sparse_entries_every_interval() {
        let idx = build(&[1; 10], 250);
        assert_eq!(idx.offsets, vec![(3, 300), (6, 600), (9, 900)]);
        assert_eq!(idx.floor(0), (0, 0));
        assert_eq!(idx.floor(5), (3, 300));
        assert_eq!(idx.floor(6), (6, 600));
        assert_eq!(idx.floor(100), (9, 900));
    }

    #[test]
    fn time_entries_hold_the_max_before_the_batch() {
        let idx = build(&[5, 1, 7, 2, 2, 9, 3], 100);
        // Before batch 1: 5; before 3: 7; before 6: 9. No entry at 2, 4, 5.
        assert_eq!(idx.times, vec![(5, 1), (7, 3), (9, 6)]);
        assert_eq!(idx.time_start(5), 0);
        assert_eq!(idx.time_start(6), 1);
        assert_eq!(idx.time_start(8), 3);
        assert_eq!(idx.time_start(100), 6);
        assert_eq!(idx.max_timestamp(), 9);
    }

    #[test]
    fn rewind_then_observe_again_rebuilds_the_same_index() {
        let ts = [5, 1, 7, 2, 2, 9, 3, 12, 4, 4, 20, 1];
        let full = build(&ts, 250);
        for cut in 0..=ts.len() {
            let mut idx = full.clone();
            let (pos, rel) = idx.rewind(cut as u64 * 100);
            for (i, t) in ts.iter().enumerate().take(cut).skip(rel as usize) {
                idx.observe(i as u64 * 100, i as u32, *t, 250);
            }
            assert_eq!(pos, u64::from(rel) * 100);
            assert_eq!(idx, build(&ts[..cut], 250), "cut {cut}");
        }
    }

    #[test]
    fn sealed_files_round_trip_and_torn_files_are_refused() {
        let mut idx = build(&[5, 1, 7, 2, 2, 9, 3], 100);
        idx.seal(7);
        let (o, t) = (idx.encode_offsets(), idx.encode_times());
        assert_eq!(
            SegmentIndex::decode_sealed(&o, &t, 700, 7),
            Some(idx.clone())
        );
        assert_eq!(
            SegmentIndex::decode_sealed(&o, &t[..t.len() - 12], 700, 7),
            None
        );
        assert_eq!(
            SegmentIndex::decode_sealed(&o, &t[..t.len() - 1], 700, 7),
            None
        );
        assert_eq!(
            SegmentIndex::decode_sealed(&o[..o.len() - 3], &t, 700, 7),
            None
        );
        assert_eq!(SegmentIndex::decode_sealed(&o, &t, 600, 7), None);
        let mut zeroed = o.clone();
        zeroed[8..16].fill(0);
        assert_eq!(SegmentIndex::decode_sealed(&zeroed, &t, 700, 7), None);
    }
}
