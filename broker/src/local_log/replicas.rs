//! This broker's replicas: the logs it leads (for the replication service)
//! and the followers it runs, kept in line with the partition records.
//!
//! The replica manager watches every partition record. For each one that
//! names this broker as a replica and another broker as leader it runs a
//! follower against that leader's epoch, restarting it when the epoch
//! changes; a log this broker led in an older epoch is fenced first (a
//! deposed leader stops confirming and becomes a follower, truncating its
//! unreplicated tail). A deleted record takes the local copy with it.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use futures::StreamExt;
use magnetar_metadata::{keys, MetadataStore, WatchEventKind};
use prometheus::IntCounter;

use super::follower::{FollowTarget, Follower, Throttle};
use super::log::LocalLog;
use super::peers::Peers;
use super::record::PartitionRecord;
use super::LocalLogConfig;
use crate::storage::StorageError;

/// How often every record is looked at again besides watch events (a
/// leader that was not registered yet, a watch that broke).
const RESYNC_INTERVAL: Duration = Duration::from_secs(2);

pub struct Replicas {
    pub(super) me: String,
    store: Arc<dyn MetadataStore>,
    pub(super) peers: Peers,
    data_dir: PathBuf,
    config: LocalLogConfig,
    leaders: Mutex<HashMap<String, Weak<LocalLog>>>,
    followers: Mutex<HashMap<String, Arc<Follower>>>,
    /// Held while a log changes role (leader opening, follower starting),
    /// so one copy never has two writers.
    pub(super) transitions: tokio::sync::Mutex<()>,
    /// Bytes this broker's followers fetched from leaders.
    fetched_bytes: IntCounter,
    /// Shared by the followers copying a reassigned log.
    throttle: Arc<Throttle>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Replicas {
    pub fn new(
        me: String,
        store: Arc<dyn MetadataStore>,
        data_dir: PathBuf,
        config: LocalLogConfig,
    ) -> Self {
        Replicas {
            me,
            peers: Peers::new(store.clone()),
            store,
            data_dir,
            config,
            leaders: Mutex::new(HashMap::new()),
            followers: Mutex::new(HashMap::new()),
            transitions: tokio::sync::Mutex::new(()),
            fetched_bytes: IntCounter::new(
                "replication_fetched_bytes_total",
                "Bytes this broker's follower replicas fetched from partition leaders",
            )
            .expect("a valid metric name"),
            throttle: Arc::new(Throttle::default()),
        }
    }

    /// The counter of bytes fetched by followers, for the broker's
    /// metrics registry: a reassignment's copy shows in it.
    pub fn fetched_bytes(&self) -> IntCounter {
        self.fetched_bytes.clone()
    }

    /// This broker's replica id.
    /// Who may fetch from this broker's replicas.
    pub fn peers(&self) -> &magnetar_auth::PeerPolicy {
        &self.config.peers
    }

    pub fn me(&self) -> &str {
        &self.me
    }

    pub(super) fn dir_of(&self, log_id: u64) -> PathBuf {
        self.data_dir.join("logs").join(log_id.to_string())
    }

    /// The open log this broker leads at `key`, if any.
    pub fn leader(&self, key: &str) -> Option<Arc<LocalLog>> {
        lock(&self.leaders).get(key).and_then(Weak::upgrade)
    }

    pub(super) fn register_leader(&self, key: &str, log: &Arc<LocalLog>) {
        let mut leaders = lock(&self.leaders);
        leaders.retain(|_, w| w.strong_count() > 0);
        leaders.insert(key.to_string(), Arc::downgrade(log));
    }

    /// Stops the follower of `key`, if one runs; returns the high
    /// watermark it had learnt.
    pub(super) async fn stop_follower(&self, key: &str) -> Option<u64> {
        let follower = lock(&self.followers).remove(key)?;
        follower.stop().await;
        Some(follower.high_watermark())
    }

    /// How far this broker's copy of `key` goes, if it follows it.
    pub fn follower_end(&self, key: &str) -> Option<u64> {
        lock(&self.followers).get(key).map(|f| f.log_end())
    }

    /// Brings this broker's role for `key` in line with its record.
    async fn reconcile(&self, key: &str, record: Option<PartitionRecord>) {
        let _transition = self.transitions.lock().await;
        let Some(record) = record else {
            let removed = lock(&self.followers).remove(key);
            if let Some(follower) = removed {
                follower.stop().await;
                let dir = follower.target.dir.clone();
                if let Err(e) = super::log::remove_dir(&dir).await {
                    tracing::warn!(partition = key, error = %e, "removing a deleted partition's copy");
                }
            }
            return;
        };
        let leads_elsewhere = record.leader.as_ref().is_some_and(|l| *l != self.me);
        let holds_copy = record.replicas.contains(&self.me);
        if let Some(led) = self.leader(key) {
            // Log ids come from one counter that only grows: a record of a
            // lower id is a late watch event of a log this key held before
            // (one replaced since), and says nothing of this one.
            if record.log_id < led.log_id {
                return;
            }
            if led.epoch < record.leader_epoch || led.log_id != record.log_id {
                led.stop(StorageError::Fenced(format!(
                    "{key} is led by {:?} in epoch {} now",
                    record.leader, record.leader_epoch
                )))
                .await;
            } else if led.stopped().is_none() {
                // A record of an earlier epoch (a watch event from before
                // this broker took the lead) says nothing of this one.
                if led.epoch == record.leader_epoch {
                    led.apply_record(&record);
                }
                return;
            }
        }
        if !(leads_elsewhere && holds_copy) {
            let removed = lock(&self.followers).remove(key);
            if let Some(follower) = removed {
                follower.stop().await;
            }
            if !holds_copy && !record.replicas.is_empty() {
                self.remove_copy(key, record.log_id).await;
            }
            return;
        }
        let throttle = record
            .reassignment
            .as_ref()
            .and_then(|r| r.throttle_for(&self.me, &record.isr));
        let leader = record.leader.clone().unwrap_or_default();
        let url = match self.peers.live().await {
            Ok(peers) => peers
                .into_iter()
                .find(|p| p.replica_id == leader)
                .map(|p| p.url),
            Err(e) => {
                tracing::warn!(partition = key, error = %e, "reading live brokers");
                return;
            }
        };
        let Some(leader_url) = url else {
            // The leader is not registered (dead, or not up yet): a new
            // leader gets elected on the next lookup; try again then.
            return;
        };
        let target = FollowTarget {
            key: key.to_string(),
            log_id: record.log_id,
            epoch: record.leader_epoch,
            leader_url,
            me: self.me.clone(),
            dir: self.dir_of(record.log_id),
            flush: record.flush.unwrap_or(self.config.flush),
        };
        let current = lock(&self.followers).get(key).cloned();
        if let Some(current) = current {
            let same = current.target.log_id == target.log_id
                && current.target.epoch == target.epoch
                && current.target.leader_url == target.leader_url
                && current.target.flush == target.flush;
            if same {
                current.set_throttle(throttle);
                return;
            }
            current.stop().await;
        }
        super::registry::fence(&target.dir, "this broker follows the partition now").await;
        let follower = Follower::start(
            target,
            self.config.clone(),
            throttle,
            (self.fetched_bytes.clone(), self.throttle.clone()),
        );
        lock(&self.followers).insert(key.to_string(), follower);
    }

    /// Deletes this broker's copy of a log it is no longer a replica of
    /// (reassigned away), as Kafka deletes a replica's log once it has
    /// been moved.
    async fn remove_copy(&self, key: &str, log_id: u64) {
        let dir = self.dir_of(log_id);
        if !tokio::fs::try_exists(&dir).await.unwrap_or(false) {
            return;
        }
        super::registry::fence(&dir, "this broker is no longer a replica").await;
        match super::log::remove_dir(&dir).await {
            Ok(()) => {
                tracing::info!(partition = key, dir = %dir.display(), "removed a copy reassigned away")
            }
            Err(e) => {
                tracing::warn!(partition = key, error = %e, "removing a copy reassigned away")
            }
        }
    }

    async fn reconcile_all(&self) -> Result<(), StorageError> {
        let prefix = keys::all_topics_prefix();
        let stored = self.store.list(&prefix).await?;
        let mut seen = std::collections::HashSet::new();
        for kv in stored {
            // Not every key under the prefix need be a local log's record.
            let Ok(record) = PartitionRecord::from_bytes(&kv.key, &kv.value) else {
                continue;
            };
            seen.insert(kv.key.clone());
            self.reconcile(&kv.key, Some(record)).await;
        }
        let gone: Vec<String> = lock(&self.followers)
            .keys()
            .filter(|k| !seen.contains(*k))
            .cloned()
            .collect();
        for key in gone {
            self.reconcile(&key, None).await;
        }
        Ok(())
    }

    /// Runs the replica manager until `self` is dropped elsewhere.
    pub async fn run_manager(self: Arc<Self>) {
        let weak = Arc::downgrade(&self);
        drop(self);
        loop {
            let Some(this) = weak.upgrade() else { return };
            let prefix = keys::all_topics_prefix();
            let watch = this.store.watch(&prefix, None).await;
            if let Err(e) = this.reconcile_all().await {
                tracing::warn!(error = %e, "replica manager: listing partitions");
            }
            let mut events = match watch {
                Ok(events) => events,
                Err(e) => {
                    tracing::warn!(error = %e, "replica manager: watching partitions");
                    drop(this);
                    tokio::time::sleep(RESYNC_INTERVAL).await;
                    continue;
                }
            };
            drop(this);
            let resync = tokio::time::sleep(RESYNC_INTERVAL);
            tokio::pin!(resync);
            loop {
                let event = tokio::select! {
                    event = events.next() => event,
                    _ = &mut resync => break,
                };
                let Some(Ok(event)) = event else { break };
                let Some(this) = weak.upgrade() else { return };
                let record = match event.kind {
                    WatchEventKind::Delete => None,
                    WatchEventKind::Put => {
                        match PartitionRecord::from_bytes(&event.key, &event.value) {
                            Ok(record) => Some(record),
                            Err(_) => continue,
                        }
                    }
                };
                this.reconcile(&event.key, record).await;
            }
        }
    }

    /// Stops every follower (broker shutdown).
    pub async fn stop_all(&self) {
        let followers: Vec<Arc<Follower>> = lock(&self.followers).drain().map(|(_, f)| f).collect();
        for follower in followers {
            follower.stop().await;
        }
    }
}
