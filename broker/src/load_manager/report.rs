//! Measuring a broker's load: CPU of this process, message rates of its
//! open topics (from their counters, as deltas since the previous report),
//! connections, producers and consumers, per bundle and in total.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use crate::ownership::{BundleLoad, LoadReport, Ownership};
use crate::topic::BrokerService;

/// Cumulative counts of one topic at the previous sample.
#[derive(Clone, Copy, Default)]
struct TopicTotals {
    messages_in: u64,
    bytes_in: u64,
    messages_out: u64,
    bytes_out: u64,
}

pub(super) struct Sampler {
    at: Instant,
    cpu_seconds: Option<f64>,
    topics: HashMap<String, TopicTotals>,
}

impl Sampler {
    pub(super) fn new() -> Self {
        Sampler {
            at: Instant::now(),
            cpu_seconds: process_cpu_seconds(),
            topics: HashMap::new(),
        }
    }

    /// A report of what happened since the previous call.
    pub(super) async fn sample(
        &mut self,
        service: &Arc<BrokerService>,
        ownership: &Ownership,
    ) -> LoadReport {
        let now = Instant::now();
        let elapsed = now.duration_since(self.at).as_secs_f64().max(0.001);
        self.at = now;
        let cpu_seconds = process_cpu_seconds();
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        let cpu_percent = match (self.cpu_seconds, cpu_seconds) {
            (Some(before), Some(after)) => ((after - before) / elapsed / cores * 100.0).max(0.0),
            _ => 0.0,
        };
        self.cpu_seconds = cpu_seconds;

        let identity = ownership.identity();
        let mut report = LoadReport {
            broker_id: identity.broker_id.clone(),
            pulsar_url: identity.pulsar_url.clone(),
            http_url: identity.http_url.clone(),
            timestamp_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
            cpu_percent,
            connections: service.metrics().connections.get().max(0) as u64,
            ..LoadReport::default()
        };
        let mut seen = HashMap::with_capacity(self.topics.len());
        for topic in service.open_topics().await {
            let totals_in = topic.counters().totals();
            let mut now_totals = TopicTotals {
                messages_in: totals_in.messages,
                bytes_in: totals_in.bytes,
                ..TopicTotals::default()
            };
            let subscriptions = topic.open_subscriptions().await;
            let mut consumers = 0u64;
            for sub in &subscriptions {
                let (messages, bytes) = sub.dispatched_totals();
                now_totals.messages_out += messages;
                now_totals.bytes_out += bytes;
                consumers += sub.consumers().len() as u64;
            }
            let before = self
                .topics
                .get(topic.full_name())
                .copied()
                .unwrap_or_default();
            let rate = |now: u64, before: u64| now.saturating_sub(before) as f64 / elapsed;
            let load = BundleLoad {
                msg_rate_in: rate(now_totals.messages_in, before.messages_in),
                msg_rate_out: rate(now_totals.messages_out, before.messages_out),
                msg_throughput_in: rate(now_totals.bytes_in, before.bytes_in),
                msg_throughput_out: rate(now_totals.bytes_out, before.bytes_out),
                topics: 1,
                producers: topic.producer_count() as u64,
                consumers,
            };
            seen.insert(topic.full_name().to_string(), now_totals);
            report.load.add(&load);
            if let Some(bundle) = ownership.cached_bundle_of(topic.name()) {
                report
                    .bundles
                    .entry(bundle.full_name())
                    .or_default()
                    .add(&load);
            }
        }
        self.topics = seen;
        report
    }
}

/// User + system CPU time of this process, from `/proc/self/stat` (Linux;
/// `None` elsewhere, which reports 0% CPU).
fn process_cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    parse_cpu_ticks(&stat).map(|ticks| ticks as f64 / CLOCK_TICKS_PER_SECOND)
}

/// Linux's USER_HZ, 100 on every mainstream architecture.
const CLOCK_TICKS_PER_SECOND: f64 = 100.0;

/// utime + stime (fields 14 and 15) of a `/proc/PID/stat` line. The
/// command name (field 2) may hold spaces, so fields are counted after its
/// closing parenthesis.
fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    let mut fields = after_name.split_whitespace().skip(11);
    let user: u64 = fields.next()?.parse().ok()?;
    let system: u64 = fields.next()?.parse().ok()?;
    Some(user + system)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_ticks_from_proc_stat() {
        let line = "4242 (magnetar (x) y) S 1 4242 4242 0 -1 4194560 1234 0 0 0 250 75 0 0 20 0 12 0 100 0 0";
        assert_eq!(parse_cpu_ticks(line), Some(325));
        assert_eq!(parse_cpu_ticks("garbage"), None);
        assert_eq!(parse_cpu_ticks("1 (x) S 1"), None);
        assert!(process_cpu_seconds().is_some());
    }
}
