//! The load manager's decisions, as pure functions over what brokers
//! report: where an unowned bundle goes, and which bundle to shed from an
//! overloaded broker. No I/O here, so every rule is unit-tested.
//!
//! A broker's load is its message rate (in + out) plus, for each bundle it
//! owns, the cluster's average rate per bundle. So on an idle cluster the
//! bundle count decides, and on a busy one the traffic does.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// What a broker writes under `keys::broker_load` every report interval.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LoadReport {
    pub broker_id: String,
    pub pulsar_url: String,
    pub http_url: String,
    /// Milliseconds since the epoch when the report was made.
    pub timestamp_ms: u64,
    /// CPU this broker process used over the interval, in percent of the
    /// whole machine (all cores).
    pub cpu_percent: f64,
    /// Client connections open now.
    pub connections: u64,
    /// Rates and counts over every open topic.
    #[serde(flatten)]
    pub load: BundleLoad,
    /// Per owned bundle with open topics, by `tenant/namespace/0xSTART_0xEND`.
    #[serde(default)]
    pub bundles: BTreeMap<String, BundleLoad>,
}

/// One bundle's share of a [`LoadReport`].
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BundleLoad {
    pub msg_rate_in: f64,
    pub msg_rate_out: f64,
    pub msg_throughput_in: f64,
    pub msg_throughput_out: f64,
    pub topics: u64,
    pub producers: u64,
    pub consumers: u64,
}

impl BundleLoad {
    pub fn msg_rate(&self) -> f64 {
        self.msg_rate_in + self.msg_rate_out
    }

    /// Adds another topic's (or bundle's) load to this one.
    pub fn add(&mut self, other: &BundleLoad) {
        self.msg_rate_in += other.msg_rate_in;
        self.msg_rate_out += other.msg_rate_out;
        self.msg_throughput_in += other.msg_throughput_in;
        self.msg_throughput_out += other.msg_throughput_out;
        self.topics += other.topics;
        self.producers += other.producers;
        self.consumers += other.consumers;
    }
}

/// A live broker as the balancer sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct BrokerLoad {
    pub broker_id: String,
    /// Its latest report, if it has made one.
    pub cpu_percent: f64,
    pub msg_rate: f64,
    /// Rate of each bundle it reported, by full bundle name.
    pub bundle_rates: BTreeMap<String, f64>,
    /// Bundles it owns (ownership keys), by full bundle name.
    pub owned: Vec<String>,
    /// Bundles sent its way that it has not claimed yet.
    pub pending: usize,
    /// Whether it has reported at all (a broker that just started has not:
    /// it may receive bundles but is not shed from).
    pub reported: bool,
}

impl BrokerLoad {
    pub fn from_report(report: Option<&LoadReport>, broker_id: &str, owned: Vec<String>) -> Self {
        BrokerLoad {
            broker_id: broker_id.to_string(),
            cpu_percent: report.map_or(0.0, |r| r.cpu_percent),
            msg_rate: report.map_or(0.0, |r| r.load.msg_rate()),
            bundle_rates: report
                .map(|r| {
                    r.bundles
                        .iter()
                        .map(|(name, load)| (name.clone(), load.msg_rate()))
                        .collect()
                })
                .unwrap_or_default(),
            owned,
            pending: 0,
            reported: report.is_some(),
        }
    }

    fn bundle_count(&self) -> usize {
        self.owned.len() + self.pending
    }
}

/// Thresholds of the balancer (Pulsar's shedder settings, simplified).
#[derive(Clone, Debug, PartialEq)]
pub struct BalancerConfig {
    /// A broker above this CPU (percent of the machine) takes no new
    /// bundles while another is below it, and is shed from.
    pub overload_cpu_percent: f64,
    /// Shed when the busiest broker's load exceeds the idlest one's by
    /// this fraction...
    pub imbalance_ratio: f64,
    /// ...and by at least this many messages per second.
    pub min_rate_gap: f64,
    /// Shed when the busiest broker owns this many more bundles than the
    /// idlest one (a newly started broker gets bundles this way).
    pub bundle_count_gap: usize,
}

impl Default for BalancerConfig {
    fn default() -> Self {
        BalancerConfig {
            overload_cpu_percent: 85.0,
            imbalance_ratio: 0.5,
            min_rate_gap: 1_000.0,
            bundle_count_gap: 2,
        }
    }
}

/// A bundle to move from one broker to another.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Move {
    pub bundle: String,
    pub from: String,
    pub to: String,
}

/// Average message rate of one owned bundle across the cluster, at least 1
/// so that bundle counts still weigh on an idle cluster.
fn rate_per_bundle(brokers: &[BrokerLoad]) -> f64 {
    let rate: f64 = brokers.iter().map(|b| b.msg_rate).sum();
    let bundles: usize = brokers.iter().map(|b| b.owned.len()).sum();
    if bundles == 0 {
        1.0
    } else {
        (rate / bundles as f64).max(1.0)
    }
}

/// Comparable load: message rate plus the average rate of each bundle it
/// owns or is about to, then bundle count.
fn rank(broker: &BrokerLoad, per_bundle: f64) -> (f64, usize) {
    let count = broker.bundle_count();
    (broker.msg_rate + per_bundle * count as f64, count)
}

fn by_rank<'a>(
    per_bundle: f64,
) -> impl FnMut(&&'a BrokerLoad, &&'a BrokerLoad) -> std::cmp::Ordering {
    move |a, b| {
        let (la, ca) = rank(a, per_bundle);
        let (lb, cb) = rank(b, per_bundle);
        la.total_cmp(&lb)
            .then(ca.cmp(&cb))
            .then_with(|| a.broker_id.cmp(&b.broker_id))
    }
}

/// The broker that should take an unowned bundle: the least loaded one
/// that is not overloaded (any broker if all are).
pub fn choose<'a>(brokers: &'a [BrokerLoad], config: &BalancerConfig) -> Option<&'a BrokerLoad> {
    let per_bundle = rate_per_bundle(brokers);
    let healthy = brokers
        .iter()
        .filter(|b| b.cpu_percent < config.overload_cpu_percent);
    healthy
        .min_by(by_rank(per_bundle))
        .or_else(|| brokers.iter().min_by(by_rank(per_bundle)))
}

/// One bundle to move from the busiest broker to the idlest, if the
/// cluster is out of balance; `movable` says which bundles may move now
/// (not moved recently).
pub fn shed(
    brokers: &[BrokerLoad],
    config: &BalancerConfig,
    movable: impl Fn(&str) -> bool,
) -> Option<Move> {
    if brokers.len() < 2 {
        return None;
    }
    let per_bundle = rate_per_bundle(brokers);
    let idlest = choose(brokers, config)?;
    let busiest = brokers
        .iter()
        .filter(|b| b.reported && b.broker_id != idlest.broker_id)
        .max_by(by_rank(per_bundle))?;
    let (busy_load, busy_count) = rank(busiest, per_bundle);
    let (idle_load, idle_count) = rank(idlest, per_bundle);
    let overloaded = busiest.cpu_percent >= config.overload_cpu_percent
        && idlest.cpu_percent < config.overload_cpu_percent;
    let gap = busy_load - idle_load;
    let rate_imbalance =
        busy_load > idle_load * (1.0 + config.imbalance_ratio) && gap >= config.min_rate_gap;
    let count_imbalance = busy_count >= idle_count + config.bundle_count_gap;
    if !(overloaded || rate_imbalance || count_imbalance) {
        return None;
    }
    // Moving a bundle moves its rate and its share of the count: pick the
    // one that best halves the gap; one moving more than the whole gap
    // would only turn the imbalance around (unless it is by count or CPU).
    let target = gap / 2.0;
    let candidate = busiest
        .owned
        .iter()
        .filter(|bundle| movable(bundle))
        .map(|bundle| {
            let rate = busiest.bundle_rates.get(bundle).copied().unwrap_or(0.0);
            (bundle, rate + per_bundle)
        })
        .filter(|(_, moved)| *moved < gap || count_imbalance || overloaded)
        .min_by(|(a, ma), (b, mb)| {
            (ma - target)
                .abs()
                .total_cmp(&(mb - target).abs())
                .then_with(|| a.cmp(b))
        })?;
    Some(Move {
        bundle: candidate.0.clone(),
        from: busiest.broker_id.clone(),
        to: idlest.broker_id.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn broker(id: &str, rate: f64, owned: &[(&str, f64)]) -> BrokerLoad {
        BrokerLoad {
            broker_id: id.to_string(),
            cpu_percent: 10.0,
            msg_rate: rate,
            bundle_rates: owned.iter().map(|(b, r)| (b.to_string(), *r)).collect(),
            owned: owned.iter().map(|(b, _)| b.to_string()).collect(),
            pending: 0,
            reported: true,
        }
    }

    fn anything(_: &str) -> bool {
        true
    }

    #[test]
    fn idle_cluster_chooses_by_bundle_count_then_id() {
        let config = BalancerConfig::default();
        let brokers = vec![
            broker("b", 0.0, &[("ns/1", 0.0)]),
            broker("a", 0.0, &[("ns/2", 0.0)]),
            broker("c", 0.0, &[]),
        ];
        assert_eq!(choose(&brokers, &config).unwrap().broker_id, "c");
        let mut brokers = brokers;
        brokers[2].pending = 1;
        assert_eq!(choose(&brokers, &config).unwrap().broker_id, "a");
    }

    #[test]
    fn busy_cluster_chooses_by_rate_and_skips_overloaded() {
        let config = BalancerConfig::default();
        let mut brokers = vec![
            broker("a", 50_000.0, &[("ns/1", 50_000.0)]),
            broker("b", 1_000.0, &[("ns/2", 500.0), ("ns/3", 500.0)]),
        ];
        assert_eq!(choose(&brokers, &config).unwrap().broker_id, "b");
        brokers[1].cpu_percent = 95.0;
        assert_eq!(choose(&brokers, &config).unwrap().broker_id, "a");
        brokers[0].cpu_percent = 95.0;
        assert_eq!(choose(&brokers, &config).unwrap().broker_id, "b");
    }

    #[test]
    fn a_new_broker_gets_a_bundle_shed_to_it() {
        let config = BalancerConfig::default();
        let mut newcomer = broker("c", 0.0, &[]);
        newcomer.reported = false;
        let brokers = vec![
            broker("a", 0.0, &[("ns/1", 0.0), ("ns/2", 0.0)]),
            broker("b", 0.0, &[("ns/3", 0.0), ("ns/4", 0.0)]),
            newcomer,
        ];
        let moved = shed(&brokers, &config, anything).unwrap();
        assert_eq!(moved.to, "c");
        assert!(moved.from == "a" || moved.from == "b");
        // Nothing movable: nothing moves.
        assert_eq!(shed(&brokers, &config, |_| false), None);
    }

    #[test]
    fn balanced_clusters_stay_put() {
        let config = BalancerConfig::default();
        let brokers = vec![
            broker("a", 10_000.0, &[("ns/1", 5_000.0), ("ns/2", 5_000.0)]),
            broker("b", 9_000.0, &[("ns/3", 4_000.0), ("ns/4", 5_000.0)]),
        ];
        assert_eq!(shed(&brokers, &config, anything), None);
        // Small absolute gaps are noise.
        let brokers = vec![
            broker("a", 600.0, &[("ns/1", 600.0)]),
            broker("b", 10.0, &[("ns/2", 10.0)]),
        ];
        assert_eq!(shed(&brokers, &config, anything), None);
    }

    #[test]
    fn rate_imbalance_moves_the_bundle_that_halves_the_gap() {
        let config = BalancerConfig::default();
        let brokers = vec![
            broker(
                "a",
                30_000.0,
                &[("ns/1", 20_000.0), ("ns/2", 8_000.0), ("ns/3", 2_000.0)],
            ),
            broker("b", 2_000.0, &[("ns/4", 1_000.0), ("ns/5", 1_000.0)]),
        ];
        let moved = shed(&brokers, &config, anything).unwrap();
        assert_eq!(
            moved,
            Move {
                bundle: "ns/2".into(),
                from: "a".into(),
                to: "b".into()
            }
        );
        // The best bundle moved recently: the next best.
        let moved = shed(&brokers, &config, |b| b != "ns/2").unwrap();
        assert_eq!(moved.bundle, "ns/3");
    }

    #[test]
    fn an_overloaded_broker_is_shed_from() {
        let config = BalancerConfig::default();
        let mut brokers = vec![
            broker("a", 1_000.0, &[("ns/1", 500.0), ("ns/2", 500.0)]),
            broker("b", 900.0, &[("ns/3", 900.0)]),
        ];
        assert_eq!(shed(&brokers, &config, anything), None);
        brokers[0].cpu_percent = 90.0;
        let moved = shed(&brokers, &config, anything).unwrap();
        assert_eq!((moved.from.as_str(), moved.to.as_str()), ("a", "b"));
    }
}
