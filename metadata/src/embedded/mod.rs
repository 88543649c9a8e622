//! The embedded backend: an in-process [`MetadataStore`] kept durable in one
//! local directory, so a standalone server runs without etcd and keeps its
//! metadata across restarts. Semantics match etcd's, leases included.
//!
//! Layout of the directory:
//! - [`WAL_FILE`]: committed changes since the snapshot, each fsynced before
//!   the write that made it returns;
//! - [`SNAPSHOT_FILE`]: the whole state as of some log record;
//! - [`LOCK_FILE`]: `flock`ed while a store has the directory open, so a
//!   second store (in this process or another) cannot open it.
//!
//! Reads take the state lock; every change goes through one committer task
//! (`committer.rs`). A restart replays the log onto the snapshot; leases
//! then start over with a full TTL, as etcd's do, and watch history covers
//! the changes since the snapshot.

mod committer;
mod state;
mod wal;

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use tokio::sync::{mpsc, oneshot, Mutex};
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;

use self::committer::{Command, Committer, Reply, Request};
use self::state::State;
pub use self::wal::{LOCK_FILE, SNAPSHOT_FILE, WAL_FILE};
use crate::store::{validate_key, validate_prefix, validate_txn};
use crate::{
    Compare, Expect, KeyValue, LeaseId, MetadataError, MetadataStore, Op, Result, Revision, Txn,
    TxnOutcome, Version, WatchStream,
};

/// Tuning of an [`EmbeddedStore`].
#[derive(Clone, Debug)]
pub struct EmbeddedOptions {
    /// Recent events kept in memory to resume watches; a watch starting
    /// before them fails with [`MetadataError::Compacted`].
    pub history_limit: usize,
    /// Log size that triggers a snapshot (and an empty log).
    pub snapshot_after_bytes: u64,
}

impl Default for EmbeddedOptions {
    fn default() -> Self {
        Self {
            history_limit: 10_000,
            snapshot_after_bytes: 4 << 20,
        }
    }
}

/// In-process metadata store durable in a directory. Needs a tokio runtime:
/// its committer runs as a task of the runtime that opened it.
pub struct EmbeddedStore {
    state: Arc<Mutex<State>>,
    requests: mpsc::UnboundedSender<Request>,
    dir: PathBuf,
}

impl std::fmt::Debug for EmbeddedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedStore")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl EmbeddedStore {
    /// Opens (creating if needed) the store in `dir` with default options.
    pub async fn open(dir: impl AsRef<Path>) -> Result<Self> {
        Self::open_with(dir, EmbeddedOptions::default()).await
    }

    /// Opens the store in `dir`: locks the directory, loads the snapshot,
    /// replays the log (cutting a torn tail) and starts the committer.
    pub async fn open_with(dir: impl AsRef<Path>, options: EmbeddedOptions) -> Result<Self> {
        let dir = dir.as_ref().to_path_buf();
        let opening = dir.clone();
        let (lock, recovered) = tokio::task::spawn_blocking(move || {
            std::fs::create_dir_all(&opening)?;
            let lock = lock_dir(&opening)?;
            let recovered = wal::recover(&opening).map_err(|e| match e {
                wal::RecoverError::Io(e) => MetadataError::Io(e),
                wal::RecoverError::CorruptSnapshot => MetadataError::Corrupt(format!(
                    "{} fails its checksum",
                    opening.join(SNAPSHOT_FILE).display()
                )),
            })?;
            Ok::<_, MetadataError>((lock, recovered))
        })
        .await
        .map_err(|e| MetadataError::Unavailable(format!("opening the metadata store: {e}")))??;

        if recovered.truncated > 0 {
            tracing::warn!(
                dir = %dir.display(),
                bytes = recovered.truncated,
                "cut a torn tail off the metadata log"
            );
        }
        let now = Instant::now();
        let mut state = State::new(options.history_limit);
        if let Some(snapshot) = recovered.snapshot {
            state.load_snapshot(snapshot, now)?;
        }
        for record in &recovered.records {
            if record.index <= state.index() {
                continue; // already in the snapshot
            }
            state.check_replay(record)?;
            state.apply(record, now);
        }

        let state = Arc::new(Mutex::new(state));
        let (requests, queue) = mpsc::unbounded_channel();
        let committer = Committer {
            state: Arc::clone(&state),
            requests: queue,
            wal: Arc::new(StdMutex::new(recovered.wal)),
            dir: dir.clone(),
            lock,
            snapshot_after_bytes: options.snapshot_after_bytes.max(1),
        };
        tokio::spawn(committer.run());
        Ok(Self {
            state,
            requests,
            dir,
        })
    }

    /// The directory holding the store.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Stops the store and releases its directory before returning, so it
    /// can be opened again at once. Later calls fail with Unavailable; open
    /// watches end. Dropping every handle also stops the store, but releases
    /// the directory in the background.
    pub async fn close(&self) -> Result<()> {
        match self.submit(Command::Close).await {
            Ok(_) => Ok(()),
            // Already closed.
            Err(MetadataError::Unavailable(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn submit(&self, command: Command) -> Result<Reply> {
        let (reply, answer) = oneshot::channel();
        self.requests
            .send(Request { command, reply })
            .map_err(|_| committer::closed())?;
        answer.await.map_err(|_| committer::closed())?
    }

    /// Runs a transaction; returns (succeeded, keys deleted, revision).
    async fn run_txn(&self, txn: Txn) -> Result<(bool, usize, Revision)> {
        validate_txn(&txn)?;
        match self.submit(Command::Txn(txn)).await? {
            Reply::Txn {
                succeeded,
                deleted,
                revision,
            } => Ok((succeeded, deleted, revision)),
            _ => Err(unexpected_reply()),
        }
    }
}

fn conditional(key: &str, expect: Expect, op: Op) -> Txn {
    let compares = match expect {
        Expect::Any => Vec::new(),
        expect => vec![Compare {
            key: key.to_owned(),
            expect,
        }],
    };
    Txn {
        compares,
        ops: vec![op],
    }
}

fn unexpected_reply() -> MetadataError {
    MetadataError::Unavailable("embedded metadata committer gave a mismatched reply".into())
}

/// Takes the directory's lock file; fails at once if another store holds it.
fn lock_dir(dir: &Path) -> Result<Flock<File>> {
    let path = dir.join(LOCK_FILE);
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)?;
    Flock::lock(file, FlockArg::LockExclusiveNonblock).map_err(|(_, errno)| {
        if errno == Errno::EWOULDBLOCK {
            MetadataError::Io(std::io::Error::new(
                std::io::ErrorKind::WouldBlock,
                format!(
                    "{} is already open by another metadata store",
                    dir.display()
                ),
            ))
        } else {
            MetadataError::Io(std::io::Error::from(errno))
        }
    })
}

#[async_trait]
impl MetadataStore for EmbeddedStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        validate_key(key)?;
        let state = self.state.lock().await;
        state.check_open()?;
        Ok(state.get(key))
    }

    async fn put(
        &self,
        key: &str,
        value: Bytes,
        expect: Expect,
        lease: Option<LeaseId>,
    ) -> Result<Version> {
        let op = Op::Put {
            key: key.to_owned(),
            value,
            lease,
        };
        match self.run_txn(conditional(key, expect, op)).await? {
            (true, _, revision) => Ok(revision),
            (false, _, _) => Err(MetadataError::Conflict { key: key.into() }),
        }
    }

    async fn delete(&self, key: &str, expect: Expect) -> Result<bool> {
        let op = Op::Delete {
            key: key.to_owned(),
        };
        match self.run_txn(conditional(key, expect, op)).await? {
            (true, deleted, _) => Ok(deleted > 0),
            (false, _, _) => Err(MetadataError::Conflict { key: key.into() }),
        }
    }

    async fn list(&self, prefix: &str) -> Result<Vec<KeyValue>> {
        validate_prefix(prefix)?;
        let state = self.state.lock().await;
        state.check_open()?;
        Ok(state.list(prefix))
    }

    async fn watch(&self, prefix: &str, start_revision: Option<Revision>) -> Result<WatchStream> {
        validate_prefix(prefix)?;
        let mut state = self.state.lock().await;
        state.check_open()?;
        let rx = state.watch(prefix, start_revision)?;
        Ok(Box::pin(ReceiverStream::new(rx)))
    }

    async fn grant_lease(&self, ttl: Duration) -> Result<LeaseId> {
        match self.submit(Command::Grant(ttl)).await? {
            Reply::Granted(lease) => Ok(lease),
            _ => Err(unexpected_reply()),
        }
    }

    async fn keep_alive(&self, lease: LeaseId) -> Result<()> {
        let mut state = self.state.lock().await;
        state.check_open()?;
        state.keep_alive(lease, Instant::now())
    }

    async fn revoke_lease(&self, lease: LeaseId) -> Result<()> {
        match self.submit(Command::Revoke(lease)).await? {
            Reply::Done => Ok(()),
            _ => Err(unexpected_reply()),
        }
    }

    async fn txn(&self, txn: Txn) -> Result<TxnOutcome> {
        let (succeeded, _, revision) = self.run_txn(txn).await?;
        Ok(TxnOutcome {
            succeeded,
            revision,
        })
    }

    async fn revision(&self) -> Result<Revision> {
        let state = self.state.lock().await;
        state.check_open()?;
        Ok(state.revision())
    }
}
