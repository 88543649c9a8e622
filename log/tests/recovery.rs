//! Recovery on open: torn tails, garbage, damaged sealed segments, the
//! epoch checkpoint and leftover files.

mod common;

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::Path;

use common::*;
use magnetar_log::{Log, LogConfig, LogError, StoredEntry};
use proptest::prelude::*;

/// A flushed log of several segments whose last batch (3 entries of 25
/// bytes, epoch 2) is in the active segment. Returns its entries and the
/// last batch's base offset.
fn build(dir: &Path, config: &LogConfig) -> (Vec<StoredEntry>, u64) {
    let log = Log::open(dir, config.clone()).unwrap();
    for i in 0..30 {
        append_n(&log, 1, 1 + i % 3, 25);
    }
    let last = append_n(&log, 2, 3, 25);
    log.flush().unwrap();
    assert!(log.segments().len() > 2);
    assert!(log.segments().last().unwrap().base_offset < last);
    (read_all(&log), last)
}

#[test]
fn a_tail_cut_at_every_byte_of_the_last_batch_loses_only_that_batch() {
    let config = small_config(500, 64);
    let original = tempfile::tempdir().unwrap();
    let (entries, last_base) = build(original.path(), &config);
    let active = {
        let log = Log::open(original.path(), config.clone()).unwrap();
        active_segment_path(&log)
    };
    let len = fs::metadata(&active).unwrap().len();
    let last_start = len - batch_len(&[25, 25, 25]);
    for cut in last_start..len {
        let dir = tempfile::tempdir().unwrap();
        copy_dir(original.path(), dir.path());
        let file = dir.path().join(active.file_name().unwrap());
        OpenOptions::new()
            .write(true)
            .open(&file)
            .unwrap()
            .set_len(cut)
            .unwrap();
        let log = Log::open(dir.path(), config.clone()).unwrap();
        assert_eq!(log.log_end_offset(), last_base, "cut at {cut}");
        assert_eq!(
            read_all(&log),
            entries[..last_base as usize],
            "cut at {cut}"
        );
        assert_eq!(fs::metadata(&file).unwrap().len(), last_start);
        // The epoch that began in the lost batch is forgotten, so the old
        // leader's epoch may append again.
        assert_eq!(log.epochs(), vec![(1, 0)]);
        append_n(&log, 1, 1, 5);
        drop(log);
        let log = Log::open(dir.path(), config.clone()).unwrap();
        assert_eq!(log.log_end_offset(), last_base + 1);
    }
}

/// A sealed segment whose tail was lost (writeback of an older segment that
/// never reached the disk, while a newer one did): the log ends inside it.
#[test]
fn a_sealed_segment_with_a_lost_tail_ends_the_log_there() {
    let config = small_config(500, 64);
    let dir = tempfile::tempdir().unwrap();
    let (entries, _) = build(dir.path(), &config);
    let segments = Log::open(dir.path(), config.clone()).unwrap().segments();
    let victim = &segments[1];
    let path = dir.path().join(format!("{:020}.log", victim.base_offset));
    let len = fs::metadata(&path).unwrap().len();
    OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    let log = Log::open(dir.path(), config.clone()).unwrap();
    let survivors = read_all(&log);
    assert!(survivors.len() as u64 > victim.base_offset);
    assert!((survivors.len() as u64) < victim.next_offset);
    assert_eq!(survivors, entries[..survivors.len()]);
    assert_eq!(log.segments().len(), 2);
    assert_eq!(log.epochs(), vec![(1, 0)]);
    let names: Vec<String> = dir_files(dir.path()).into_keys().collect();
    let later = format!("{:020}", segments[2].base_offset);
    assert!(names.iter().all(|n| !n.starts_with(&later)), "{names:?}");
    // Segment 1 is active again: no index files, and it takes appends.
    assert!(!names.contains(&format!("{:020}.index", victim.base_offset)));
    let end = log.log_end_offset();
    assert_eq!(append_n(&log, 1, 2, 10), end);
    drop(log);
    let log = Log::open(dir.path(), config).unwrap();
    assert_eq!(log.log_end_offset(), end + 2);
}

/// Sealed segments are not rescanned on open (only their tails are), so a
/// flipped bit in the middle of one is found by the read that meets it:
/// an error, never wrong data.
#[test]
fn a_flipped_bit_in_a_sealed_segment_is_reported_by_reads() {
    let config = small_config(500, 64);
    let dir = tempfile::tempdir().unwrap();
    let (entries, _) = build(dir.path(), &config);
    let segments = Log::open(dir.path(), config.clone()).unwrap().segments();
    let victim = &segments[1];
    let path = dir.path().join(format!("{:020}.log", victim.base_offset));
    let mut bytes = fs::read(&path).unwrap();
    bytes[40] ^= 0x10; // inside the segment's first batch
    fs::write(&path, &bytes).unwrap();
    let log = Log::open(dir.path(), config).unwrap();
    assert_eq!(log.log_end_offset(), entries.len() as u64);
    let err = log.read(victim.base_offset, 1, 1).unwrap_err();
    assert!(matches!(err, LogError::Corrupt { .. }), "{err:?}");
    assert!(matches!(
        log.read_raw(victim.base_offset, 1),
        Err(LogError::Corrupt { .. })
    ));
    // Everything before it still reads.
    let before = log
        .read(0, victim.base_offset as usize, usize::MAX)
        .unwrap();
    assert_eq!(before, entries[..victim.base_offset as usize]);
}

#[test]
fn a_missing_or_damaged_checkpoint_is_rebuilt_from_batches() {
    let config = small_config(300, 64);
    let dir = tempfile::tempdir().unwrap();
    let epochs = {
        let log = Log::open(dir.path(), config.clone()).unwrap();
        for epoch in [1, 1, 3, 3, 3, 4, 7, 7] {
            append_n(&log, epoch, 3, 30);
        }
        log.epochs()
    };
    assert_eq!(epochs, vec![(1, 0), (3, 6), (4, 15), (7, 18)]);
    let checkpoint = dir.path().join("leader-epoch-checkpoint");
    for damage in [None, Some("garbage"), Some("0\n2\n1 0\n")] {
        match damage {
            None => fs::remove_file(&checkpoint).unwrap(),
            Some(text) => fs::write(&checkpoint, text).unwrap(),
        }
        let log = Log::open(dir.path(), config.clone()).unwrap();
        assert_eq!(log.epochs(), epochs, "{damage:?}");
        assert_eq!(log.end_offset_for_epoch(3), Some((3, 15)));
    }
    // A checkpoint claiming an epoch past the log end is cut back.
    fs::write(&checkpoint, "0\n5\n1 0\n3 6\n4 15\n7 18\n9 100\n").unwrap();
    let log = Log::open(dir.path(), config).unwrap();
    assert_eq!(log.epochs(), epochs);
}

#[test]
fn leftover_files_are_removed_and_strangers_kept() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = Log::open(dir.path(), LogConfig::default()).unwrap();
        append_n(&log, 0, 3, 10);
    }
    for name in [
        "00000000000000000000.log.deleted",
        "leader-epoch-checkpoint.tmp",
        "00000000000000099999.index",
        "00000000000000099999.timeindex",
        "00000000000000000000.index",
        "notes.txt",
    ] {
        fs::write(dir.path().join(name), b"x").unwrap();
    }
    let log = Log::open(dir.path(), LogConfig::default()).unwrap();
    assert_eq!(read_all(&log).len(), 3);
    let names: Vec<String> = dir_files(dir.path()).into_keys().collect();
    assert_eq!(
        names,
        vec![
            "00000000000000000000.log",
            "leader-epoch-checkpoint",
            "notes.txt"
        ]
    );
}

/// (start position, end position, base offset) of each batch appended to
/// the active segment, for a log built from `sizes`.
fn build_active(dir: &Path, config: &LogConfig, sizes: &[(usize, usize)]) -> Vec<(u64, u64, u64)> {
    let log = Log::open(dir, config.clone()).unwrap();
    let mut batches = Vec::new();
    for &(count, len) in sizes {
        let before = log.segments().last().unwrap().clone();
        let base = append_n(&log, 0, count, len);
        let after = log.segments().last().unwrap().clone();
        if after.base_offset != before.base_offset {
            batches.clear();
        }
        let start = if after.base_offset == before.base_offset {
            before.bytes
        } else {
            0
        };
        batches.push((start, after.bytes, base));
    }
    batches
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Garbage after the last batch is cut off; nothing before is lost.
    #[test]
    fn prop_garbage_appended_to_the_tail_is_dropped(
        sizes in prop::collection::vec((1usize..4, 0usize..60), 1..15),
        garbage in prop::collection::vec(any::<u8>(), 1..300),
    ) {
        let config = small_config(400, 50);
        let dir = tempfile::tempdir().unwrap();
        build_active(dir.path(), &config, &sizes);
        let (entries, active) = {
            let log = Log::open(dir.path(), config.clone()).unwrap();
            (read_all(&log), active_segment_path(&log))
        };
        let len = fs::metadata(&active).unwrap().len();
        OpenOptions::new().append(true).open(&active).unwrap().write_all(&garbage).unwrap();
        let log = Log::open(dir.path(), config).unwrap();
        prop_assert_eq!(read_all(&log), entries);
        prop_assert_eq!(fs::metadata(&active).unwrap().len(), len);
    }

    /// Bytes overwritten inside the active segment lose the batch they hit
    /// and everything after it, nothing before.
    #[test]
    fn prop_overwritten_bytes_lose_only_the_hit_batch_and_later(
        sizes in prop::collection::vec((1usize..4, 0usize..60), 1..15),
        hit in any::<prop::sample::Index>(),
        at in any::<prop::sample::Index>(),
        noise in prop::collection::vec(1u8..=255, 1..40),
    ) {
        let config = small_config(600, 50);
        let dir = tempfile::tempdir().unwrap();
        let batches = build_active(dir.path(), &config, &sizes);
        let (entries, active) = {
            let log = Log::open(dir.path(), config.clone()).unwrap();
            (read_all(&log), active_segment_path(&log))
        };
        let (start, end, base) = batches[hit.index(batches.len())];
        let pos = start + at.index((end - start) as usize) as u64;
        let mut bytes = fs::read(&active).unwrap();
        for (i, n) in noise.iter().enumerate() {
            let p = pos as usize + i;
            if p < bytes.len() {
                bytes[p] ^= n;
            } else {
                bytes.push(*n);
            }
        }
        fs::write(&active, &bytes).unwrap();
        let log = Log::open(dir.path(), config).unwrap();
        prop_assert_eq!(log.log_end_offset(), base);
        prop_assert_eq!(read_all(&log), entries[..base as usize].to_vec());
        prop_assert_eq!(fs::metadata(&active).unwrap().len(), start);
    }
}
