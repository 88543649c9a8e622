//! Where durable cursors live. Every cursor has a record in metadata (so a
//! topic's subscriptions can be listed); where the log store keeps cursor
//! logs (the decoupled architecture: a managed ledger on the bookies, as
//! Pulsar keeps a cursor ledger; the monolithic one: a local log on the
//! partition's replicas), each flush appends the cursor's state to its log
//! and the record changes only when the log rolls over, so the metadata
//! store's write rate does not grow with acknowledgements. With
//! `--cursors-in-metadata` the record holds the whole state and each flush
//! rewrites it.

use std::sync::Arc;

use magnetar_metadata::{keys, Expect, MetadataError, MetadataStore, Version};
use serde::{Deserialize, Serialize};

use super::state::{CursorSnapshot, CursorState};
use crate::storage::{
    LogName, LogPolicies, LogStats, LogStore, PartitionLog, Position, RetentionLimits, StorageError,
};

/// A cursor's record in metadata.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct CursorRecord {
    #[serde(flatten)]
    snapshot: CursorSnapshot,
    /// The state is the last entry of the cursor's log; `snapshot` holds
    /// only the mark-delete position of when the log last rolled over.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    in_log: bool,
}

impl CursorRecord {
    fn to_bytes(&self) -> bytes::Bytes {
        bytes::Bytes::from(serde_json::to_vec(self).unwrap_or_default())
    }

    fn parse(key: &str, bytes: &[u8]) -> Result<Self, StorageError> {
        serde_json::from_slice(bytes)
            .map_err(|e| StorageError::Metadata(format!("corrupt cursor {key}: {e}")))
    }
}

/// The durable cursors of one topic.
#[derive(Clone)]
pub struct CursorStorage {
    metadata: Arc<dyn MetadataStore>,
    topic: LogName,
    /// Set where cursor state is kept in logs, with the policies their
    /// replication follows (the topic's namespace's).
    logs: Option<(Arc<dyn LogStore>, LogPolicies)>,
}

impl CursorStorage {
    /// Cursors of `topic`: with `logs`, each in a log of that store (which
    /// must keep cursor logs), replicated as `policies` ask; otherwise in
    /// metadata alone.
    pub fn new(
        metadata: Arc<dyn MetadataStore>,
        topic: LogName,
        logs: Option<(Arc<dyn LogStore>, LogPolicies)>,
    ) -> Self {
        CursorStorage {
            metadata,
            topic,
            logs,
        }
    }

    fn key(&self, subscription: &str) -> String {
        keys::cursor(
            &self.topic.tenant,
            &self.topic.namespace,
            &self.topic.local,
            subscription,
        )
    }

    fn prefix(&self) -> String {
        keys::cursors_prefix(&self.topic.tenant, &self.topic.namespace, &self.topic.local)
    }

    /// Every stored cursor by subscription name, as its record has it: for
    /// a cursor kept in a log, only a recent mark-delete position.
    pub async fn list(&self) -> Result<Vec<(String, CursorSnapshot)>, StorageError> {
        let prefix = self.prefix();
        let mut cursors = Vec::new();
        for kv in self.metadata.list(&prefix).await? {
            let Some(name) = keys::child_name(&prefix, &kv.key) else {
                continue;
            };
            cursors.push((name, CursorRecord::parse(&kv.key, &kv.value)?.snapshot));
        }
        Ok(cursors)
    }

    pub async fn exists(&self, subscription: &str) -> Result<bool, StorageError> {
        Ok(self.metadata.get(&self.key(subscription)).await?.is_some())
    }

    /// Opens the cursor of `subscription`, creating it at `initial` if none
    /// is stored (stored at once, so the subscription exists from now on).
    /// Opening its log takes it over from a previous owner, whose later
    /// writes then fail.
    pub async fn open(
        &self,
        subscription: &str,
        initial: Position,
    ) -> Result<(DurableCursor, CursorState), StorageError> {
        let key = self.key(subscription);
        let (record, version, created) = loop {
            if let Some(kv) = self.metadata.get(&key).await? {
                break (CursorRecord::parse(&key, &kv.value)?, kv.version, false);
            }
            let record = CursorRecord {
                snapshot: CursorState::new(initial).snapshot(),
                in_log: self.logs.is_some(),
            };
            match self
                .metadata
                .put(&key, record.to_bytes(), Expect::Absent, None)
                .await
            {
                Ok(version) => break (record, version, true),
                Err(MetadataError::Conflict { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        };
        let mut snapshot = record.snapshot;
        let log = match &self.logs {
            None => None,
            Some((logs, policies)) => {
                let log = logs
                    .open(&self.topic.cursor_log(subscription), policies)
                    .await?;
                // The log, once written, is newer than the record: a record
                // not yet marked `in_log` is one stored in metadata alone
                // (before cursor logs), whose state moves to the log with
                // the first flush.
                if let Some(latest) = last_state(log.as_ref()).await? {
                    snapshot = latest;
                }
                Some(log)
            }
        };
        // A record written just now is as fresh as the segment the log
        // writes next, so the first flush need not rewrite it: thousands of
        // new subscriptions acknowledging their first message together
        // would otherwise write their records together.
        let segment = log
            .as_ref()
            .filter(|_| created)
            .and_then(|log| log.stats().current)
            .map(|s| (s.id, s.first_entry));
        let cursor = DurableCursor {
            metadata: self.metadata.clone(),
            key,
            log,
            writes: tokio::sync::Mutex::new(Writes { version, segment }),
        };
        Ok((cursor, CursorState::from_snapshot(snapshot)))
    }

    /// Deletes a stored cursor nobody has open (its log, then its record);
    /// false if there was none.
    pub async fn delete_stored(&self, subscription: &str) -> Result<bool, StorageError> {
        let log_deleted = match &self.logs {
            Some((logs, _)) => {
                logs.delete_stored(&self.topic.cursor_log(subscription))
                    .await?
            }
            None => false,
        };
        let key = self.key(subscription);
        let record = self.metadata.get(&key).await?;
        if record.is_some() {
            self.metadata.delete(&key, Expect::Any).await?;
        }
        Ok(log_deleted || record.is_some())
    }

    /// Deletes every stored cursor of the topic; how many there were.
    pub async fn delete_all(&self) -> Result<usize, StorageError> {
        let names: Vec<String> = self.list().await?.into_iter().map(|(n, _)| n).collect();
        for name in &names {
            self.delete_stored(name).await?;
        }
        Ok(names.len())
    }
}

/// How long opening a cursor waits for the states a previous leader of
/// its log appended to be confirmed: longer than a stalled replica stays
/// in sync (10 s by default), after which the broker goes on from the
/// latest confirmed state and delivers again what was acknowledged since.
const INHERITED_STATE_WAIT: std::time::Duration = std::time::Duration::from_secs(15);

/// The latest state appended to a cursor log, if any.
async fn last_state(log: &dyn PartitionLog) -> Result<Option<CursorSnapshot>, StorageError> {
    if !log.confirm_inherited(INHERITED_STATE_WAIT).await {
        tracing::warn!(cursor_log = %log.name(), "states its previous leader appended are not confirmed yet: opening the cursor at the latest confirmed one");
    }
    let last = log.last_confirmed();
    if last.entry_id < 0 {
        return Ok(None);
    }
    let entries = log.read_entries(log.previous_position(last), 1).await?;
    let Some(entry) = entries.into_iter().find(|e| e.position == last) else {
        return Err(StorageError::Backend(format!(
            "{}: its last entry {last} cannot be read",
            log.name()
        )));
    };
    CursorSnapshot::from_bytes(&entry.data)
        .map(Some)
        .map_err(|e| StorageError::Backend(format!("{}: corrupt cursor state: {e}", log.name())))
}

/// A segment of a log: a ledger's id, or a local log's id and the first
/// entry of one of its segment files.
type SegmentId = (u64, i64);

/// The segment holding `at`, as `stats` (read after `at` was appended)
/// shows it.
fn segment_of(stats: &LogStats, at: Position) -> SegmentId {
    stats
        .segments
        .iter()
        .rev()
        .find(|s| s.id == at.ledger_id && s.first_entry <= at.entry_id)
        .map_or((at.ledger_id, 0), |s| (s.id, s.first_entry))
}

/// Write side of one open durable cursor.
pub struct DurableCursor {
    metadata: Arc<dyn MetadataStore>,
    key: String,
    log: Option<Arc<dyn PartitionLog>>,
    /// Serialises writes.
    writes: tokio::sync::Mutex<Writes>,
}

struct Writes {
    /// Of the record, as this cursor last wrote or read it.
    version: Version,
    /// The segment of the last state appended to the log.
    segment: Option<SegmentId>,
}

impl DurableCursor {
    /// Makes the state `take` returns the stored state (`take` runs once
    /// earlier writes are done, so states are stored in the order they
    /// were taken; `None` writes nothing). Without a log this rewrites the
    /// record, by compare-and-set on the version this cursor wrote last: a
    /// conflict means another broker took the cursor over. With a log it
    /// appends (a takeover fences the log, so the append fails), trims the
    /// ledgers of superseded states, and only when the append starts a new
    /// ledger refreshes the record's mark-delete position.
    pub async fn persist(
        &self,
        take: impl FnOnce() -> Option<CursorSnapshot>,
    ) -> Result<(), StorageError> {
        let mut writes = self.writes.lock().await;
        let Some(snapshot) = take() else {
            return Ok(());
        };
        let snapshot = &snapshot;
        let Some(log) = &self.log else {
            let record = CursorRecord {
                snapshot: snapshot.clone(),
                in_log: false,
            };
            writes.version = self
                .metadata
                .put(
                    &self.key,
                    record.to_bytes(),
                    Expect::Version(writes.version),
                    None,
                )
                .await?;
            return Ok(());
        };
        let at = log.clone().append(snapshot.to_bytes()).await?;
        let stats = log.stats();
        let segment = segment_of(&stats, at);
        let new_segment = writes.segment != Some(segment);
        // Every earlier segment holds superseded states only. One still
        // being sealed by a rollover cannot go yet; a later write retries.
        if new_segment || stats.segments.len() > 1 {
            if let Err(e) = log
                .trim_consumed(log.previous_position(at), &RetentionLimits::NONE)
                .await
            {
                tracing::warn!(cursor = %self.key, error = %e, "trimming a cursor log");
            }
        }
        if !new_segment {
            return Ok(());
        }
        let record = CursorRecord {
            snapshot: CursorSnapshot {
                mark_delete: snapshot.mark_delete,
                acked_ranges: Vec::new(),
                partial: Vec::new(),
            },
            in_log: true,
        };
        writes.version = self.put_record(&record, writes.version).await?;
        writes.segment = Some(segment);
        Ok(())
    }

    /// Writes the record of a cursor whose log this broker just appended
    /// to, so owns: a version changed meanwhile (by a previous owner's last
    /// write) is read again rather than taken for a takeover.
    async fn put_record(
        &self,
        record: &CursorRecord,
        version: Version,
    ) -> Result<Version, StorageError> {
        let bytes = record.to_bytes();
        match self
            .metadata
            .put(&self.key, bytes.clone(), Expect::Version(version), None)
            .await
        {
            Err(MetadataError::Conflict { .. }) => {
                let Some(current) = self.metadata.get(&self.key).await? else {
                    return Err(StorageError::Fenced(format!(
                        "cursor {} was deleted",
                        self.key
                    )));
                };
                Ok(self
                    .metadata
                    .put(&self.key, bytes, Expect::Version(current.version), None)
                    .await?)
            }
            other => Ok(other?),
        }
    }

    /// Deletes the cursor: its log, then its record.
    pub async fn delete(&self) -> Result<(), StorageError> {
        let _writes = self.writes.lock().await;
        if let Some(log) = &self.log {
            log.delete().await?;
        }
        self.metadata.delete(&self.key, Expect::Any).await?;
        Ok(())
    }

    /// Seals the cursor's log, if it has one (the state stays stored).
    pub async fn close(&self) {
        let _writes = self.writes.lock().await;
        if let Some(log) = &self.log {
            if let Err(e) = log.close().await {
                tracing::warn!(cursor = %self.key, error = %e, "closing a cursor log");
            }
        }
    }

    /// Whether this cursor's state is kept in a log.
    pub fn in_log(&self) -> bool {
        self.log.is_some()
    }
}
