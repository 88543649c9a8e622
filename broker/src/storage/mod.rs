//! The partition-log seam: what topics, subscriptions, dispatch, the
//! protocol server and the admin API need from a partition's storage, and
//! nothing more. Two architectures implement it:
//! - decoupled (Pulsar/BookKeeper): a managed ledger, a list of replicated
//!   ledgers on bookies (`crate::managed_ledger`);
//! - monolithic (Kafka): segment files on this broker's disk
//!   (`crate::local_log`).
//!
//! Code outside the storage modules names only the types of this module.
//! An entry is opaque bytes here; nothing below this seam knows what a
//! message is.

#[cfg(feature = "conformance")]
pub mod conformance;
mod error;
mod position;
mod publish_time;
mod replicas;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::watch;

pub use error::StorageError;
pub use position::Position;
pub use publish_time::position_at_publish_time;
pub use replicas::{ReassignmentState, ReplicaSet, ReplicaState};

/// An entry read back: its position and the bytes appended.
#[derive(Clone, Debug)]
pub struct Entry {
    pub position: Position,
    pub data: Bytes,
}

/// Resolves once an appended entry is confirmed (durable on an ack quorum
/// of bookies, or at the high watermark of the in-sync replicas).
pub type AppendFuture = Pin<Box<dyn Future<Output = Result<Position, StorageError>> + Send>>;

/// The position order of a log, which a cursor needs to fold acknowledged
/// entries into its mark-delete position.
pub trait PositionOrder {
    /// The first readable position after `after`, if any is readable yet.
    fn next_position(&self, after: Position) -> Option<Position>;
    /// The position just before `position` in log order: what a cursor's
    /// mark-delete must be for reading to start at `position`.
    fn previous_position(&self, position: Position) -> Position;

    /// Whether `position` names a confirmed entry still stored: what a
    /// position a client sends (an ack, a redelivery request) must name
    /// before it may touch a cursor.
    fn holds(&self, position: Position) -> bool {
        position.entry_id >= 0
            && self.next_position(self.previous_position(position)) == Some(position)
    }
}

/// A run of consecutive positions `(ledger, first_entry ..
/// first_entry + count)`: a ledger of a managed ledger, or the whole of a
/// local log. Searches (by publish time) index into these.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PositionRun {
    pub first: Position,
    pub count: u64,
}

/// How much consumed data a log keeps: consumed segments (ledgers) stay
/// while they are within both limits, and the oldest go while either is
/// exceeded. `None` is no limit on that axis.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetentionLimits {
    /// Age of a consumed segment, measured from when it was closed.
    pub max_age: Option<Duration>,
    /// Total bytes of the consumed segments kept.
    pub max_bytes: Option<u64>,
}

impl RetentionLimits {
    /// Keep nothing once consumed (Pulsar's default, retention 0/0).
    pub const NONE: RetentionLimits = RetentionLimits {
        max_age: Some(Duration::ZERO),
        max_bytes: Some(0),
    };
    /// Keep everything (retention -1/-1).
    pub const UNLIMITED: RetentionLimits = RetentionLimits {
        max_age: None,
        max_bytes: None,
    };
}

impl RetentionLimits {
    /// How many of `consumed` — the consumed segments (ledgers), oldest
    /// first, as (bytes, time in ms they stopped growing) — to delete at
    /// `now_ms`: the oldest, while the consumed ones kept exceed the size
    /// limit or the oldest kept is past the age limit. Both architectures
    /// trim by this one rule.
    pub fn expired_prefix(&self, consumed: &[(u64, u64)], now_ms: u64) -> usize {
        let mut retained: u64 = consumed.iter().map(|(bytes, _)| bytes).sum();
        let mut dropped = 0;
        for (bytes, closed_ms) in consumed {
            let age_ms = now_ms.saturating_sub(*closed_ms);
            let expired = self
                .max_age
                .is_some_and(|max| u128::from(age_ms) >= max.as_millis());
            let oversize = self.max_bytes.is_some_and(|max| retained > max);
            if !(expired || oversize) {
                break;
            }
            retained -= bytes;
            dropped += 1;
        }
        dropped
    }
}

/// One unit of a log's storage as admin stats show it: a ledger, or a
/// segment file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentStats {
    /// The ledger id of the segment's positions: a ledger's id, or a local
    /// log's id (the same for all of its segments).
    pub id: u64,
    /// The entry id of its first position (0 for a ledger, the base offset
    /// of a segment file).
    pub first_entry: i64,
    /// Entries readable now (all of them once the segment is closed).
    pub entries: u64,
    /// Bytes stored (for the segment being written, appended so far).
    pub size: u64,
    /// No more entries will be added to it (rolled over or sealed).
    pub closed: bool,
}

/// A log's storage at one moment (Pulsar's `internalStats`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogStats {
    pub segments: Vec<SegmentStats>,
    /// Sums over `segments`.
    pub entries: u64,
    pub size: u64,
    /// The segment being written, if any.
    pub current: Option<SegmentStats>,
    pub last_confirmed: Position,
}

/// One partition's log. Entries are confirmed in append order; readers see
/// confirmed entries only.
#[async_trait]
pub trait PartitionLog: PositionOrder + Send + Sync {
    /// The topic (partition) this log stores.
    fn name(&self) -> &str;

    /// Appends `entry` as the next entry. Call order is entry order: the
    /// position is assigned before this returns, the future resolves once
    /// the entry is confirmed. Fails at once when the log cannot accept
    /// writes (closed, fenced, too few replicas).
    fn append(self: Arc<Self>, entry: Bytes) -> AppendFuture;

    /// Why an append now would fail at once for lack of in-sync replicas,
    /// if it would. Producers are refused meanwhile: a client told a send
    /// failed reconnects and resends, and without a refusal it would loop.
    fn accepts_writes(&self) -> Result<(), StorageError> {
        Ok(())
    }

    /// Up to `max_entries` consecutive confirmed entries after `after`
    /// (possibly fewer, e.g. stopping at a ledger boundary); empty when
    /// nothing is readable yet.
    async fn read_entries(
        &self,
        after: Position,
        max_entries: usize,
    ) -> Result<Vec<Entry>, StorageError>;

    /// The last confirmed entry, or a position with entry -1 before the
    /// first entry of an empty log.
    fn last_confirmed(&self) -> Position;

    /// Waits (at most `limit`) until every entry this log holds is
    /// confirmed, and says whether they all are. A new leader of a local
    /// log holds entries its predecessor appended that it confirms only
    /// once its in-sync replicas hold them too; a reader that needs the
    /// latest entry (a cursor's state) waits for them. A managed ledger
    /// has recovered its ledgers when it opens, so it never waits.
    async fn confirm_inherited(&self, _limit: Duration) -> bool {
        true
    }

    /// The position before the first entry still stored (reading from the
    /// start begins after it).
    fn first_position(&self) -> Position;

    /// Number of confirmed entries after `after` (backlog).
    fn entries_after(&self, after: Position) -> u64;

    /// Bytes stored after `after` (a cursor's backlog in bytes, estimated
    /// at the average entry size where exact sizes are not known).
    fn bytes_after(&self, after: Position) -> u64;

    /// The earliest mark-delete position that leaves at most `max_bytes`
    /// after it (backlog eviction); never past the last confirmed entry.
    fn mark_delete_leaving(&self, max_bytes: u64) -> Position;

    /// A receiver that changes whenever new entries become readable (or the
    /// log closes), so tailing readers wait instead of polling.
    fn subscribe_changes(&self) -> watch::Receiver<u64>;

    /// The confirmed entries as runs of consecutive positions, in order.
    fn position_runs(&self) -> Vec<PositionRun>;

    /// Deletes whole segments (ledgers) that every reader has passed
    /// (`slowest` is the slowest cursor's mark-delete position) and that
    /// `limits` no longer keep. Returns how many went.
    async fn trim_consumed(
        &self,
        slowest: Position,
        limits: &RetentionLimits,
    ) -> Result<usize, StorageError>;

    fn stats(&self) -> LogStats;

    /// Stops appends (they fail with `Closed`) and makes what was confirmed
    /// durable for the next owner.
    async fn close(&self) -> Result<(), StorageError>;

    /// Deletes this log's data and its record. Appends fail from now on.
    async fn delete(&self) -> Result<(), StorageError>;
}

/// States one segment (ledger) of a cursor log holds before the log rolls
/// over, in either architecture, so superseded states can be trimmed
/// (Pulsar's `managedLedgerCursorMaxEntriesPerLedger` is 50,000; a flush
/// every 100 ms fills this in about 17 minutes).
pub const CURSOR_LOG_MAX_ENTRIES: u64 = 10_000;
/// Bytes of one segment of a cursor log: a cursor with many acknowledged
/// ranges writes large states and rolls sooner.
pub const CURSOR_LOG_MAX_BYTES: u64 = 64 << 20;

/// A topic's identity as storage needs it (kept apart from the topic
/// module's names so storage depends on nothing above it), or the identity
/// of one of its subscriptions' cursor logs.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct LogName {
    pub tenant: String,
    pub namespace: String,
    /// The topic's local name (`events`, `events-partition-3`).
    pub local: String,
    /// Set for the log that stores the cursor of this subscription of the
    /// topic (see [`LogStore::keeps_cursor_logs`]).
    pub cursor_of: Option<String>,
}

impl LogName {
    pub fn new(tenant: &str, namespace: &str, local: &str) -> Self {
        LogName {
            tenant: tenant.to_string(),
            namespace: namespace.to_string(),
            local: local.to_string(),
            cursor_of: None,
        }
    }

    /// The log of `subscription`'s cursor on this topic.
    pub fn cursor_log(&self, subscription: &str) -> Self {
        LogName {
            cursor_of: Some(subscription.to_string()),
            ..self.clone()
        }
    }

    /// `persistent://tenant/namespace/local`, and for a cursor log
    /// ` (cursor SUBSCRIPTION)` after it.
    pub fn full_name(&self) -> String {
        let topic = format!(
            "persistent://{}/{}/{}",
            self.tenant, self.namespace, self.local
        );
        match &self.cursor_of {
            None => topic,
            Some(subscription) => format!("{topic} (cursor {subscription})"),
        }
    }

    /// Where the log's record lives in metadata. Both architectures keep
    /// one record per topic there, so listing a namespace's topics is the
    /// same for both; a cursor log's record sits one level below its
    /// topic's, where topic listings do not look.
    pub fn metadata_key(&self) -> String {
        match &self.cursor_of {
            None => magnetar_metadata::keys::topic(&self.tenant, &self.namespace, &self.local),
            Some(subscription) => magnetar_metadata::keys::cursor_log(
                &self.tenant,
                &self.namespace,
                &self.local,
                subscription,
            ),
        }
    }
}

/// Replication of a namespace's logs (its persistence policy): a ledger's
/// ensemble, write and ack quorums; for a local log the replication factor
/// (`ensemble_size`) and `min.insync.replicas` (`ack_quorum`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Replication {
    pub ensemble_size: u32,
    pub write_quorum: u32,
    pub ack_quorum: u32,
}

/// When a receipt goes out, relative to the disk (local logs; a bookie
/// always syncs its journal first).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FlushPolicy {
    /// After an fsync of the group of appends it was written with: the
    /// same durability as a bookie's journal (the default).
    Fsync,
    /// After the write reaches the OS, before any fsync, as Kafka does by
    /// default: a power loss can lose acknowledged entries. Reports must
    /// say when this was used.
    Os,
}

impl FlushPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            FlushPolicy::Fsync => "fsync",
            FlushPolicy::Os => "os",
        }
    }
}

impl std::str::FromStr for FlushPolicy {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "fsync" => Ok(FlushPolicy::Fsync),
            "os" => Ok(FlushPolicy::Os),
            other => Err(format!("unknown flush policy {other:?} (fsync or os)")),
        }
    }
}

/// What a namespace's policies ask of the logs of its topics; an
/// architecture ignores what it has no use for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LogPolicies {
    /// `None`: the broker's default.
    pub replication: Option<Replication>,
    /// Kafka's `unclean.leader.election.enable`: with no in-sync replica
    /// alive, one out of the ISR may lead, so the partition comes back at
    /// the price of the committed entries only the ISR held.
    pub unclean_leader_election: bool,
    /// `None`: the broker's default.
    pub flush: Option<FlushPolicy>,
}

/// Which architecture a cluster runs; chosen when the cluster is first
/// initialised and stored in metadata.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Architecture {
    /// Stateless brokers, ledgers on bookies (Pulsar).
    Decoupled,
    /// Partitions on brokers' local disks (Kafka).
    Monolithic,
}

impl Architecture {
    pub fn as_str(self) -> &'static str {
        match self {
            Architecture::Decoupled => "decoupled",
            Architecture::Monolithic => "monolithic",
        }
    }
}

impl std::str::FromStr for Architecture {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "decoupled" => Ok(Architecture::Decoupled),
            "monolithic" => Ok(Architecture::Monolithic),
            other => Err(format!(
                "unknown architecture {other:?} (decoupled or monolithic)"
            )),
        }
    }
}

impl std::fmt::Display for Architecture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Opens, creates, checks and deletes logs by topic name: the broker's
/// single way into storage.
#[async_trait]
pub trait LogStore: Send + Sync {
    fn architecture(&self) -> Architecture;

    /// Opens the log of `name` for writing by this broker, creating it if
    /// it does not exist, and takes it over from a previous owner (fencing
    /// it) if one left it open.
    async fn open(
        &self,
        name: &LogName,
        policies: &LogPolicies,
    ) -> Result<Arc<dyn PartitionLog>, StorageError>;

    /// Whether durable cursors keep their state in logs of this store
    /// (opened by [`LogName::cursor_log`] names), so acknowledgements do
    /// not write to the metadata store; otherwise cursors are stored in
    /// metadata.
    fn keeps_cursor_logs(&self) -> bool {
        false
    }

    /// Creates an empty log record for `name`; false if one exists.
    async fn create(&self, name: &LogName) -> Result<bool, StorageError>;

    /// Whether a log record exists for `name`.
    async fn exists(&self, name: &LogName) -> Result<bool, StorageError>;

    /// Deletes the stored log of a topic nobody has open; false if there
    /// is none.
    async fn delete_stored(&self, name: &LogName) -> Result<bool, StorageError>;

    /// The brokers (by their Pulsar-side broker id) that may lead the log
    /// now, the preferred first; `None` when any broker may (a ledger can
    /// be opened anywhere, a new local log by whoever creates it). Lookups
    /// of an unowned topic choose among these.
    /// `unclean`: the namespace allows a replica out of the ISR to lead
    /// when no in-sync one is alive.
    async fn eligible_leaders(
        &self,
        _name: &LogName,
        _unclean: bool,
    ) -> Result<Option<Vec<String>>, StorageError> {
        Ok(None)
    }

    /// The log's copies and the reassignment under way, where the
    /// architecture keeps copies on brokers.
    async fn replica_set(&self, name: &LogName) -> Result<ReplicaSet, StorageError> {
        Err(no_replicas_on_brokers(name))
    }

    /// Moves the log's copies to `target` (brokers by id or replica id,
    /// the preferred leader first), throttled to `throttle` bytes/s of
    /// copying per receiving broker. The leader must stay a replica: a
    /// leader leaves by its bundle moving ([`Self::make_leader_ready`]).
    async fn reassign(
        &self,
        name: &LogName,
        _target: &[String],
        _throttle: Option<u64>,
    ) -> Result<ReplicaSet, StorageError> {
        Err(no_replicas_on_brokers(name))
    }

    /// Stops the reassignment under way; its new copies go again.
    async fn cancel_reassignment(&self, name: &LogName) -> Result<ReplicaSet, StorageError> {
        Err(no_replicas_on_brokers(name))
    }

    /// Starts whatever `broker` needs before it can lead the log, so that
    /// the log's bundle can move there: for a local log, a copy replacing
    /// the current leader's (throttled to `throttle` bytes/s). Nothing for
    /// ledgers, which any broker can open.
    async fn make_leader_ready(
        &self,
        _name: &LogName,
        _broker: &str,
        _throttle: Option<u64>,
    ) -> Result<(), StorageError> {
        Ok(())
    }

    /// The logs of which `broker` (by broker id) holds a copy, and for
    /// each whether it is recorded as their leader; none for ledgers.
    async fn logs_with_copy_on(&self, _broker: &str) -> Result<Vec<(LogName, bool)>, StorageError> {
        Ok(Vec::new())
    }

    /// Starts moving `broker`'s copy of the log to a broker holding none
    /// (of another rack where one is left), as a broker being removed
    /// needs; throttled to `throttle` bytes/s. False when `broker` holds
    /// no copy. Refused for the leader's copy: a leader goes with its
    /// bundle.
    async fn move_copy_off(
        &self,
        name: &LogName,
        _broker: &str,
        _throttle: Option<u64>,
    ) -> Result<bool, StorageError> {
        Err(no_replicas_on_brokers(name))
    }

    /// Whether no reassignment of the log is under way.
    async fn settled(&self, _name: &LogName) -> Result<bool, StorageError> {
        Ok(true)
    }

    /// Whether `broker` can lead the log now (it holds every committed
    /// entry); always for ledgers.
    async fn can_lead(&self, _name: &LogName, _broker: &str) -> Result<bool, StorageError> {
        Ok(true)
    }
}

fn no_replicas_on_brokers(name: &LogName) -> StorageError {
    StorageError::Rejected(format!(
        "{} is stored in ledgers on bookies: brokers hold no copies of it, and moving it moves only its bundle's ownership (namespaces unload with destinationBroker)",
        name.full_name()
    ))
}

/// Records `architecture` as the cluster's if none is recorded yet, and
/// refuses to go on if the cluster was initialised with the other one: a
/// broker of the other kind would find topics it cannot read.
pub async fn join_cluster(
    store: &dyn magnetar_metadata::MetadataStore,
    architecture: Architecture,
) -> Result<(), StorageError> {
    use magnetar_metadata::{keys, Expect, MetadataError};
    let key = keys::cluster_architecture();
    let recorded = match store.get(&key).await? {
        Some(kv) => kv.value,
        None => {
            match store
                .put(&key, architecture.as_str().into(), Expect::Absent, None)
                .await
            {
                Ok(_) => return Ok(()),
                Err(MetadataError::Conflict { .. }) => match store.get(&key).await? {
                    Some(kv) => kv.value,
                    None => return Err(StorageError::Metadata(format!("{key} vanished"))),
                },
                Err(e) => return Err(e.into()),
            }
        }
    };
    let recorded = String::from_utf8_lossy(&recorded).trim().to_string();
    if recorded == architecture.as_str() {
        return Ok(());
    }
    Err(StorageError::WrongArchitecture {
        cluster: recorded,
        broker: architecture,
    })
}
