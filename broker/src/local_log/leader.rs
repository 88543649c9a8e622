//! The leader's side of replication: serving followers' fetches (which is
//! also how it learns how far each follower holds the log), moving the high
//! watermark, and shrinking or growing the ISR through the partition record.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::log::LocalLog;
use crate::storage::StorageError;

/// Why a fetch was refused; the follower acts on each differently.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The follower's epoch is older than the leader's: it must re-read the
    /// partition record (and truncate) first (KIP-320).
    #[error("fenced leader epoch: the follower knows epoch {follower}, the leader is in {leader}")]
    FencedEpoch { follower: u32, leader: u32 },
    /// The follower knows a newer epoch than this leader: this one is stale.
    #[error("unknown leader epoch {follower}: this leader is in epoch {leader}")]
    UnknownEpoch { follower: u32, leader: u32 },
    #[error("{0} is not a replica of this partition")]
    NotReplica(String),
    #[error("this broker does not lead the partition")]
    NotLeader,
    /// The fetch offset is outside the log: below its start (trimmed; the
    /// follower starts over at `start`) or past its end (divergent tail).
    #[error("offset {offset} is outside the leader's log [{start}, {end})")]
    OutOfRange { offset: u64, start: u64, end: u64 },
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// What a fetch returns.
pub struct Fetched {
    pub records: Bytes,
    pub high_watermark: u64,
    pub log_start: u64,
    pub log_end: u64,
}

/// One fetch request, as the follower sent it.
pub struct FetchRequest<'a> {
    pub replica: &'a str,
    pub epoch: u32,
    pub offset: u64,
    pub max_bytes: usize,
    pub max_wait: Duration,
}

/// Largest wait a follower may ask for: a stopped leader answers within it.
const MAX_FETCH_WAIT: Duration = Duration::from_secs(5);
/// Largest fetch response.
const MAX_FETCH_BYTES: usize = 16 << 20;

impl LocalLog {
    fn check_epoch(&self, epoch: u32) -> Result<(), FetchError> {
        if let Some(error) = self.stopped() {
            return Err(match error {
                StorageError::Fenced(_) | StorageError::Closed => FetchError::NotLeader,
                other => FetchError::Storage(other),
            });
        }
        match epoch.cmp(&self.epoch) {
            std::cmp::Ordering::Less => Err(FetchError::FencedEpoch {
                follower: epoch,
                leader: self.epoch,
            }),
            std::cmp::Ordering::Greater => Err(FetchError::UnknownEpoch {
                follower: epoch,
                leader: self.epoch,
            }),
            std::cmp::Ordering::Equal => Ok(()),
        }
    }

    /// Serves one follower fetch: records its progress, moves the high
    /// watermark, and returns the batches from its offset on, waiting up
    /// to `max_wait` for new ones.
    pub async fn serve_fetch(
        self: &Arc<Self>,
        req: FetchRequest<'_>,
    ) -> Result<Fetched, FetchError> {
        self.check_epoch(req.epoch)?;
        if req.replica == self.me || !self.isr_state().is_replica(req.replica) {
            return Err(FetchError::NotReplica(req.replica.to_string()));
        }
        let (start, end) = (self.log.log_start_offset(), self.log.log_end_offset());
        if req.offset > end || req.offset < start {
            return Err(FetchError::OutOfRange {
                offset: req.offset,
                start,
                end,
            });
        }
        let rejoin = {
            let mut isr = self.isr_state();
            isr.record_fetch(req.replica, req.offset, end, Instant::now());
            isr.may_rejoin(req.replica)
        };
        self.commit();
        if rejoin {
            self.change_isr_in_background(IsrChange::Add(req.replica.to_string()));
        }
        let mut appended = self.appended.subscribe();
        let deadline = tokio::time::Instant::now() + req.max_wait.min(MAX_FETCH_WAIT);
        loop {
            let log = self.log.clone();
            let (offset, max_bytes) = (req.offset, req.max_bytes.clamp(1, MAX_FETCH_BYTES));
            let read = tokio::task::spawn_blocking(move || log.read_raw(offset, max_bytes))
                .await
                .map_err(|e| StorageError::Backend(e.to_string()))?;
            let raw = match read {
                Ok(raw) => raw,
                Err(magnetar_log::LogError::OffsetOutOfRange { .. }) => {
                    return Err(FetchError::OutOfRange {
                        offset: req.offset,
                        start: self.log.log_start_offset(),
                        end: self.log.log_end_offset(),
                    })
                }
                Err(e) => return Err(StorageError::Backend(e.to_string()).into()),
            };
            let waited_out = tokio::time::Instant::now() >= deadline;
            if !raw.data.is_empty() || waited_out || self.stopped().is_some() {
                return Ok(Fetched {
                    records: raw.data,
                    high_watermark: self.confirmed_end(),
                    log_start: self.log.log_start_offset(),
                    log_end: self.log.log_end_offset(),
                });
            }
            let _ = tokio::time::timeout_at(deadline, appended.changed()).await;
        }
    }

    /// KIP-101/279 OffsetForLeaderEpoch for a follower in `current` epoch.
    pub fn serve_epoch(&self, current: u32, epoch: u32) -> Result<Option<(u32, u64)>, FetchError> {
        self.check_epoch(current)?;
        Ok(self.log.end_offset_for_epoch(epoch))
    }

    /// Writes an ISR change to the record, then applies it; one at a time.
    /// A change that leaves every new replica of a reassignment in sync
    /// finishes the reassignment next, in the same task.
    pub(super) fn change_isr_in_background(self: &Arc<Self>, change: IsrChange) {
        if self.isr_changing.swap(true, Ordering::AcqRel) {
            return;
        }
        let log = self.clone();
        tokio::spawn(async move {
            let mut next = Some(change);
            while let Some(change) = next.take() {
                if let Err(e) = log.change_isr(change).await {
                    tracing::warn!(topic = %log.name, error = %e, "ISR change failed");
                    break;
                }
                if log.stopped().is_none() && log.isr_state().reassignment_done() {
                    next = Some(IsrChange::FinishReassignment);
                }
            }
            log.isr_changing.store(false, Ordering::Release);
        });
    }

    async fn change_isr(&self, change: IsrChange) -> Result<(), StorageError> {
        let result = match &change {
            IsrChange::FinishReassignment => self.finish_reassignment().await,
            IsrChange::Add(replica) => {
                let mut isr = self.isr_state().isr().to_vec();
                if isr.contains(replica) {
                    return Ok(());
                }
                isr.push(replica.clone());
                self.write_isr(&change, &isr).await
            }
            IsrChange::Remove(lagging) => {
                let mut isr = self.isr_state().isr().to_vec();
                isr.retain(|r| !lagging.contains(r));
                self.write_isr(&change, &isr).await
            }
        };
        if let Err(StorageError::Fenced(why)) = &result {
            // Another broker leads now: this one confirms nothing more.
            tracing::warn!(topic = %self.name, why, "leader deposed");
            self.stop(StorageError::Fenced(why.clone())).await;
        }
        result
    }

    async fn write_isr(&self, change: &IsrChange, isr: &[String]) -> Result<(), StorageError> {
        let written = self
            .records
            .change_isr(&self.record_key, (self.log_id, self.epoch), isr)
            .await?;
        tracing::info!(topic = %self.name, ?change, isr = ?written, "ISR changed");
        self.apply_isr(written);
        self.commit();
        Ok(())
    }

    async fn finish_reassignment(&self) -> Result<(), StorageError> {
        let finished = self
            .records
            .complete_reassignment(&self.record_key, (self.log_id, self.epoch))
            .await?;
        if let Some(record) = finished {
            tracing::info!(topic = %self.name, replicas = ?record.replicas, isr = ?record.isr, "reassignment finished");
            self.isr_state()
                .finish_reassignment(record.replicas, Instant::now());
            self.refresh_writable();
            self.commit();
        }
        Ok(())
    }
}

#[derive(Debug)]
pub(super) enum IsrChange {
    Add(String),
    Remove(Vec<String>),
    /// Every new replica of the reassignment under way is in sync.
    FinishReassignment,
}

/// Drops followers that lag past `replica.lag.time.max` from the ISR,
/// until the log stops.
pub(super) async fn check_isr_periodically(log: Weak<LocalLog>) {
    let period = match log.upgrade() {
        Some(log) => (log.lag_max / 4).max(Duration::from_millis(50)),
        None => return,
    };
    loop {
        tokio::time::sleep(period).await;
        let Some(log) = log.upgrade() else { return };
        if log.stopped().is_some() {
            return;
        }
        let lagging = log.isr_state().lagging(Instant::now(), log.lag_max);
        if !lagging.is_empty() {
            tracing::warn!(topic = %log.name, ?lagging, "followers lag; shrinking the ISR");
            log.change_isr_in_background(IsrChange::Remove(lagging));
        }
    }
}
