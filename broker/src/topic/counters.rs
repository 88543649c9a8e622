//! Per-topic publish counters for admin stats (Pulsar's `msgInCounter`,
//! `bytesInCounter`, `entriesAddedCounter` and the `msgRateIn` /
//! `msgThroughputIn` rates derived from them). Counted once per stored SEND,
//! never per byte.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Rates are measured over at least this long; asking more often returns
/// the last measurement.
const MIN_RATE_WINDOW: Duration = Duration::from_secs(1);

/// Publish rates over the last measurement window.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct PublishRate {
    pub messages_per_sec: f64,
    pub bytes_per_sec: f64,
}

/// Totals since the topic was opened on this broker.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PublishTotals {
    pub messages: u64,
    pub bytes: u64,
    pub entries: u64,
}

struct RateWindow {
    since: Instant,
    at_start: PublishTotals,
    last: PublishRate,
}

pub struct TopicCounters {
    messages: AtomicU64,
    bytes: AtomicU64,
    entries: AtomicU64,
    window: Mutex<RateWindow>,
}

impl TopicCounters {
    pub fn new() -> Self {
        TopicCounters {
            messages: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            entries: AtomicU64::new(0),
            window: Mutex::new(RateWindow {
                since: Instant::now(),
                at_start: PublishTotals::default(),
                last: PublishRate::default(),
            }),
        }
    }

    /// One entry of `messages` messages and `bytes` bytes was stored.
    pub fn record(&self, messages: u64, bytes: u64) {
        self.messages.fetch_add(messages, Ordering::Relaxed);
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
        self.entries.fetch_add(1, Ordering::Relaxed);
    }

    pub fn totals(&self) -> PublishTotals {
        PublishTotals {
            messages: self.messages.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
            entries: self.entries.load(Ordering::Relaxed),
        }
    }

    /// Rates since the previous measurement (the first one: since the topic
    /// opened), once that is at least [`MIN_RATE_WINDOW`] ago.
    pub fn rates(&self) -> PublishRate {
        self.rates_at(Instant::now())
    }

    fn rates_at(&self, now: Instant) -> PublishRate {
        let totals = self.totals();
        let mut window = self.window.lock().unwrap_or_else(|p| p.into_inner());
        let elapsed = now.saturating_duration_since(window.since);
        if elapsed >= MIN_RATE_WINDOW {
            let secs = elapsed.as_secs_f64();
            window.last = PublishRate {
                messages_per_sec: (totals.messages - window.at_start.messages) as f64 / secs,
                bytes_per_sec: (totals.bytes - window.at_start.bytes) as f64 / secs,
            };
            window.since = now;
            window.at_start = totals;
        }
        window.last
    }
}

impl Default for TopicCounters {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_and_rates_over_a_window() {
        let counters = TopicCounters::new();
        let start = counters.window.lock().unwrap().since;
        counters.record(10, 1000);
        counters.record(1, 50);
        assert_eq!(
            counters.totals(),
            PublishTotals {
                messages: 11,
                bytes: 1050,
                entries: 2
            }
        );
        // Too soon after the window opened: no measurement yet.
        assert_eq!(counters.rates_at(start), PublishRate::default());
        let rate = counters.rates_at(start + Duration::from_secs(2));
        assert_eq!(rate.messages_per_sec, 5.5);
        assert_eq!(rate.bytes_per_sec, 525.0);
        // Within the next window the last measurement stands.
        counters.record(100, 100);
        assert_eq!(counters.rates_at(start + Duration::from_millis(2500)), rate);
        let next = counters.rates_at(start + Duration::from_secs(4));
        assert_eq!(next.messages_per_sec, 50.0);
    }
}
