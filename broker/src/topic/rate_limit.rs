//! Per-period rate limits, as Pulsar throttles publishing (per topic) and
//! dispatch (per subscription): counters of messages and bytes per period,
//! checked once per SEND or dispatch round, never per message.
//!
//! Work is never refused here: what was done is counted, and the caller is
//! told when it may do more. A SEND or read that overshoots the limit (one
//! large batch) leaves a debt carried into the next periods, so the long-run
//! rate stays at the limit. Time is passed in, so the logic is tested without
//! a clock; this module must never sleep or take a lock itself.

use std::time::{Duration, Instant};

/// Longest pause one overshoot can cause, in periods: bounds the instant
/// arithmetic for absurd ratios (a huge batch against a tiny byte limit).
const MAX_DEBT_PERIODS: u64 = 3600;

/// A limit per period; at least one of `messages` and `bytes` is set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimit {
    /// Messages per period; `None`: not limited.
    pub messages: Option<u64>,
    /// Bytes per period; `None`: not limited.
    pub bytes: Option<u64>,
    pub period: Duration,
}

impl RateLimit {
    /// Pulsar's convention: a limit of 0 or less is off; `None` when both
    /// are off (or the period is zero).
    pub fn new(messages: i64, bytes: i64, period: Duration) -> Option<RateLimit> {
        let positive = |n: i64| u64::try_from(n).ok().filter(|n| *n > 0);
        let limit = RateLimit {
            messages: positive(messages),
            bytes: positive(bytes),
            period,
        };
        (!period.is_zero() && (limit.messages.is_some() || limit.bytes.is_some())).then_some(limit)
    }
}

/// Counts what was done in the current period against a [`RateLimit`].
#[derive(Debug)]
pub struct RateLimiter {
    limit: Option<RateLimit>,
    period_start: Instant,
    messages: u64,
    bytes: u64,
}

impl RateLimiter {
    /// An unlimited limiter.
    pub fn new(now: Instant) -> Self {
        RateLimiter {
            limit: None,
            period_start: now,
            messages: 0,
            bytes: 0,
        }
    }

    pub fn limit(&self) -> Option<RateLimit> {
        self.limit
    }

    /// Changes the limit; counting restarts with a changed one. Setting the
    /// same limit again (every housekeeping tick) changes nothing. Returns
    /// whether the limit changed.
    pub fn set_limit(&mut self, limit: Option<RateLimit>, now: Instant) -> bool {
        if self.limit == limit {
            return false;
        }
        *self = RateLimiter {
            limit,
            ..RateLimiter::new(now)
        };
        true
    }

    /// Counts `messages` and `bytes` just done. Returns the instant before
    /// which nothing more should be done if that used up the limit.
    pub fn record(&mut self, now: Instant, messages: u64, bytes: u64) -> Option<Instant> {
        self.limit?;
        self.roll(now);
        self.messages = self.messages.saturating_add(messages);
        self.bytes = self.bytes.saturating_add(bytes);
        self.blocked_until()
    }

    /// Messages that may still be done this period (`u64::MAX` when only
    /// bytes are limited), or the instant the limit allows more.
    pub fn available(&mut self, now: Instant) -> Result<u64, Instant> {
        let Some(limit) = self.limit else {
            return Ok(u64::MAX);
        };
        self.roll(now);
        if let Some(until) = self.blocked_until() {
            return Err(until);
        }
        Ok(limit
            .messages
            .map_or(u64::MAX, |m| m.saturating_sub(self.messages)))
    }

    /// The instant more may be done, if the limit is used up now.
    pub fn blocked_until(&self) -> Option<Instant> {
        let limit = self.limit?;
        // A debt of `used` against `max` per period is paid after
        // used / max period starts.
        let periods = [(self.messages, limit.messages), (self.bytes, limit.bytes)]
            .into_iter()
            .filter_map(|(used, max)| max.filter(|max| used >= *max).map(|max| used / max))
            .max()?;
        let periods = periods.min(MAX_DEBT_PERIODS) as u32;
        Some(self.period_start + limit.period * periods)
    }

    /// Starts the period `now` falls in, paying each elapsed period's
    /// allowance off what was counted.
    fn roll(&mut self, now: Instant) {
        let Some(limit) = self.limit else {
            return;
        };
        let elapsed = now.saturating_duration_since(self.period_start);
        let periods = (elapsed.as_nanos() / limit.period.as_nanos()) as u64;
        if periods == 0 {
            return;
        }
        if periods > MAX_DEBT_PERIODS {
            self.period_start = now;
            self.messages = 0;
            self.bytes = 0;
            return;
        }
        self.period_start += limit.period * periods as u32;
        let pay = |used: u64, max: Option<u64>| match max {
            Some(max) => used.saturating_sub(max.saturating_mul(periods)),
            None => 0,
        };
        self.messages = pay(self.messages, limit.messages);
        self.bytes = pay(self.bytes, limit.bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    fn limiter(messages: i64, bytes: i64, start: Instant) -> RateLimiter {
        let mut limiter = RateLimiter::new(start);
        limiter.set_limit(RateLimit::new(messages, bytes, SECOND), start);
        limiter
    }

    #[test]
    fn zero_or_negative_limits_are_off() {
        assert_eq!(RateLimit::new(0, -1, SECOND), None);
        assert_eq!(RateLimit::new(10, 0, Duration::ZERO), None);
        assert_eq!(
            RateLimit::new(-1, 500, SECOND),
            Some(RateLimit {
                messages: None,
                bytes: Some(500),
                period: SECOND
            })
        );
        let mut off = RateLimiter::new(Instant::now());
        let now = Instant::now();
        assert_eq!(off.record(now, 1_000_000, 1 << 30), None);
        assert_eq!(off.available(now), Ok(u64::MAX));
    }

    #[test]
    fn message_limit_blocks_until_the_next_period() {
        let t0 = Instant::now();
        let mut l = limiter(100, -1, t0);
        assert_eq!(l.record(t0, 60, 10), None);
        assert_eq!(l.available(t0 + SECOND / 2), Ok(40));
        // The SEND that reaches the limit still counts; more waits.
        assert_eq!(l.record(t0 + SECOND / 2, 40, 10), Some(t0 + SECOND));
        assert_eq!(l.available(t0 + SECOND / 2), Err(t0 + SECOND));
        assert_eq!(l.available(t0 + SECOND), Ok(100));
    }

    #[test]
    fn an_overshoot_is_paid_in_later_periods() {
        let t0 = Instant::now();
        let mut l = limiter(100, -1, t0);
        // One batch of 250 against 100/s: blocked for two more periods.
        assert_eq!(l.record(t0, 250, 0), Some(t0 + 2 * SECOND));
        assert_eq!(l.available(t0 + SECOND), Err(t0 + 2 * SECOND));
        assert_eq!(l.available(t0 + 2 * SECOND), Ok(50));
        // Idle periods pay the debt, but never bank an allowance.
        assert_eq!(l.available(t0 + 10 * SECOND), Ok(100));
    }

    #[test]
    fn bytes_limit_on_its_own() {
        let t0 = Instant::now();
        let mut l = limiter(-1, 1000, t0);
        assert_eq!(l.record(t0, 5000, 999), None);
        assert_eq!(l.available(t0), Ok(u64::MAX));
        assert_eq!(l.record(t0, 1, 1), Some(t0 + SECOND));
    }

    #[test]
    fn steady_sending_runs_at_the_limit() {
        // A producer sending 10-message batches as fast as it is let
        // through gets about 100 messages per second.
        let t0 = Instant::now();
        let mut l = limiter(100, -1, t0);
        let (mut now, mut sent) = (t0, 0u64);
        while sent < 1000 {
            sent += 10;
            if let Some(until) = l.record(now, 10, 100) {
                now = until;
            }
        }
        let elapsed = now - t0;
        assert!(
            elapsed >= 9 * SECOND && elapsed <= 10 * SECOND,
            "{elapsed:?}"
        );
    }

    #[test]
    fn changing_the_limit_restarts_counting_and_the_same_one_does_not() {
        let t0 = Instant::now();
        let mut l = limiter(100, -1, t0);
        assert!(l.record(t0, 100, 0).is_some());
        assert!(!l.set_limit(RateLimit::new(100, -1, SECOND), t0));
        assert!(l.available(t0).is_err());
        assert!(l.set_limit(RateLimit::new(200, -1, SECOND), t0));
        assert_eq!(l.available(t0), Ok(200));
        l.set_limit(None, t0);
        assert_eq!(l.record(t0, 1_000, 0), None);
    }

    #[test]
    fn absurd_debts_are_bounded() {
        let t0 = Instant::now();
        let mut l = limiter(-1, 1, t0);
        let until = l.record(t0, 1, u64::MAX).expect("blocked");
        assert_eq!(until, t0 + SECOND * MAX_DEBT_PERIODS as u32);
        assert_eq!(l.available(t0 + Duration::from_secs(100_000)), Ok(u64::MAX));
    }
}
