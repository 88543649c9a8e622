//! Paced sending: when each message of a producer is due. Shared by `perf
//! produce` and `bench`, so that both measure against the same intended
//! send times (a late message keeps its slot, so a stall shows up as delay
//! instead of being hidden by sending less).

use std::time::Duration;

/// Evenly spaced send times for one producer: message `k` is due `k / rate`
/// seconds after the start. A producer that fell behind sends what is due in
/// one burst (bounded by its pending window) instead of sleeping per message.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Schedule {
    per_second: f64,
}

impl Schedule {
    /// `None` for an unlimited rate.
    pub fn new(per_second: f64) -> Option<Self> {
        (per_second > 0.0 && per_second.is_finite()).then_some(Self { per_second })
    }

    /// How many messages are due `elapsed` after the start (the first at once).
    pub fn due(&self, elapsed: Duration) -> u64 {
        (elapsed.as_secs_f64() * self.per_second).floor() as u64 + 1
    }

    /// When message `k` (counting from 0) is due, after the start.
    pub fn send_time(&self, k: u64) -> Duration {
        Duration::from_secs_f64(k as f64 / self.per_second)
    }

    /// `phase` (a fraction in `[0, 1)`) of one message interval: producer
    /// `i` of `n` starting that much later spreads many slow producers
    /// evenly over the interval instead of sending all at once.
    pub fn phase_offset(&self, phase: f64) -> Duration {
        Duration::from_secs_f64(phase.clamp(0.0, 1.0) / self.per_second)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unlimited_means_no_schedule() {
        assert_eq!(Schedule::new(0.0), None);
        assert_eq!(Schedule::new(f64::INFINITY), None);
        assert!(Schedule::new(0.5).is_some());
    }

    #[test]
    fn phases_spread_producers_over_one_interval() {
        let s = Schedule::new(0.1).expect("limited");
        assert_eq!(s.phase_offset(0.0), Duration::ZERO);
        assert_eq!(s.phase_offset(0.5), Duration::from_secs(5));
        assert_eq!(s.phase_offset(7.0), Duration::from_secs(10));
    }

    #[test]
    fn messages_are_due_evenly() {
        let s = Schedule::new(1000.0).expect("limited");
        assert_eq!(s.due(Duration::ZERO), 1);
        assert_eq!(s.due(Duration::from_micros(999)), 1);
        assert_eq!(s.due(Duration::from_millis(1)), 2);
        assert_eq!(s.due(Duration::from_secs(1)), 1001);
        assert_eq!(s.send_time(0), Duration::ZERO);
        assert_eq!(s.send_time(500), Duration::from_millis(500));
    }

    #[test]
    fn a_message_is_due_exactly_at_its_send_time() {
        let s = Schedule::new(3.0).expect("limited");
        for k in 0..100 {
            let at = s.send_time(k);
            assert!(
                s.due(at + Duration::from_nanos(1)) > k,
                "message {k} due at {at:?}"
            );
            if k > 0 {
                assert!(s.due(at - Duration::from_millis(1)) <= k);
            }
        }
    }

    #[test]
    fn slow_rates_space_messages_seconds_apart() {
        let s = Schedule::new(0.5).expect("limited");
        assert_eq!(s.send_time(1), Duration::from_secs(2));
        assert_eq!(s.due(Duration::from_millis(1999)), 1);
        assert_eq!(s.due(Duration::from_secs(2)), 2);
    }
}
