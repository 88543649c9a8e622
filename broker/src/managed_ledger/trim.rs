//! Which ledgers of a topic may be deleted (Pulsar's ledger trimming under a
//! retention policy). The decision is a pure function of the ledger list,
//! the slowest cursor and the limits, so it is tested without storage; the
//! managed ledger applies it.
//!
//! It must never pick a ledger that is open, that holds an entry after the
//! slowest mark-delete position, or that is the last of the list.

use super::{LedgerInfo, Position, RetentionLimits};
use crate::ledger::LedgerId;

/// Whether every entry of the closed ledger `info` is at or before `slowest`.
fn is_consumed(info: &LedgerInfo, slowest: Position) -> bool {
    match info.entries {
        None => false,
        Some(entries) => {
            info.ledger_id < slowest.ledger_id
                || (info.ledger_id == slowest.ledger_id && entries as i64 - 1 <= slowest.entry_id)
        }
    }
}

/// The ledgers of `ledgers` (in list order) to delete at `now_ms`:
/// - the oldest consumed ledgers (closed, every entry at or before
///   `slowest`) while the consumed ones exceed the age or size limit;
/// - closed ledgers without entries (left by crashes or failed writers),
///   wherever they are, as nothing can be read from them.
///
/// The last ledger of the list is never picked: it is the one being written
/// (or, on a closed topic, the one whose end marks the topic's last entry).
pub fn ledgers_to_trim(
    ledgers: &[LedgerInfo],
    slowest: Position,
    limits: &RetentionLimits,
    now_ms: u64,
) -> Vec<LedgerId> {
    let Some((_, candidates)) = ledgers.split_last() else {
        return Vec::new();
    };
    let consumed: Vec<&LedgerInfo> = candidates
        .iter()
        .take_while(|l| is_consumed(l, slowest))
        .collect();
    let sizes: Vec<(u64, u64)> = consumed
        .iter()
        .map(|l| {
            let closed = if l.closed_ms > 0 {
                l.closed_ms
            } else {
                l.created_ms
            };
            (l.size, closed)
        })
        .collect();
    let expired = limits.expired_prefix(&sizes, now_ms);
    let mut doomed: Vec<LedgerId> = consumed[..expired].iter().map(|l| l.ledger_id).collect();
    for info in candidates {
        if info.entries == Some(0) && !doomed.contains(&info.ledger_id) {
            doomed.push(info.ledger_id);
        }
    }
    doomed.sort_unstable();
    doomed
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const MINUTE_MS: u64 = 60_000;
    const NOW: u64 = 1_000 * MINUTE_MS;

    /// A closed ledger of `entries` entries and `size` bytes closed
    /// `age_min` minutes before NOW.
    fn closed(id: LedgerId, entries: u64, size: u64, age_min: u64) -> LedgerInfo {
        LedgerInfo {
            ledger_id: id,
            entries: Some(entries),
            size,
            created_ms: NOW - age_min * MINUTE_MS - MINUTE_MS,
            closed_ms: NOW - age_min * MINUTE_MS,
        }
    }

    fn open(id: LedgerId) -> LedgerInfo {
        LedgerInfo {
            ledger_id: id,
            entries: None,
            size: 0,
            created_ms: NOW,
            closed_ms: 0,
        }
    }

    /// Ledgers 1..=3 closed (10 entries, 100 bytes each, closed 30, 20 and
    /// 10 minutes ago) and ledger 4 open.
    fn topic() -> Vec<LedgerInfo> {
        vec![
            closed(1, 10, 100, 30),
            closed(2, 10, 100, 20),
            closed(3, 10, 100, 10),
            open(4),
        ]
    }

    fn limits(minutes: Option<u64>, bytes: Option<u64>) -> RetentionLimits {
        RetentionLimits {
            max_age: minutes.map(|m| Duration::from_secs(m * 60)),
            max_bytes: bytes,
        }
    }

    #[test]
    fn without_retention_every_consumed_closed_ledger_goes() {
        let all_read = Position::new(4, -1);
        assert_eq!(
            ledgers_to_trim(&topic(), all_read, &RetentionLimits::NONE, NOW),
            vec![1, 2, 3]
        );
    }

    #[test]
    fn a_ledger_with_an_unconsumed_entry_stays_and_so_does_every_later_one() {
        let ledgers = topic();
        let none = RetentionLimits::NONE;
        // Mark-delete at 2:8: ledger 2's last entry (9) is not consumed.
        assert_eq!(
            ledgers_to_trim(&ledgers, Position::new(2, 8), &none, NOW),
            vec![1]
        );
        assert_eq!(
            ledgers_to_trim(&ledgers, Position::new(2, 9), &none, NOW),
            vec![1, 2]
        );
        // Nothing consumed at all.
        assert!(ledgers_to_trim(&ledgers, Position::new(1, -1), &none, NOW).is_empty());
        assert!(ledgers_to_trim(&ledgers, Position::EARLIEST, &none, NOW).is_empty());
    }

    #[test]
    fn the_last_ledger_and_open_ledgers_are_never_picked() {
        // The topic is closed: its last ledger is closed too, and consumed.
        let mut ledgers = topic();
        ledgers[3] = closed(4, 10, 100, 0);
        assert_eq!(
            ledgers_to_trim(&ledgers, Position::LATEST, &RetentionLimits::NONE, NOW),
            vec![1, 2, 3]
        );
        // Ledger 2 is still being sealed after a rollover: it and what
        // follows stay, even with the cursor past them.
        let mut sealing = topic();
        sealing[1] = open(2);
        assert_eq!(
            ledgers_to_trim(&sealing, Position::new(4, -1), &RetentionLimits::NONE, NOW),
            vec![1]
        );
        assert!(ledgers_to_trim(&[], Position::LATEST, &RetentionLimits::NONE, NOW).is_empty());
        assert!(
            ledgers_to_trim(&[open(1)], Position::LATEST, &RetentionLimits::NONE, NOW).is_empty()
        );
    }

    #[test]
    fn unlimited_retention_keeps_everything_consumed() {
        assert!(ledgers_to_trim(
            &topic(),
            Position::new(4, -1),
            &RetentionLimits::UNLIMITED,
            NOW
        )
        .is_empty());
    }

    #[test]
    fn the_time_limit_deletes_ledgers_closed_longer_ago() {
        let all_read = Position::new(4, -1);
        // 15 minutes: ledgers closed 30 and 20 minutes ago go.
        assert_eq!(
            ledgers_to_trim(&topic(), all_read, &limits(Some(15), None), NOW),
            vec![1, 2]
        );
        assert!(ledgers_to_trim(&topic(), all_read, &limits(Some(60), None), NOW).is_empty());
        // Age is from the close time; lists without it use creation time.
        let mut old_format = topic();
        for l in &mut old_format {
            l.closed_ms = 0;
        }
        // Created 31, 21, 11 minutes ago.
        assert_eq!(
            ledgers_to_trim(&old_format, all_read, &limits(Some(21), None), NOW),
            vec![1, 2]
        );
    }

    #[test]
    fn the_size_limit_deletes_the_oldest_until_the_rest_fits() {
        let all_read = Position::new(4, -1);
        // 300 consumed bytes, 150 allowed: the oldest goes, then 200 > 150
        // still, the next goes, and 100 fits.
        assert_eq!(
            ledgers_to_trim(&topic(), all_read, &limits(None, Some(150)), NOW),
            vec![1, 2]
        );
        assert_eq!(
            ledgers_to_trim(&topic(), all_read, &limits(None, Some(200)), NOW),
            vec![1]
        );
        assert!(ledgers_to_trim(&topic(), all_read, &limits(None, Some(300)), NOW).is_empty());
        // Only consumed ledgers count: with ledger 3 unread, 200 consumed
        // bytes fit in 200.
        assert!(
            ledgers_to_trim(&topic(), Position::new(3, 4), &limits(None, Some(200)), NOW)
                .is_empty()
        );
    }

    #[test]
    fn either_limit_exceeded_deletes() {
        let all_read = Position::new(4, -1);
        // Time keeps all three (60 min) but size allows one.
        assert_eq!(
            ledgers_to_trim(&topic(), all_read, &limits(Some(60), Some(100)), NOW),
            vec![1, 2]
        );
        // Size keeps all (-1) but time allows those closed < 25 minutes ago.
        assert_eq!(
            ledgers_to_trim(&topic(), all_read, &limits(Some(25), None), NOW),
            vec![1]
        );
        // Both within: kept.
        assert!(ledgers_to_trim(&topic(), all_read, &limits(Some(60), Some(1000)), NOW).is_empty());
    }

    #[test]
    fn empty_closed_ledgers_go_wherever_they_are() {
        let ledgers = vec![
            closed(1, 10, 100, 30),
            closed(2, 0, 0, 25),
            closed(3, 10, 100, 20),
            closed(5, 0, 0, 5),
            open(6),
        ];
        // Nothing consumed and everything retained, still the empty ones go.
        assert_eq!(
            ledgers_to_trim(
                &ledgers,
                Position::new(1, -1),
                &RetentionLimits::UNLIMITED,
                NOW
            ),
            vec![2, 5]
        );
        // An empty ledger does not stop consumed ones after it.
        assert_eq!(
            ledgers_to_trim(&ledgers, Position::new(3, 9), &RetentionLimits::NONE, NOW),
            vec![1, 2, 3, 5]
        );
    }
}
