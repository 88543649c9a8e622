//! Latency recording and the printed summary shared by the perf commands,
//! and, for the Pulsar-client ones, the measured window: a warm-up, then a
//! timed window with a progress line every few seconds, ended early by Ctrl-C.
//! Load-generating tasks only bump counters and record into their own
//! [`LatencyRecorder`]; everything printed is printed here or by the command.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Result;
use hdrhistogram::Histogram;
use tokio::sync::watch;

use crate::shutdown;

/// How often the measured-window driver prints a progress line.
const PROGRESS_EVERY: Duration = Duration::from_secs(2);

/// Microsecond latencies from 1 µs to one hour, 3 significant digits (a
/// backlog read minutes after it was written still records its latency).
pub fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("static histogram bounds are valid")
}

pub fn percentiles_line(h: &Histogram<u64>) -> String {
    let ms = |v: u64| v as f64 / 1000.0;
    format!(
        "p50 {:.3} ms  p95 {:.3} ms  p99 {:.3} ms  p99.9 {:.3} ms  max {:.3} ms",
        ms(h.value_at_quantile(0.50)),
        ms(h.value_at_quantile(0.95)),
        ms(h.value_at_quantile(0.99)),
        ms(h.value_at_quantile(0.999)),
        ms(h.max()),
    )
}

/// Records `count` operations of `micros` each, clamped into the
/// histogram's range, so that an outlier (or a clock that went backwards)
/// never fails a run.
pub fn record_clamped_n(h: &mut Histogram<u64>, micros: u64, count: u64) {
    let _ = h.record_n(micros.clamp(h.low(), h.high()), count);
}

/// One load-generating task's latencies: since the last progress line, and
/// over the measured window.
pub struct LatencyRecorder {
    interval: Histogram<u64>,
    measured: Histogram<u64>,
}

impl LatencyRecorder {
    pub fn new() -> Self {
        Self {
            interval: latency_histogram(),
            measured: latency_histogram(),
        }
    }

    /// Everything recorded while measuring.
    pub fn measured(&self) -> &Histogram<u64> {
        &self.measured
    }

    pub fn record_n(&mut self, micros: u64, count: u64, measuring: bool) {
        record_clamped_n(&mut self.interval, micros, count);
        if measuring {
            record_clamped_n(&mut self.measured, micros, count);
        }
    }
}

impl Default for LatencyRecorder {
    fn default() -> Self {
        Self::new()
    }
}

/// At most this many recorders per [`Recorders`]: a recorder's two
/// histograms take about 380 KB (1 µs to one hour at 3 digits), so one per
/// task would cost gigabytes at 10,000 producers. Past it, tasks share
/// recorders round-robin; with this many, two tasks rarely contend.
pub const MAX_RECORDERS: usize = 64;

/// The recorders of many tasks (one each up to [`MAX_RECORDERS`], so
/// recording seldom contends), merged when a summary is wanted.
#[derive(Default)]
pub struct Recorders(Mutex<RecorderPool>);

#[derive(Default)]
struct RecorderPool {
    all: Vec<Arc<Mutex<LatencyRecorder>>>,
    /// Recorders handed out, for the round-robin past the cap.
    handed_out: usize,
}

impl Recorders {
    /// A recorder for one more task: a new one while fewer than
    /// [`MAX_RECORDERS`] exist, else one it shares with other tasks.
    pub fn add(&self) -> Arc<Mutex<LatencyRecorder>> {
        let Ok(mut pool) = self.0.lock() else {
            return Arc::new(Mutex::new(LatencyRecorder::new()));
        };
        let n = pool.handed_out;
        pool.handed_out += 1;
        if pool.all.len() < MAX_RECORDERS {
            let recorder = Arc::new(Mutex::new(LatencyRecorder::new()));
            pool.all.push(recorder.clone());
            return recorder;
        }
        pool.all[n % MAX_RECORDERS].clone()
    }

    /// The latencies recorded since the last call, over every task.
    pub fn take_interval(&self) -> Histogram<u64> {
        let mut merged = latency_histogram();
        if let Ok(pool) = self.0.lock() {
            for recorder in pool.all.iter() {
                if let Ok(mut r) = recorder.lock() {
                    let _ = merged.add(&r.interval);
                    r.interval.reset();
                }
            }
        }
        merged
    }

    /// Everything recorded while measuring, over every task.
    pub fn measured(&self) -> Histogram<u64> {
        let mut merged = latency_histogram();
        if let Ok(pool) = self.0.lock() {
            for recorder in pool.all.iter() {
                if let Ok(r) = recorder.lock() {
                    let _ = merged.add(r.measured());
                }
            }
        }
        merged
    }
}

/// What the load-generating tasks of one run share with [`measure`].
pub struct Load {
    /// Operations completed: messages acknowledged by the broker, or received.
    pub done: AtomicU64,
    /// Payload bytes of those operations.
    pub bytes: AtomicU64,
    /// Operations that failed.
    pub failed: AtomicU64,
    measuring: AtomicBool,
    stop: watch::Sender<bool>,
    recorders: Recorders,
}

impl Load {
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            done: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            measuring: AtomicBool::new(false),
            stop: watch::Sender::new(false),
            recorders: Recorders::default(),
        })
    }

    /// A recorder for one task, included in the progress lines and summary.
    pub fn recorder(&self) -> Arc<Mutex<LatencyRecorder>> {
        self.recorders.add()
    }

    /// Whether the measured window is open (warm-up is over).
    pub fn measuring(&self) -> bool {
        self.measuring.load(Ordering::Relaxed)
    }

    /// Becomes true when the tasks should stop generating load.
    pub fn stop_signal(&self) -> watch::Receiver<bool> {
        self.stop.subscribe()
    }

    /// One operation of `bytes` completed after `micros`.
    pub fn completed(&self, bytes: usize, micros: u64, recorder: &Mutex<LatencyRecorder>) {
        self.completed_many(1, bytes as u64, micros, recorder);
    }

    /// `count` operations of `bytes` in all completed together after
    /// `micros` (a batch acknowledged by one receipt).
    pub fn completed_many(
        &self,
        count: u64,
        bytes: u64,
        micros: u64,
        recorder: &Mutex<LatencyRecorder>,
    ) {
        self.done.fetch_add(count, Ordering::Relaxed);
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
        if let Ok(mut r) = recorder.lock() {
            r.record_n(micros, count, self.measuring());
        }
    }

    fn counts(&self) -> (u64, u64, u64) {
        (
            self.done.load(Ordering::Relaxed),
            self.bytes.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
        )
    }

    fn take_interval(&self) -> Histogram<u64> {
        self.recorders.take_interval()
    }

    fn measured(&self) -> Histogram<u64> {
        self.recorders.measured()
    }
}

/// Totals over the measured window.
pub struct Measured {
    pub elapsed: Duration,
    pub done: u64,
    pub bytes: u64,
    /// Failures over the whole run, warm-up included.
    pub failed: u64,
    pub latency: Histogram<u64>,
}

impl Measured {
    pub fn per_second(&self) -> f64 {
        per_second(self.done, self.elapsed)
    }

    pub fn mb_per_second(&self) -> f64 {
        per_second(self.bytes, self.elapsed) / 1e6
    }
}

fn per_second(n: u64, elapsed: Duration) -> f64 {
    let secs = elapsed.as_secs_f64();
    if secs > 0.0 {
        n as f64 / secs
    } else {
        0.0
    }
}

/// Runs `warmup` then the measured window of `duration` while the tasks of
/// `load` work, printing every couple of seconds a line of throughput
/// (`what`, e.g. "produced") and `latency_what` percentiles over the last
/// interval, followed by `extra()`. Ctrl-C closes the window early. Signals
/// the tasks to stop before returning; the caller then waits for them.
pub async fn measure(
    load: &Load,
    warmup: Duration,
    duration: Duration,
    what: &str,
    latency_what: &str,
    extra: impl Fn() -> String,
) -> Result<Measured> {
    let start = Instant::now();
    let measure_from = start + warmup;
    // Moved to the window's real start once it opens, so a late wake-up
    // does not shorten the window.
    let mut until = measure_from + duration;
    let interrupted = shutdown::requested();
    tokio::pin!(interrupted);
    let mut ticker = tokio::time::interval_at((start + PROGRESS_EVERY).into(), PROGRESS_EVERY);
    let mut last = (start, load.counts());
    let mut window: Option<(Instant, (u64, u64, u64))> = None;
    loop {
        let next_phase = if window.is_none() {
            measure_from
        } else {
            until
        };
        tokio::select! {
            _ = tokio::time::sleep_until(next_phase.into()) => {
                if window.is_some() {
                    break;
                }
                load.measuring.store(true, Ordering::SeqCst);
                let opened = Instant::now();
                until = opened + duration;
                window = Some((opened, load.counts()));
            }
            _ = ticker.tick() => {
                let now = Instant::now();
                let counts = load.counts();
                let interval = now - last.0;
                let latency = load.take_interval();
                println!(
                    "[{:>6.1}s] {:<7} {what} {:>8.0} msg/s  {:>7.1} MB/s  failed {} | {latency_what} {}{}",
                    (now - start).as_secs_f64(),
                    if window.is_none() { "warm-up" } else { "" },
                    per_second(counts.0 - last.1 .0, interval),
                    per_second(counts.1 - last.1 .1, interval) / 1e6,
                    counts.2,
                    if latency.is_empty() { "-".to_string() } else { percentiles_line(&latency) },
                    extra(),
                );
                last = (now, counts);
            }
            r = &mut interrupted => {
                r?;
                eprintln!("interrupted: ending the measured window early");
                break;
            }
        }
    }
    load.measuring.store(false, Ordering::SeqCst);
    let end = Instant::now();
    let (done, bytes, failed) = load.counts();
    load.stop.send_replace(true);
    let measured = match window {
        Some((from, (done_before, bytes_before, _))) => Measured {
            elapsed: end - from,
            done: done - done_before,
            bytes: bytes - bytes_before,
            failed,
            latency: load.measured(),
        },
        None => Measured {
            elapsed: Duration::ZERO,
            done: 0,
            bytes: 0,
            failed,
            latency: latency_histogram(),
        },
    };
    Ok(measured)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_of_range_latencies_are_clamped_not_dropped() {
        let mut h = latency_histogram();
        record_clamped_n(&mut h, 0, 1);
        record_clamped_n(&mut h, 36_000_000_000, 1);
        assert_eq!(h.len(), 2);
        assert_eq!(h.min(), 1);
        assert!(h.max() >= 3_600_000_000);
    }

    #[test]
    fn the_measured_histogram_only_takes_the_window() {
        let load = Load::new();
        let recorder = load.recorder();
        load.completed(10, 100, &recorder);
        load.measuring.store(true, Ordering::SeqCst);
        load.completed(10, 200, &recorder);
        assert_eq!(load.take_interval().len(), 2);
        assert_eq!(load.take_interval().len(), 0, "an interval is taken once");
        let measured = load.measured();
        assert_eq!(measured.len(), 1);
        assert_eq!(measured.max(), 200);
        assert_eq!(load.counts(), (2, 20, 0));
    }

    #[test]
    fn tasks_past_the_cap_share_recorders_and_nothing_is_lost() {
        let recorders = Recorders::default();
        let tasks: Vec<_> = (0..MAX_RECORDERS * 3).map(|_| recorders.add()).collect();
        let distinct: std::collections::HashSet<_> = tasks.iter().map(Arc::as_ptr).collect();
        assert_eq!(distinct.len(), MAX_RECORDERS);
        for (i, task) in tasks.iter().enumerate() {
            task.lock().unwrap().record_n(i as u64 + 1, 1, true);
        }
        let measured = recorders.measured();
        assert_eq!(measured.len(), tasks.len() as u64);
        assert_eq!(measured.max(), tasks.len() as u64);
        assert_eq!(recorders.take_interval().len(), tasks.len() as u64);
    }

    #[test]
    fn rates_over_an_empty_window_are_zero() {
        assert_eq!(per_second(10, Duration::ZERO), 0.0);
        assert_eq!(per_second(10, Duration::from_secs(2)), 5.0);
    }

    #[tokio::test]
    async fn a_window_without_warmup_measures_and_signals_stop() {
        let load = Load::new();
        let mut stop = load.stop_signal();
        let measured = measure(
            &load,
            Duration::ZERO,
            Duration::from_millis(20),
            "done",
            "latency",
            String::new,
        )
        .await
        .expect("measures");
        assert!(measured.elapsed >= Duration::from_millis(20));
        assert_eq!(measured.done, 0);
        assert!(*stop.borrow_and_update());
    }
}
