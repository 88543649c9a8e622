//! A local log's record in metadata (at the topic's key): which log it is,
//! which epoch of leadership it is in, and which brokers hold its replicas.
//! Changed only by compare-and-set, so two brokers can never both believe
//! they took the same epoch.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use magnetar_metadata::{Expect, LedgerIdAllocator, MetadataError, MetadataStore, Version};
use serde::{Deserialize, Serialize};

use crate::clock::now_ms;
use crate::storage::{FlushPolicy, StorageError};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionRecord {
    /// The ledger id of every position in this log: allocated from the
    /// cluster's ledger-id counter when the log is created, so a topic
    /// created again orders after its old self.
    pub log_id: u64,
    /// Bumped by every new leader; batches carry the epoch that wrote them.
    pub leader_epoch: u32,
    /// The broker leading the partition (`None` until one opens it).
    #[serde(default)]
    pub leader: Option<String>,
    /// Brokers holding a copy, the leader's included.
    #[serde(default)]
    pub replicas: Vec<String>,
    /// The replicas holding every committed entry (the leader's included):
    /// only these may become leader. Empty in records written before
    /// replication, meaning all of `replicas`.
    #[serde(default)]
    pub isr: Vec<String>,
    /// A change of replicas under way (Kafka's partition reassignment,
    /// KIP-455): while it lasts `replicas` holds the old and the new ones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reassignment: Option<Reassignment>,
    /// The flush policy the leader confirms under (its namespace's), so
    /// that followers sync (or not) alike.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flush: Option<FlushPolicy>,
}

/// A move of a log's replicas to other brokers. New replicas copy the log
/// as followers (throttled) and join the ISR once caught up; then the
/// leader, if it stays, drops the replicas that go. A leader that goes
/// hands over first (its bundle moves to a new replica).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reassignment {
    /// The replicas once done, the preferred leader first.
    pub target: Vec<String>,
    /// Replicas copying the log (in `target`, not in the old replicas).
    pub adding: Vec<String>,
    /// Replicas that go once the new ones are in sync.
    pub removing: Vec<String>,
    /// Kafka's `follower.replication.throttled.rate` for the adding
    /// replicas' fetches; `None` is unthrottled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub throttle_bytes_per_sec: Option<u64>,
    pub started_ms: u64,
}

impl Reassignment {
    /// Whether every adding replica is in `isr`.
    pub fn caught_up(&self, isr: &[String]) -> bool {
        self.adding.iter().all(|r| isr.contains(r))
    }

    /// The throttle that applies to `replica`'s fetches now: only a new
    /// replica still copying is throttled.
    pub fn throttle_for(&self, replica: &str, isr: &[String]) -> Option<u64> {
        let copying = self.adding.iter().any(|r| r == replica) && !isr.iter().any(|r| r == replica);
        self.throttle_bytes_per_sec.filter(|_| copying)
    }
}

/// What a broker taking the lead needs to know of the cluster.
#[derive(Clone, Debug, Default)]
pub struct Placement {
    /// Replicas a new log gets (the namespace's ensemble size).
    pub replication_factor: usize,
    /// Replica ids of the brokers alive now (this one's included).
    pub live: Vec<String>,
    /// The rack of each live broker that has one.
    pub racks: BTreeMap<String, String>,
    /// The namespace allows a replica out of the ISR to lead when none in
    /// it is alive.
    pub unclean_leader_election: bool,
    /// Replicas a new log takes instead of choosing its own: a cursor
    /// log takes those of its partition, so whichever broker can lead the
    /// partition holds its cursors too.
    pub follow: Option<Vec<String>>,
}

impl Placement {
    /// Replicas of a new log led by `leader`: the leader and the next live
    /// brokers in id order, starting at a point chosen by the log's key so
    /// that followers spread over the cluster, taking brokers of racks not
    /// used yet first (as Kafka's rack-aware assignment does).
    fn replicas_for(&self, key: &str, leader: &str) -> Result<Vec<String>, StorageError> {
        if let Some(follow) = self
            .follow
            .as_ref()
            .filter(|f| f.iter().any(|r| r == leader))
        {
            let mut replicas = vec![leader.to_string()];
            replicas.extend(follow.iter().filter(|r| *r != leader).cloned());
            return Ok(replicas);
        }
        let mut others: Vec<&String> = self.live.iter().filter(|b| *b != leader).collect();
        others.sort();
        others.dedup();
        let wanted = self.replication_factor.max(1);
        if others.len() + 1 < wanted {
            return Err(StorageError::NotEnoughReplicas {
                in_sync: others.len() + 1,
                required: wanted,
            });
        }
        let start = if others.is_empty() {
            0
        } else {
            (crc32c::crc32c(key.as_bytes()) as usize) % others.len()
        };
        let ordered: Vec<&String> = others
            .iter()
            .cycle()
            .skip(start)
            .take(others.len())
            .copied()
            .collect();
        let mut replicas = vec![leader.to_string()];
        self.extend_spread(&mut replicas, &ordered, wanted);
        Ok(replicas)
    }

    /// A live broker to hold a copy beside `replicas` (none of them, none
    /// of `excluded`), of a rack they do not use if one is left.
    pub fn replacement(&self, replicas: &[String], excluded: &[String]) -> Option<String> {
        let mut candidates: Vec<&String> = self
            .live
            .iter()
            .filter(|b| !replicas.contains(b) && !excluded.contains(b))
            .collect();
        candidates.sort();
        candidates.dedup();
        let mut chosen = replicas.to_vec();
        self.extend_spread(&mut chosen, &candidates, replicas.len() + 1);
        chosen.get(replicas.len()).cloned()
    }

    /// Adds brokers of `candidates` (in their order) to `chosen` until it
    /// has `wanted`: first those of racks `chosen` does not use yet, then
    /// the rest. Brokers with no rack share one.
    fn extend_spread(&self, chosen: &mut Vec<String>, candidates: &[&String], wanted: usize) {
        let rack = |b: &str| self.racks.get(b).map(String::as_str);
        let mut used: Vec<Option<&str>> = chosen.iter().map(|b| rack(b)).collect();
        for b in candidates {
            if chosen.len() >= wanted {
                return;
            }
            if !used.contains(&rack(b)) {
                used.push(rack(b));
                chosen.push(b.to_string());
            }
        }
        for b in candidates {
            if chosen.len() >= wanted {
                return;
            }
            if !chosen.contains(b) {
                chosen.push(b.to_string());
            }
        }
    }
}

impl PartitionRecord {
    fn to_bytes(&self) -> Result<Bytes, StorageError> {
        serde_json::to_vec(self)
            .map(Bytes::from)
            .map_err(|e| StorageError::Metadata(e.to_string()))
    }

    pub fn from_bytes(key: &str, bytes: &[u8]) -> Result<Self, StorageError> {
        serde_json::from_slice(bytes).map_err(|e| {
            StorageError::Metadata(format!(
                "{key} is not a local-log record ({e}); was this topic written by a decoupled cluster?"
            ))
        })
    }
}

/// Reads and CAS-writes one partition's record.
pub struct RecordStore {
    store: Arc<dyn MetadataStore>,
    ids: Arc<LedgerIdAllocator>,
}

impl RecordStore {
    pub fn new(store: Arc<dyn MetadataStore>, ids: Arc<LedgerIdAllocator>) -> Self {
        RecordStore { store, ids }
    }

    pub async fn load(
        &self,
        key: &str,
    ) -> Result<Option<(PartitionRecord, Version)>, StorageError> {
        match self.store.get(key).await? {
            Some(kv) => Ok(Some((
                PartitionRecord::from_bytes(key, &kv.value)?,
                kv.version,
            ))),
            None => Ok(None),
        }
    }

    /// Every key and value under `prefix` (records and whatever else
    /// lives beside them).
    pub async fn list(
        &self,
        prefix: &str,
    ) -> Result<Vec<magnetar_metadata::KeyValue>, StorageError> {
        Ok(self.store.list(prefix).await?)
    }

    /// Creates the record of a new, empty log; false if one exists.
    pub async fn create(&self, key: &str) -> Result<bool, StorageError> {
        if self.store.get(key).await?.is_some() {
            return Ok(false);
        }
        let record = PartitionRecord {
            log_id: self.ids.next().await?,
            leader_epoch: 0,
            leader: None,
            replicas: Vec::new(),
            isr: Vec::new(),
            reassignment: None,
            flush: None,
        };
        match self
            .store
            .put(key, record.to_bytes()?, Expect::Absent, None)
            .await
        {
            Ok(_) => Ok(true),
            Err(MetadataError::Conflict { .. }) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Applies `change` to the stored record and writes the result by
    /// compare-and-set, reading and applying again after a conflict;
    /// `missing` is the error when there is no record.
    async fn edit<T>(
        &self,
        key: &str,
        missing: impl Fn() -> StorageError,
        mut change: impl FnMut(&mut PartitionRecord) -> Result<Edit<T>, StorageError>,
    ) -> Result<T, StorageError> {
        loop {
            let Some((mut record, version)) = self.load(key).await? else {
                return Err(missing());
            };
            let outcome = match change(&mut record)? {
                Edit::Keep(outcome) => return Ok(outcome),
                Edit::Write(outcome) => outcome,
            };
            match self
                .store
                .put(key, record.to_bytes()?, Expect::Version(version), None)
                .await
            {
                Ok(_) => return Ok(outcome),
                Err(MetadataError::Conflict { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Makes `broker` the leader in a new epoch (creating the record if
    /// needed) and returns the record as written. A new log gets its
    /// replicas from `placement`; an existing one may be led only by a
    /// member of its ISR unless the placement allows unclean election and
    /// no in-sync replica is alive, and replicas that are not alive leave
    /// the ISR at once, as Kafka's controller drops a dead broker. A broker
    /// holding no replica is refused: moving a partition copies data,
    /// which is reassignment, not a takeover.
    pub async fn take_leadership(
        &self,
        key: &str,
        broker: &str,
        placement: &Placement,
        flush: FlushPolicy,
    ) -> Result<PartitionRecord, StorageError> {
        if self.load(key).await?.is_none() {
            self.create(key).await?;
        }
        let deleted = || StorageError::Unavailable(format!("{key} was deleted meanwhile"));
        self.edit(key, deleted, |record| {
            if record.replicas.is_empty() {
                record.replicas = placement.replicas_for(key, broker)?;
                // Replicas followed from another log may include brokers
                // that are down: they join the ISR once they catch up.
                record.isr = record
                    .replicas
                    .iter()
                    .filter(|r| *r == broker || placement.live.contains(r))
                    .cloned()
                    .collect();
            } else {
                if !record.replicas.iter().any(|r| r == broker) {
                    return Err(StorageError::Unavailable(format!(
                        "the replicas of {key} are on {:?}, not on this broker ({broker}); moving a partition needs reassignment",
                        record.replicas
                    )));
                }
                if record.isr.is_empty() {
                    record.isr = record.replicas.clone();
                }
                if !record.isr.iter().any(|r| r == broker) {
                    elect_uncleanly(key, broker, placement, record)?;
                }
                record
                    .isr
                    .retain(|r| r == broker || placement.live.contains(r));
            }
            record.leader_epoch = record
                .leader_epoch
                .checked_add(1)
                .ok_or_else(|| StorageError::Metadata(format!("{key}: leader epoch exhausted")))?;
            record.leader = Some(broker.to_string());
            record.flush = Some(flush);
            Ok(Edit::Write(record.clone()))
        })
        .await
    }

    /// Writes `isr` as the ISR of the log led in `epoch`, less any member
    /// that is no longer a replica (a reassignment cancelled meanwhile);
    /// returns the ISR written. Fails with `Fenced` when another leader
    /// has taken over since.
    pub async fn change_isr(
        &self,
        key: &str,
        led: (u64, u32),
        isr: &[String],
    ) -> Result<Vec<String>, StorageError> {
        self.edit(key, deleted(key), |record| {
            check_led(key, record, led)?;
            record.isr = isr
                .iter()
                .filter(|r| record.replicas.contains(r))
                .cloned()
                .collect();
            Ok(Edit::Write(record.isr.clone()))
        })
        .await
    }

    /// Starts moving the replicas of `key` to `target` (replica ids, the
    /// preferred leader first), or changes the throttle of the same move
    /// under way. A log nobody has led yet just gets `target` as its
    /// replicas: there is nothing to copy. Another move under way is
    /// refused (cancel it first).
    pub async fn start_reassignment(
        &self,
        key: &str,
        target: &[String],
        throttle_bytes_per_sec: Option<u64>,
    ) -> Result<PartitionRecord, StorageError> {
        validate_target(key, target)?;
        self.edit(key, no_log(key), |record| {
            if record.replicas.is_empty() {
                record.replicas = target.to_vec();
                record.isr = target.to_vec();
            } else if let Some(current) = &mut record.reassignment {
                if current.target != target {
                    return Err(StorageError::Rejected(format!(
                        "{key} is being reassigned to {:?} already; cancel that first",
                        current.target
                    )));
                }
                current.throttle_bytes_per_sec = throttle_bytes_per_sec;
            } else {
                if record.isr.is_empty() {
                    record.isr = record.replicas.clone();
                }
                let adding: Vec<String> = target
                    .iter()
                    .filter(|r| !record.replicas.contains(r))
                    .cloned()
                    .collect();
                let removing: Vec<String> = record
                    .replicas
                    .iter()
                    .filter(|r| !target.contains(r))
                    .cloned()
                    .collect();
                if adding.is_empty() && removing.is_empty() {
                    // The same set: only the preferred order changes.
                    record.replicas = target.to_vec();
                } else {
                    record.replicas.extend(adding.iter().cloned());
                    record.reassignment = Some(Reassignment {
                        target: target.to_vec(),
                        adding,
                        removing,
                        throttle_bytes_per_sec,
                        started_ms: now_ms(),
                    });
                }
            }
            Ok(Edit::Write(record.clone()))
        })
        .await
    }

    /// Stops the move under way: the replicas being added go again. A move
    /// whose new replica already leads cannot be undone this way.
    pub async fn cancel_reassignment(&self, key: &str) -> Result<PartitionRecord, StorageError> {
        self.edit(key, no_log(key), |record| {
            let Some(moving) = record.reassignment.take() else {
                return Ok(Edit::Keep(record.clone()));
            };
            if record
                .leader
                .as_ref()
                .is_some_and(|l| moving.adding.contains(l))
            {
                return Err(StorageError::Rejected(format!(
                    "{key} is led by {:?}, one of the replicas being added: reassign it back instead",
                    record.leader
                )));
            }
            record.replicas.retain(|r| !moving.adding.contains(r));
            record.isr.retain(|r| !moving.adding.contains(r));
            Ok(Edit::Write(record.clone()))
        })
        .await
    }

    /// Ends the move under way once every new replica is in sync, by the
    /// leader of `epoch` (which stays a replica): the replicas become the
    /// target and the ones removed leave the ISR. Returns the record as
    /// written, or `None` when there is nothing to finish yet.
    pub async fn complete_reassignment(
        &self,
        key: &str,
        led: (u64, u32),
    ) -> Result<Option<PartitionRecord>, StorageError> {
        self.edit(key, deleted(key), |record| {
            check_led(key, record, led)?;
            let Some(moving) = record.reassignment.clone() else {
                return Ok(Edit::Keep(None));
            };
            let leader_stays = record
                .leader
                .as_ref()
                .is_some_and(|l| moving.target.contains(l));
            if !leader_stays || !moving.caught_up(&record.isr) {
                return Ok(Edit::Keep(None));
            }
            record.replicas = moving.target.clone();
            record.isr.retain(|r| moving.target.contains(r));
            record.reassignment = None;
            Ok(Edit::Write(Some(record.clone())))
        })
        .await
    }

    /// Deletes the record if it is still the log `log_id`; false if it is
    /// gone (or is already another log of the same name).
    pub async fn delete(&self, key: &str, log_id: u64) -> Result<bool, StorageError> {
        self.delete_checked(key, |record| Ok(record.log_id == log_id))
            .await
    }

    /// Deletes the record of the log led in `led`, as its leader: a leader
    /// deposed meanwhile (a paused or partitioned one that comes back)
    /// gets `Fenced` and the record its successor writes to stays.
    pub async fn delete_led(&self, key: &str, led: (u64, u32)) -> Result<bool, StorageError> {
        self.delete_checked(key, |record| check_led(key, record, led).map(|()| true))
            .await
    }

    async fn delete_checked(
        &self,
        key: &str,
        applies: impl Fn(&PartitionRecord) -> Result<bool, StorageError>,
    ) -> Result<bool, StorageError> {
        let Some((record, version)) = self.load(key).await? else {
            return Ok(false);
        };
        if !applies(&record)? {
            return Ok(false);
        }
        match self.store.delete(key, Expect::Version(version)).await {
            Ok(deleted) => Ok(deleted),
            Err(MetadataError::Conflict { .. }) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }
}

/// What [`RecordStore::edit`]'s change decided: write the changed record
/// (and answer `T`), or leave it as it is.
enum Edit<T> {
    Write(T),
    Keep(T),
}

/// Fails with `Fenced` unless `record` is still the log `log_id` in the
/// leader epoch `epoch`.
fn check_led(
    key: &str,
    record: &PartitionRecord,
    (log_id, epoch): (u64, u32),
) -> Result<(), StorageError> {
    if record.log_id != log_id || record.leader_epoch != epoch {
        return Err(StorageError::Fenced(format!(
            "{key} is in leader epoch {} now (this leader's is {epoch})",
            record.leader_epoch
        )));
    }
    Ok(())
}

/// Lets `broker`, out of the ISR, lead when the placement allows unclean
/// election and no in-sync replica is alive; it becomes the whole ISR.
fn elect_uncleanly(
    key: &str,
    broker: &str,
    placement: &Placement,
    record: &mut PartitionRecord,
) -> Result<(), StorageError> {
    let in_sync_alive = record
        .isr
        .iter()
        .any(|r| r != broker && placement.live.contains(r));
    if !placement.unclean_leader_election || in_sync_alive {
        let why = match in_sync_alive {
            true => "an in-sync replica is alive and must lead",
            false => "unclean leader election is off for its namespace",
        };
        return Err(StorageError::Unavailable(format!(
            "this broker ({broker}) is not in the in-sync replicas {:?} of {key} and may miss committed entries; {why}",
            record.isr
        )));
    }
    tracing::warn!(partition = key, %broker, isr = ?record.isr, "unclean leader election: entries committed only on the lost in-sync replicas are lost");
    record.isr = vec![broker.to_string()];
    Ok(())
}

fn deleted(key: &str) -> impl Fn() -> StorageError + '_ {
    move || StorageError::Fenced(format!("{key} was deleted"))
}

fn no_log(key: &str) -> impl Fn() -> StorageError + '_ {
    move || StorageError::NotFound(format!("{key} has no log"))
}

/// Most replicas one log may have.
const MAX_REPLICAS: usize = 16;

fn validate_target(key: &str, target: &[String]) -> Result<(), StorageError> {
    if target.is_empty() || target.len() > MAX_REPLICAS {
        return Err(StorageError::Rejected(format!(
            "{key}: a log needs 1 to {MAX_REPLICAS} replicas, not {}",
            target.len()
        )));
    }
    let mut unique = target.to_vec();
    unique.sort();
    unique.dedup();
    if unique.len() != target.len() {
        return Err(StorageError::Rejected(format!(
            "{key}: replicas {target:?} name a broker twice"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn placement(rf: usize, live: &[&str]) -> Placement {
        Placement {
            replication_factor: rf,
            live: live.iter().map(|s| s.to_string()).collect(),
            ..Placement::default()
        }
    }

    fn racked(rf: usize, live: &[(&str, &str)]) -> Placement {
        Placement {
            replication_factor: rf,
            live: live.iter().map(|(b, _)| b.to_string()).collect(),
            racks: live
                .iter()
                .map(|(b, r)| (b.to_string(), r.to_string()))
                .collect(),
            ..Placement::default()
        }
    }

    #[tokio::test]
    async fn only_the_current_leader_deletes_the_record() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn MetadataStore> = Arc::new(
            magnetar_metadata::EmbeddedStore::open(dir.path())
                .await
                .unwrap(),
        );
        let records = RecordStore::new(store.clone(), Arc::new(LedgerIdAllocator::new(store)));
        let key = "/topics/t/n/zombie";
        let first = records
            .take_leadership(key, "a", &placement(2, &["a", "b"]), FlushPolicy::Fsync)
            .await
            .unwrap();
        // `a` stalls; `b`, in its ISR, takes over.
        let second = records
            .take_leadership(key, "b", &placement(2, &["b"]), FlushPolicy::Fsync)
            .await
            .unwrap();
        assert_eq!(second.leader_epoch, first.leader_epoch + 1);
        let deposed = records
            .delete_led(key, (first.log_id, first.leader_epoch))
            .await;
        assert!(
            matches!(deposed, Err(StorageError::Fenced(_))),
            "{deposed:?}"
        );
        let (kept, _) = records.load(key).await.unwrap().expect("record kept");
        assert_eq!(kept.leader.as_deref(), Some("b"));
        let current = records
            .delete_led(key, (second.log_id, second.leader_epoch))
            .await;
        assert!(matches!(current, Ok(true)), "{current:?}");
        assert!(records.load(key).await.unwrap().is_none());
    }

    #[test]
    fn replicas_spread_over_racks_first() {
        let p = racked(
            3,
            &[
                ("a", "r1"),
                ("b", "r1"),
                ("c", "r1"),
                ("d", "r2"),
                ("e", "r3"),
            ],
        );
        for key in ["/topics/t/n/x", "/topics/t/n/y", "/topics/t/n/z", "/k"] {
            let replicas = p.replicas_for(key, "a").unwrap();
            let mut racks: Vec<&String> = replicas.iter().map(|b| &p.racks[b]).collect();
            racks.sort();
            assert_eq!(racks, ["r1", "r2", "r3"], "{key}: {replicas:?}");
        }
        // Fewer racks than replicas: every rack, then the rest.
        let two = racked(3, &[("a", "r1"), ("b", "r1"), ("c", "r2")]);
        let replicas = two.replicas_for("/k", "a").unwrap();
        assert_eq!(replicas.len(), 3);
        assert!(replicas.contains(&"c".to_string()), "{replicas:?}");
    }

    #[test]
    fn a_replacement_takes_an_unused_rack_and_never_a_replica() {
        let p = racked(
            3,
            &[
                ("a", "r1"),
                ("b", "r2"),
                ("c", "r1"),
                ("d", "r3"),
                ("e", "r2"),
            ],
        );
        let current = vec!["a".to_string(), "b".to_string()];
        assert_eq!(p.replacement(&current, &[]), Some("d".to_string()));
        assert_eq!(
            p.replacement(&current, &["d".to_string()]),
            Some("c".to_string())
        );
        let all: Vec<String> = ["a", "b", "c", "d", "e"].map(String::from).to_vec();
        assert_eq!(p.replacement(&all, &[]), None);
    }

    #[test]
    fn a_new_log_is_placed_on_the_leader_and_distinct_live_brokers() {
        let p = placement(3, &["c", "a", "b", "d"]);
        for key in ["/topics/t/n/x", "/topics/t/n/y", "/topics/t/n/z"] {
            let replicas = p.replicas_for(key, "b").unwrap();
            assert_eq!(replicas.len(), 3);
            assert_eq!(replicas[0], "b");
            let mut unique = replicas.clone();
            unique.sort();
            unique.dedup();
            assert_eq!(unique.len(), 3, "{replicas:?}");
            assert!(!replicas[1..].contains(&"b".to_string()));
        }
        assert_eq!(
            placement(1, &[]).replicas_for("/k", "a").unwrap(),
            vec!["a"]
        );
    }

    #[test]
    fn a_followed_replica_set_is_taken_with_the_leader_first() {
        let mut p = placement(3, &["a", "b", "c", "d"]);
        p.follow = Some(vec!["c".into(), "b".into(), "gone".into()]);
        assert_eq!(p.replicas_for("k", "b").unwrap(), ["b", "c", "gone"]);
        // A leader that is not among them places the log itself.
        assert_eq!(p.replicas_for("k", "a").unwrap().len(), 3);
        assert_eq!(p.replicas_for("k", "a").unwrap()[0], "a");
    }

    #[test]
    fn too_few_live_brokers_is_not_enough_replicas() {
        let err = placement(3, &["a", "b"])
            .replicas_for("/k", "a")
            .unwrap_err();
        assert!(matches!(
            err,
            StorageError::NotEnoughReplicas {
                in_sync: 2,
                required: 3
            }
        ));
    }
}
