//! Opening a log directory: finding its segments, cutting the active one at
//! its first torn or corrupt batch, trusting a sealed segment's index files
//! only when a scan of its tail agrees with them, and making the epoch cache
//! match the batches that survived.
//!
//! Recovery only ever removes bytes that cannot be read back as a contiguous
//! log; it never invents data, and it logs every byte it drops.

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;
use std::sync::Arc;

use crate::epoch::{sync_dir, EpochCache};
use crate::index::SegmentIndex;
use crate::log::{SegmentState, State};
use crate::segment::{self, created_ms, file_path, scan, FileKind, SegmentFile};
use crate::{LogConfig, LogError, BATCH_HEADER_LEN, ENTRY_OVERHEAD};

/// Temporary or doomed files a crash may leave behind.
const STRAY_SUFFIXES: [&str; 2] = [".tmp", ".deleted"];

pub(crate) fn recover(dir: &Path, config: &LogConfig) -> Result<State, LogError> {
    fs::create_dir_all(dir).map_err(|e| LogError::io(dir, e))?;
    let (bases, mut dir_changed) = list(dir)?;
    let mut segments = Vec::new();
    let mut active_epochs = Vec::new();
    if bases.is_empty() {
        segments.push(new_state(segment::create(dir, 0)?));
        dir_changed = true;
    }
    for (i, &base) in bases.iter().enumerate() {
        let seg = segment::open(dir, base)?;
        if let Some(&next_base) = bases.get(i + 1) {
            if let Some((len, index)) = recover_sealed(dir, &seg, next_base, config)? {
                segments.push(sealed_state(seg, len, next_base, index));
                continue;
            }
            tracing::error!(
                dir = %dir.display(),
                segment = base,
                next_segment = next_base,
                later_segments = bases.len() - i - 1,
                "segment does not end where the next begins: the log now ends in it; deleting the later segments"
            );
            for &later in &bases[i + 1..] {
                segment::remove_files(dir, later)?;
            }
            dir_changed = true;
        }
        let (state, epochs) = recover_active(dir, seg, config)?;
        segments.push(state);
        active_epochs = epochs;
        break;
    }
    if dir_changed {
        sync_dir(dir)?;
    }
    let mut state = State {
        segments,
        epochs: EpochCache::default(),
        dir_unsynced: false,
        index_unsynced: Vec::new(),
    };
    state.epochs = recover_epochs(dir, &state, &active_epochs)?;
    Ok(state)
}

/// Segment base offsets in `dir`; removes stray and orphaned files. Returns
/// whether anything was removed.
fn list(dir: &Path) -> Result<(Vec<u64>, bool), LogError> {
    let mut logs = BTreeSet::new();
    let mut indexes = Vec::new();
    let mut removed = false;
    let entries = fs::read_dir(dir).map_err(|e| LogError::io(dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| LogError::io(dir, e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if STRAY_SUFFIXES.iter().any(|s| name.ends_with(s)) {
            tracing::info!(dir = %dir.display(), file = name, "removing leftover file");
            segment::remove_if_present(&entry.path())?;
            removed = true;
            continue;
        }
        match segment::parse_name(name) {
            Some((base, FileKind::Log)) => {
                logs.insert(base);
            }
            Some((base, _)) => indexes.push((base, entry.path())),
            None => {}
        }
    }
    for (base, path) in indexes {
        if !logs.contains(&base) {
            segment::remove_if_present(&path)?;
            removed = true;
        }
    }
    Ok((logs.into_iter().collect(), removed))
}

fn new_state(seg: SegmentFile) -> SegmentState {
    SegmentState {
        created_ms: created_ms(&seg.file),
        next_offset: seg.base,
        seg: Arc::new(seg),
        bytes: 0,
        index: SegmentIndex::default(),
        unsynced: false,
    }
}

fn file_len(seg: &SegmentFile) -> Result<u64, LogError> {
    seg.file
        .metadata()
        .map(|m| m.len())
        .map_err(|e| LogError::io(&seg.path, e))
}

/// Reads an index file no larger than `max` bytes; None when missing or
/// too large to belong to the segment.
fn read_bounded(path: &Path, max: u64) -> Result<Option<Vec<u8>>, LogError> {
    match fs::metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(LogError::io(path, e)),
        Ok(m) if m.len() > max => Ok(None),
        Ok(_) => fs::read(path).map(Some).map_err(|e| LogError::io(path, e)),
    }
}

/// A sealed segment must hold exactly the offsets up to `next_base` in
/// whole, valid batches. Uses its index files if a scan of the segment's
/// tail (from the last indexed batch) agrees with them, else rebuilds them
/// from a full scan. Returns its length and index; None if the segment
/// itself is damaged or short.
fn recover_sealed(
    dir: &Path,
    seg: &SegmentFile,
    next_base: u64,
    config: &LogConfig,
) -> Result<Option<(u64, SegmentIndex)>, LogError> {
    let base = seg.base;
    let Some(end_rel) = next_base
        .checked_sub(base)
        .and_then(|n| u32::try_from(n).ok())
        .filter(|&n| n > 0)
    else {
        return Ok(None);
    };
    let len = file_len(seg)?;
    let interval = config.index_interval_bytes;
    let max_entries = len / (BATCH_HEADER_LEN + ENTRY_OVERHEAD) as u64 + 2;
    let offsets = read_bounded(&file_path(dir, base, FileKind::Index), max_entries * 8)?;
    let times = read_bounded(&file_path(dir, base, FileKind::TimeIndex), max_entries * 12)?;
    let loaded = match (offsets, times) {
        (Some(o), Some(t)) => SegmentIndex::decode_sealed(&o, &t, len, end_rel),
        _ => None,
    };
    if let Some(mut index) = loaded {
        let sealed_max = index.max_timestamp();
        let entries = index.offset_entries();
        let (pos, rel) = index.rewind(u64::MAX);
        let end = scan(seg, pos, len, base + u64::from(rel), true, |p, h| {
            index.observe(
                p,
                (h.base_offset - base) as u32,
                h.max_timestamp_ms,
                interval,
            )
        })?;
        if end.corrupt.is_none()
            && end.next_offset == next_base
            && index.max_timestamp() == sealed_max
        {
            index.seal(end_rel);
            if index.offset_entries() != entries {
                segment::write_index_files(dir, base, &index)?;
                sync_index_files(dir, base)?;
            }
            return Ok(Some((len, index)));
        }
        tracing::warn!(dir = %dir.display(), segment = base, "index files disagree with the segment; rebuilding");
    }
    let mut index = SegmentIndex::default();
    let end = scan(seg, 0, len, base, true, |p, h| {
        index.observe(
            p,
            (h.base_offset - base) as u32,
            h.max_timestamp_ms,
            interval,
        )
    })?;
    if end.corrupt.is_some() || end.next_offset != next_base {
        return Ok(None);
    }
    index.seal(end_rel);
    segment::write_index_files(dir, base, &index)?;
    sync_index_files(dir, base)?;
    Ok(Some((len, index)))
}

fn sync_index_files(dir: &Path, base: u64) -> Result<(), LogError> {
    for kind in [FileKind::Index, FileKind::TimeIndex] {
        let path = file_path(dir, base, kind);
        fs::File::open(&path)
            .and_then(|f| f.sync_all())
            .map_err(|e| LogError::io(&path, e))?;
    }
    Ok(())
}

fn sealed_state(seg: SegmentFile, len: u64, next_base: u64, index: SegmentIndex) -> SegmentState {
    SegmentState {
        created_ms: created_ms(&seg.file),
        seg: Arc::new(seg),
        bytes: len,
        next_offset: next_base,
        index,
        unsynced: false,
    }
}

/// Scans the active segment batch by batch, cuts the file at the first torn
/// or corrupt batch and rebuilds its index in memory. Also returns each
/// (epoch, base offset) where the batches' epoch changes.
fn recover_active(
    dir: &Path,
    seg: SegmentFile,
    config: &LogConfig,
) -> Result<(SegmentState, Vec<(u32, u64)>), LogError> {
    let base = seg.base;
    segment::remove_index_files(dir, base)?;
    let len = file_len(&seg)?;
    let mut index = SegmentIndex::default();
    let mut epochs: Vec<(u32, u64)> = Vec::new();
    let end = scan(&seg, 0, len, base, true, |p, h| {
        let rel = (h.base_offset - base) as u32;
        index.observe(p, rel, h.max_timestamp_ms, config.index_interval_bytes);
        if epochs.last().map(|e| e.0) != Some(h.epoch) {
            epochs.push((h.epoch, h.base_offset));
        }
    })?;
    if end.pos < len {
        tracing::warn!(
            path = %seg.path.display(),
            at = end.pos,
            dropped_bytes = len - end.pos,
            reason = ?end.corrupt,
            "truncating torn or corrupt tail of the active segment"
        );
        seg.file
            .set_len(end.pos)
            .and_then(|()| seg.file.sync_all())
            .map_err(|e| LogError::io(&seg.path, e))?;
    }
    Ok((sealed_state(seg, end.pos, end.next_offset, index), epochs))
}

/// The checkpointed cache, cut to the surviving offsets and checked against
/// the active segment's batches; rebuilt from every batch header when it is
/// missing, damaged or contradicts them. Persisted if it changed.
fn recover_epochs(
    dir: &Path,
    state: &State,
    active_epochs: &[(u32, u64)],
) -> Result<EpochCache, LogError> {
    let loaded = EpochCache::load(dir)?;
    let (start, end) = (state.log_start(), state.log_end());
    let reconciled = loaded.clone().and_then(|mut cache| {
        cache.truncate_from_end(end);
        cache.truncate_from_start(start);
        let Some(&(_, active_first)) = active_epochs.first() else {
            return Some(cache);
        };
        // Keep what describes older segments; redo the active one from its
        // batches (a checkpoint is written before the batch that needs it,
        // so a mismatch here means damage, or a write that failed midway).
        cache.truncate_from_end(active_first + 1);
        let mut transitions = active_epochs.iter();
        if cache.epoch_at(active_first) == Some(active_epochs[0].0) {
            transitions.next();
        }
        transitions
            .all(|&(epoch, offset)| cache.assign(epoch, offset))
            .then_some(cache)
    });
    let cache = match reconciled {
        Some(cache) => cache,
        None if end == start => EpochCache::default(),
        None => {
            tracing::warn!(dir = %dir.display(), "leader-epoch checkpoint missing or inconsistent; rebuilding from batch headers");
            rebuild_epochs(state)?
        }
    };
    if loaded.as_ref() != Some(&cache) && (loaded.is_some() || end > start) {
        cache.persist(dir)?;
    }
    Ok(cache)
}

fn rebuild_epochs(state: &State) -> Result<EpochCache, LogError> {
    let mut cache = EpochCache::default();
    for s in &state.segments {
        let end = scan(&s.seg, 0, s.bytes, s.base(), false, |_, h| {
            cache.assign(h.epoch, h.base_offset);
        })?;
        if let Some(source) = end.corrupt {
            return Err(LogError::Corrupt {
                path: s.seg.path.clone(),
                position: end.pos,
                source,
            });
        }
    }
    Ok(cache)
}
