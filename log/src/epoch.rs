//! The leader-epoch cache (KIP-101/279): which offset each leader epoch
//! started at, and its `leader-epoch-checkpoint` file (Kafka's text layout:
//! version line `0`, entry count, then `epoch start_offset` per line).
//!
//! The checkpoint is replaced atomically (temp file, fsync, rename, fsync of
//! the directory). The cache never decides anything about the segments; the
//! log keeps it consistent with them.

use std::fs::{self, File};
use std::io::{ErrorKind, Write};
use std::path::Path;

use crate::LogError;

pub(crate) const CHECKPOINT_FILE: &str = "leader-epoch-checkpoint";
const CHECKPOINT_TMP: &str = "leader-epoch-checkpoint.tmp";
const CHECKPOINT_VERSION: &str = "0";
/// A real checkpoint holds a handful of lines; a bigger file is damage.
const CHECKPOINT_MAX_BYTES: u64 = 16 << 20;

/// (epoch, start offset) pairs, epochs and offsets strictly increasing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct EpochCache {
    entries: Vec<(u32, u64)>,
}

impl EpochCache {
    pub fn entries(&self) -> &[(u32, u64)] {
        &self.entries
    }

    pub fn latest(&self) -> Option<(u32, u64)> {
        self.entries.last().copied()
    }

    /// Records that `epoch` starts at `start`; ignored unless `epoch` is newer
    /// than the latest. Entries starting at or after `start` are dropped
    /// first (they describe offsets being rewritten). Returns whether the
    /// cache changed.
    pub fn assign(&mut self, epoch: u32, start: u64) -> bool {
        if self.latest().is_some_and(|(e, _)| e >= epoch) {
            return false;
        }
        self.entries.retain(|&(_, s)| s < start);
        self.entries.push((epoch, start));
        true
    }

    /// The epoch the entry at `offset` was written in, per the cache.
    pub fn epoch_at(&self, offset: u64) -> Option<u32> {
        let i = self.entries.partition_point(|&(_, s)| s <= offset);
        (i > 0).then(|| self.entries[i - 1].0)
    }

    /// Drops epochs starting at or after `end` (the log was cut there).
    pub fn truncate_from_end(&mut self, end: u64) -> bool {
        let before = self.entries.len();
        self.entries.retain(|&(_, s)| s < end);
        before != self.entries.len()
    }

    /// Forgets offsets below `start` (retention moved the log start): the
    /// epoch covering `start` now starts there, older ones go.
    pub fn truncate_from_start(&mut self, start: u64) -> bool {
        let covering = self.entries.partition_point(|&(_, s)| s <= start);
        if covering == 0 || (covering == 1 && self.entries[0].1 == start) {
            return false;
        }
        self.entries.drain(..covering - 1);
        self.entries[0].1 = start;
        true
    }

    pub fn clear(&mut self) -> bool {
        let changed = !self.entries.is_empty();
        self.entries.clear();
        changed
    }

    /// KIP-279: the largest known epoch <= `epoch` and the offset it ended
    /// at (the next epoch's start, or `log_end` for the latest).
    pub fn end_offset_for(&self, epoch: u32, log_end: u64) -> Option<(u32, u64)> {
        let i = self.entries.partition_point(|&(e, _)| e <= epoch);
        if i == 0 {
            return None;
        }
        let end = self.entries.get(i).map_or(log_end, |&(_, s)| s);
        Some((self.entries[i - 1].0, end))
    }

    /// Loads the checkpoint: `Ok(None)` when it is missing or unreadable as
    /// a checkpoint (the caller rebuilds from the batches), `Err` on IO errors.
    pub fn load(dir: &Path) -> Result<Option<EpochCache>, LogError> {
        let path = dir.join(CHECKPOINT_FILE);
        match fs::metadata(&path) {
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(LogError::io(&path, e)),
            Ok(m) if m.len() > CHECKPOINT_MAX_BYTES => return Ok(None),
            Ok(_) => {}
        }
        let bytes = fs::read(&path).map_err(|e| LogError::io(&path, e))?;
        Ok(std::str::from_utf8(&bytes).ok().and_then(parse))
    }

    /// Replaces the checkpoint atomically and durably.
    pub fn persist(&self, dir: &Path) -> Result<(), LogError> {
        let tmp = dir.join(CHECKPOINT_TMP);
        let mut text = format!("{CHECKPOINT_VERSION}\n{}\n", self.entries.len());
        for (epoch, start) in &self.entries {
            text.push_str(&format!("{epoch} {start}\n"));
        }
        let write = || -> std::io::Result<()> {
            let mut f = File::create(&tmp)?;
            f.write_all(text.as_bytes())?;
            f.sync_all()
        };
        write().map_err(|e| LogError::io(&tmp, e))?;
        let path = dir.join(CHECKPOINT_FILE);
        fs::rename(&tmp, &path).map_err(|e| LogError::io(&path, e))?;
        sync_dir(dir)
    }
}

fn parse(text: &str) -> Option<EpochCache> {
    let mut lines = text.lines();
    if lines.next()? != CHECKPOINT_VERSION {
        return None;
    }
    let count: usize = lines.next()?.trim().parse().ok()?;
    let mut cache = EpochCache::default();
    for line in lines.by_ref().take(count) {
        let (epoch, start) = line.trim().split_once(' ')?;
        let entry: (u32, u64) = (epoch.parse().ok()?, start.parse().ok()?);
        if let Some((e, s)) = cache.latest() {
            if entry.0 <= e || entry.1 <= s {
                return None;
            }
        }
        cache.entries.push(entry);
    }
    let complete = cache.entries.len() == count && lines.all(|l| l.trim().is_empty());
    complete.then_some(cache)
}

/// Makes renames, creations and deletions in `dir` durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), LogError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| LogError::io(dir, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache(entries: &[(u32, u64)]) -> EpochCache {
        EpochCache {
            entries: entries.to_vec(),
        }
    }

    #[test]
    fn assign_keeps_only_newer_epochs() {
        let mut c = EpochCache::default();
        assert!(c.assign(1, 0));
        assert!(!c.assign(1, 5));
        assert!(!c.assign(0, 7));
        assert!(c.assign(3, 10));
        assert_eq!(c.entries(), &[(1, 0), (3, 10)]);
        // A newer epoch at an older start replaces what started after it.
        assert!(c.assign(4, 10));
        assert_eq!(c.entries(), &[(1, 0), (4, 10)]);
        assert_eq!(c.epoch_at(9), Some(1));
        assert_eq!(c.epoch_at(10), Some(4));
    }

    #[test]
    fn end_offset_for_epoch_follows_kip_279() {
        let c = cache(&[(2, 0), (4, 10), (7, 25)]);
        assert_eq!(c.end_offset_for(1, 40), None);
        assert_eq!(c.end_offset_for(2, 40), Some((2, 10)));
        assert_eq!(c.end_offset_for(3, 40), Some((2, 10)));
        assert_eq!(c.end_offset_for(4, 40), Some((4, 25)));
        assert_eq!(c.end_offset_for(7, 40), Some((7, 40)));
        assert_eq!(c.end_offset_for(9, 40), Some((7, 40)));
    }

    #[test]
    fn truncation_from_both_ends() {
        let mut c = cache(&[(2, 0), (4, 10), (7, 25)]);
        assert!(!c.truncate_from_end(26));
        assert!(c.truncate_from_end(25));
        assert_eq!(c.entries(), &[(2, 0), (4, 10)]);
        assert!(c.truncate_from_start(12));
        assert_eq!(c.entries(), &[(4, 12)]);
        assert!(!c.truncate_from_start(12));
        assert!(!c.truncate_from_start(3));
        let mut c = cache(&[(2, 0), (4, 10)]);
        assert!(c.truncate_from_start(10));
        assert_eq!(c.entries(), &[(4, 10)]);
    }

    #[test]
    fn checkpoint_round_trips_and_damage_reads_as_missing() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(EpochCache::load(dir.path()).unwrap(), None);
        let c = cache(&[(2, 0), (4, 10), (7, 25)]);
        c.persist(dir.path()).unwrap();
        let text = fs::read_to_string(dir.path().join(CHECKPOINT_FILE)).unwrap();
        assert_eq!(text, "0\n3\n2 0\n4 10\n7 25\n");
        assert_eq!(EpochCache::load(dir.path()).unwrap(), Some(c));
        assert!(!dir.path().join(CHECKPOINT_TMP).exists());
        for bad in [
            "",
            "1\n0\n",
            "0\n2\n1 0\n",
            "0\n99999999999999\n1 0\n",
            "0\n2\n3 0\n2 5\n",
            "0\n2\n1 5\n2 5\n",
            "0\n1\n1 x\n",
            "0\n1\n1 0\n2 3\n",
        ] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
        assert_eq!(parse("0\n0\n"), Some(EpochCache::default()));
    }
}
