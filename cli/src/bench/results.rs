//! One run's results as one JSON file: OMB's `TestResult` fields with their
//! names and units (publish and end-to-end latency in ms, publish delay in
//! µs, one list entry per sampling period of the measured phase), and one
//! `magnetar` object for everything OMB does not record (machine, topology,
//! fsync policy, versions, command, verification, faults, resource samples).
//! Reading accepts OMB's own result files too (without the `magnetar` part).

use std::collections::BTreeMap;
use std::path::Path;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::sample::Samples;
use super::verify::SubscriptionVerdict;
use super::workload::{Persistence, Replication, Workload};

#[derive(Debug, thiserror::Error)]
pub enum ResultsError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: not a result file: {reason}")]
    Format { path: String, reason: String },
}

/// Percentiles of one latency distribution, in the unit of its field.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LatencySummary {
    pub avg: f64,
    pub p50: f64,
    pub p75: f64,
    pub p95: f64,
    pub p99: f64,
    pub p999: f64,
    pub p9999: f64,
    pub p99999: f64,
    pub max: f64,
}

/// OMB's field suffixes, in its order.
const SUFFIXES: [&str; 9] = [
    "Avg", "50pct", "75pct", "95pct", "99pct", "999pct", "9999pct", "99999pct", "Max",
];

impl LatencySummary {
    /// From a histogram of microseconds, divided by `per_unit` (1000 for ms).
    pub fn from_histogram(h: &Histogram<u64>, per_unit: f64) -> LatencySummary {
        if h.is_empty() {
            return LatencySummary::default();
        }
        let q = |p: f64| h.value_at_quantile(p) as f64 / per_unit;
        LatencySummary {
            avg: h.mean() / per_unit,
            p50: q(0.5),
            p75: q(0.75),
            p95: q(0.95),
            p99: q(0.99),
            p999: q(0.999),
            p9999: q(0.9999),
            p99999: q(0.99999),
            max: h.max() as f64 / per_unit,
        }
    }

    fn values(&self) -> [f64; 9] {
        [
            self.avg,
            self.p50,
            self.p75,
            self.p95,
            self.p99,
            self.p999,
            self.p9999,
            self.p99999,
            self.max,
        ]
    }

    fn from_values(v: [f64; 9]) -> LatencySummary {
        LatencySummary {
            avg: v[0],
            p50: v[1],
            p75: v[2],
            p95: v[3],
            p99: v[4],
            p999: v[5],
            p9999: v[6],
            p99999: v[7],
            max: v[8],
        }
    }
}

/// (percentile, value) pairs as OMB's `percentiles(1)` walk gives them
/// (0, 50, 75, 87.5, ... 100), values divided by `per_unit`.
pub fn quantiles(h: &Histogram<u64>, per_unit: f64) -> Vec<(f64, f64)> {
    if h.is_empty() {
        return Vec::new();
    }
    h.iter_quantiles(1)
        .map(|v| {
            (
                v.quantile_iterated_to() * 100.0,
                v.value_iterated_to() as f64 / per_unit,
            )
        })
        .collect()
}

/// The fields of OMB's `TestResult`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OmbResult {
    pub workload: String,
    pub driver: String,
    pub message_size: u64,
    pub topics: u64,
    pub partitions: u64,
    pub producers_per_topic: u64,
    pub consumers_per_topic: u64,
    /// Messages per second, per period.
    pub publish_rate: Vec<f64>,
    pub publish_error_rate: Vec<f64>,
    pub consume_rate: Vec<f64>,
    /// Messages produced and not yet consumed (over all subscriptions).
    pub backlog: Vec<f64>,
    /// Per period, ms.
    pub publish_latency: Vec<LatencySummary>,
    /// Per period, µs.
    pub publish_delay_latency: Vec<LatencySummary>,
    /// Per period, ms.
    pub end_to_end_latency: Vec<LatencySummary>,
    pub aggregated_publish_latency: LatencySummary,
    pub aggregated_publish_delay_latency: LatencySummary,
    pub aggregated_end_to_end_latency: LatencySummary,
    pub aggregated_publish_latency_quantiles: Vec<(f64, f64)>,
    pub aggregated_publish_delay_latency_quantiles: Vec<(f64, f64)>,
    pub aggregated_end_to_end_latency_quantiles: Vec<(f64, f64)>,
}

/// One latency kind's fields: name, per-period summaries, aggregate,
/// quantiles, and whether OMB writes them as whole numbers.
type LatencyFields<'a> = (
    &'a str,
    &'a Vec<LatencySummary>,
    &'a LatencySummary,
    &'a Vec<(f64, f64)>,
    bool,
);

/// OMB's publish delay fields are whole microseconds (Java longs).
fn delay_value(v: f64) -> Value {
    Value::from(v.round() as i64)
}

fn float_value(v: f64) -> Value {
    serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number)
}

/// Percentile keys as Java's Double.toString writes them ("50.0", "87.5").
fn percentile_key(p: f64) -> String {
    format!("{p:?}")
}

impl OmbResult {
    fn to_map(&self, map: &mut Map<String, Value>) {
        map.insert("workload".into(), self.workload.clone().into());
        map.insert("driver".into(), self.driver.clone().into());
        for (k, v) in [
            ("messageSize", self.message_size),
            ("topics", self.topics),
            ("partitions", self.partitions),
            ("producersPerTopic", self.producers_per_topic),
            ("consumersPerTopic", self.consumers_per_topic),
        ] {
            map.insert(k.into(), v.into());
        }
        let list = |values: &[f64]| Value::Array(values.iter().copied().map(float_value).collect());
        map.insert("publishRate".into(), list(&self.publish_rate));
        map.insert("publishErrorRate".into(), list(&self.publish_error_rate));
        map.insert("consumeRate".into(), list(&self.consume_rate));
        map.insert(
            "backlog".into(),
            Value::Array(
                self.backlog
                    .iter()
                    .map(|b| Value::from(*b as i64))
                    .collect(),
            ),
        );
        let kinds: [LatencyFields; 3] = [
            (
                "PublishLatency",
                &self.publish_latency,
                &self.aggregated_publish_latency,
                &self.aggregated_publish_latency_quantiles,
                false,
            ),
            (
                "PublishDelayLatency",
                &self.publish_delay_latency,
                &self.aggregated_publish_delay_latency,
                &self.aggregated_publish_delay_latency_quantiles,
                true,
            ),
            (
                "EndToEndLatency",
                &self.end_to_end_latency,
                &self.aggregated_end_to_end_latency,
                &self.aggregated_end_to_end_latency_quantiles,
                false,
            ),
        ];
        for (kind, periods, aggregated, quantiles, whole) in kinds {
            let value = |v: f64, i: usize| {
                // OMB's publishDelayLatencyAvg is a double, the rest longs.
                if whole && i > 0 {
                    delay_value(v)
                } else {
                    float_value(v)
                }
            };
            let lower = lower_first(kind);
            for (i, suffix) in SUFFIXES.iter().enumerate() {
                map.insert(
                    format!("{lower}{suffix}"),
                    Value::Array(periods.iter().map(|s| value(s.values()[i], i)).collect()),
                );
                map.insert(
                    format!("aggregated{kind}{suffix}"),
                    value(aggregated.values()[i], i),
                );
            }
            let q: Map<String, Value> = quantiles
                .iter()
                .map(|(p, v)| (percentile_key(*p), value(*v, 1)))
                .collect();
            map.insert(format!("aggregated{kind}Quantiles"), Value::Object(q));
        }
    }

    fn from_map(map: &Map<String, Value>) -> Result<OmbResult, String> {
        let text = |k: &str| map.get(k).and_then(Value::as_str).unwrap_or("").to_string();
        let int = |k: &str| map.get(k).and_then(Value::as_u64).unwrap_or(0);
        let list = |k: &str| -> Vec<f64> {
            map.get(k)
                .and_then(Value::as_array)
                .map(|a| a.iter().map(|v| v.as_f64().unwrap_or(0.0)).collect())
                .unwrap_or_default()
        };
        if !map.contains_key("publishRate") {
            return Err("no publishRate field".into());
        }
        let periods = |kind: &str| -> Vec<LatencySummary> {
            let lower = lower_first(kind);
            let columns: Vec<Vec<f64>> = SUFFIXES
                .iter()
                .map(|s| list(&format!("{lower}{s}")))
                .collect();
            let n = columns.iter().map(Vec::len).max().unwrap_or(0);
            (0..n)
                .map(|i| {
                    let mut v = [0.0; 9];
                    for (j, c) in columns.iter().enumerate() {
                        v[j] = c.get(i).copied().unwrap_or(0.0);
                    }
                    LatencySummary::from_values(v)
                })
                .collect()
        };
        let aggregated = |kind: &str| {
            let mut v = [0.0; 9];
            for (j, s) in SUFFIXES.iter().enumerate() {
                v[j] = map
                    .get(&format!("aggregated{kind}{s}"))
                    .and_then(Value::as_f64)
                    .unwrap_or(0.0);
            }
            LatencySummary::from_values(v)
        };
        let quantiles = |kind: &str| -> Vec<(f64, f64)> {
            let mut q: Vec<(f64, f64)> = map
                .get(&format!("aggregated{kind}Quantiles"))
                .and_then(Value::as_object)
                .map(|o| {
                    o.iter()
                        .filter_map(|(k, v)| Some((k.parse().ok()?, v.as_f64()?)))
                        .collect()
                })
                .unwrap_or_default();
            q.sort_by(|a, b| a.0.total_cmp(&b.0));
            q
        };
        Ok(OmbResult {
            workload: text("workload"),
            driver: text("driver"),
            message_size: int("messageSize"),
            topics: int("topics"),
            partitions: int("partitions"),
            producers_per_topic: int("producersPerTopic"),
            consumers_per_topic: int("consumersPerTopic"),
            publish_rate: list("publishRate"),
            publish_error_rate: list("publishErrorRate"),
            consume_rate: list("consumeRate"),
            backlog: list("backlog"),
            publish_latency: periods("PublishLatency"),
            publish_delay_latency: periods("PublishDelayLatency"),
            end_to_end_latency: periods("EndToEndLatency"),
            aggregated_publish_latency: aggregated("PublishLatency"),
            aggregated_publish_delay_latency: aggregated("PublishDelayLatency"),
            aggregated_end_to_end_latency: aggregated("EndToEndLatency"),
            aggregated_publish_latency_quantiles: quantiles("PublishLatency"),
            aggregated_publish_delay_latency_quantiles: quantiles("PublishDelayLatency"),
            aggregated_end_to_end_latency_quantiles: quantiles("EndToEndLatency"),
        })
    }
}

fn lower_first(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(c) => c.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// The machine a run was made on.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Machine {
    pub cores: usize,
    pub memory_bytes: u64,
    pub kernel: String,
    pub cpu_model: String,
}

impl Machine {
    pub fn this() -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        Machine {
            cores: std::thread::available_parallelism().map_or(0, |n| n.get()),
            memory_bytes: meminfo
                .lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
                .map_or(0, |kib| kib * 1024),
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .unwrap_or_default()
                .trim()
                .to_string(),
            cpu_model: cpuinfo
                .lines()
                .find_map(|l| l.strip_prefix("model name"))
                .and_then(|v| v.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
                .unwrap_or_default(),
        }
    }
}

/// What ran the workload.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TopologyInfo {
    /// standalone, decoupled, monolithic, or external (`--service-url`).
    pub kind: String,
    pub brokers: usize,
    pub bookies: usize,
    /// The namespace's persistence policy (E/Qw/Qa; monolithic: E =
    /// replicas, Qa = min.insync).
    pub persistence: Option<Persistence>,
    pub replication: Option<Replication>,
    /// When a producer's receipt is sent relative to fsync.
    pub fsync_policy: String,
    pub lease_ttl_seconds: Option<f64>,
    pub service_url: String,
    pub admin_url: String,
    /// Extra broker flags given with `--broker-arg`.
    pub broker_args: Vec<String>,
}

/// Phase boundaries, in seconds since the runner started the load.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Phases {
    /// Seconds creating the namespace and topics (and filling move topics).
    pub setup_seconds: f64,
    /// Seconds subscribing every consumer and creating every producer.
    pub clients_seconds: f64,
    /// Seconds from the first send until every subscription had received a
    /// message (time to first message over all topics).
    pub all_subscriptions_reached_seconds: Option<f64>,
    pub warmup_start: f64,
    pub test_start: f64,
    pub test_end: f64,
    /// When the consumers had read everything acknowledged (or gave up).
    pub drain_end: f64,
    /// Seconds the consumers were paused to build `consumerBacklogSizeGB`.
    pub backlog_build_seconds: Option<f64>,
    /// Seconds from resuming them until the backlog was read.
    pub backlog_drain_seconds: Option<f64>,
    /// End of each OMB period, in seconds since `testStart`.
    pub period_ends: Vec<f64>,
}

/// The rate the producers were given.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RateInfo {
    /// `producerRate` (0 = discovered).
    pub requested: f64,
    /// The rate at the end of the run.
    pub last: f64,
    /// (seconds since test start, rate) at each change of a discovery run.
    pub changes: Vec<(f64, f64)>,
}

/// Totals over the measured phase.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Totals {
    pub seconds: f64,
    pub published: u64,
    pub publish_errors: u64,
    pub received: u64,
    pub publish_rate: f64,
    pub consume_rate: f64,
    pub publish_mb_per_second: f64,
    pub consume_mb_per_second: f64,
}

/// Whether what was acknowledged arrived.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Verification {
    /// No subscription lost an acknowledged message or saw one out of order.
    pub passed: bool,
    /// Whether every subscription read everything within the drain timeout.
    pub drained: bool,
    pub sent: u64,
    pub acknowledged: u64,
    pub failed_sends: u64,
    pub subscriptions: Vec<SubscriptionVerdict>,
}

/// One scheduled fault and what it did.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FaultOutcome {
    pub action: String,
    /// Seconds after the start of the measured phase, as scheduled.
    pub at_seconds: f64,
    /// When it was carried out (same origin), if it was.
    pub fired_at_seconds: Option<f64>,
    /// The process or bundle it acted on.
    pub target: Option<String>,
    /// done, failed, or not-run.
    pub status: String,
    /// Why it failed or did not run.
    pub reason: Option<String>,
    /// Figures it measured (seconds, bytes), by name.
    pub measurements: BTreeMap<String, f64>,
    pub notes: Vec<String>,
}

/// What OMB does not record.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MagnetarSection {
    pub schema_version: u32,
    pub started_at: String,
    /// The exact command line.
    pub command: Vec<String>,
    pub workload_file: String,
    pub workload: Option<Workload>,
    pub machine: Machine,
    pub versions: BTreeMap<String, String>,
    pub topology: TopologyInfo,
    pub phases: Phases,
    pub rate: RateInfo,
    pub totals: Totals,
    /// Intended send time to receipt (ms): publish latency with the time a
    /// message waited for its send included.
    pub aggregated_publish_latency_from_intended: LatencySummary,
    pub aggregated_publish_latency_from_intended_quantiles: Vec<(f64, f64)>,
    /// Per period (ms).
    pub publish_latency_from_intended: Vec<LatencySummary>,
    pub verification: Verification,
    pub faults: Vec<FaultOutcome>,
    pub samples: Samples,
    pub notes: Vec<String>,
}

/// One run.
#[derive(Debug, Clone, Default)]
pub struct RunResult {
    pub omb: OmbResult,
    pub magnetar: Option<MagnetarSection>,
}

impl RunResult {
    pub fn to_json(&self) -> Result<Value, serde_json::Error> {
        let mut map = Map::new();
        self.omb.to_map(&mut map);
        if let Some(m) = &self.magnetar {
            map.insert("magnetar".into(), serde_json::to_value(m)?);
        }
        Ok(Value::Object(map))
    }

    pub fn write(&self, path: &Path) -> Result<(), ResultsError> {
        let io = |source| ResultsError::Io {
            path: path.display().to_string(),
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let json = self.to_json().map_err(|e| ResultsError::Format {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        let text = serde_json::to_string_pretty(&json).map_err(|e| ResultsError::Format {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        std::fs::write(path, text + "\n").map_err(io)
    }

    pub fn read(path: &Path) -> Result<RunResult, ResultsError> {
        let format = |reason: String| ResultsError::Format {
            path: path.display().to_string(),
            reason,
        };
        let text = std::fs::read_to_string(path).map_err(|source| ResultsError::Io {
            path: path.display().to_string(),
            source,
        })?;
        let value: Value = serde_json::from_str(&text).map_err(|e| format(e.to_string()))?;
        let map = value
            .as_object()
            .ok_or_else(|| format("not a JSON object".into()))?;
        let omb = OmbResult::from_map(map).map_err(format)?;
        let magnetar = match map.get("magnetar") {
            Some(m) => Some(serde_json::from_value(m.clone()).map_err(|e| format(e.to_string()))?),
            None => None,
        };
        Ok(RunResult { omb, magnetar })
    }

    /// A short name for charts and tables: topology (and fsync policy when
    /// it is not the architecture's default), else OMB's driver.
    pub fn label(&self) -> String {
        match &self.magnetar {
            Some(m)
                if m.topology.kind == "monolithic" && m.topology.fsync_policy.contains("os") =>
            {
                "monolithic (fsync: os)".to_string()
            }
            Some(m) => m.topology.kind.clone(),
            None => self.omb.driver.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::perf::report::latency_histogram;

    fn histogram(values: &[u64]) -> Histogram<u64> {
        let mut h = latency_histogram();
        for v in values {
            h.record(*v).expect("in range");
        }
        h
    }

    #[test]
    fn summaries_are_in_the_fields_unit() {
        let h = histogram(&[1000, 2000, 3000, 4000]);
        let ms = LatencySummary::from_histogram(&h, 1000.0);
        assert_eq!(ms.p50, 2.0);
        assert!(
            (ms.max - 4.0).abs() < 0.01,
            "HdrHistogram's 3 digits: {}",
            ms.max
        );
        assert!((ms.avg - 2.5).abs() < 0.01, "{}", ms.avg);
        assert_eq!(
            LatencySummary::from_histogram(&latency_histogram(), 1.0),
            LatencySummary::default()
        );
    }

    #[test]
    fn quantiles_walk_as_omb_does() {
        let h = histogram(&(1..=1000).collect::<Vec<_>>());
        let q = quantiles(&h, 1.0);
        let percentiles: Vec<f64> = q.iter().map(|(p, _)| *p).take(4).collect();
        assert_eq!(percentiles, [0.0, 50.0, 75.0, 87.5]);
        assert_eq!(q.last().map(|(p, _)| *p), Some(100.0));
        assert_eq!(percentile_key(87.5), "87.5");
        assert_eq!(percentile_key(50.0), "50.0");
    }

    #[test]
    fn a_result_round_trips_with_omb_field_names() {
        let summary = LatencySummary {
            avg: 1.5,
            p50: 1.0,
            p75: 2.0,
            p95: 3.0,
            p99: 4.0,
            p999: 5.0,
            p9999: 6.0,
            p99999: 7.0,
            max: 8.0,
        };
        let result = RunResult {
            omb: OmbResult {
                workload: "w".into(),
                driver: "magnetar-decoupled".into(),
                message_size: 1024,
                topics: 1,
                partitions: 100,
                producers_per_topic: 4,
                consumers_per_topic: 4,
                publish_rate: vec![100.0, 200.0],
                publish_error_rate: vec![0.0, 0.0],
                consume_rate: vec![99.0, 201.0],
                backlog: vec![1.0, 0.0],
                publish_latency: vec![summary, summary],
                publish_delay_latency: vec![summary, summary],
                end_to_end_latency: vec![summary, summary],
                aggregated_publish_latency: summary,
                aggregated_publish_delay_latency: summary,
                aggregated_end_to_end_latency: summary,
                aggregated_publish_latency_quantiles: vec![(50.0, 1.0), (99.9, 5.0)],
                aggregated_publish_delay_latency_quantiles: vec![(50.0, 1.0)],
                aggregated_end_to_end_latency_quantiles: vec![(50.0, 2.0)],
            },
            magnetar: Some(MagnetarSection {
                schema_version: 1,
                ..Default::default()
            }),
        };
        let json = result.to_json().expect("json");
        for field in [
            "publishRate",
            "publishLatency50pct",
            "publishLatency99999pct",
            "publishDelayLatencyMax",
            "endToEndLatency9999pct",
            "aggregatedPublishLatency99pct",
            "aggregatedPublishDelayLatencyAvg",
            "aggregatedEndToEndLatencyMax",
            "aggregatedPublishLatencyQuantiles",
            "consumersPerTopic",
        ] {
            assert!(json.get(field).is_some(), "{field} missing");
        }
        assert_eq!(json["aggregatedPublishLatencyQuantiles"]["99.9"], 5.0);
        assert_eq!(json["aggregatedPublishDelayLatency50pct"], 1, "whole µs");
        assert_eq!(json["aggregatedPublishDelayLatencyAvg"], 1.5);
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("sub/r.json");
        result.write(&path).expect("written");
        let back = RunResult::read(&path).expect("read");
        assert_eq!(back.omb, result.omb);
        assert_eq!(back.magnetar.map(|m| m.schema_version), Some(1));
    }

    #[test]
    fn files_that_are_not_results_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("x.json");
        std::fs::write(&path, "{\"a\": 1}").expect("write");
        assert!(matches!(
            RunResult::read(&path),
            Err(ResultsError::Format { .. })
        ));
    }
}
