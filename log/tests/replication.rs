//! The follower's side: raw batches between logs, hostile input,
//! truncation and the epoch cache (KIP-101/279).

mod common;

use common::*;
use magnetar_log::{BatchError, Log, LogConfig, LogError, BATCH_HEADER_LEN};
use proptest::prelude::*;

/// Copies the leader's log to the follower batch by batch, `max_bytes` per
/// fetch, as replication does.
fn replicate(leader: &Log, follower: &Log, max_bytes: usize) {
    loop {
        let from = follower.log_end_offset();
        let raw = leader.read_raw(from, max_bytes).unwrap();
        if raw.data.is_empty() {
            assert_eq!(from, leader.log_end_offset());
            return;
        }
        assert_eq!(raw.first_offset, from);
        assert_eq!(follower.append_raw(&raw.data).unwrap(), raw.next_offset);
    }
}

fn leader_with_history(dir: &std::path::Path, config: &LogConfig) -> Log {
    let log = Log::open(dir, config.clone()).unwrap();
    for i in 0..40u32 {
        append_n(
            &log,
            i / 8,
            1 + (i as usize % 4),
            10 + (i as usize * 7) % 50,
        );
    }
    log
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(16))]

    /// A follower fed read_raw output ends up with the same files, byte for
    /// byte (segments, indexes and epoch checkpoint).
    #[test]
    fn prop_append_raw_of_read_raw_reproduces_the_log(
        max_bytes in 0usize..1500,
        segment_bytes in 200u64..1500,
    ) {
        let config = small_config(segment_bytes, 90);
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let leader = leader_with_history(a.path(), &config);
        let follower = Log::open(b.path(), config.clone()).unwrap();
        replicate(&leader, &follower, max_bytes);
        prop_assert_eq!(read_all(&follower), read_all(&leader));
        prop_assert_eq!(follower.epochs(), leader.epochs());
        leader.flush().unwrap();
        follower.flush().unwrap();
        prop_assert_eq!(dir_files(b.path()), dir_files(a.path()));
    }
}

#[test]
fn read_raw_starts_at_the_batch_holding_the_offset() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), LogConfig::default()).unwrap();
    append_n(&log, 1, 5, 10);
    append_n(&log, 1, 5, 10);
    let raw = log.read_raw(7, 1).unwrap();
    assert_eq!((raw.first_offset, raw.next_offset), (5, 10));
    assert_eq!(raw.data.len() as u64, batch_len(&[10; 5]));
    let raw = log.read_raw(0, usize::MAX).unwrap();
    assert_eq!((raw.first_offset, raw.next_offset), (0, 10));
    let raw = log.read_raw(10, usize::MAX).unwrap();
    assert!(raw.data.is_empty());
    assert!(matches!(
        log.read_raw(11, 1),
        Err(LogError::OffsetOutOfRange { .. })
    ));
}

/// A valid raw batch of one entry at `base` in `epoch`, taken from a
/// scratch log.
fn raw_batch(base: u64, epoch: u32) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), LogConfig::default()).unwrap();
    log.truncate_fully_and_start_at(base).unwrap();
    log.append(epoch, &[entry(1, payload(base, 20))]).unwrap();
    log.read_raw(base, usize::MAX).unwrap().data.to_vec()
}

fn set_crc(batch: &mut [u8]) {
    let crc = crc32c::crc32c(&batch[4..]);
    batch[..4].copy_from_slice(&crc.to_be_bytes());
}

/// Whether an error is the one a bad input deserves.
type ErrorCheck = fn(&LogError) -> bool;

#[test]
fn append_raw_refuses_bad_input_and_changes_nothing() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let config = small_config(400, 64);
    let leader = leader_with_history(a.path(), &config);
    let follower = Log::open(b.path(), config.clone()).unwrap();
    replicate(&leader, &follower, 300);
    follower.flush().unwrap();
    let end = follower.log_end_offset();
    let epoch = follower.latest_epoch().unwrap();
    let files = dir_files(b.path());

    let good = raw_batch(end, epoch);
    let mut bad_crc = good.clone();
    bad_crc[BATCH_HEADER_LEN + 14] ^= 1;
    let mut huge_payload = good.clone();
    huge_payload[29..33].copy_from_slice(&u32::MAX.to_be_bytes());
    set_crc(&mut huge_payload);
    let mut huge_count = good.clone();
    huge_count[17..21].copy_from_slice(&u32::MAX.to_be_bytes());
    set_crc(&mut huge_count);
    let mut huge_entry = good.clone();
    huge_entry[BATCH_HEADER_LEN + 8..BATCH_HEADER_LEN + 12]
        .copy_from_slice(&u32::MAX.to_be_bytes());
    set_crc(&mut huge_entry);
    let mut bad_magic = good.clone();
    bad_magic[4] = 9;
    set_crc(&mut bad_magic);
    // A good batch followed by a bad one: all or nothing.
    let mut good_then_bad = good.clone();
    good_then_bad.extend_from_slice(&raw_batch(end + 1, epoch)[..20]);

    let cases: Vec<(&str, Vec<u8>, ErrorCheck)> = vec![
        ("crc", bad_crc, |e| {
            matches!(
                e,
                LogError::InvalidBatch {
                    source: BatchError::Crc { .. },
                    ..
                }
            )
        }),
        ("payload length", huge_payload, |e| {
            matches!(
                e,
                LogError::InvalidBatch {
                    source: BatchError::Incomplete { .. },
                    ..
                }
            )
        }),
        ("entry count", huge_count, |e| {
            matches!(
                e,
                LogError::InvalidBatch {
                    source: BatchError::Malformed(_),
                    ..
                }
            )
        }),
        ("entry length", huge_entry, |e| {
            matches!(
                e,
                LogError::InvalidBatch {
                    source: BatchError::Malformed(_),
                    ..
                }
            )
        }),
        ("magic", bad_magic, |e| {
            matches!(
                e,
                LogError::InvalidBatch {
                    source: BatchError::UnknownMagic(9),
                    ..
                }
            )
        }),
        ("cut", good[..good.len() - 1].to_vec(), |e| {
            matches!(e, LogError::InvalidBatch { position: 0, .. })
        }),
        (
            "cut second",
            good_then_bad,
            |e| matches!(e, LogError::InvalidBatch { position, .. } if *position > 0),
        ),
        ("offset ahead", raw_batch(end + 1, epoch), |e| {
            matches!(e, LogError::OffsetMismatch { .. })
        }),
        ("offset behind", raw_batch(end - 1, epoch), |e| {
            matches!(e, LogError::OffsetMismatch { .. })
        }),
        ("epoch regression", raw_batch(end, epoch - 1), |e| {
            matches!(e, LogError::EpochRegression { .. })
        }),
        ("garbage", vec![0xAB; 500], |e| {
            matches!(e, LogError::InvalidBatch { .. })
        }),
    ];
    for (name, input, expected) in cases {
        let err = follower.append_raw(&input).unwrap_err();
        assert!(expected(&err), "{name}: {err:?}");
        assert_eq!(follower.log_end_offset(), end, "{name}");
    }
    follower.flush().unwrap();
    assert_eq!(dir_files(b.path()), files);
    // And the good batch still goes in.
    assert_eq!(follower.append_raw(&good).unwrap(), end + 1);
    assert_eq!(follower.append_raw(&[]).unwrap(), end + 1);
}

#[test]
fn truncate_to_drops_the_tail_and_its_epochs() {
    let dir = tempfile::tempdir().unwrap();
    let config = small_config(300, 64);
    let log = Log::open(dir.path(), config.clone()).unwrap();
    for epoch in [1, 1, 1, 2, 2, 4, 4, 4, 6] {
        append_n(&log, epoch, 3, 30);
    }
    assert_eq!(log.epochs(), vec![(1, 0), (2, 9), (4, 15), (6, 24)]);
    assert!(log.segments().len() >= 4);
    // KIP-279 answers.
    assert_eq!(log.end_offset_for_epoch(0), None);
    assert_eq!(log.end_offset_for_epoch(3), Some((2, 15)));
    assert_eq!(log.end_offset_for_epoch(6), Some((6, 27)));
    assert_eq!(log.end_offset_for_epoch(9), Some((6, 27)));
    // Only batch boundaries.
    assert!(matches!(
        log.truncate_to(16),
        Err(LogError::NotBatchBoundary {
            offset: 16,
            batch_base: 15,
            batch_next: 18
        })
    ));
    assert_eq!(log.log_end_offset(), 27);
    log.truncate_to(30).unwrap();
    assert_eq!(log.log_end_offset(), 27);
    // A follower told that epoch 3 ended at 15 truncates there.
    let (_, end) = log.end_offset_for_epoch(3).unwrap();
    log.truncate_to(end).unwrap();
    assert_eq!(log.log_end_offset(), 15);
    assert_eq!(log.epochs(), vec![(1, 0), (2, 9)]);
    assert_eq!(read_all(&log).len(), 15);
    assert!(log.segments().iter().all(|s| s.next_offset <= 15));
    // A lower epoch than the dropped ones may now append.
    append_n(&log, 3, 2, 30);
    assert_eq!(log.epochs(), vec![(1, 0), (2, 9), (3, 15)]);
    let entries = read_all(&log);
    assert_eq!(entries.len(), 17);
    assert_eq!(entries[16].epoch, 3);
    drop(log);
    let log = Log::open(dir.path(), config.clone()).unwrap();
    assert_eq!(read_all(&log), entries);
    assert_eq!(log.epochs(), vec![(1, 0), (2, 9), (3, 15)]);
    // Truncating to a segment's base empties it but keeps it active.
    let second = log.segments()[1].base_offset;
    log.truncate_to(second).unwrap();
    assert_eq!(log.segments().len(), 2);
    assert_eq!(log.segments()[1].bytes, 0);
    assert_eq!(read_all(&log), entries[..second as usize]);
    append_n(&log, 5, 1, 1);
    // Truncating to the log start empties the log.
    log.truncate_to(0).unwrap();
    assert_eq!((log.log_start_offset(), log.log_end_offset()), (0, 0));
    assert_eq!(log.epochs(), vec![]);
    drop(log);
    let log = Log::open(dir.path(), config).unwrap();
    assert_eq!((log.log_start_offset(), log.log_end_offset()), (0, 0));
}

#[test]
fn truncate_fully_and_start_at_moves_the_whole_log() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), small_config(300, 64)).unwrap();
    append_n(&log, 1, 10, 30);
    log.truncate_fully_and_start_at(1000).unwrap();
    assert_eq!((log.log_start_offset(), log.log_end_offset()), (1000, 1000));
    assert!(matches!(
        log.read(0, 1, 1),
        Err(LogError::OffsetOutOfRange { .. })
    ));
    assert_eq!(append_n(&log, 1, 2, 5), 1000);
    assert_eq!(log.epochs(), vec![(1, 1000)]);
    let names: Vec<String> = dir_files(dir.path()).into_keys().collect();
    assert_eq!(
        names,
        vec!["00000000000000001000.log", "leader-epoch-checkpoint"]
    );
}

#[test]
fn follower_diverges_truncates_and_converges() {
    // Leader and follower share epoch 1; the follower then has an epoch-2
    // tail the new leader (epoch 3) never saw.
    let config = small_config(400, 64);
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let leader = Log::open(a.path(), config.clone()).unwrap();
    let follower = Log::open(b.path(), config.clone()).unwrap();
    for _ in 0..5 {
        append_n(&leader, 1, 2, 20);
    }
    replicate(&leader, &follower, 1000);
    append_n(&follower, 2, 3, 20);
    append_n(&leader, 3, 4, 20);
    // KIP-101: ask the leader where our latest epoch ended, truncate there.
    let latest = follower.latest_epoch().unwrap();
    let (epoch, end) = leader.end_offset_for_epoch(latest).unwrap();
    assert_eq!((epoch, end), (1, 10));
    follower.truncate_to(end).unwrap();
    replicate(&leader, &follower, 1000);
    assert_eq!(read_all(&follower), read_all(&leader));
    assert_eq!(follower.epochs(), vec![(1, 0), (3, 10)]);
}
