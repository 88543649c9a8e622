//! Individually acknowledged entries as runs of consecutive entry ids (the
//! range set of Pulsar's `ManagedCursor`): random acknowledgements cost one
//! node per gap, not one per entry, and a stored run of any length loads in
//! constant time.

use std::collections::BTreeMap;

use crate::storage::Position;

/// Runs of acknowledged entries, each inside one ledger.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AckedRanges {
    /// First position of each run -> the entry id of its last position.
    runs: BTreeMap<Position, i64>,
    /// Entries in all runs.
    entries: u64,
}

impl AckedRanges {
    /// Rebuilds a set from stored `(ledger, first, last)` runs; overlapping
    /// or touching runs merge and inverted ones are skipped, so a damaged
    /// record cannot make the set disagree with its own count.
    pub fn from_runs(runs: impl IntoIterator<Item = (u64, i64, i64)>) -> Self {
        let mut set = AckedRanges::default();
        for (ledger, first, last) in runs {
            if first <= last {
                set.insert_run(ledger, first, last);
            }
        }
        set
    }

    /// The run holding `position`, as (first position, last entry id).
    fn run_of(&self, position: Position) -> Option<(Position, i64)> {
        let (start, last) = self.runs.range(..=position).next_back()?;
        (start.ledger_id == position.ledger_id && position.entry_id <= *last)
            .then_some((*start, *last))
    }

    pub fn contains(&self, position: Position) -> bool {
        self.run_of(position).is_some()
    }

    /// Adds `position`; false if it was already in the set.
    pub fn insert(&mut self, position: Position) -> bool {
        if self.contains(position) {
            return false;
        }
        self.insert_run(position.ledger_id, position.entry_id, position.entry_id);
        true
    }

    /// Adds `first..=last` of `ledger`, merging with the runs it overlaps
    /// or touches.
    fn insert_run(&mut self, ledger: u64, mut first: i64, mut last: i64) {
        // A run before that reaches `first - 1` or beyond absorbs the start.
        if let Some((start, end)) = self.runs.range(..=Position::new(ledger, first)).next_back() {
            if start.ledger_id == ledger && end.saturating_add(1) >= first {
                first = start.entry_id;
                last = last.max(*end);
            }
        }
        // Runs starting inside `first..=last + 1` are absorbed.
        let from = Position::new(ledger, first);
        let through = Position::new(ledger, last.saturating_add(1));
        let absorbed: Vec<(Position, i64)> = self
            .runs
            .range(from..=through)
            .map(|(start, end)| (*start, *end))
            .collect();
        for (start, end) in absorbed {
            self.runs.remove(&start);
            self.entries -= run_len(start.entry_id, end);
            last = last.max(end);
        }
        self.runs.insert(from, last);
        self.entries += run_len(first, last);
    }

    /// Removes the run that starts exactly at `position` and returns its
    /// last position: what lets a mark-delete position jump over a run.
    pub fn take_run_starting_at(&mut self, position: Position) -> Option<Position> {
        let last = self.runs.remove(&position)?;
        self.entries -= run_len(position.entry_id, last);
        Some(Position::new(position.ledger_id, last))
    }

    /// Forgets every position at or before `position`.
    pub fn remove_through(&mut self, position: Position) {
        let Some(after) = position.entry_id.checked_add(1) else {
            // Entry i64::MAX ends its ledger: keep only later ledgers.
            let later = self.runs.split_off(&Position::new(
                position.ledger_id.saturating_add(1),
                i64::MIN,
            ));
            self.replace(later);
            return;
        };
        let after = Position::new(position.ledger_id, after);
        let straddling = self.run_of(after).filter(|(start, _)| *start < after);
        let mut kept = self.runs.split_off(&after);
        if let Some((_, last)) = straddling {
            kept.insert(after, last);
        }
        self.replace(kept);
    }

    fn replace(&mut self, runs: BTreeMap<Position, i64>) {
        self.entries = runs
            .iter()
            .map(|(start, last)| run_len(start.entry_id, *last))
            .sum();
        self.runs = runs;
    }

    pub fn clear(&mut self) {
        self.runs.clear();
        self.entries = 0;
    }

    /// Entries acknowledged.
    pub fn entries(&self) -> u64 {
        self.entries
    }

    /// Number of runs (what persisting the set costs).
    pub fn runs(&self) -> usize {
        self.runs.len()
    }

    /// The runs in position order, as `(ledger, first, last)`.
    pub fn iter(&self) -> impl Iterator<Item = (u64, i64, i64)> + '_ {
        self.runs
            .iter()
            .map(|(start, last)| (start.ledger_id, start.entry_id, *last))
    }
}

fn run_len(first: i64, last: i64) -> u64 {
    (i128::from(last) - i128::from(first) + 1) as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    #[test]
    fn neighbours_merge_into_one_run() {
        let mut set = AckedRanges::default();
        for e in [5, 7, 6, 9] {
            assert!(set.insert(Position::new(1, e)));
        }
        assert!(!set.insert(Position::new(1, 6)));
        assert_eq!(set.iter().collect::<Vec<_>>(), vec![(1, 5, 7), (1, 9, 9)]);
        assert_eq!(set.entries(), 4);
        // The same entry ids in another ledger stay apart.
        set.insert(Position::new(2, 8));
        assert_eq!(set.runs(), 3);
        assert!(!set.contains(Position::new(1, 8)));
        assert!(set.contains(Position::new(2, 8)));
    }

    #[test]
    fn a_stored_run_of_any_length_loads_at_once() {
        let set = AckedRanges::from_runs([(3, 0, i64::MAX), (3, 10, 20), (4, 5, 1)]);
        assert_eq!(set.runs(), 1);
        assert_eq!(set.entries(), 1u64 << 63);
        assert!(set.contains(Position::new(3, i64::MAX)));
    }

    #[test]
    fn removing_through_the_last_entry_of_a_ledger_keeps_later_ledgers() {
        let mut set = AckedRanges::from_runs([(1, 0, i64::MAX), (2, 0, 3)]);
        set.remove_through(Position::new(1, i64::MAX));
        assert_eq!(set.iter().collect::<Vec<_>>(), vec![(2, 0, 3)]);
        assert_eq!(set.entries(), 4);
    }

    proptest! {
        /// The set answers exactly as a set of single positions would, and
        /// its runs are disjoint, sorted and never touching.
        #[test]
        fn behaves_as_a_set_of_positions(
            ops in proptest::collection::vec((0u64..3, 0i64..40, 0u8..8), 1..200)
        ) {
            let mut set = AckedRanges::default();
            let mut model = BTreeSet::new();
            for (ledger, entry, op) in ops {
                let p = Position::new(ledger, entry);
                if op == 0 {
                    set.remove_through(p);
                    model = model.split_off(&Position::new(ledger, entry + 1));
                } else if op == 1 {
                    let taken = set.take_run_starting_at(p);
                    if let Some(last) = taken {
                        let run: Vec<_> = model
                            .range(p..=last)
                            .copied()
                            .collect();
                        prop_assert_eq!(run.len() as i64, last.entry_id - p.entry_id + 1);
                        for q in run {
                            model.remove(&q);
                        }
                    }
                } else {
                    prop_assert_eq!(set.insert(p), model.insert(p));
                }
                prop_assert_eq!(set.entries(), model.len() as u64);
                for e in -1..42 {
                    for l in 0..3 {
                        let q = Position::new(l, e);
                        prop_assert_eq!(set.contains(q), model.contains(&q));
                    }
                }
                let runs: Vec<_> = set.iter().collect();
                for pair in runs.windows(2) {
                    let ((l1, _, last1), (l2, first2, _)) = (pair[0], pair[1]);
                    prop_assert!(l1 < l2 || last1 + 1 < first2);
                }
            }
        }
    }
}
