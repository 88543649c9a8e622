//! Finding the highest sustainable rate when a workload's `producerRate`
//! is 0, the way OMB's RateController does: every control period, if the
//! consumers fell behind (receive backlog) or the producers could not send
//! what was asked (publish backlog), aim below what was achieved and halve
//! the ramp; otherwise raise the rate by the ramp, which doubles each time
//! up to +100%. Pure arithmetic; the runner applies the rates.

use std::time::Duration;

/// How often the rate is reconsidered (OMB: 3 s).
pub const CONTROL_PERIOD: Duration = Duration::from_secs(3);
/// Messages behind that count as falling behind (OMB: 1,000 each).
const PUBLISH_BACKLOG_LIMIT: f64 = 1_000.0;
const RECEIVE_BACKLOG_LIMIT: f64 = 1_000.0;
const MIN_RAMP: f64 = 0.01;
const MAX_RAMP: f64 = 1.0;

#[derive(Debug, Clone)]
pub struct RateController {
    ramp: f64,
    published: u64,
    received: u64,
}

impl Default for RateController {
    fn default() -> Self {
        Self {
            ramp: MAX_RAMP,
            published: 0,
            received: 0,
        }
    }
}

impl RateController {
    /// The next rate, given the current one, the period it ran for, and
    /// the totals so far (`received` per subscription).
    pub fn next_rate(&mut self, rate: f64, period: Duration, published: u64, received: u64) -> f64 {
        let secs = period.as_secs_f64().max(1e-3);
        let expected = rate * secs;
        let sent = published.saturating_sub(self.published) as f64;
        let got = received.saturating_sub(self.received) as f64;
        self.published = published;
        self.received = received;
        let receive_backlog = published.saturating_sub(received) as f64;
        if receive_backlog > RECEIVE_BACKLOG_LIMIT {
            return self.slow_down(secs, got, expected, receive_backlog);
        }
        let publish_backlog = expected - sent;
        if publish_backlog > PUBLISH_BACKLOG_LIMIT {
            return self.slow_down(secs, sent, expected, publish_backlog);
        }
        self.ramp = (self.ramp * 2.0).min(MAX_RAMP);
        rate * (1.0 + self.ramp)
    }

    fn slow_down(&mut self, secs: f64, achieved: f64, expected: f64, backlog: f64) -> f64 {
        self.ramp = (self.ramp / 2.0).max(MIN_RAMP);
        let next_expected = (expected - backlog).max(0.0) / secs;
        let achieved = achieved / secs;
        (0.2 * achieved + 0.8 * next_expected).max(1.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PERIOD: Duration = Duration::from_secs(1);

    #[test]
    fn a_keeping_up_system_gets_more() {
        let mut c = RateController::default();
        let rate = c.next_rate(10_000.0, PERIOD, 10_000, 10_000);
        assert_eq!(rate, 20_000.0, "the ramp starts at +100%");
    }

    #[test]
    fn falling_behind_lowers_the_rate_and_the_ramp() {
        let mut c = RateController::default();
        // Asked 10,000, sent 6,000, all received.
        let rate = c.next_rate(10_000.0, PERIOD, 6_000, 6_000);
        assert!(rate < 10_000.0, "{rate}");
        // Then keeping up again: +50%, not +100%... then the ramp doubles back.
        let up = c.next_rate(rate, PERIOD, 6_000 + rate as u64, 6_000 + rate as u64);
        assert!(
            (up / rate - 1.0 - 1.0).abs() < 1e-9,
            "ramp back to 1.0 after doubling 0.5"
        );
    }

    #[test]
    fn consumers_behind_lower_the_rate() {
        let mut c = RateController::default();
        let rate = c.next_rate(10_000.0, PERIOD, 10_000, 5_000);
        assert!(rate < 10_000.0, "{rate}");
        assert!(rate >= 1.0);
    }
}
