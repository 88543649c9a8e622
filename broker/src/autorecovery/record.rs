//! The auditor's record of one bookie under recovery, and the pure rule
//! for how it changes with what the auditor sees.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// Why a bookie's ledgers are being copied.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecoveryReason {
    /// Its registration lapsed.
    Lost,
    /// An operator asked for it to be drained.
    Decommission,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecoveryState {
    /// Gone for less than the delay: it may come back.
    Waiting,
    /// Its ledgers are being copied to other bookies.
    Copying,
    /// No ledger depends on it any more.
    Done,
}

/// Stored at `keys::bookie_recovery` (JSON), shown by the admin API.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BookieRecovery {
    pub bookie: String,
    pub reason: RecoveryReason,
    pub state: RecoveryState,
    /// When the auditor first saw it gone (or the drain requested).
    pub since_ms: u64,
    /// Ledgers that still depend on it, as of the last round.
    #[serde(default)]
    pub ledgers_left: u64,
    /// Of those, open ones: copied once their writers close them.
    #[serde(default)]
    pub open_ledgers_left: u64,
    #[serde(default)]
    pub fragments_copied: u64,
    #[serde(default)]
    pub entries_copied: u64,
    #[serde(default)]
    pub bytes_copied: u64,
    #[serde(default)]
    pub updated_ms: u64,
    /// The last fragment that could not be copied, and why.
    #[serde(default)]
    pub last_error: Option<String>,
}

impl BookieRecovery {
    fn new(bookie: &str, reason: RecoveryReason, state: RecoveryState, now_ms: u64) -> Self {
        BookieRecovery {
            bookie: bookie.to_string(),
            reason,
            state,
            since_ms: now_ms,
            ledgers_left: 0,
            open_ledgers_left: 0,
            fragments_copied: 0,
            entries_copied: 0,
            bytes_copied: 0,
            updated_ms: now_ms,
            last_error: None,
        }
    }

    pub fn to_bytes(&self) -> serde_json::Result<Bytes> {
        serde_json::to_vec(self).map(Bytes::from)
    }
}

/// What to do with a bookie's record.
#[derive(Debug, PartialEq, Eq)]
pub enum Change {
    Keep,
    Write(BookieRecovery),
    Remove,
}

/// The record a bookie should have, given its current one, whether it is
/// registered (`lost` when not) and whether it is to be drained.
pub fn next(
    current: Option<&BookieRecovery>,
    bookie: &str,
    lost: bool,
    draining: bool,
    now_ms: u64,
    delay_ms: u64,
) -> Change {
    use RecoveryState::*;
    match current {
        // Back (or the drain cancelled): what it holds is readable again.
        Some(_) if !lost && !draining => Change::Remove,
        None if !lost && !draining => Change::Keep,
        None if draining => Change::Write(BookieRecovery::new(
            bookie,
            RecoveryReason::Decommission,
            Copying,
            now_ms,
        )),
        None => {
            let state = if delay_ms == 0 { Copying } else { Waiting };
            Change::Write(BookieRecovery::new(
                bookie,
                RecoveryReason::Lost,
                state,
                now_ms,
            ))
        }
        Some(record) if record.state == Waiting => {
            if draining {
                let mut record = record.clone();
                record.reason = RecoveryReason::Decommission;
                record.state = Copying;
                Change::Write(record)
            } else if now_ms.saturating_sub(record.since_ms) >= delay_ms {
                let mut record = record.clone();
                record.state = Copying;
                Change::Write(record)
            } else {
                Change::Keep
            }
        }
        Some(_) => Change::Keep,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DELAY: u64 = 60_000;

    fn written(change: Change) -> BookieRecovery {
        match change {
            Change::Write(record) => record,
            other => panic!("expected a write, got {other:?}"),
        }
    }

    #[test]
    fn a_lost_bookie_waits_out_the_delay_then_is_copied() {
        let waiting = written(next(None, "b:1", true, false, 1_000, DELAY));
        assert_eq!(waiting.state, RecoveryState::Waiting);
        assert_eq!(waiting.reason, RecoveryReason::Lost);
        assert_eq!(
            next(Some(&waiting), "b:1", true, false, 1_000 + DELAY - 1, DELAY),
            Change::Keep
        );
        let copying = written(next(
            Some(&waiting),
            "b:1",
            true,
            false,
            1_000 + DELAY,
            DELAY,
        ));
        assert_eq!(copying.state, RecoveryState::Copying);
        // The clock is the record's: a new auditor does not restart it.
        assert_eq!(copying.since_ms, 1_000);
    }

    #[test]
    fn a_bookie_that_returns_loses_its_record_whatever_its_state() {
        for state in [
            RecoveryState::Waiting,
            RecoveryState::Copying,
            RecoveryState::Done,
        ] {
            let mut record = written(next(None, "b:1", true, false, 0, DELAY));
            record.state = state;
            assert_eq!(
                next(Some(&record), "b:1", false, false, 5, DELAY),
                Change::Remove
            );
        }
        assert_eq!(next(None, "b:1", false, false, 5, DELAY), Change::Keep);
    }

    #[test]
    fn a_drain_starts_copying_at_once_even_while_the_bookie_is_up() {
        let record = written(next(None, "b:1", false, true, 7, DELAY));
        assert_eq!(
            (record.reason, record.state),
            (RecoveryReason::Decommission, RecoveryState::Copying)
        );
        let waiting = written(next(None, "b:1", true, false, 0, DELAY));
        let record = written(next(Some(&waiting), "b:1", true, true, 1, DELAY));
        assert_eq!(
            (record.reason, record.state),
            (RecoveryReason::Decommission, RecoveryState::Copying)
        );
        // Done and drained stays done when it is stopped afterwards.
        let mut done = record;
        done.state = RecoveryState::Done;
        assert_eq!(next(Some(&done), "b:1", true, true, 2, DELAY), Change::Keep);
    }

    #[test]
    fn no_delay_copies_a_lost_bookie_at_once() {
        assert_eq!(
            written(next(None, "b:1", true, false, 0, 0)).state,
            RecoveryState::Copying
        );
    }
}
