//! Finding the first entry published at or after a time (SEEK by time,
//! message TTL, backlog age), the same way for every log: a binary search
//! over the log's confirmed positions, reading one entry per step. Storage
//! does not know where an entry's publish time is, so the caller says.

use super::{PartitionLog, Position, PositionRun, StorageError};

/// The first confirmed entry whose publish time (as `publish_time` reads it
/// from the entry's bytes; unreadable counts as 0) is at or after
/// `publish_time_ms`; just past the last entry if none is that recent.
/// Publish times are assumed to grow with position, as they do for one
/// producer; with several producers the answer is one of the candidates.
pub async fn position_at_publish_time(
    log: &dyn PartitionLog,
    publish_time_ms: u64,
    publish_time: impl Fn(&[u8]) -> Option<u64>,
) -> Result<Position, StorageError> {
    let runs: Vec<PositionRun> = log
        .position_runs()
        .into_iter()
        .filter(|r| r.count > 0)
        .collect();
    let total: u64 = runs.iter().map(|r| r.count).sum();
    let (mut low, mut high) = (0u64, total);
    while low < high {
        let mid = low + (high - low) / 2;
        let Some(position) = position_at(&runs, mid) else {
            break;
        };
        let before = log.previous_position(position);
        let entries = log.read_entries(before, 1).await?;
        let published = entries
            .first()
            .filter(|e| e.position == position)
            .and_then(|e| publish_time(&e.data))
            .unwrap_or(0);
        if published >= publish_time_ms {
            high = mid;
        } else {
            low = mid + 1;
        }
    }
    if let Some(found) = position_at(&runs, low) {
        return Ok(found);
    }
    let last = log.last_confirmed();
    Ok(Position::new(last.ledger_id, last.entry_id + 1))
}

/// The `index`-th position of `runs` taken as one sequence.
fn position_at(runs: &[PositionRun], mut index: u64) -> Option<Position> {
    for run in runs {
        if index < run.count {
            return Some(Position::new(
                run.first.ledger_id,
                run.first.entry_id + index as i64,
            ));
        }
        index -= run.count;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indexes_flatten_runs_in_order() {
        let runs = [
            PositionRun {
                first: Position::new(3, 0),
                count: 2,
            },
            PositionRun {
                first: Position::new(7, 5),
                count: 3,
            },
        ];
        let all: Vec<Option<Position>> = (0..6).map(|i| position_at(&runs, i)).collect();
        assert_eq!(
            all,
            vec![
                Some(Position::new(3, 0)),
                Some(Position::new(3, 1)),
                Some(Position::new(7, 5)),
                Some(Position::new(7, 6)),
                Some(Position::new(7, 7)),
                None
            ]
        );
    }
}
