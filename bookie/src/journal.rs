//! Group commit. One thread owns all writes: it drains every pending request,
//! validates it against ledger state (fence, master key, size), writes the
//! whole round as one batch, fsyncs once, and only then answers each request.
//!
//! Because fence, add and delete go through the same ordered queue, an add
//! queued after a fence can never be written without the recovery flag.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::Instant;

use bytes::Bytes;
use magnetar_proto::bookie::{AddEntry, AddResult, ErrorCode};
use tokio::sync::oneshot;

use crate::error::BookieError;
use crate::ledger_state::LedgerTable;
use crate::metrics::BookieMetrics;
use crate::store::{EntryStore, LedgerStateRecord, StoreBatch};

/// Limits on one round and on entries.
#[derive(Clone, Debug)]
pub struct JournalConfig {
    pub max_entry_bytes: usize,
    /// Stop gathering a round past this many payload bytes.
    pub max_round_bytes: usize,
    /// Stop gathering a round past this many requests.
    pub max_round_requests: usize,
}

impl Default for JournalConfig {
    fn default() -> Self {
        JournalConfig {
            max_entry_bytes: 5 << 20,
            max_round_bytes: 16 << 20,
            max_round_requests: 4096,
        }
    }
}

/// The LAC and last entry a bookie holds for a ledger when it was fenced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FenceOutcome {
    pub lac: i64,
    pub last_entry_id: i64,
}

enum Request {
    Add {
        entries: Vec<AddEntry>,
        reply: oneshot::Sender<Vec<AddResult>>,
    },
    Fence {
        ledger_id: u64,
        master_key: Bytes,
        reply: oneshot::Sender<Result<FenceOutcome, BookieError>>,
    },
    Delete {
        ledger_id: u64,
        reply: oneshot::Sender<Result<(), BookieError>>,
    },
}

impl Request {
    fn payload_bytes(&self) -> usize {
        match self {
            Request::Add { entries, .. } => entries.iter().map(|e| e.payload.len()).sum(),
            _ => 0,
        }
    }
}

/// Handle to the journal thread; cheap to clone. The thread ends when every
/// handle is dropped.
#[derive(Clone)]
pub struct Journal {
    tx: mpsc::Sender<Request>,
}

/// The journal is gone (the bookie is shutting down).
fn closed() -> BookieError {
    BookieError::Storage("journal closed".into())
}

impl Journal {
    pub fn start<S: EntryStore>(
        store: Arc<S>,
        table: Arc<LedgerTable>,
        read_only: Arc<AtomicBool>,
        config: JournalConfig,
        metrics: BookieMetrics,
    ) -> std::io::Result<(Journal, JoinHandle<()>)> {
        let (tx, rx) = mpsc::channel();
        let worker = JournalWorker {
            store,
            table,
            read_only,
            config,
            metrics,
        };
        let handle = std::thread::Builder::new()
            .name("bookie-journal".into())
            .spawn(move || worker.run(rx))?;
        Ok((Journal { tx }, handle))
    }

    /// Queues a batch of adds; the returned receiver yields one result per
    /// entry once the round holding them is durable.
    pub fn add(&self, entries: Vec<AddEntry>) -> oneshot::Receiver<Vec<AddResult>> {
        let (reply, rx) = oneshot::channel();
        // If the thread is gone the reply sender drops and the caller sees it.
        let _ = self.tx.send(Request::Add { entries, reply });
        rx
    }

    /// Queues a fence now (so it is ordered after every add queued before
    /// this call) and resolves once it is durable.
    pub fn fence(
        &self,
        ledger_id: u64,
        master_key: Bytes,
    ) -> impl std::future::Future<Output = Result<FenceOutcome, BookieError>> {
        let (reply, rx) = oneshot::channel();
        let queued = self.tx.send(Request::Fence {
            ledger_id,
            master_key,
            reply,
        });
        async move {
            queued.map_err(|_| closed())?;
            rx.await.map_err(|_| closed())?
        }
    }

    /// Queues a ledger deletion now; resolves once it is durable.
    pub fn delete(
        &self,
        ledger_id: u64,
    ) -> impl std::future::Future<Output = Result<(), BookieError>> {
        let (reply, rx) = oneshot::channel();
        let queued = self.tx.send(Request::Delete { ledger_id, reply });
        async move {
            queued.map_err(|_| closed())?;
            rx.await.map_err(|_| closed())?
        }
    }
}

struct JournalWorker<S> {
    store: Arc<S>,
    table: Arc<LedgerTable>,
    read_only: Arc<AtomicBool>,
    config: JournalConfig,
    metrics: BookieMetrics,
}

/// A request validated and staged in the current round, awaiting the fsync.
enum Staged {
    Add {
        results: Vec<AddResult>,
        reply: oneshot::Sender<Vec<AddResult>>,
    },
    Fence {
        ledger_id: u64,
        result: Result<(), BookieError>,
        reply: oneshot::Sender<Result<FenceOutcome, BookieError>>,
    },
    Delete {
        reply: oneshot::Sender<Result<(), BookieError>>,
    },
}

fn ok_result() -> AddResult {
    AddResult {
        code: ErrorCode::Ok as i32,
        message: String::new(),
    }
}

fn error_result(e: &BookieError) -> AddResult {
    AddResult {
        code: e.code() as i32,
        message: e.to_string(),
    }
}

impl<S: EntryStore> JournalWorker<S> {
    fn run(self, rx: mpsc::Receiver<Request>) {
        while let Ok(first) = rx.recv() {
            let mut bytes = first.payload_bytes();
            let mut round = vec![first];
            while bytes < self.config.max_round_bytes
                && round.len() < self.config.max_round_requests
            {
                match rx.try_recv() {
                    Ok(next) => {
                        bytes += next.payload_bytes();
                        round.push(next);
                    }
                    Err(_) => break,
                }
            }
            self.process_round(round);
        }
        tracing::debug!("journal thread exiting");
    }

    fn process_round(&self, round: Vec<Request>) {
        let started = Instant::now();
        let mut batch = self.store.new_batch();
        // Ledger state as it will be after this round (None = deleted).
        let mut changes: HashMap<u64, Option<LedgerStateRecord>> = HashMap::new();
        let mut staged = Vec::with_capacity(round.len());
        let mut entries_written = 0u64;
        let mut bytes_written = 0u64;
        let read_only = self.read_only.load(Ordering::Relaxed);

        for request in round {
            match request {
                Request::Add { entries, reply } => {
                    let mut results = Vec::with_capacity(entries.len());
                    for entry in entries {
                        match self.stage_add(&entry, read_only, &mut changes) {
                            Ok(()) => {
                                entries_written += 1;
                                bytes_written += entry.payload.len() as u64;
                                batch.put_entry(entry.ledger_id, entry.entry_id, entry.payload);
                                results.push(ok_result());
                            }
                            Err(e) => {
                                self.metrics
                                    .add_errors
                                    .with_label_values(&[e.code().as_str_name()])
                                    .inc();
                                results.push(error_result(&e));
                            }
                        }
                    }
                    staged.push(Staged::Add { results, reply });
                }
                Request::Fence {
                    ledger_id,
                    master_key,
                    reply,
                } => {
                    let result = self.stage_fence(ledger_id, master_key, &mut changes);
                    staged.push(Staged::Fence {
                        ledger_id,
                        result,
                        reply,
                    });
                }
                Request::Delete { ledger_id, reply } => {
                    batch.delete_ledger(ledger_id);
                    changes.insert(ledger_id, None);
                    staged.push(Staged::Delete { reply });
                }
            }
        }
        for (ledger, state) in &changes {
            if let Some(state) = state {
                batch.put_ledger_state(*ledger, state);
            }
        }

        let outcome = if batch.is_empty() {
            Ok(())
        } else {
            let commit_started = Instant::now();
            let r = self.store.commit(batch);
            self.metrics
                .commit_seconds
                .observe(commit_started.elapsed().as_secs_f64());
            self.metrics.commits.inc();
            self.metrics.round_entries.observe(entries_written as f64);
            r.map_err(|e| BookieError::Storage(e.0))
        };
        match &outcome {
            Ok(()) => {
                self.metrics.entries_added.inc_by(entries_written);
                self.metrics.bytes_added.inc_by(bytes_written);
                self.table.apply(changes);
            }
            Err(e) => tracing::error!(error = %e, "journal commit failed"),
        }
        self.reply(staged, outcome);
        self.metrics
            .round_seconds
            .observe(started.elapsed().as_secs_f64());
    }

    /// The state of `ledger_id` including this round's staged changes.
    fn current<'a>(
        &self,
        ledger_id: u64,
        changes: &'a mut HashMap<u64, Option<LedgerStateRecord>>,
    ) -> &'a mut Option<LedgerStateRecord> {
        changes
            .entry(ledger_id)
            .or_insert_with(|| self.table.get(ledger_id))
    }

    fn stage_add(
        &self,
        entry: &AddEntry,
        read_only: bool,
        changes: &mut HashMap<u64, Option<LedgerStateRecord>>,
    ) -> Result<(), BookieError> {
        validate_add(entry, self.config.max_entry_bytes)?;
        if read_only && !entry.recovery {
            return Err(BookieError::ReadOnly);
        }
        let state = self.current(entry.ledger_id, changes);
        match state {
            Some(s) => {
                if s.master_key != entry.master_key {
                    return Err(BookieError::BadMasterKey(entry.ledger_id));
                }
                if s.fenced && !entry.recovery {
                    return Err(BookieError::Fenced(entry.ledger_id));
                }
                s.lac = s.lac.max(entry.lac);
                s.last_entry_id = s.last_entry_id.max(entry.entry_id);
            }
            None => {
                *state = Some(LedgerStateRecord {
                    fenced: false,
                    lac: entry.lac,
                    master_key: entry.master_key.clone(),
                    last_entry_id: entry.entry_id,
                });
            }
        }
        Ok(())
    }

    fn stage_fence(
        &self,
        ledger_id: u64,
        master_key: Bytes,
        changes: &mut HashMap<u64, Option<LedgerStateRecord>>,
    ) -> Result<(), BookieError> {
        if ledger_id == 0 || master_key.is_empty() {
            return Err(BookieError::InvalidRequest(
                "fence needs a ledger id and a master key".into(),
            ));
        }
        let state = self.current(ledger_id, changes);
        match state {
            Some(s) if s.master_key != master_key => Err(BookieError::BadMasterKey(ledger_id)),
            Some(s) => {
                s.fenced = true;
                Ok(())
            }
            // Fence a ledger never seen here too: an add of the old writer
            // that arrives later must still be refused.
            None => {
                *state = Some(LedgerStateRecord {
                    fenced: true,
                    lac: -1,
                    master_key,
                    last_entry_id: -1,
                });
                Ok(())
            }
        }
    }

    fn reply(&self, staged: Vec<Staged>, outcome: Result<(), BookieError>) {
        for s in staged {
            match s {
                Staged::Add { mut results, reply } => {
                    if let Err(e) = &outcome {
                        for r in results
                            .iter_mut()
                            .filter(|r| r.code == ErrorCode::Ok as i32)
                        {
                            *r = error_result(e);
                        }
                    }
                    let _ = reply.send(results);
                }
                Staged::Fence {
                    ledger_id,
                    result,
                    reply,
                } => {
                    let answer = result.and(outcome.clone()).map(|()| {
                        let state = self.table.get(ledger_id).unwrap_or_default();
                        FenceOutcome {
                            lac: state.lac,
                            last_entry_id: state.last_entry_id,
                        }
                    });
                    let _ = reply.send(answer);
                }
                Staged::Delete { reply } => {
                    let _ = reply.send(outcome.clone());
                }
            }
        }
    }
}

/// Checks what does not depend on stored state.
fn validate_add(entry: &AddEntry, max_entry_bytes: usize) -> Result<(), BookieError> {
    if entry.ledger_id == 0 {
        return Err(BookieError::InvalidRequest(
            "ledger id 0 is reserved".into(),
        ));
    }
    if entry.entry_id < 0 {
        return Err(BookieError::InvalidRequest(format!(
            "negative entry id {}",
            entry.entry_id
        )));
    }
    if entry.lac < -1 {
        return Err(BookieError::InvalidRequest(format!(
            "invalid LAC {}",
            entry.lac
        )));
    }
    if entry.master_key.is_empty() {
        return Err(BookieError::InvalidRequest("empty master key".into()));
    }
    if entry.payload.len() > max_entry_bytes {
        return Err(BookieError::TooLarge {
            size: entry.payload.len(),
            limit: max_entry_bytes,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{RocksEntryStore, RocksOptions};

    fn add(ledger_id: u64, entry_id: i64, recovery: bool) -> AddEntry {
        AddEntry {
            ledger_id,
            entry_id,
            lac: entry_id - 1,
            master_key: Bytes::from_static(b"k"),
            recovery,
            payload: Bytes::from(format!("{ledger_id}/{entry_id}")),
        }
    }

    fn codes(results: &[AddResult]) -> Vec<ErrorCode> {
        results
            .iter()
            .map(|r| ErrorCode::try_from(r.code).unwrap())
            .collect()
    }

    struct Fixture {
        _dir: tempfile::TempDir,
        store: Arc<RocksEntryStore>,
        table: Arc<LedgerTable>,
        journal: Journal,
    }

    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(RocksEntryStore::open(dir.path(), &RocksOptions::default()).unwrap());
        let table = Arc::new(LedgerTable::new(vec![]));
        let (journal, _thread) = Journal::start(
            store.clone(),
            table.clone(),
            Arc::new(AtomicBool::new(false)),
            JournalConfig::default(),
            BookieMetrics::new().unwrap(),
        )
        .unwrap();
        Fixture {
            _dir: dir,
            store,
            table,
            journal,
        }
    }

    #[tokio::test]
    async fn adds_queued_after_a_fence_are_refused_unless_recovering() {
        let f = fixture();
        // Queue everything before awaiting, so it can share one round.
        let first = f.journal.add(vec![add(1, 0, false), add(1, 1, false)]);
        let fence = f.journal.fence(1, Bytes::from_static(b"k"));
        let (fence, first) = tokio::join!(fence, first);
        assert_eq!(codes(&first.unwrap()), vec![ErrorCode::Ok, ErrorCode::Ok]);
        assert_eq!(
            fence.unwrap(),
            FenceOutcome {
                lac: 0,
                last_entry_id: 1
            }
        );
        let after = f
            .journal
            .add(vec![add(1, 2, false), add(1, 2, true)])
            .await
            .unwrap();
        assert_eq!(codes(&after), vec![ErrorCode::Fenced, ErrorCode::Ok]);
        assert_eq!(f.table.get(1).unwrap().last_entry_id, 2);
    }

    #[tokio::test]
    async fn nothing_is_visible_in_the_table_before_it_is_stored() {
        let f = fixture();
        let results = f.journal.add(vec![add(2, 0, false)]).await.unwrap();
        assert_eq!(codes(&results), vec![ErrorCode::Ok]);
        // Once acknowledged, the entry is in the store and the state in the table.
        assert!(f.store.get_entry(2, 0).unwrap().is_some());
        assert_eq!(f.table.get(2).unwrap().lac, -1);
        let states = f.store.load_ledger_states().unwrap();
        assert_eq!(states.len(), 1);
    }

    #[tokio::test]
    async fn delete_then_re_add_in_one_round_keeps_the_new_entry() {
        let f = fixture();
        f.journal.add(vec![add(3, 0, false)]).await.unwrap();
        let delete = f.journal.delete(3);
        let readd = f.journal.add(vec![add(3, 5, false)]);
        let (deleted, readd) = tokio::join!(delete, readd);
        deleted.unwrap();
        assert_eq!(codes(&readd.unwrap()), vec![ErrorCode::Ok]);
        assert!(f.store.get_entry(3, 0).unwrap().is_none());
        assert!(f.store.get_entry(3, 5).unwrap().is_some());
        assert_eq!(f.table.get(3).unwrap().last_entry_id, 5);
    }
}
