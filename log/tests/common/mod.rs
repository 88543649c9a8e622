//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use magnetar_log::{AppendEntry, Log, LogConfig, StoredEntry, BATCH_HEADER_LEN, ENTRY_OVERHEAD};

/// Small segments and a dense index, so a few KiB exercise rolls and index
/// lookups.
pub fn small_config(segment_bytes: u64, index_interval_bytes: u64) -> LogConfig {
    LogConfig {
        segment_bytes,
        segment_age: Duration::from_secs(7 * 24 * 3600),
        index_interval_bytes,
        segment_entries: None,
    }
}

/// Deterministic payload for an offset, of length `len`.
pub fn payload(offset: u64, len: usize) -> Bytes {
    let mut v = Vec::with_capacity(len);
    for i in 0..len {
        v.push((offset as usize * 31 + i * 7) as u8);
    }
    Bytes::from(v)
}

pub fn entry(timestamp_ms: u64, data: Bytes) -> AppendEntry {
    AppendEntry { timestamp_ms, data }
}

/// Appends `count` entries starting at the log end, each `len` bytes, with
/// timestamp = offset; returns the base offset.
pub fn append_n(log: &Log, epoch: u32, count: usize, len: usize) -> u64 {
    let base = log.log_end_offset();
    let entries: Vec<_> = (0..count as u64)
        .map(|i| entry(base + i, payload(base + i, len)))
        .collect();
    assert_eq!(log.append(epoch, &entries).unwrap(), base);
    base
}

/// Size on disk of a batch of entries with these data lengths.
pub fn batch_len(lens: &[usize]) -> u64 {
    (BATCH_HEADER_LEN + lens.iter().map(|l| ENTRY_OVERHEAD + l).sum::<usize>()) as u64
}

pub fn read_all(log: &Log) -> Vec<StoredEntry> {
    log.read(log.log_start_offset(), usize::MAX, usize::MAX)
        .unwrap()
}

/// Every file in `dir` by name.
pub fn dir_files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().into_string().unwrap(),
                fs::read(e.path()).unwrap(),
            )
        })
        .collect()
}

pub fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for (name, bytes) in dir_files(from) {
        fs::write(to.join(name), bytes).unwrap();
    }
}

/// Path of the `.log` file of the last segment.
pub fn active_segment_path(log: &Log) -> std::path::PathBuf {
    let base = log.segments().last().unwrap().base_offset;
    log.dir().join(format!("{base:020}.log"))
}
