//! What `bench run` prints: a line per period while it runs and a summary
//! at the end. Printing only.

use std::time::Instant;

use super::phases::Period;
use super::results::RunResult;

pub fn print_period(phase: &str, origin: Instant, p: &Period, rate: f64) {
    eprintln!(
        "bench: [{:>6.1}s] {phase:<7} pub {:>9.0} msg/s  cons {:>9.0} msg/s  backlog {:>8.0}  \
         pub p50/p99 {:.1}/{:.1} ms  delay p99 {:.1} ms  e2e p50/p99 {:.1}/{:.1} ms  (rate {rate:.0})",
        origin.elapsed().as_secs_f64(),
        p.publish_rate,
        p.consume_rate,
        p.backlog,
        p.publish.p50,
        p.publish.p99,
        p.delay.p99 / 1000.0,
        p.end_to_end.p50,
        p.end_to_end.p99,
    );
}

pub fn print_summary(result: &RunResult, path: &std::path::Path) {
    let o = &result.omb;
    let Some(m) = &result.magnetar else { return };
    let v = &m.verification;
    println!(
        "{} on {}: published {:.0} msg/s ({:.1} MB/s), consumed {:.0} msg/s over {:.1} s",
        o.workload,
        m.topology.kind,
        m.totals.publish_rate,
        m.totals.publish_mb_per_second,
        m.totals.consume_rate,
        m.totals.seconds
    );
    let a = &o.aggregated_publish_latency;
    let e = &o.aggregated_end_to_end_latency;
    println!(
        "publish latency p50 {:.2} / p99 {:.2} / p99.9 {:.2} / max {:.2} ms; end-to-end p50 {:.2} / p99 {:.2} ms; publish delay p99 {:.0} µs",
        a.p50, a.p99, a.p999, a.max, e.p50, e.p99, o.aggregated_publish_delay_latency.p99
    );
    let lost: u64 = v.subscriptions.iter().map(|s| s.lost).sum();
    let dups: u64 = v.subscriptions.iter().map(|s| s.duplicates).sum();
    let order: u64 = v.subscriptions.iter().filter_map(|s| s.out_of_order).sum();
    println!(
        "verification {}: {} acknowledged, {lost} lost, {dups} duplicates, {order} out of order, {} failed sends",
        if v.passed { "passed" } else { "FAILED" },
        v.acknowledged,
        v.failed_sends
    );
    for f in &m.faults {
        let figures: Vec<String> = f
            .measurements
            .iter()
            .map(|(k, v)| format!("{k} {v:.3}"))
            .collect();
        println!(
            "fault {} at {}s: {}{} {}",
            f.action,
            f.at_seconds,
            f.status,
            f.reason
                .as_deref()
                .map(|r| format!(" ({r})"))
                .unwrap_or_default(),
            figures.join(", ")
        );
    }
    println!("results: {}", path.display());
}
