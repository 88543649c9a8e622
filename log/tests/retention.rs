//! Retention: deleting whole old segments.

mod common;

use common::*;
use magnetar_log::{Log, LogConfig, LogError};

#[test]
fn delete_segments_before_keeps_the_active_segment_and_moves_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let config = small_config(300, 64);
    let log = Log::open(dir.path(), config.clone()).unwrap();
    for epoch in [1, 1, 2, 2, 2, 3] {
        append_n(&log, epoch, 3, 30); // one batch per segment
    }
    let before = read_all(&log);
    let segments = log.segments();
    assert_eq!(segments.len(), 6);
    // Nothing is entirely below offset 2.
    assert_eq!(log.delete_segments_before(2).unwrap(), vec![]);
    // Offset 7 is inside the third segment: only the first two go.
    let deleted = log.delete_segments_before(7).unwrap();
    assert_eq!(deleted, segments[..2]);
    assert_eq!(log.log_start_offset(), 6);
    assert_eq!(read_all(&log), before[6..]);
    assert!(matches!(
        log.read(5, 1, 1),
        Err(LogError::OffsetOutOfRange {
            offset: 5,
            start: 6,
            end: 18
        })
    ));
    assert_eq!(log.epochs(), vec![(2, 6), (3, 15)]);
    // Past the log end: everything but the active segment.
    let deleted = log.delete_segments_before(u64::MAX).unwrap();
    assert_eq!(deleted.len(), 3);
    assert_eq!(log.segments(), segments[5..]);
    assert_eq!(log.log_start_offset(), 15);
    assert_eq!(log.epochs(), vec![(3, 15)]);
    assert_eq!(log.delete_segments_before(u64::MAX).unwrap(), vec![]);
    log.flush().unwrap();
    let names: Vec<String> = dir_files(dir.path()).into_keys().collect();
    assert_eq!(
        names,
        vec!["00000000000000000015.log", "leader-epoch-checkpoint"]
    );
    // Reopening agrees, including the epoch cache (its checkpoint was
    // not rewritten: open cuts it to the log start).
    drop(log);
    let log = Log::open(dir.path(), config.clone()).unwrap();
    assert_eq!(log.log_start_offset(), 15);
    assert_eq!(read_all(&log), before[15..]);
    assert_eq!(log.epochs(), vec![(3, 15)]);
    assert_eq!(log.offset_for_timestamp(0).unwrap(), Some(15));
    // A follower truncating below the log start restarts there.
    log.truncate_to(4).unwrap();
    assert_eq!((log.log_start_offset(), log.log_end_offset()), (4, 4));
    assert_eq!(log.epochs(), vec![]);
    assert_eq!(append_n(&log, 7, 1, 1), 4);
}

#[test]
fn readers_keep_reading_segments_deleted_under_them() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), small_config(300, 64)).unwrap();
    for _ in 0..6 {
        append_n(&log, 1, 3, 30);
    }
    let raw = log.read_raw(0, 100).unwrap();
    log.delete_segments_before(100).unwrap();
    // Bytes read before deletion stay valid; a new read is refused.
    assert_eq!(raw.next_offset, 3);
    assert!(matches!(
        log.read_raw(0, 100),
        Err(LogError::OffsetOutOfRange { .. })
    ));
    let dir_b = tempfile::tempdir().unwrap();
    let follower = Log::open(dir_b.path(), small_config(300, 64)).unwrap();
    assert_eq!(follower.append_raw(&raw.data).unwrap(), 3);
}

#[test]
fn delete_removes_the_directory() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("topic-0");
    let log = Log::open(&path, small_config(300, 64)).unwrap();
    append_n(&log, 1, 3, 30);
    assert!(path.exists());
    log.delete().unwrap();
    assert!(!path.exists());
}

#[test]
fn reads_after_deleting_segments_rolled_by_entry_count() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        segment_entries: Some(10),
        ..LogConfig::default()
    };
    let log = Log::open(dir.path(), config).unwrap();
    for _ in 0..20 {
        common::append_n(&log, 0, 1, 10);
    }
    let deleted = log.delete_segments_before(10).unwrap();
    assert_eq!(deleted.len(), 1);
    assert_eq!(log.log_start_offset(), 10);
    for from in 10..20 {
        let read = log.read(from, 1, 1 << 20).unwrap();
        assert_eq!(read.first().map(|e| e.offset), Some(from));
    }
}
