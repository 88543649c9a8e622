//! Settings of one partition log. Defaults are Kafka's.

use std::time::Duration;

use crate::LogError;

/// When to roll segments and how densely to index them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogConfig {
    /// Roll before the active segment would grow past this (Kafka's
    /// `segment.bytes`, 1 GiB). A batch larger than this gets a segment of its
    /// own. At most `u32::MAX`: index positions are 32-bit.
    pub segment_bytes: u64,
    /// Roll when the active segment is older than this (Kafka's `segment.ms`,
    /// 7 days), so time-based retention can delete whole segments.
    pub segment_age: Duration,
    /// One offset-index entry per this many bytes of batches (Kafka's
    /// `index.interval.bytes`, 4096): a read scans at most this far.
    pub index_interval_bytes: u64,
    /// Roll before the active segment would hold more entries than this
    /// (no Kafka equivalent; Pulsar rolls ledgers by entry count, and the
    /// side-by-side comparison needs the same unit). A batch larger than
    /// this gets a segment of its own. `None`: no limit.
    pub segment_entries: Option<u64>,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_bytes: 1 << 30,
            segment_age: Duration::from_secs(7 * 24 * 3600),
            index_interval_bytes: 4096,
            segment_entries: None,
        }
    }
}

impl LogConfig {
    pub(crate) fn validate(&self) -> Result<(), LogError> {
        if self.segment_bytes == 0 || self.segment_bytes > u64::from(u32::MAX) {
            return Err(LogError::InvalidConfig(format!(
                "segment_bytes must be in 1..={}, got {}",
                u32::MAX,
                self.segment_bytes
            )));
        }
        if self.segment_entries == Some(0) {
            return Err(LogError::InvalidConfig(
                "segment_entries must be at least 1".into(),
            ));
        }
        if self.index_interval_bytes == 0 {
            return Err(LogError::InvalidConfig(
                "index_interval_bytes must be at least 1".into(),
            ));
        }
        Ok(())
    }
}
