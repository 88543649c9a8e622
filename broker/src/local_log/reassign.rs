//! Reassignment: moving a local log's copies between brokers (Kafka's
//! partition reassignment). The request only writes the target into the
//! partition record; the brokers carry it out. New replicas follow the
//! leader (throttled) until they are in sync, then the leader drops the
//! replicas that go, and they delete their copies (`replicas`,
//! `leader`). A leader that goes hands over first: its bundle moves to
//! a new replica that is in sync, and the new leader finishes the move.

use super::log::LocalLog;
use super::peers::Peer;
use super::record::PartitionRecord;
use super::LocalLogStore;
use magnetar_metadata::keys;

use crate::storage::{
    LogName, LogPolicies, ReassignmentState, ReplicaSet, ReplicaState, StorageError,
};

impl LocalLogStore {
    async fn record_of(&self, name: &LogName) -> Result<PartitionRecord, StorageError> {
        match self.records.load(&name.metadata_key()).await? {
            Some((record, _)) => Ok(record),
            None => Err(StorageError::NotFound(format!(
                "{} has no stored log",
                name.full_name()
            ))),
        }
    }

    /// The replica ids `names` (broker ids or replica ids) stand for: an
    /// existing replica by either id, any other by a live broker.
    fn resolve(
        names: &[String],
        record: &PartitionRecord,
        live: &[Peer],
    ) -> Result<Vec<String>, StorageError> {
        names
            .iter()
            .map(|name| {
                let name = name.trim().trim_start_matches("pulsar://");
                if record.replicas.iter().any(|r| r == name) {
                    return Ok(name.to_string());
                }
                live.iter()
                    .find(|p| p.replica_id == name || p.broker_id == name)
                    .map(|p| p.replica_id.clone())
                    .ok_or_else(|| {
                        StorageError::Rejected(format!(
                            "no live monolithic broker {name:?} (give a broker's host:port or replica id)"
                        ))
                    })
            })
            .collect()
    }

    pub(super) async fn replicas_of(&self, name: &LogName) -> Result<ReplicaSet, StorageError> {
        let record = self.record_of(name).await?;
        let live = self.replicas.peers.live().await?;
        let led = self
            .replicas
            .leader(&name.metadata_key())
            .filter(|l| l.log_id == record.log_id && l.stopped().is_none());
        Ok(describe(&record, &live, led.as_deref()))
    }

    pub(super) async fn start_reassignment(
        &self,
        name: &LogName,
        target: &[String],
        throttle: Option<u64>,
    ) -> Result<ReplicaSet, StorageError> {
        self.require_clustered(name)?;
        let record = self.record_of(name).await?;
        let live = self.replicas.peers.live().await?;
        let target = Self::resolve(target, &record, &live)?;
        if let Some(leader) = record.leader.as_ref().filter(|l| !target.contains(l)) {
            return Err(StorageError::Rejected(format!(
                "{} is led by replica {leader}, which the target leaves out: the leader goes by moving its bundle (namespaces unload with destinationBroker) to a broker of the target",
                name.full_name()
            )));
        }
        self.records
            .start_reassignment(&name.metadata_key(), &target, throttle)
            .await?;
        self.move_cursor_logs(name, &target, throttle).await;
        tracing::info!(topic = %name.full_name(), ?target, ?throttle, "reassignment started");
        self.replicas_of(name).await
    }

    pub(super) async fn stop_reassignment(
        &self,
        name: &LogName,
    ) -> Result<ReplicaSet, StorageError> {
        self.require_clustered(name)?;
        self.records
            .cancel_reassignment(&name.metadata_key())
            .await?;
        for key in self.cursor_log_keys(name).await? {
            if let Err(e) = self.records.cancel_reassignment(&key).await {
                tracing::warn!(cursor_log = %key, error = %e, "cancelling a cursor log's reassignment");
            }
        }
        tracing::info!(topic = %name.full_name(), "reassignment cancelled");
        self.replicas_of(name).await
    }

    /// Starts copying the log to `broker` in place of its leader's copy,
    /// unless `broker` holds a copy already.
    pub(super) async fn copy_for_leader(
        &self,
        name: &LogName,
        broker: &str,
        throttle: Option<u64>,
    ) -> Result<(), StorageError> {
        let Some((record, _)) = self.records.load(&name.metadata_key()).await? else {
            return Ok(());
        };
        if record.replicas.is_empty() {
            return Ok(());
        }
        let live = self.replicas.peers.live().await?;
        let dest = Self::resolve(&[broker.to_string()], &record, &live)?.remove(0);
        if record.replicas.contains(&dest) {
            return Ok(());
        }
        let leaving = record
            .leader
            .clone()
            .filter(|l| record.replicas.contains(l))
            .or_else(|| record.replicas.last().cloned());
        let mut target = vec![dest];
        target.extend(
            record
                .replicas
                .iter()
                .filter(|r| Some(*r) != leaving.as_ref())
                .cloned(),
        );
        self.records
            .start_reassignment(&name.metadata_key(), &target, throttle)
            .await?;
        self.move_cursor_logs(name, &target, throttle).await;
        tracing::info!(topic = %name.full_name(), ?target, ?throttle, "copying to the next leader");
        Ok(())
    }

    /// Whether `broker` holds every committed entry of the topic `name`
    /// and of each of its cursor logs.
    pub(super) async fn in_sync_at(
        &self,
        name: &LogName,
        broker: &str,
    ) -> Result<bool, StorageError> {
        match self.records.load(&name.metadata_key()).await? {
            Some((record, _)) if !record.replicas.is_empty() => {}
            _ => return Ok(true),
        }
        let live = self.replicas.peers.live().await?;
        let Some(peer) = live
            .iter()
            .find(|p| p.broker_id == broker || p.replica_id == broker)
        else {
            return Err(StorageError::Unavailable(format!(
                "broker {broker} is not alive"
            )));
        };
        let mut keys = vec![name.metadata_key()];
        keys.extend(self.cursor_log_keys(name).await?);
        for key in keys {
            let Some((record, _)) = self.records.load(&key).await? else {
                continue;
            };
            let isr = match record.isr.is_empty() {
                true => &record.replicas,
                false => &record.isr,
            };
            // A cursor log without a copy on `broker` (it could not follow
            // its partition) is started afresh there: nothing to wait for.
            let has_copy = record.replicas.contains(&peer.replica_id);
            let cursor_log = key != name.metadata_key();
            if has_copy && !isr.contains(&peer.replica_id) {
                return Ok(false);
            }
            if !has_copy && !cursor_log && !record.replicas.is_empty() {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Whether no reassignment of the topic `name` or of its cursor logs
    /// is under way.
    pub(super) async fn reassignments_done(&self, name: &LogName) -> Result<bool, StorageError> {
        let mut keys = vec![name.metadata_key()];
        keys.extend(self.cursor_log_keys(name).await?);
        for key in keys {
            if let Some((record, _)) = self.records.load(&key).await? {
                if record.reassignment.is_some() {
                    return Ok(false);
                }
            }
        }
        Ok(true)
    }

    /// The record keys of the cursor logs of topic `name` (none for a
    /// cursor log itself).
    async fn cursor_log_keys(&self, name: &LogName) -> Result<Vec<String>, StorageError> {
        if name.cursor_of.is_some() {
            return Ok(Vec::new());
        }
        let prefix = keys::cursor_logs_prefix(&name.tenant, &name.namespace, &name.local);
        Ok(self
            .records
            .list(&prefix)
            .await?
            .into_iter()
            .map(|kv| kv.key)
            .collect())
    }

    /// Starts the same move for the topic's cursor logs as for its
    /// partition (`target`), so that their copies stay on the partition's
    /// replicas. A cursor log that cannot follow is left as it is: if its
    /// partition's next leader holds no in-sync copy, that leader starts
    /// the cursor afresh from its record when it opens it.
    async fn move_cursor_logs(&self, name: &LogName, target: &[String], throttle: Option<u64>) {
        let keys = match self.cursor_log_keys(name).await {
            Ok(keys) => keys,
            Err(e) => {
                tracing::warn!(topic = %name.full_name(), error = %e, "listing cursor logs to move");
                return;
            }
        };
        for key in keys {
            if let Err(e) = self
                .records
                .start_reassignment(&key, target, throttle)
                .await
            {
                tracing::warn!(cursor_log = %key, error = %e, "moving a cursor log with its partition");
            }
        }
    }

    /// Every log with a copy on `broker`, and whether it leads it.
    pub(super) async fn copies_on(
        &self,
        broker: &str,
    ) -> Result<Vec<(LogName, bool)>, StorageError> {
        let live = self.replicas.peers.live().await?;
        let id = live
            .iter()
            .find(|p| p.broker_id == broker || p.replica_id == broker)
            .map_or_else(|| broker.to_string(), |p| p.replica_id.clone());
        let prefix = keys::all_topics_prefix();
        let mut held = Vec::new();
        for kv in self.records.list(&prefix).await? {
            let Ok(record) = PartitionRecord::from_bytes(&kv.key, &kv.value) else {
                continue;
            };
            if !record.replicas.contains(&id) {
                continue;
            }
            if let Some(name) = log_name_of(&prefix, &kv.key) {
                held.push((name, record.leader.as_ref() == Some(&id)));
            }
        }
        Ok(held)
    }

    /// Starts moving `broker`'s copy of `name` to a broker without one;
    /// false if it holds none.
    pub(super) async fn evacuate(
        &self,
        name: &LogName,
        broker: &str,
        throttle: Option<u64>,
    ) -> Result<bool, StorageError> {
        self.require_clustered(name)?;
        let record = self.record_of(name).await?;
        let live = self.replicas.peers.live().await?;
        let Some(going) = record
            .replicas
            .iter()
            .find(|r| {
                **r == broker
                    || live
                        .iter()
                        .any(|p| p.replica_id == **r && p.broker_id == broker)
            })
            .cloned()
        else {
            return Ok(false);
        };
        if record.leader.as_ref() == Some(&going) {
            return Err(StorageError::Rejected(format!(
                "{} is led by {broker}: its copy goes when its bundle moves",
                name.full_name()
            )));
        }
        let placement = self.placement(&LogPolicies::default()).await?;
        let Some(replacement) =
            placement.replacement(&record.replicas, std::slice::from_ref(&going))
        else {
            return Err(StorageError::Rejected(format!(
                "no live broker without a copy of {} is left to take the copy on {broker}",
                name.full_name()
            )));
        };
        let target: Vec<String> = record
            .replicas
            .iter()
            .map(|r| match *r == going {
                true => replacement.clone(),
                false => r.clone(),
            })
            .collect();
        self.records
            .start_reassignment(&name.metadata_key(), &target, throttle)
            .await?;
        self.move_cursor_logs(name, &target, throttle).await;
        tracing::info!(topic = %name.full_name(), from = %going, to = %replacement, "moving a copy off a broker");
        Ok(true)
    }

    fn require_clustered(&self, name: &LogName) -> Result<(), StorageError> {
        match self.clustered {
            true => Ok(()),
            false => Err(StorageError::Rejected(format!(
                "{} is on a standalone broker, which keeps one copy of every log: there is nowhere to move it",
                name.full_name()
            ))),
        }
    }
}

/// The topic whose record is at `key` (`{prefix}tenant/ns/topic`).
fn log_name_of(prefix: &str, key: &str) -> Option<LogName> {
    let parts: Vec<String> = key
        .strip_prefix(prefix)?
        .split('/')
        .map(keys::unescape_segment)
        .collect::<Option<_>>()?;
    match parts.as_slice() {
        [tenant, namespace, local] => Some(LogName::new(tenant, namespace, local)),
        _ => None,
    }
}

/// The admin view of `record`, with the progress `led` (this broker's
/// open log, if it leads it) knows of each follower.
fn describe(record: &PartitionRecord, live: &[Peer], led: Option<&LocalLog>) -> ReplicaSet {
    let isr = match record.isr.is_empty() {
        true => &record.replicas,
        false => &record.isr,
    };
    let moving = record.reassignment.as_ref();
    let progress = led.map(LocalLog::replica_progress);
    let replicas: Vec<ReplicaState> = record
        .replicas
        .iter()
        .map(|id| {
            let end = progress.as_ref().and_then(|p| p.end_of(id));
            ReplicaState {
                replica_id: id.clone(),
                broker_id: live
                    .iter()
                    .find(|p| p.replica_id == *id)
                    .map(|p| p.broker_id.clone()),
                leader: record.leader.as_ref() == Some(id),
                in_sync: isr.contains(id),
                adding: moving.is_some_and(|m| m.adding.contains(id)),
                removing: moving.is_some_and(|m| m.removing.contains(id)),
                log_end_offset: end,
                bytes: end.zip(led).map(|(end, log)| log.bytes_below(end)),
            }
        })
        .collect();
    let reassignment = moving.map(|m| {
        let adding: Vec<&ReplicaState> = replicas.iter().filter(|r| r.adding).collect();
        let copied = adding
            .iter()
            .map(|r| r.bytes)
            .sum::<Option<u64>>()
            .filter(|_| led.is_some());
        ReassignmentState {
            target: m.target.clone(),
            throttle_bytes_per_second: m.throttle_bytes_per_sec,
            started_at_ms: m.started_ms,
            copied_bytes: copied,
            total_bytes: progress
                .as_ref()
                .map(|p| p.size_bytes * adding.len() as u64),
        }
    });
    ReplicaSet {
        leader: record.leader.clone(),
        leader_epoch: record.leader_epoch,
        log_start_offset: progress.as_ref().map(|p| p.log_start),
        log_end_offset: progress.as_ref().map(|p| p.log_end),
        size_bytes: progress.as_ref().map(|p| p.size_bytes),
        replicas,
        reassignment,
    }
}

/// What the leader knows of its followers, at one moment.
pub(super) struct ReplicaProgress {
    pub me: String,
    pub log_start: u64,
    pub log_end: u64,
    pub size_bytes: u64,
    pub follower_ends: Vec<(String, u64)>,
}

impl ReplicaProgress {
    fn end_of(&self, replica: &str) -> Option<u64> {
        if replica == self.me {
            return Some(self.log_end);
        }
        self.follower_ends
            .iter()
            .find(|(r, _)| r == replica)
            .map(|(_, end)| *end)
    }
}
