//! Where a log's copies are, for the architectures that keep copies on
//! brokers: what the admin API shows of a partition's replicas and of a
//! reassignment under way. A ledger's copies are on bookies and never
//! move with the topic, so the decoupled architecture has none of this.

use serde::Serialize;

/// A log's replicas, as its leader (or, with no leader serving it, its
/// record) knows them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReplicaSet {
    /// The leader's replica id, if one was ever elected.
    pub leader: Option<String>,
    pub leader_epoch: u32,
    /// The first entry still stored and the end of the leader's log
    /// (known only on the leader).
    pub log_start_offset: Option<u64>,
    pub log_end_offset: Option<u64>,
    /// Bytes the leader's copy holds.
    pub size_bytes: Option<u64>,
    pub replicas: Vec<ReplicaState>,
    pub reassignment: Option<ReassignmentState>,
}

/// One copy of a log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReplicaState {
    /// Its id in partition records (kept in the broker's data directory).
    pub replica_id: String,
    /// The broker holding it (`host:port`), if that broker is alive.
    pub broker_id: Option<String>,
    pub leader: bool,
    pub in_sync: bool,
    /// Being copied (a reassignment adds it) or going (it removes it).
    pub adding: bool,
    pub removing: bool,
    /// Where it holds the log up to, and how many bytes of the leader's
    /// copy that is (as the leader last saw it fetch).
    pub log_end_offset: Option<u64>,
    pub bytes: Option<u64>,
}

/// A move of replicas under way.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReassignmentState {
    /// Replica ids once done, the preferred leader first.
    pub target: Vec<String>,
    pub throttle_bytes_per_second: Option<u64>,
    pub started_at_ms: u64,
    /// Bytes the adding replicas hold of the bytes they must copy (both
    /// known on the leader only).
    pub copied_bytes: Option<u64>,
    pub total_bytes: Option<u64>,
}
