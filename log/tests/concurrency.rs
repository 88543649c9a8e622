//! Readers, a flusher and a writer at once: readers always see a prefix of
//! the log, in order, and flushed offsets only grow.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;

use common::*;
use magnetar_log::Log;

const BATCHES: u64 = 1500;

#[test]
fn readers_see_a_growing_prefix_while_a_writer_appends() {
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(Log::open(dir.path(), small_config(2000, 200)).unwrap());
    let done = Arc::new(AtomicBool::new(false));

    let writer = {
        let log = log.clone();
        thread::spawn(move || {
            for i in 0..BATCHES {
                append_n(
                    &log,
                    (i / 500) as u32,
                    1 + (i % 3) as usize,
                    (i % 40) as usize,
                );
            }
        })
    };
    let reader = |step: usize| {
        let (log, done) = (log.clone(), done.clone());
        thread::spawn(move || {
            let mut seen = 0u64;
            let mut rounds = 0;
            while !done.load(Ordering::Acquire) || seen < log.log_end_offset() {
                let end_before = log.log_end_offset();
                let got = log.read(0, usize::MAX, usize::MAX).unwrap();
                let n = got.len() as u64;
                assert!(n >= end_before && n >= seen, "read shrank: {n} < {seen}");
                for (i, e) in got.iter().enumerate() {
                    assert_eq!(e.offset, i as u64);
                    assert_eq!(e.timestamp_ms, e.offset);
                    assert_eq!(e.data, payload(e.offset, e.data.len()));
                }
                // Small reads walking forward from a random-ish point.
                let mut next = (seen / 2).min(n);
                while next < n {
                    let chunk = log.read(next, step, 300).unwrap();
                    assert!(!chunk.is_empty());
                    for (i, e) in chunk.iter().enumerate() {
                        assert_eq!(e.offset, next + i as u64);
                    }
                    next += chunk.len() as u64;
                }
                seen = n;
                rounds += 1;
            }
            rounds
        })
    };
    let readers: Vec<_> = [1, 7, 64].into_iter().map(reader).collect();
    let flusher = {
        let (log, done) = (log.clone(), done.clone());
        thread::spawn(move || {
            let mut last = 0;
            while !done.load(Ordering::Acquire) {
                let end_before = log.log_end_offset();
                let flushed = log.flush().unwrap();
                assert!(flushed >= last && flushed >= end_before);
                last = flushed;
            }
        })
    };
    let follower_dir = tempfile::tempdir().unwrap();
    let replicator = {
        let (log, done) = (log.clone(), done.clone());
        let follower = Log::open(follower_dir.path(), small_config(2000, 200)).unwrap();
        thread::spawn(move || {
            while !done.load(Ordering::Acquire) || follower.log_end_offset() < log.log_end_offset()
            {
                let raw = log.read_raw(follower.log_end_offset(), 700).unwrap();
                follower.append_raw(&raw.data).unwrap();
            }
            follower
        })
    };
    writer.join().unwrap();
    done.store(true, Ordering::Release);
    for r in readers {
        assert!(r.join().unwrap() > 0);
    }
    flusher.join().unwrap();
    let follower = replicator.join().unwrap();
    assert_eq!(read_all(&follower), read_all(&log));
    assert!(log.segments().len() > 10);
    assert_eq!(log.flush().unwrap(), log.log_end_offset());
}
