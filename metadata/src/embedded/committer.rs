//! The single writer of an embedded store. It owns the log file and the
//! directory lock, takes write requests from a queue, expires leases, and
//! compacts the log into a snapshot.
//!
//! Requests that queued up while the previous batch was syncing are planned
//! and applied together and made durable by one fsync (group commit). The
//! state lock is held from planning until the batch is durable and its events
//! are dispatched, so no reader ever sees a change that could still be lost.
//! A failed log write closes the store: memory then holds changes the disk
//! may not, and only a restart (which replays the log) can be trusted.

use std::fs::File;
use std::path::PathBuf;
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;

use nix::fcntl::Flock;
use tokio::sync::{mpsc, oneshot, Mutex};
use tokio::time::Instant;

use super::state::State;
use super::wal::{self, Change, Wal, WalRecord};
use crate::{LeaseId, MetadataError, Result, Revision, Txn, WatchEvent};

/// Most requests planned into one fsync.
const MAX_BATCH: usize = 256;

pub(crate) enum Command {
    Txn(Txn),
    Grant(Duration),
    Revoke(LeaseId),
    /// Stop, release the directory, then answer.
    Close,
}

pub(crate) enum Reply {
    Txn {
        succeeded: bool,
        deleted: usize,
        revision: Revision,
    },
    Granted(LeaseId),
    Done,
}

pub(crate) struct Request {
    pub command: Command,
    pub reply: oneshot::Sender<Result<Reply>>,
}

pub(crate) struct Committer {
    pub state: Arc<Mutex<State>>,
    pub requests: mpsc::UnboundedReceiver<Request>,
    pub wal: Arc<StdMutex<Wal>>,
    pub dir: PathBuf,
    pub lock: Flock<File>,
    pub snapshot_after_bytes: u64,
}

enum Flow {
    Continue,
    /// Stop; answer this close request once the directory is released.
    Stop(Option<oneshot::Sender<Result<Reply>>>),
}

impl Committer {
    pub(crate) async fn run(mut self) {
        let mut next_snapshot_at = self.snapshot_after_bytes;
        let closer = loop {
            let deadline = self.state.lock().await.next_deadline();
            let expiry = async {
                match deadline {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            let mut batch = Vec::new();
            tokio::select! {
                request = self.requests.recv() => match request {
                    Some(request) => batch.push(request),
                    // Every handle to the store is gone.
                    None => break None,
                },
                () = expiry => {}
            }
            while batch.len() < MAX_BATCH {
                match self.requests.try_recv() {
                    Ok(request) => batch.push(request),
                    Err(_) => break,
                }
            }
            match self.commit(batch).await {
                Flow::Continue => {}
                Flow::Stop(closer) => break closer,
            }
            let wal_len = lock_wal(&self.wal).map(|w| w.len()).unwrap_or(0);
            if wal_len >= next_snapshot_at {
                next_snapshot_at = match self.snapshot().await {
                    Ok(()) => self.snapshot_after_bytes,
                    Err(e) => {
                        // Not fatal: the log still holds everything. Retry
                        // after it grew by another threshold.
                        tracing::warn!(error = %e, "embedded metadata snapshot failed");
                        wal_len + self.snapshot_after_bytes
                    }
                };
            }
        };
        let Committer {
            state,
            wal,
            lock,
            mut requests,
            ..
        } = self;
        state.lock().await.close("metadata store closed".into());
        requests.close();
        while let Ok(request) = requests.try_recv() {
            let _ = request.reply.send(Err(closed()));
        }
        drop(wal);
        drop(lock);
        if let Some(closer) = closer {
            let _ = closer.send(Ok(Reply::Done));
        }
    }

    async fn commit(&mut self, batch: Vec<Request>) -> Flow {
        let mut state = self.state.lock().await;
        let now = Instant::now();
        let mut frames = Vec::new();
        let mut events = Vec::new();
        let mut replies = Vec::with_capacity(batch.len());
        let mut flow = Flow::Continue;

        for lease in state.expired(now) {
            if let Ok(change) = state.plan_revoke(lease) {
                if let Err(e) = log_change(&mut state, change, now, &mut frames, &mut events) {
                    tracing::error!(lease, error = %e, "cannot log lease expiry");
                }
            }
        }
        for request in batch {
            if matches!(flow, Flow::Stop(_)) {
                let _ = request.reply.send(Err(closed()));
                continue;
            }
            if let Err(e) = state.check_open() {
                let _ = request.reply.send(Err(e));
                continue;
            }
            let result = match request.command {
                Command::Close => {
                    flow = Flow::Stop(Some(request.reply));
                    continue;
                }
                Command::Txn(txn) => state.plan_txn(&txn, now).and_then(|plan| {
                    if let Some(change) = plan.change {
                        log_change(&mut state, change, now, &mut frames, &mut events)?;
                    }
                    Ok(Reply::Txn {
                        succeeded: plan.succeeded,
                        deleted: plan.deleted,
                        revision: state.revision(),
                    })
                }),
                Command::Grant(ttl) => state.plan_grant(ttl).and_then(|(lease, change)| {
                    log_change(&mut state, change, now, &mut frames, &mut events)?;
                    Ok(Reply::Granted(lease))
                }),
                Command::Revoke(lease) => state.plan_revoke(lease).and_then(|change| {
                    log_change(&mut state, change, now, &mut frames, &mut events)?;
                    Ok(Reply::Done)
                }),
            };
            replies.push((request.reply, result));
        }

        if !frames.is_empty() {
            let wal = Arc::clone(&self.wal);
            let written = tokio::task::spawn_blocking(move || lock_wal(&wal)?.append(&frames))
                .await
                .unwrap_or_else(|e| Err(std::io::Error::other(e)));
            if let Err(e) = written {
                tracing::error!(error = %e, "embedded metadata log write failed; closing the store");
                let reason = format!("metadata log write failed: {e}");
                state.close(reason.clone());
                for (reply, _) in replies {
                    let _ = reply.send(Err(MetadataError::Unavailable(reason.clone())));
                }
                return match flow {
                    Flow::Stop(closer) => Flow::Stop(closer),
                    Flow::Continue => Flow::Stop(None),
                };
            }
        }
        state.dispatch(&events);
        drop(state);
        for (reply, result) in replies {
            let _ = reply.send(result);
        }
        flow
    }

    /// Writes the state as a snapshot, then empties the log. Only this task
    /// appends to the log, so nothing is written between the two steps.
    async fn snapshot(&self) -> std::io::Result<()> {
        let snapshot = self.state.lock().await.to_snapshot();
        let dir = self.dir.clone();
        let wal = Arc::clone(&self.wal);
        tokio::task::spawn_blocking(move || {
            wal::write_snapshot(&dir, &snapshot)?;
            // Had we crashed here, replay would skip the records the snapshot
            // holds by their index.
            lock_wal(&wal)?.clear()
        })
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(e)))
    }
}

/// Encodes a change as the next log record and applies it in memory. The
/// encoding comes first: a change that cannot be logged is never applied.
fn log_change(
    state: &mut State,
    change: Change,
    now: Instant,
    frames: &mut Vec<u8>,
    events: &mut Vec<WatchEvent>,
) -> Result<()> {
    let record = WalRecord {
        index: state.index() + 1,
        change: Some(change),
    };
    wal::encode_frame(&record, frames)
        .map_err(|e| MetadataError::InvalidArgument(e.to_string()))?;
    events.extend(state.apply(&record, now));
    Ok(())
}

fn lock_wal(wal: &StdMutex<Wal>) -> std::io::Result<std::sync::MutexGuard<'_, Wal>> {
    wal.lock()
        .map_err(|_| std::io::Error::other("metadata log lock poisoned"))
}

pub(crate) fn closed() -> MetadataError {
    MetadataError::Unavailable("metadata store closed".into())
}
