//! Appends and reads: round trips across segment rolls, reads from inside
//! batches, limits, reopening, timestamps and flush.

mod common;

use std::time::Duration;

use common::*;
use magnetar_log::{AppendEntry, Log, LogConfig, LogError, StoredEntry};
use proptest::prelude::*;

#[test]
fn log_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Log>();
}

#[test]
fn empty_log_starts_at_zero() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(&dir.path().join("p0"), LogConfig::default()).unwrap();
    assert_eq!((log.log_start_offset(), log.log_end_offset()), (0, 0));
    assert_eq!(log.read(0, 10, 1000).unwrap(), vec![]);
    assert_eq!(log.latest_epoch(), None);
    assert_eq!(log.offset_for_timestamp(0).unwrap(), None);
    assert!(matches!(
        log.read(1, 10, 1000),
        Err(LogError::OffsetOutOfRange {
            offset: 1,
            start: 0,
            end: 0
        })
    ));
}

#[test]
fn round_trip_across_several_rolls() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), small_config(600, 128)).unwrap();
    let mut expected = Vec::new();
    let mut epoch_starts = Vec::new();
    for i in 0..60u64 {
        let count = (i % 4 + 1) as usize;
        let epoch = (i / 20) as u32;
        let base = log.log_end_offset();
        if i % 20 == 0 {
            epoch_starts.push((epoch, base));
        }
        let entries: Vec<_> = (0..count as u64)
            .map(|j| entry(1000 + base + j, payload(base + j, (i as usize * 13) % 90)))
            .collect();
        assert_eq!(log.append(epoch, &entries).unwrap(), base);
        for (j, e) in entries.into_iter().enumerate() {
            expected.push(StoredEntry {
                offset: base + j as u64,
                epoch,
                timestamp_ms: e.timestamp_ms,
                data: e.data,
            });
        }
    }
    let segments = log.segments();
    assert!(segments.len() >= 5, "{} segments", segments.len());
    for pair in segments.windows(2) {
        assert_eq!(pair[0].next_offset, pair[1].base_offset);
        assert!(pair[0].bytes <= 600);
    }
    assert_eq!(
        log.size_bytes(),
        segments.iter().map(|s| s.bytes).sum::<u64>()
    );
    assert_eq!(read_all(&log), expected);
    assert_eq!(log.epochs(), epoch_starts);
    // From every offset, in small steps, the same entries come back.
    for from in 0..expected.len() {
        let mut next = from as u64;
        let mut got = Vec::new();
        while next < log.log_end_offset() {
            let chunk = log.read(next, 3, usize::MAX).unwrap();
            assert!(!chunk.is_empty() && chunk.len() <= 3);
            next = chunk.last().unwrap().offset + 1;
            got.extend(chunk);
        }
        assert_eq!(got, expected[from..]);
    }
}

#[test]
fn reads_start_inside_batches_and_respect_limits() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), small_config(10_000, 64)).unwrap();
    append_n(&log, 1, 10, 100); // offsets 0..10, one batch
    append_n(&log, 1, 10, 100); // 10..20
    let got = log.read(7, 5, usize::MAX).unwrap();
    assert_eq!(
        got.iter().map(|e| e.offset).collect::<Vec<_>>(),
        vec![7, 8, 9, 10, 11]
    );
    assert_eq!(got[0].data, payload(7, 100));
    // max_bytes: whole entries while they fit, but always at least one.
    assert_eq!(log.read(3, 100, 0).unwrap().len(), 1);
    assert_eq!(log.read(3, 100, 250).unwrap().len(), 2);
    assert_eq!(log.read(3, 100, 300).unwrap().len(), 3);
    assert_eq!(log.read(3, 0, 300).unwrap().len(), 0);
    assert_eq!(log.read(19, 100, usize::MAX).unwrap().len(), 1);
    assert_eq!(log.read(20, 100, usize::MAX).unwrap(), vec![]);
    assert!(matches!(
        log.read(21, 1, 1),
        Err(LogError::OffsetOutOfRange { .. })
    ));
}

#[test]
fn appends_refuse_empty_batches_and_older_epochs() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), LogConfig::default()).unwrap();
    assert!(matches!(log.append(1, &[]), Err(LogError::EmptyBatch)));
    append_n(&log, 5, 2, 10);
    append_n(&log, 5, 2, 10);
    assert!(matches!(
        log.append(4, &[entry(0, payload(0, 1))]),
        Err(LogError::EpochRegression {
            epoch: 4,
            latest: 5
        })
    ));
    append_n(&log, 7, 1, 10);
    assert_eq!(log.epochs(), vec![(5, 0), (7, 4)]);
    assert_eq!(log.log_end_offset(), 5);
}

#[test]
fn reopen_after_drop_gives_the_same_log() {
    let dir = tempfile::tempdir().unwrap();
    let config = small_config(700, 100);
    let (before, segments, epochs) = {
        let log = Log::open(dir.path(), config.clone()).unwrap();
        for i in 0..40 {
            append_n(&log, i / 10, 1 + (i as usize % 3), 40);
        }
        log.flush().unwrap();
        (read_all(&log), log.segments(), log.epochs())
    };
    let log = Log::open(dir.path(), config.clone()).unwrap();
    assert_eq!(read_all(&log), before);
    let reopened = log.segments();
    assert_eq!(reopened.len(), segments.len());
    for (a, b) in reopened.iter().zip(&segments) {
        assert_eq!(
            (a.base_offset, a.next_offset, a.bytes, a.max_timestamp_ms),
            (b.base_offset, b.next_offset, b.bytes, b.max_timestamp_ms)
        );
    }
    assert_eq!(log.epochs(), epochs);
    // The log goes on where it stopped.
    let next = append_n(&log, 9, 2, 40);
    assert_eq!(next, before.len() as u64);
    drop(log);
    let log = Log::open(dir.path(), config).unwrap();
    assert_eq!(read_all(&log).len(), before.len() + 2);
    assert_eq!(log.latest_epoch(), Some(9));
}

#[test]
fn damaged_or_missing_index_files_are_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let config = small_config(2_000, 100);
    let (before, files) = {
        let log = Log::open(dir.path(), config.clone()).unwrap();
        for i in 0..50 {
            append_n(&log, 1, 1 + i % 4, 30);
        }
        log.flush().unwrap();
        (read_all(&log), dir_files(dir.path()))
    };
    let sealed: Vec<&String> = files.keys().filter(|n| n.ends_with("index")).collect();
    assert!(sealed.len() >= 4, "{sealed:?}");
    // Remove one, cut one, scramble one, zero a time index.
    std::fs::remove_file(dir.path().join(sealed[0])).unwrap();
    let cut = &files[sealed[1]];
    std::fs::write(dir.path().join(sealed[1]), &cut[..cut.len() - 5]).unwrap();
    let mut scrambled = files[sealed[2]].clone();
    scrambled.reverse();
    std::fs::write(dir.path().join(sealed[2]), scrambled).unwrap();
    std::fs::write(
        dir.path().join(sealed[3]),
        vec![0u8; files[sealed[3]].len()],
    )
    .unwrap();
    let log = Log::open(dir.path(), config).unwrap();
    assert_eq!(read_all(&log), before);
    for from in 0..before.len() as u64 {
        assert_eq!(log.read(from, 1, 1).unwrap()[0], before[from as usize]);
    }
    // Rebuilt files are identical to the ones the log wrote when rolling.
    assert_eq!(dir_files(dir.path()), files);
}

#[test]
fn an_old_segment_rolls_on_the_next_append() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        segment_age: Duration::ZERO,
        ..LogConfig::default()
    };
    let log = Log::open(dir.path(), config).unwrap();
    for _ in 0..3 {
        append_n(&log, 0, 2, 10);
    }
    let bases: Vec<u64> = log.segments().iter().map(|s| s.base_offset).collect();
    assert_eq!(bases, vec![0, 2, 4]);
}

#[test]
fn segments_roll_by_entry_count_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        segment_entries: Some(3),
        ..LogConfig::default()
    };
    let log = Log::open(dir.path(), config).unwrap();
    // Batches of 2: a batch that would take a segment past 3 entries
    // starts a new one; a batch of 5 gets one to itself.
    for _ in 0..3 {
        append_n(&log, 0, 2, 10);
    }
    append_n(&log, 0, 5, 10);
    append_n(&log, 0, 1, 10);
    let bounds: Vec<(u64, u64)> = log
        .segments()
        .iter()
        .map(|s| (s.base_offset, s.next_offset))
        .collect();
    assert_eq!(bounds, vec![(0, 2), (2, 4), (4, 6), (6, 11), (11, 12)]);
    // A segment that reaches the count rolls at once: an empty one follows.
    append_n(&log, 0, 2, 10);
    let last_two: Vec<(u64, u64)> = log.segments()[4..]
        .iter()
        .map(|s| (s.base_offset, s.next_offset))
        .collect();
    assert_eq!(last_two, vec![(11, 14), (14, 14)]);

    drop(log);
    let reopened = Log::open(
        dir.path(),
        LogConfig {
            segment_entries: Some(3),
            ..LogConfig::default()
        },
    )
    .unwrap();
    assert_eq!(reopened.log_end_offset(), 14);
    assert_eq!(reopened.segments().len(), 6);
    let zero = LogConfig {
        segment_entries: Some(0),
        ..LogConfig::default()
    };
    assert!(Log::open(dir.path(), zero).is_err());
}

#[test]
fn a_batch_larger_than_a_segment_gets_one_to_itself() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), small_config(100, 4096)).unwrap();
    append_n(&log, 0, 1, 10);
    append_n(&log, 0, 3, 200);
    append_n(&log, 0, 1, 10);
    let s = log.segments();
    assert_eq!(
        s.iter().map(|s| s.base_offset).collect::<Vec<_>>(),
        vec![0, 1, 4]
    );
    assert_eq!(read_all(&log).len(), 5);
}

#[test]
fn invalid_config_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    for config in [
        small_config(0, 1),
        small_config(1 << 33, 1),
        small_config(100, 0),
    ] {
        assert!(matches!(
            Log::open(dir.path(), config),
            Err(LogError::InvalidConfig(_))
        ));
    }
}

#[test]
fn flush_returns_a_growing_offset() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), small_config(300, 64)).unwrap();
    assert_eq!(log.flushed_offset(), 0);
    assert_eq!(log.flush().unwrap(), 0);
    let mut last = 0;
    for i in 0..20 {
        append_n(&log, 0, 1 + i % 3, 50);
        assert_eq!(log.flushed_offset(), last, "append alone does not flush");
        let flushed = log.flush().unwrap();
        assert_eq!(flushed, log.log_end_offset());
        assert!(flushed > last);
        last = flushed;
    }
    assert!(log.segments().len() > 3);
    assert_eq!(log.flush().unwrap(), last);
    // Truncation lowers it.
    log.truncate_to(log.segments()[1].base_offset).unwrap();
    assert_eq!(log.flushed_offset(), log.log_end_offset());
}

#[test]
fn offset_for_timestamp_with_non_monotonic_timestamps() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), small_config(400, 60)).unwrap();
    let timestamps = [10u64, 50, 20, 20, 5, 70, 60, 65, 100, 1, 2, 3, 100, 90];
    for ts in timestamps {
        log.append(0, &[entry(ts, payload(ts, 40))]).unwrap();
    }
    assert!(log.segments().len() > 2);
    let model = |t: u64| timestamps.iter().position(|&x| x >= t).map(|p| p as u64);
    for t in 0..=101 {
        assert_eq!(log.offset_for_timestamp(t).unwrap(), model(t), "ts {t}");
    }
}

/// One appended batch in the model: (epoch, [(timestamp, data length)]).
fn batches() -> impl Strategy<Value = Vec<(u32, Vec<(u64, usize)>)>> {
    prop::collection::vec(
        (
            0u32..3,
            prop::collection::vec((0u64..1000, 0usize..120), 1..6),
        ),
        1..40,
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Whatever the batch shapes, segment size and index density: every
    /// read returns exactly the model's entries, before and after reopening,
    /// and offset_for_timestamp agrees with a linear search.
    #[test]
    fn prop_round_trip_and_timestamp_lookup(
        shape in batches(),
        segment_bytes in 150u64..2000,
        interval in 1u64..500,
        probes in prop::collection::vec((0usize..200, 1usize..20, 0usize..800), 10),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let config = small_config(segment_bytes, interval);
        let log = Log::open(dir.path(), config.clone()).unwrap();
        let mut model: Vec<StoredEntry> = Vec::new();
        let mut epoch = 0;
        for (bump, entries) in shape {
            epoch += bump;
            let base = model.len() as u64;
            let batch: Vec<AppendEntry> = entries
                .iter()
                .enumerate()
                .map(|(i, &(ts, len))| entry(ts, payload(base + i as u64, len)))
                .collect();
            prop_assert_eq!(log.append(epoch, &batch).unwrap(), base);
            for (i, e) in batch.into_iter().enumerate() {
                model.push(StoredEntry { offset: base + i as u64, epoch, timestamp_ms: e.timestamp_ms, data: e.data });
            }
        }
        check_against_model(&log, &model, &probes)?;
        drop(log);
        let log = Log::open(dir.path(), config).unwrap();
        check_against_model(&log, &model, &probes)?;
    }
}

fn check_against_model(
    log: &Log,
    model: &[StoredEntry],
    probes: &[(usize, usize, usize)],
) -> Result<(), TestCaseError> {
    prop_assert_eq!(read_all(log), model.to_vec());
    for &(from, max_entries, max_bytes) in probes {
        let from = from % (model.len() + 1);
        let got = log.read(from as u64, max_entries, max_bytes).unwrap();
        let mut want = Vec::new();
        let mut bytes = 0;
        for e in &model[from..] {
            if want.len() == max_entries || (!want.is_empty() && bytes + e.data.len() > max_bytes) {
                break;
            }
            bytes += e.data.len();
            want.push(e.clone());
        }
        prop_assert_eq!(got, want);
    }
    for t in [0, 1, 250, 500, 998, 999, 1000] {
        let want = model.iter().find(|e| e.timestamp_ms >= t).map(|e| e.offset);
        prop_assert_eq!(log.offset_for_timestamp(t).unwrap(), want);
    }
    Ok(())
}
