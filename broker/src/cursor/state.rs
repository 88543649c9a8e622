//! The acknowledgement state of one subscription and its stored form.

use std::collections::BTreeMap;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::ranges::AckedRanges;
use crate::storage::{Position, PositionOrder};

/// Runs of individually acknowledged entries a stored cursor keeps
/// (Pulsar's `managedLedgerMaxUnackedRangesToPersist`): the lowest ones are
/// kept, and acknowledgements in the runs past them are not persisted, so a
/// crash or a topic move redelivers those messages (at-least-once).
pub const MAX_RANGES_TO_PERSIST: usize = 10_000;

/// Partly acknowledged batches a stored cursor keeps (Pulsar's
/// `managedLedgerMaxBatchDeletedIndexToPersist`), the lowest ones; the
/// acknowledged messages of the others are redelivered after a crash.
pub const MAX_BATCHES_TO_PERSIST: usize = 10_000;

/// In-memory acknowledgement state of a subscription.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CursorState {
    mark_delete: Position,
    /// Entries acknowledged whole, beyond `mark_delete`.
    acked: AckedRanges,
    /// Batches partly acknowledged: bit i set = message i still unacknowledged
    /// (Pulsar's ack-set convention).
    partial: BTreeMap<Position, Vec<i64>>,
    dirty: bool,
}

/// The persisted form: ranges instead of single positions.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CursorSnapshot {
    pub mark_delete: Position,
    /// `(ledger, first entry, last entry)` runs acknowledged beyond mark-delete.
    #[serde(default)]
    pub acked_ranges: Vec<(u64, i64, i64)>,
    #[serde(default)]
    pub partial: Vec<(Position, Vec<i64>)>,
}

impl CursorSnapshot {
    pub fn to_bytes(&self) -> Bytes {
        Bytes::from(serde_json::to_vec(self).unwrap_or_default())
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(bytes)
    }
}

impl CursorState {
    /// A cursor whose next entry to deliver is the one after `mark_delete`.
    pub fn new(mark_delete: Position) -> Self {
        CursorState {
            mark_delete,
            acked: AckedRanges::default(),
            partial: BTreeMap::new(),
            dirty: true,
        }
    }

    pub fn from_snapshot(snapshot: CursorSnapshot) -> Self {
        let mut state = CursorState {
            mark_delete: snapshot.mark_delete,
            acked: AckedRanges::from_runs(snapshot.acked_ranges),
            partial: snapshot.partial.into_iter().collect(),
            dirty: false,
        };
        // Nothing at or before mark-delete is kept apart from it.
        state.acked.remove_through(state.mark_delete);
        state.partial = state.partial.split_off(&Position::new(
            state.mark_delete.ledger_id,
            state.mark_delete.entry_id.saturating_add(1),
        ));
        state
    }

    /// The stored form, within [`MAX_RANGES_TO_PERSIST`] and
    /// [`MAX_BATCHES_TO_PERSIST`].
    pub fn snapshot(&self) -> CursorSnapshot {
        CursorSnapshot {
            mark_delete: self.mark_delete,
            acked_ranges: self.acked.iter().take(MAX_RANGES_TO_PERSIST).collect(),
            partial: self
                .partial
                .iter()
                .take(MAX_BATCHES_TO_PERSIST)
                .map(|(p, s)| (*p, s.clone()))
                .collect(),
        }
    }

    /// Whether the stored form leaves acknowledgements out (more runs or
    /// partial batches than are persisted).
    pub fn over_persist_limits(&self) -> bool {
        self.acked.runs() > MAX_RANGES_TO_PERSIST || self.partial.len() > MAX_BATCHES_TO_PERSIST
    }

    /// Runs of individually acknowledged entries (Pulsar's
    /// `individuallyDeletedMessages` count in stats).
    pub fn acked_runs(&self) -> usize {
        self.acked.runs()
    }

    pub fn mark_delete(&self) -> Position {
        self.mark_delete
    }

    /// Whether anything changed since the last [`Self::take_dirty`].
    pub fn take_dirty(&mut self) -> bool {
        std::mem::take(&mut self.dirty)
    }

    pub fn mark_dirty(&mut self) {
        self.dirty = true;
    }

    /// Whether the whole entry at `position` is acknowledged.
    pub fn is_acked(&self, position: Position) -> bool {
        position <= self.mark_delete || self.acked.contains(position)
    }

    /// Messages of a partly acknowledged batch still outstanding.
    pub fn outstanding_batch(&self, position: Position) -> Option<&[i64]> {
        self.partial.get(&position).map(|v| v.as_slice())
    }

    /// Individually acknowledges `position`; `ack_set` (bit set = still
    /// unacknowledged) acknowledges only some messages of a batch. Returns
    /// whether the whole entry is now acknowledged.
    pub fn ack(
        &mut self,
        ml: &(impl PositionOrder + ?Sized),
        position: Position,
        ack_set: &[i64],
    ) -> bool {
        if self.is_acked(position) {
            return true;
        }
        self.dirty = true;
        if !ack_set.is_empty() {
            let remaining = match self.partial.get(&position) {
                Some(existing) => intersect(existing, ack_set),
                None => ack_set.to_vec(),
            };
            if remaining.iter().any(|w| *w != 0) {
                self.partial.insert(position, remaining);
                return false;
            }
        }
        self.partial.remove(&position);
        self.acked.insert(position);
        self.advance(ml);
        true
    }

    /// Acknowledges everything up to and including `position` (up to the
    /// batch messages outstanding in `ack_set`, if given).
    pub fn ack_cumulative(
        &mut self,
        ml: &(impl PositionOrder + ?Sized),
        position: Position,
        ack_set: &[i64],
    ) {
        let partial = ack_set.iter().any(|w| *w != 0);
        let upto = if partial {
            ml.previous_position(position)
        } else {
            position
        };
        if upto > self.mark_delete {
            self.set_mark_delete(upto);
        }
        if partial && !self.is_acked(position) {
            self.ack(ml, position, ack_set);
        }
        self.advance(ml);
    }

    /// Moves the cursor so delivery restarts after `mark_delete`, forgetting
    /// every acknowledgement beyond it (seek / reset).
    pub fn reset(&mut self, mark_delete: Position) {
        self.mark_delete = mark_delete;
        self.acked.clear();
        self.partial.clear();
        self.dirty = true;
    }

    fn set_mark_delete(&mut self, position: Position) {
        self.mark_delete = position;
        self.acked.remove_through(position);
        let after = Position::new(position.ledger_id, position.entry_id.saturating_add(1));
        self.partial = self.partial.split_off(&after);
        if position.entry_id == i64::MAX {
            self.partial.remove(&after);
        }
        self.dirty = true;
    }

    /// Folds the runs of individually acknowledged entries that directly
    /// follow the mark-delete position into it.
    fn advance(&mut self, ml: &(impl PositionOrder + ?Sized)) {
        while let Some(next) = ml.next_position(self.mark_delete) {
            let Some(last) = self.acked.take_run_starting_at(next) else {
                break;
            };
            self.mark_delete = last;
            self.dirty = true;
        }
    }

    /// Number of entries acknowledged beyond the mark-delete position.
    pub fn individually_acked(&self) -> u64 {
        self.acked.entries()
    }
}

fn intersect(a: &[i64], b: &[i64]) -> Vec<i64> {
    (0..a.len().max(b.len()))
        .map(|i| a.get(i).copied().unwrap_or(0) & b.get(i).copied().unwrap_or(0))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two ledgers: 1 with entries 0..=4, 2 with entries 0..=2.
    struct TwoLedgers;

    impl PositionOrder for TwoLedgers {
        fn next_position(&self, after: Position) -> Option<Position> {
            let all = [(1u64, 5i64), (2, 3)];
            for (ledger, count) in all {
                if ledger < after.ledger_id {
                    continue;
                }
                let first = if ledger == after.ledger_id {
                    after.entry_id + 1
                } else {
                    0
                };
                if first < count {
                    return Some(Position::new(ledger, first));
                }
            }
            None
        }
        fn previous_position(&self, position: Position) -> Position {
            if position.entry_id > 0 {
                Position::new(position.ledger_id, position.entry_id - 1)
            } else if position.ledger_id == 2 {
                Position::new(1, 4)
            } else {
                Position::new(1, -1)
            }
        }
    }

    #[test]
    fn individual_acks_fold_into_mark_delete_across_ledgers() {
        let ml = TwoLedgers;
        let mut c = CursorState::new(Position::new(1, -1));
        assert!(c.ack(&ml, Position::new(1, 1), &[]));
        assert_eq!(c.mark_delete(), Position::new(1, -1));
        for e in [0, 2, 3] {
            c.ack(&ml, Position::new(1, e), &[]);
        }
        assert_eq!(c.mark_delete(), Position::new(1, 3));
        c.ack(&ml, Position::new(2, 0), &[]);
        assert_eq!(c.mark_delete(), Position::new(1, 3));
        c.ack(&ml, Position::new(1, 4), &[]);
        assert_eq!(c.mark_delete(), Position::new(2, 0));
        assert_eq!(c.individually_acked(), 0);
        assert!(c.is_acked(Position::new(1, 2)));
        assert!(!c.is_acked(Position::new(2, 1)));
    }

    #[test]
    fn batch_acks_complete_an_entry_only_when_every_message_is_acked() {
        let ml = TwoLedgers;
        let mut c = CursorState::new(Position::new(1, -1));
        let p = Position::new(1, 0);
        // Batch of 3: ack message 0 (remaining 0b110), then 2 (remaining 0b010).
        assert!(!c.ack(&ml, p, &[0b110]));
        assert!(!c.ack(&ml, p, &[0b011]));
        assert_eq!(c.outstanding_batch(p), Some(&[0b010i64][..]));
        assert!(c.ack(&ml, p, &[0b101]));
        assert_eq!(c.mark_delete(), p);
        assert!(c.outstanding_batch(p).is_none());
    }

    #[test]
    fn cumulative_ack_drops_individual_acks_below_it() {
        let ml = TwoLedgers;
        let mut c = CursorState::new(Position::new(1, -1));
        c.ack(&ml, Position::new(1, 3), &[]);
        c.ack(&ml, Position::new(2, 1), &[]);
        c.ack_cumulative(&ml, Position::new(1, 2), &[]);
        // 1:3 was already acked, so mark-delete folds it in.
        assert_eq!(c.mark_delete(), Position::new(1, 3));
        c.ack_cumulative(&ml, Position::new(2, 0), &[]);
        assert_eq!(c.mark_delete(), Position::new(2, 1));
        c.reset(Position::new(1, 0));
        assert!(!c.is_acked(Position::new(1, 1)));
        assert!(c.take_dirty());
        assert!(!c.take_dirty());
    }

    #[test]
    fn snapshot_round_trips_ranges() {
        let mut state = CursorState::new(Position::new(5, 3));
        for e in [5, 6, 7, 9] {
            state.acked.insert(Position::new(5, e));
        }
        state.acked.insert(Position::new(8, 0));
        state.partial.insert(Position::new(5, 4), vec![0b1010]);
        let snap = state.snapshot();
        assert_eq!(snap.acked_ranges, vec![(5, 5, 7), (5, 9, 9), (8, 0, 0)]);
        let back =
            CursorState::from_snapshot(CursorSnapshot::from_bytes(&snap.to_bytes()).unwrap());
        assert_eq!(back.acked, state.acked);
        assert_eq!(back.partial, state.partial);
        assert_eq!(back.mark_delete, state.mark_delete);
    }

    #[test]
    fn the_stored_form_keeps_the_lowest_runs_up_to_the_limit() {
        let mut state = CursorState::new(Position::new(1, -1));
        // Every other entry acknowledged: one run each.
        let runs = MAX_RANGES_TO_PERSIST as i64 + 5;
        for i in 0..runs {
            state.acked.insert(Position::new(1, 2 * i + 1));
        }
        assert_eq!(state.acked_runs(), runs as usize);
        assert!(state.over_persist_limits());
        let snap = state.snapshot();
        assert_eq!(snap.acked_ranges.len(), MAX_RANGES_TO_PERSIST);
        let back = CursorState::from_snapshot(snap);
        let last_kept = 2 * (MAX_RANGES_TO_PERSIST as i64 - 1) + 1;
        assert!(back.is_acked(Position::new(1, last_kept)));
        // Past the limit: redelivered after a reload.
        assert!(!back.is_acked(Position::new(1, last_kept + 2)));
        assert!(!back.over_persist_limits());
    }

    #[test]
    fn a_snapshot_never_keeps_runs_behind_its_mark_delete() {
        let snap = CursorSnapshot {
            mark_delete: Position::new(2, 5),
            acked_ranges: vec![(1, 0, 9), (2, 3, 8), (2, 10, 10)],
            partial: vec![
                (Position::new(2, 1), vec![1]),
                (Position::new(2, 9), vec![1]),
            ],
        };
        let state = CursorState::from_snapshot(snap);
        assert_eq!(state.individually_acked(), 4);
        assert_eq!(state.snapshot().acked_ranges, vec![(2, 6, 8), (2, 10, 10)]);
        assert!(state.outstanding_batch(Position::new(2, 1)).is_none());
        assert!(state.outstanding_batch(Position::new(2, 9)).is_some());
    }

    #[test]
    fn partial_batch_acks_intersect() {
        assert_eq!(intersect(&[0b1110], &[0b0111]), vec![0b0110]);
        assert_eq!(intersect(&[0b1], &[0b0, 0b1]), vec![0, 0]);
    }
}
