//! In-memory state of the embedded store: keys, leases, the revision, recent
//! history for watches, and the live watchers.
//!
//! Changes happen in two steps so the log and memory never disagree: `plan_*`
//! decides what a request changes without touching anything, and
//! [`State::apply`] performs a logged change, live or during replay alike.
//! Nothing here does I/O.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::wal::{
    Change, GrantRecord, Mutation, RevokeRecord, Snapshot, SnapshotEntry, TxnRecord, WalRecord,
};
use crate::{
    Expect, KeyValue, LeaseId, MetadataError, Op, Result, Revision, Txn, WatchEvent, WatchEventKind,
};

/// Events a watcher may have queued beyond its backlog before it is dropped
/// as too slow (its stream then ends and the caller re-watches).
const WATCH_BUFFER: usize = 1024;

/// Longest lease accepted; keeps deadline arithmetic far from overflow.
const MAX_TTL: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

struct Entry {
    value: Bytes,
    create_revision: Revision,
    mod_revision: Revision,
    lease: Option<LeaseId>,
}

struct Lease {
    ttl: Duration,
    deadline: Instant,
    keys: BTreeSet<String>,
}

struct Watcher {
    prefix: String,
    tx: mpsc::Sender<Result<WatchEvent>>,
}

/// What a transaction would do.
pub(crate) struct TxnPlan {
    pub succeeded: bool,
    /// Keys the transaction deletes (that exist).
    pub deleted: usize,
    /// None when nothing changes (failed compare, or only absent deletes).
    pub change: Option<Change>,
}

pub(crate) struct State {
    kv: BTreeMap<String, Entry>,
    leases: HashMap<LeaseId, Lease>,
    revision: Revision,
    /// Index of the last applied log record.
    index: u64,
    next_lease: LeaseId,
    /// Recent events in revision order.
    history: VecDeque<WatchEvent>,
    /// Every event after this revision is in `history`; older ones are gone.
    history_floor: Revision,
    history_limit: usize,
    watchers: Vec<Watcher>,
    /// Why the store refuses work: closed, or its log failed.
    closed: Option<String>,
}

impl State {
    pub(crate) fn new(history_limit: usize) -> Self {
        Self {
            kv: BTreeMap::new(),
            leases: HashMap::new(),
            revision: 0,
            index: 0,
            next_lease: 1,
            history: VecDeque::new(),
            history_floor: 0,
            history_limit: history_limit.max(1),
            watchers: Vec::new(),
            closed: None,
        }
    }

    /// Replaces the state with a snapshot. Leases restart with a full TTL,
    /// as etcd's do after a restart.
    pub(crate) fn load_snapshot(&mut self, snapshot: Snapshot, now: Instant) -> Result<()> {
        self.revision = snapshot.revision;
        self.index = snapshot.index;
        self.next_lease = snapshot.next_lease.max(1);
        self.history.clear();
        self.history_floor = snapshot.revision;
        self.leases.clear();
        for lease in snapshot.leases {
            self.grant(&lease, now);
        }
        self.kv.clear();
        for entry in snapshot.entries {
            let lease = (entry.lease != 0).then_some(entry.lease);
            if let Some(id) = lease {
                self.leases
                    .get_mut(&id)
                    .ok_or_else(|| {
                        MetadataError::Corrupt(format!(
                            "snapshot binds {} to unknown lease {id}",
                            entry.key
                        ))
                    })?
                    .keys
                    .insert(entry.key.clone());
            }
            self.kv.insert(
                entry.key,
                Entry {
                    value: entry.value,
                    create_revision: entry.create_revision,
                    mod_revision: entry.mod_revision,
                    lease,
                },
            );
        }
        Ok(())
    }

    pub(crate) fn to_snapshot(&self) -> Snapshot {
        let mut leases: Vec<GrantRecord> = self
            .leases
            .iter()
            .map(|(id, lease)| GrantRecord {
                lease: *id,
                ttl_ms: duration_ms(lease.ttl),
            })
            .collect();
        leases.sort_by_key(|l| l.lease);
        Snapshot {
            index: self.index,
            revision: self.revision,
            next_lease: self.next_lease,
            entries: self
                .kv
                .iter()
                .map(|(key, e)| SnapshotEntry {
                    key: key.clone(),
                    value: e.value.clone(),
                    create_revision: e.create_revision,
                    mod_revision: e.mod_revision,
                    lease: e.lease.unwrap_or(0),
                })
                .collect(),
            leases,
        }
    }

    pub(crate) fn check_open(&self) -> Result<()> {
        match &self.closed {
            None => Ok(()),
            Some(reason) => Err(MetadataError::Unavailable(reason.clone())),
        }
    }

    /// Refuses all further work and ends every watch.
    pub(crate) fn close(&mut self, reason: String) {
        self.closed.get_or_insert(reason);
        self.watchers.clear();
    }

    pub(crate) fn revision(&self) -> Revision {
        self.revision
    }

    pub(crate) fn index(&self) -> u64 {
        self.index
    }

    pub(crate) fn get(&self, key: &str) -> Option<KeyValue> {
        self.kv.get(key).map(|e| key_value(key, e))
    }

    pub(crate) fn list(&self, prefix: &str) -> Vec<KeyValue> {
        self.kv
            .range::<str, _>((
                std::ops::Bound::Included(prefix),
                std::ops::Bound::Unbounded,
            ))
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, e)| key_value(k, e))
            .collect()
    }

    fn lease_alive(&self, lease: LeaseId, now: Instant) -> bool {
        self.leases.get(&lease).is_some_and(|l| l.deadline > now)
    }

    /// Refreshes a lease to its full TTL. Not logged: after a restart every
    /// lease starts over with a full TTL anyway.
    pub(crate) fn keep_alive(&mut self, lease: LeaseId, now: Instant) -> Result<()> {
        match self.leases.get_mut(&lease) {
            Some(l) if l.deadline > now => {
                l.deadline = now + l.ttl;
                Ok(())
            }
            _ => Err(MetadataError::LeaseNotFound(lease)),
        }
    }

    pub(crate) fn plan_txn(&self, txn: &Txn, now: Instant) -> Result<TxnPlan> {
        let holds = txn.compares.iter().all(|c| {
            let current = self.kv.get(&c.key);
            match c.expect {
                Expect::Any => true,
                Expect::Absent => current.is_none(),
                Expect::Version(v) => current.is_some_and(|e| e.mod_revision == v),
            }
        });
        if !holds {
            return Ok(TxnPlan {
                succeeded: false,
                deleted: 0,
                change: None,
            });
        }
        let mut mutations = Vec::with_capacity(txn.ops.len());
        let mut deleted = 0;
        for op in &txn.ops {
            match op {
                Op::Put { key, value, lease } => {
                    if let Some(id) = lease {
                        if !self.lease_alive(*id, now) {
                            return Err(MetadataError::LeaseNotFound(*id));
                        }
                    }
                    mutations.push(Mutation {
                        key: key.clone(),
                        value: value.clone(),
                        lease: lease.unwrap_or(0),
                        delete: false,
                    });
                }
                Op::Delete { key } => {
                    if self.kv.contains_key(key) {
                        deleted += 1;
                        mutations.push(Mutation {
                            key: key.clone(),
                            value: Bytes::new(),
                            lease: 0,
                            delete: true,
                        });
                    }
                }
            }
        }
        let change = (!mutations.is_empty()).then(|| {
            Change::Txn(TxnRecord {
                revision: self.revision + 1,
                mutations,
            })
        });
        Ok(TxnPlan {
            succeeded: true,
            deleted,
            change,
        })
    }

    /// The next lease id and the change granting it.
    pub(crate) fn plan_grant(&self, ttl: Duration) -> Result<(LeaseId, Change)> {
        let ttl_ms = duration_ms(ttl);
        if ttl_ms == 0 || ttl > MAX_TTL {
            return Err(MetadataError::InvalidArgument(format!(
                "lease TTL {ttl:?} outside 1 ms ..= {MAX_TTL:?}"
            )));
        }
        let grant = GrantRecord {
            lease: self.next_lease,
            ttl_ms,
        };
        Ok((grant.lease, Change::Grant(grant)))
    }

    pub(crate) fn plan_revoke(&self, lease: LeaseId) -> Result<Change> {
        let l = self
            .leases
            .get(&lease)
            .ok_or(MetadataError::LeaseNotFound(lease))?;
        // Like a transaction, a revoke that deletes nothing keeps the revision.
        let revision = self.revision + i64::from(!l.keys.is_empty());
        Ok(Change::Revoke(RevokeRecord { lease, revision }))
    }

    /// Leases whose TTL ran out, to be revoked by the committer.
    pub(crate) fn expired(&self, now: Instant) -> Vec<LeaseId> {
        let mut ids: Vec<LeaseId> = self
            .leases
            .iter()
            .filter(|(_, l)| l.deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        ids.sort_unstable();
        ids
    }

    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.leases.values().map(|l| l.deadline).min()
    }

    /// Checks that a replayed record continues the state (catches a log that
    /// does not belong to this snapshot, or lost records in the middle).
    pub(crate) fn check_replay(&self, record: &WalRecord) -> Result<()> {
        if record.index != self.index + 1 {
            return Err(MetadataError::Corrupt(format!(
                "log record {} follows record {}",
                record.index, self.index
            )));
        }
        let revision_ok = match &record.change {
            Some(Change::Txn(t)) => t.revision == self.revision + 1,
            Some(Change::Revoke(r)) => {
                r.revision == self.revision || r.revision == self.revision + 1
            }
            Some(Change::Grant(_)) => true,
            None => false,
        };
        if revision_ok {
            Ok(())
        } else {
            Err(MetadataError::Corrupt(format!(
                "log record {} does not continue revision {}",
                record.index, self.revision
            )))
        }
    }

    /// Performs a logged change and returns its events, which are also kept
    /// in the history. The caller dispatches them once the record is durable.
    pub(crate) fn apply(&mut self, record: &WalRecord, now: Instant) -> Vec<WatchEvent> {
        self.index = record.index;
        let mut events = Vec::new();
        match &record.change {
            Some(Change::Txn(txn)) => {
                for m in &txn.mutations {
                    if m.delete {
                        if self.remove(&m.key) {
                            events.push(delete_event(&m.key, txn.revision));
                        }
                    } else {
                        self.insert(m, txn.revision);
                        events.push(WatchEvent {
                            kind: WatchEventKind::Put,
                            key: m.key.clone(),
                            value: m.value.clone(),
                            revision: txn.revision,
                        });
                    }
                }
                self.revision = txn.revision;
            }
            Some(Change::Grant(grant)) => self.grant(grant, now),
            Some(Change::Revoke(revoke)) => {
                if let Some(lease) = self.leases.remove(&revoke.lease) {
                    for key in lease.keys {
                        self.kv.remove(&key);
                        events.push(delete_event(&key, revoke.revision));
                    }
                }
                self.revision = self.revision.max(revoke.revision);
            }
            None => {}
        }
        for event in &events {
            self.remember(event.clone());
        }
        events
    }

    fn grant(&mut self, grant: &GrantRecord, now: Instant) {
        let ttl = Duration::from_millis(grant.ttl_ms).min(MAX_TTL);
        self.leases.insert(
            grant.lease,
            Lease {
                ttl,
                deadline: now + ttl,
                keys: BTreeSet::new(),
            },
        );
        self.next_lease = self.next_lease.max(grant.lease + 1);
    }

    fn insert(&mut self, m: &Mutation, revision: Revision) {
        let lease = (m.lease != 0).then_some(m.lease);
        let previous = self.kv.get(&m.key);
        let create_revision = previous.map_or(revision, |e| e.create_revision);
        let previous_lease = previous.and_then(|e| e.lease);
        if previous_lease != lease {
            self.unbind(previous_lease, &m.key);
        }
        let lease = match lease {
            Some(id) => match self.leases.get_mut(&id) {
                Some(l) => {
                    l.keys.insert(m.key.clone());
                    Some(id)
                }
                // Planning checked the lease; only a damaged log gets here.
                None => {
                    tracing::warn!(key = %m.key, lease = id, "put bound to unknown lease");
                    None
                }
            },
            None => None,
        };
        self.kv.insert(
            m.key.clone(),
            Entry {
                value: m.value.clone(),
                create_revision,
                mod_revision: revision,
                lease,
            },
        );
    }

    fn remove(&mut self, key: &str) -> bool {
        match self.kv.remove(key) {
            Some(entry) => {
                self.unbind(entry.lease, key);
                true
            }
            None => false,
        }
    }

    fn unbind(&mut self, lease: Option<LeaseId>, key: &str) {
        if let Some(l) = lease.and_then(|id| self.leases.get_mut(&id)) {
            l.keys.remove(key);
        }
    }

    fn remember(&mut self, event: WatchEvent) {
        self.history.push_back(event);
        while self.history.len() > self.history_limit {
            if let Some(dropped) = self.history.pop_front() {
                self.history_floor = self.history_floor.max(dropped.revision);
            }
        }
        // A revision is served whole or not at all.
        while self
            .history
            .front()
            .is_some_and(|e| e.revision <= self.history_floor)
        {
            self.history.pop_front();
        }
    }

    /// Registers a watcher; past events from `start_revision` on are queued
    /// first, so the stream continues without a gap.
    pub(crate) fn watch(
        &mut self,
        prefix: &str,
        start_revision: Option<Revision>,
    ) -> Result<mpsc::Receiver<Result<WatchEvent>>> {
        let start = match start_revision {
            Some(r) if r > 0 => r,
            _ => self.revision + 1,
        };
        if start <= self.history_floor {
            return Err(MetadataError::Compacted {
                requested: start,
                oldest: self.history_floor + 1,
            });
        }
        let from = self.history.partition_point(|e| e.revision < start);
        let backlog: Vec<WatchEvent> = self
            .history
            .range(from..)
            .filter(|e| e.key.starts_with(prefix))
            .cloned()
            .collect();
        let (tx, rx) = mpsc::channel(backlog.len() + WATCH_BUFFER);
        for event in backlog {
            // Capacity covers the whole backlog.
            let _ = tx.try_send(Ok(event));
        }
        self.watchers.push(Watcher {
            prefix: prefix.to_owned(),
            tx,
        });
        Ok(rx)
    }

    /// Hands durable events to the watchers. One that cannot keep up is
    /// dropped rather than buffered without bound; it re-watches from its
    /// last revision and catches up from the history.
    pub(crate) fn dispatch(&mut self, events: &[WatchEvent]) {
        self.watchers.retain(|w| {
            for event in events.iter().filter(|e| e.key.starts_with(&w.prefix)) {
                match w.tx.try_send(Ok(event.clone())) {
                    Ok(()) => {}
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        tracing::warn!(prefix = %w.prefix, "dropping a watcher that fell behind");
                        return false;
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => return false,
                }
            }
            !w.tx.is_closed()
        });
    }
}

fn key_value(key: &str, e: &Entry) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: e.value.clone(),
        version: e.mod_revision,
        create_revision: e.create_revision,
        lease: e.lease,
    }
}

fn delete_event(key: &str, revision: Revision) -> WatchEvent {
    WatchEvent {
        kind: WatchEventKind::Delete,
        key: key.to_owned(),
        value: Bytes::new(),
        revision,
    }
}

fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
