//! The measured phase's bookkeeping: OMB's per-period statistics, the
//! backlog phases of a `consumerBacklogSizeGB` workload, and steps of rate
//! discovery. Pure functions of the shared counters and recorders; the
//! runner calls them on its ticks.

use std::time::Instant;

use super::discovery::RateController;
use super::load::{CounterSnapshot, Shared};
use super::results::LatencySummary;

/// Differences between two counter snapshots over `seconds`.
pub struct Period {
    pub seconds: f64,
    pub publish_rate: f64,
    pub error_rate: f64,
    pub consume_rate: f64,
    pub backlog: f64,
    pub publish: LatencySummary,
    pub delay: LatencySummary,
    pub end_to_end: LatencySummary,
    pub from_intended: LatencySummary,
}

pub fn take_period(
    shared: &Shared,
    before: &CounterSnapshot,
    now: &CounterSnapshot,
    seconds: f64,
    subscriptions_per_topic: u32,
) -> Period {
    let rate = |a: u64, b: u64| {
        if seconds > 0.0 {
            b.saturating_sub(a) as f64 / seconds
        } else {
            0.0
        }
    };
    let l = &shared.latencies;
    Period {
        seconds,
        publish_rate: rate(before.published, now.published),
        error_rate: rate(before.publish_errors, now.publish_errors),
        consume_rate: rate(before.received, now.received),
        backlog: backlog_messages(now, subscriptions_per_topic) as f64,
        publish: LatencySummary::from_histogram(&l.publish.take_interval(), 1000.0),
        delay: LatencySummary::from_histogram(&l.publish_delay.take_interval(), 1.0),
        end_to_end: LatencySummary::from_histogram(&l.end_to_end.take_interval(), 1000.0),
        from_intended: LatencySummary::from_histogram(
            &l.publish_from_intended.take_interval(),
            1000.0,
        ),
    }
}

/// OMB's backlog: messages sent times subscriptions, minus those received.
pub fn backlog_messages(c: &CounterSnapshot, subscriptions_per_topic: u32) -> i64 {
    (c.published as i64) * subscriptions_per_topic as i64 - c.received as i64
}

/// The backlog phases of a workload with `consumerBacklogSizeGB`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum BacklogPhase {
    Off,
    Building { since: Instant },
    Draining { since: Instant },
    Done,
}

/// One step of rate discovery.
pub fn adjust_rate(
    shared: &Shared,
    controller: &mut RateController,
    last: &mut Instant,
    subscriptions_per_topic: u32,
    changes: &mut Vec<(f64, f64)>,
    test_start: Option<Instant>,
) {
    let c = shared.counters.snapshot();
    let received = c.received / subscriptions_per_topic.max(1) as u64;
    let next = controller.next_rate(shared.rate(), last.elapsed(), c.published, received);
    *last = Instant::now();
    shared.set_rate(next);
    let t = test_start.map_or(0.0, |s| s.elapsed().as_secs_f64());
    changes.push((t, next));
}

/// Moves the backlog phases along: pause until the backlog is built,
/// then resume until it is drained to OMB's floor.
#[allow(clippy::too_many_arguments)]
pub fn advance_backlog(
    phase: BacklogPhase,
    c: &CounterSnapshot,
    subscriptions_per_topic: u32,
    target: i64,
    drain_ratio: f64,
    shared: &Shared,
    built: &mut Option<f64>,
    drained: &mut Option<f64>,
) -> BacklogPhase {
    let backlog = backlog_messages(c, subscriptions_per_topic);
    match phase {
        BacklogPhase::Building { since } if backlog >= target => {
            shared.pause_consumers(false);
            *built = Some(since.elapsed().as_secs_f64());
            eprintln!(
                "bench: backlog of {backlog} messages built in {:.1} s; draining",
                since.elapsed().as_secs_f64()
            );
            BacklogPhase::Draining {
                since: Instant::now(),
            }
        }
        BacklogPhase::Draining { since } => {
            let floor = (((1.0 - drain_ratio) * target as f64) as i64).max(1000);
            if backlog <= floor {
                *drained = Some(since.elapsed().as_secs_f64());
                eprintln!(
                    "bench: backlog drained in {:.1} s",
                    since.elapsed().as_secs_f64()
                );
                BacklogPhase::Done
            } else {
                phase
            }
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(published: u64, received: u64) -> CounterSnapshot {
        CounterSnapshot {
            published,
            received,
            ..Default::default()
        }
    }

    #[test]
    fn the_backlog_counts_every_subscription() {
        assert_eq!(backlog_messages(&snapshot(100, 150), 2), 50);
        assert_eq!(backlog_messages(&snapshot(100, 120), 1), -20);
    }

    #[test]
    fn backlog_phases_build_then_drain_to_the_floor() {
        let shared = Shared::new(1, 1, 100, 10.0);
        shared.pause_consumers(true);
        let (mut built, mut drained) = (None, None);
        let start = BacklogPhase::Building {
            since: Instant::now(),
        };
        let p = advance_backlog(
            start,
            &snapshot(5_000, 0),
            1,
            10_000,
            1.0,
            &shared,
            &mut built,
            &mut drained,
        );
        assert_eq!(p, start, "not yet built");
        let p = advance_backlog(
            p,
            &snapshot(10_000, 0),
            1,
            10_000,
            1.0,
            &shared,
            &mut built,
            &mut drained,
        );
        assert!(matches!(p, BacklogPhase::Draining { .. }));
        assert!(built.is_some());
        let p = advance_backlog(
            p,
            &snapshot(11_000, 9_000),
            1,
            10_000,
            1.0,
            &shared,
            &mut built,
            &mut drained,
        );
        assert!(
            matches!(p, BacklogPhase::Draining { .. }),
            "2,000 left > floor of 1,000"
        );
        let p = advance_backlog(
            p,
            &snapshot(12_000, 11_500),
            1,
            10_000,
            1.0,
            &shared,
            &mut built,
            &mut drained,
        );
        assert_eq!(p, BacklogPhase::Done);
        assert!(drained.is_some());
    }
}
