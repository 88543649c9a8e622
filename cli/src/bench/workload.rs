//! Workload files: OpenMessaging Benchmark's YAML, with its field names and
//! meanings, so that OMB's own workload files run unchanged. What OMB has no
//! field for (faults, persistence, subscription type, batching) lives in one
//! `magnetar:` block, so an extension is never mistaken for an OMB field.
//! This module only parses and checks; it never starts or sends anything.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::client::SubscriptionType;

#[derive(Debug, thiserror::Error)]
pub enum WorkloadError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("parsing {path}: {source}")]
    Parse {
        path: PathBuf,
        source: serde_norway::Error,
    },
    #[error("{path}: {reason}")]
    Invalid { path: PathBuf, reason: String },
}

/// Bytes at the start of every payload that carry the producer, sequence
/// number and send times the consumers verify and measure with.
pub const HEADER_BYTES: usize = 32;

/// One workload, as OMB's `Workload` class names its fields.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Workload {
    pub name: String,
    /// Topics to create.
    pub topics: u32,
    /// Partitions of each topic (a partitioned topic even for 1, as OMB's
    /// Pulsar driver creates them).
    pub partitions_per_topic: u32,
    #[serde(default)]
    pub key_distributor: KeyDistributor,
    /// Payload bytes per message.
    pub message_size: usize,
    /// A pool of payloads, each `randomBytesRatio` random and the rest zero.
    #[serde(default)]
    pub use_randomized_payloads: bool,
    #[serde(default)]
    pub random_bytes_ratio: f64,
    #[serde(default)]
    pub randomized_payload_pool_size: usize,
    /// A file whose bytes are the payload (relative to the workload file).
    #[serde(default)]
    pub payload_file: Option<PathBuf>,
    pub subscriptions_per_topic: u32,
    pub consumer_per_subscription: u32,
    pub producers_per_topic: u32,
    /// Messages per second over all producers; 0 = find the highest rate
    /// the consumers keep up with (OMB's rate discovery).
    pub producer_rate: f64,
    /// Build this much backlog per subscription with the consumers paused,
    /// then drain it while producing. OMB takes whole GB; fractions work here.
    #[serde(default, rename = "consumerBacklogSizeGB")]
    pub consumer_backlog_size_gb: f64,
    /// How much of the backlog must be read for the drain to count as done
    /// (1.0: all of it, down to OMB's floor of 1,000 messages).
    #[serde(default = "default_drain_ratio")]
    pub backlog_drain_ratio: f64,
    /// Measured duration. OMB takes whole minutes; fractions work here.
    pub test_duration_minutes: f64,
    #[serde(default = "default_warmup_minutes")]
    pub warmup_duration_minutes: f64,
    /// Magnetar's extensions (not OMB fields).
    #[serde(default)]
    pub magnetar: MagnetarExtensions,
    /// OMB fields this runner does not implement (and typos): reported, not
    /// silently dropped.
    #[serde(flatten, skip_serializing)]
    pub ignored: BTreeMap<String, serde_norway::Value>,
}

fn default_drain_ratio() -> f64 {
    1.0
}

fn default_warmup_minutes() -> f64 {
    1.0
}

/// How producers pick message keys (OMB's `KeyDistributorType`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum KeyDistributor {
    /// No key: the client spreads messages over partitions round robin.
    #[default]
    NoKey,
    /// Keys from a pool of 10,000, in turn.
    KeyRoundRobin,
    /// A key from the pool chosen by the clock's nanoseconds.
    RandomNano,
}

/// Fields OMB does not have.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MagnetarExtensions {
    /// How consumers share a subscription; OMB's Pulsar driver uses Failover.
    #[serde(default = "default_subscription_type")]
    pub subscription_type: SubscriptionKind,
    /// Decoupled architecture: ensemble, write and ack quorum of the
    /// namespace (the public runs used 3/3/2).
    #[serde(default)]
    pub persistence: Option<Persistence>,
    /// Monolithic architecture: replicas and min.insync (the public runs
    /// used 3 and 2). Stored as the namespace's ensemble and ack quorum.
    #[serde(default)]
    pub replication: Option<Replication>,
    /// Bundles of the benchmark namespace (hash ranges that brokers own).
    #[serde(default = "default_bundles")]
    pub bundles: u32,
    #[serde(default)]
    pub batching: Batching,
    /// Messages awaiting their receipt, per producer (OMB's Pulsar driver:
    /// maxPendingMessages 1000); a full window delays sends, which shows
    /// as publish delay.
    #[serde(default = "default_max_pending")]
    pub max_pending_messages: usize,
    /// First rate tried when `producerRate` is 0 (OMB starts at 10,000/s).
    #[serde(default = "default_discovery_start_rate")]
    pub discovery_start_rate: f64,
    /// How long, after the producers stop, the consumers may take to read
    /// every acknowledged message before the rest counts as lost.
    #[serde(default = "default_drain_timeout")]
    pub drain_timeout_seconds: f64,
    /// Faults, at times counted from the start of the measured phase.
    #[serde(default)]
    pub faults: Vec<Fault>,
}

impl Default for MagnetarExtensions {
    fn default() -> Self {
        Self {
            subscription_type: default_subscription_type(),
            persistence: None,
            replication: None,
            bundles: default_bundles(),
            batching: Batching::default(),
            max_pending_messages: default_max_pending(),
            discovery_start_rate: default_discovery_start_rate(),
            drain_timeout_seconds: default_drain_timeout(),
            faults: Vec::new(),
        }
    }
}

fn default_subscription_type() -> SubscriptionKind {
    SubscriptionKind::Failover
}
fn default_bundles() -> u32 {
    16
}
fn default_max_pending() -> usize {
    1000
}
fn default_discovery_start_rate() -> f64 {
    10_000.0
}
fn default_drain_timeout() -> f64 {
    60.0
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SubscriptionKind {
    Exclusive,
    Shared,
    Failover,
    #[serde(rename = "Key_Shared")]
    KeyShared,
}

impl From<SubscriptionKind> for SubscriptionType {
    fn from(kind: SubscriptionKind) -> Self {
        match kind {
            SubscriptionKind::Exclusive => SubscriptionType::Exclusive,
            SubscriptionKind::Shared => SubscriptionType::Shared,
            SubscriptionKind::Failover => SubscriptionType::Failover,
            SubscriptionKind::KeyShared => SubscriptionType::KeyShared,
        }
    }
}

impl SubscriptionKind {
    /// Whether one consumer sees each partition in order, so that order can
    /// be checked per partition.
    pub fn keeps_partition_order(self) -> bool {
        matches!(
            self,
            SubscriptionKind::Exclusive | SubscriptionKind::Failover
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Persistence {
    pub ensemble_size: u32,
    pub write_quorum: u32,
    pub ack_quorum: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Replication {
    pub replication_factor: u32,
    pub min_insync_replicas: u32,
}

/// Client batching (OMB's Pulsar driver: batching on, 1 ms delay).
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Batching {
    #[serde(default = "default_batch_messages")]
    pub max_messages: u32,
    #[serde(default = "default_batch_bytes")]
    pub max_bytes: usize,
    #[serde(default = "default_batch_delay_ms")]
    pub max_delay_ms: u64,
}

impl Default for Batching {
    fn default() -> Self {
        Self {
            max_messages: default_batch_messages(),
            max_bytes: default_batch_bytes(),
            max_delay_ms: default_batch_delay_ms(),
        }
    }
}

fn default_batch_messages() -> u32 {
    1000
}
fn default_batch_bytes() -> usize {
    131_072
}
fn default_batch_delay_ms() -> u64 {
    1
}

/// One scheduled fault.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Fault {
    /// Seconds after the start of the measured phase.
    pub at_seconds: f64,
    pub action: FaultAction,
    /// `kill-broker`, `pause-broker`: which broker (index in start order).
    #[serde(default)]
    pub broker: Option<usize>,
    /// `kill-bookie`: which bookie.
    #[serde(default)]
    pub bookie: Option<usize>,
    /// `kill-leader`, `kill-follower`, `move-bundle` without `sizeGB`: the
    /// partition of the first topic whose broker is meant (default 0).
    #[serde(default)]
    pub partition: Option<u32>,
    /// `pause-broker`: how long it stays stopped.
    #[serde(default)]
    pub duration_seconds: Option<f64>,
    /// `move-bundle`: fill a topic of its own with this much data before
    /// the run, then move its bundle to another broker.
    #[serde(default, rename = "sizeGB")]
    pub size_gb: Option<f64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FaultAction {
    /// kill -9 a broker.
    KillBroker,
    /// kill -9 a bookie (decoupled).
    KillBookie,
    /// kill -9 the broker serving a partition (its owner; in the monolithic
    /// architecture its leader).
    KillLeader,
    /// kill -9 a broker holding a follower replica of a partition
    /// (monolithic).
    KillFollower,
    /// SIGSTOP a broker, SIGCONT it `durationSeconds` later.
    PauseBroker,
    /// Unload a bundle to another broker (the same admin call in both
    /// architectures).
    MoveBundle,
    /// Start one more broker.
    AddBroker,
}

impl FaultAction {
    pub fn name(self) -> &'static str {
        match self {
            FaultAction::KillBroker => "kill-broker",
            FaultAction::KillBookie => "kill-bookie",
            FaultAction::KillLeader => "kill-leader",
            FaultAction::KillFollower => "kill-follower",
            FaultAction::PauseBroker => "pause-broker",
            FaultAction::MoveBundle => "move-bundle",
            FaultAction::AddBroker => "add-broker",
        }
    }
}

impl Workload {
    /// Reads and checks a workload file; a relative `payloadFile` is taken
    /// from the workload file's directory.
    pub fn load(path: &Path) -> Result<Workload, WorkloadError> {
        let text = std::fs::read_to_string(path).map_err(|source| WorkloadError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let mut workload = Self::parse(&text).map_err(|e| match e {
            ParseFailure::Yaml(source) => WorkloadError::Parse {
                path: path.to_path_buf(),
                source,
            },
            ParseFailure::Invalid(reason) => WorkloadError::Invalid {
                path: path.to_path_buf(),
                reason,
            },
        })?;
        if let Some(file) = &workload.payload_file {
            if file.is_relative() {
                let base = path.parent().unwrap_or(Path::new("."));
                workload.payload_file = Some(base.join(file));
            }
        }
        Ok(workload)
    }

    fn parse(text: &str) -> Result<Workload, ParseFailure> {
        let workload: Workload = serde_norway::from_str(text).map_err(ParseFailure::Yaml)?;
        workload.check().map_err(ParseFailure::Invalid)?;
        Ok(workload)
    }

    /// What makes a workload impossible to run, said before anything starts.
    fn check(&self) -> Result<(), String> {
        let positive = [
            ("topics", self.topics as u64),
            ("partitionsPerTopic", self.partitions_per_topic as u64),
            ("producersPerTopic", self.producers_per_topic as u64),
            ("subscriptionsPerTopic", self.subscriptions_per_topic as u64),
            (
                "consumerPerSubscription",
                self.consumer_per_subscription as u64,
            ),
            (
                "magnetar.maxPendingMessages",
                self.magnetar.max_pending_messages as u64,
            ),
        ];
        for (field, value) in positive {
            if value == 0 {
                return Err(format!("{field} must be at least 1"));
            }
        }
        if self.message_size < HEADER_BYTES {
            return Err(format!(
                "messageSize must be at least {HEADER_BYTES} bytes (each payload starts \
                 with a {HEADER_BYTES}-byte header the consumers verify)"
            ));
        }
        let non_negative = [
            ("producerRate", self.producer_rate),
            ("consumerBacklogSizeGB", self.consumer_backlog_size_gb),
            ("testDurationMinutes", self.test_duration_minutes),
            ("warmupDurationMinutes", self.warmup_duration_minutes),
        ];
        for (field, value) in non_negative {
            if !(value.is_finite() && value >= 0.0) {
                return Err(format!("{field} must be a number >= 0"));
            }
        }
        if !(0.0..=1.0).contains(&self.random_bytes_ratio)
            || !(0.0..=1.0).contains(&self.backlog_drain_ratio)
        {
            return Err("randomBytesRatio and backlogDrainRatio lie in [0, 1]".into());
        }
        if self.consumer_per_subscription > 1
            && self.magnetar.subscription_type == SubscriptionKind::Exclusive
        {
            return Err("an Exclusive subscription takes one consumer".into());
        }
        for (i, fault) in self.magnetar.faults.iter().enumerate() {
            fault
                .check()
                .map_err(|e| format!("magnetar.faults[{i}]: {e}"))?;
        }
        Ok(())
    }

    /// Sum of producers over all topics.
    pub fn total_producers(&self) -> usize {
        (self.topics * self.producers_per_topic) as usize
    }
}

impl Fault {
    fn check(&self) -> Result<(), String> {
        if !(self.at_seconds.is_finite() && self.at_seconds >= 0.0) {
            return Err("atSeconds must be >= 0".into());
        }
        let needs = |ok: bool, what: &str| {
            if ok {
                Ok(())
            } else {
                Err(format!("{} needs {what}", self.action.name()))
            }
        };
        match self.action {
            FaultAction::KillBookie => needs(self.bookie.is_some(), "bookie: INDEX"),
            FaultAction::KillBroker => needs(self.broker.is_some(), "broker: INDEX"),
            FaultAction::PauseBroker => needs(
                self.broker.is_some() && self.duration_seconds.is_some_and(|d| d > 0.0),
                "broker: INDEX and durationSeconds > 0",
            ),
            FaultAction::MoveBundle => needs(
                self.size_gb.is_none_or(|s| s.is_finite() && s > 0.0),
                "sizeGB > 0 when given",
            ),
            FaultAction::KillLeader | FaultAction::KillFollower | FaultAction::AddBroker => Ok(()),
        }
    }
}

enum ParseFailure {
    Yaml(serde_norway::Error),
    Invalid(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    const OMB: &str = r#"
name: 500k rate 4 producers and 4 consumers on 1 topic / 100 partition
topics: 1
partitionsPerTopic: 100
messageSize: 1024
useRandomizedPayloads: true
randomBytesRatio: 0.5
randomizedPayloadPoolSize: 1000
subscriptionsPerTopic: 1
consumerPerSubscription: 4
producersPerTopic: 4
producerRate: 500000
consumerBacklogSizeGB: 0
testDurationMinutes: 15
"#;

    fn parse(text: &str) -> Result<Workload, String> {
        Workload::parse(text).map_err(|e| match e {
            ParseFailure::Yaml(e) => e.to_string(),
            ParseFailure::Invalid(e) => e,
        })
    }

    #[test]
    fn an_omb_workload_file_parses_with_omb_defaults() {
        let w = parse(OMB).expect("parses");
        assert_eq!(w.partitions_per_topic, 100);
        assert_eq!(w.producer_rate, 500_000.0);
        assert_eq!(w.key_distributor, KeyDistributor::NoKey);
        assert_eq!(w.warmup_duration_minutes, 1.0);
        assert_eq!(w.backlog_drain_ratio, 1.0);
        assert_eq!(
            w.magnetar.subscription_type,
            SubscriptionKind::Failover,
            "OMB's Pulsar driver subscribes with Failover"
        );
        assert!(w.ignored.is_empty());
        assert_eq!(w.total_producers(), 4);
    }

    #[test]
    fn fields_this_runner_does_not_know_are_kept_aside() {
        let w = parse(&format!("{OMB}producerStartRate: 1000\n")).expect("parses");
        assert!(w.ignored.contains_key("producerStartRate"));
    }

    #[test]
    fn extensions_and_faults_parse() {
        let w = parse(&format!(
            "{OMB}keyDistributor: KEY_ROUND_ROBIN
magnetar:
  subscriptionType: Key_Shared
  persistence: {{ensembleSize: 3, writeQuorum: 3, ackQuorum: 2}}
  faults:
    - {{atSeconds: 30, action: kill-broker, broker: 1}}
    - {{atSeconds: 60, action: move-bundle, sizeGB: 0.1}}
    - {{atSeconds: 90, action: pause-broker, broker: 0, durationSeconds: 5}}
"
        ))
        .expect("parses");
        assert_eq!(w.key_distributor, KeyDistributor::KeyRoundRobin);
        assert_eq!(w.magnetar.subscription_type, SubscriptionKind::KeyShared);
        assert_eq!(
            w.magnetar.persistence,
            Some(Persistence {
                ensemble_size: 3,
                write_quorum: 3,
                ack_quorum: 2
            })
        );
        let actions: Vec<_> = w.magnetar.faults.iter().map(|f| f.action).collect();
        assert_eq!(
            actions,
            [
                FaultAction::KillBroker,
                FaultAction::MoveBundle,
                FaultAction::PauseBroker
            ]
        );
        assert_eq!(w.magnetar.faults[1].size_gb, Some(0.1));
    }

    #[test]
    fn a_typo_in_the_extension_block_is_an_error() {
        let err = parse(&format!("{OMB}magnetar:\n  fautls: []\n")).expect_err("rejected");
        assert!(err.contains("fautls"), "{err}");
    }

    #[test]
    fn impossible_workloads_are_refused_before_anything_starts() {
        let cases = [
            (
                OMB.replace("messageSize: 1024", "messageSize: 16"),
                "messageSize",
            ),
            (OMB.replace("topics: 1", "topics: 0"), "topics"),
            (
                OMB.replace("producerRate: 500000", "producerRate: -1"),
                "producerRate",
            ),
            (
                format!("{OMB}magnetar:\n  faults:\n    - {{atSeconds: 1, action: kill-broker}}\n"),
                "broker: INDEX",
            ),
            (
                format!("{OMB}magnetar:\n  subscriptionType: Exclusive\n"),
                "Exclusive",
            ),
        ];
        for (text, expected) in cases {
            let err = parse(&text).expect_err(expected);
            assert!(err.contains(expected), "{err} should mention {expected}");
        }
    }

    #[test]
    fn every_shipped_workload_parses() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../bench/workloads");
        let mut count = 0;
        for entry in std::fs::read_dir(&dir).expect("bench/workloads exists") {
            let path = entry.expect("entry").path();
            if path.extension().is_some_and(|e| e == "yaml") {
                let w = Workload::load(&path).unwrap_or_else(|e| panic!("{e}"));
                assert!(w.ignored.is_empty(), "{}: {:?}", path.display(), w.ignored);
                count += 1;
            }
        }
        assert!(count >= 5, "only {count} workloads in {}", dir.display());
    }
}
