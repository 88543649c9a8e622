//! Which segments of a local log retention may delete (Kafka's segment
//! deletion, with Pulsar's rule that only what every cursor has passed may
//! go). A pure function of the segments, the slowest reader and the
//! limits, tested without files.
//!
//! It must never pick the active (last) segment, nor one holding an entry
//! after the slowest reader.

use magnetar_log::SegmentInfo;

use crate::storage::RetentionLimits;

/// Base offsets of the oldest segments to delete at `now_ms`: while the
/// consumed ones (every entry below `consumed_end`) exceed the age limit
/// (measured from their newest entry) or the size limit.
pub fn segments_to_trim(
    segments: &[SegmentInfo],
    consumed_end: u64,
    limits: &RetentionLimits,
    now_ms: u64,
) -> Vec<u64> {
    let Some((_, candidates)) = segments.split_last() else {
        return Vec::new();
    };
    let consumed: Vec<&SegmentInfo> = candidates
        .iter()
        .take_while(|s| s.next_offset <= consumed_end)
        .collect();
    let sizes: Vec<(u64, u64)> = consumed
        .iter()
        .map(|s| (s.bytes, s.max_timestamp_ms.max(s.created_ms)))
        .collect();
    let expired = limits.expired_prefix(&sizes, now_ms);
    consumed[..expired].iter().map(|s| s.base_offset).collect()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const MINUTE_MS: u64 = 60_000;
    const NOW: u64 = 1_000 * MINUTE_MS;

    /// Segments of 10 entries and 100 bytes, written 30, 20, 10 and 0
    /// minutes ago; the last is active.
    fn segments() -> Vec<SegmentInfo> {
        (0..4u64)
            .map(|i| SegmentInfo {
                base_offset: i * 10,
                next_offset: i * 10 + 10,
                bytes: 100,
                created_ms: NOW - (30 - i * 10) * MINUTE_MS - MINUTE_MS,
                max_timestamp_ms: NOW - (30 - i * 10) * MINUTE_MS,
            })
            .collect()
    }

    #[test]
    fn without_retention_every_consumed_closed_segment_goes() {
        assert_eq!(
            segments_to_trim(&segments(), 40, &RetentionLimits::NONE, NOW),
            vec![0, 10, 20]
        );
    }

    #[test]
    fn a_segment_with_an_unconsumed_entry_stays_and_so_does_every_later_one() {
        assert_eq!(
            segments_to_trim(&segments(), 19, &RetentionLimits::NONE, NOW),
            vec![0]
        );
        assert!(segments_to_trim(&segments(), 9, &RetentionLimits::NONE, NOW).is_empty());
    }

    #[test]
    fn retention_keeps_consumed_segments_within_both_limits() {
        assert!(segments_to_trim(&segments(), 40, &RetentionLimits::UNLIMITED, NOW).is_empty());
        let by_size = RetentionLimits {
            max_age: None,
            max_bytes: Some(150),
        };
        assert_eq!(
            segments_to_trim(&segments(), 40, &by_size, NOW),
            vec![0, 10]
        );
        let by_age = RetentionLimits {
            max_age: Some(Duration::from_secs(15 * 60)),
            max_bytes: None,
        };
        assert_eq!(segments_to_trim(&segments(), 40, &by_age, NOW), vec![0, 10]);
    }
}
