//! Resource samples: per process CPU time, resident memory and disk bytes
//! (from /proc/PID/stat, status and io), the host's loopback traffic, and
//! each server's Prometheus /metrics, every sampling interval. Reads only;
//! a process that has gone (killed by a fault) is skipped, not an error.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// A process to watch.
#[derive(Debug, Clone)]
pub struct Watched {
    /// `broker0`, `bookie1`, `etcd`, `bench-client`.
    pub name: String,
    pub pid: u32,
    /// `http://host:port/metrics`, when it serves one.
    pub metrics_url: Option<String>,
}

/// The set of processes, changed by the topology as faults kill or add them.
pub type WatchList = Arc<Mutex<Vec<Watched>>>;

/// One reading of one process.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProcessReading {
    /// Seconds since the start of the run.
    pub t: f64,
    /// User + system CPU seconds since the process started.
    pub cpu_seconds: f64,
    pub rss_bytes: u64,
    /// Bytes the process caused to be read from / written to storage.
    pub read_bytes: u64,
    pub write_bytes: u64,
}

/// Every reading of one process, and what its /metrics said.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProcessSeries {
    pub name: String,
    pub pid: u32,
    pub readings: Vec<ProcessReading>,
    /// (seconds since the start, series -> value): counters and gauges of
    /// the process's /metrics (histogram buckets left out).
    pub metrics: Vec<(f64, BTreeMap<String, f64>)>,
}

impl ProcessSeries {
    /// CPU use between consecutive readings, in percent of one core.
    pub fn cpu_percent(&self) -> Vec<(f64, f64)> {
        self.readings
            .windows(2)
            .filter_map(|w| {
                let dt = w[1].t - w[0].t;
                (dt > 0.0).then(|| (w[1].t, 100.0 * (w[1].cpu_seconds - w[0].cpu_seconds) / dt))
            })
            .collect()
    }

    /// Mean CPU (percent of one core) between `from` and `to` seconds.
    pub fn mean_cpu_percent(&self, from: f64, to: f64) -> Option<f64> {
        let inside: Vec<_> = self
            .readings
            .iter()
            .filter(|r| r.t >= from && r.t <= to)
            .collect();
        let (first, last) = (inside.first()?, inside.last()?);
        let dt = last.t - first.t;
        (dt > 0.0).then(|| 100.0 * (last.cpu_seconds - first.cpu_seconds) / dt)
    }

    pub fn peak_rss(&self) -> u64 {
        self.readings.iter().map(|r| r.rss_bytes).max().unwrap_or(0)
    }

    /// (bytes read, bytes written) between the first and last reading.
    pub fn disk_bytes(&self) -> (u64, u64) {
        match (self.readings.first(), self.readings.last()) {
            (Some(a), Some(b)) => (
                b.read_bytes.saturating_sub(a.read_bytes),
                b.write_bytes.saturating_sub(a.write_bytes),
            ),
            _ => (0, 0),
        }
    }
}

/// Everything sampled over a run.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Samples {
    pub interval_seconds: f64,
    pub processes: Vec<ProcessSeries>,
    /// (seconds, bytes received on `lo` since boot): all loopback traffic of
    /// the host, not only this run's.
    pub host_loopback_bytes: Vec<(f64, u64)>,
}

/// Reads /proc for one process; `None` if it is gone or unreadable.
pub fn read_process(pid: u32, t: f64) -> Option<ProcessReading> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may hold spaces: fields
    // start after the last ')'. utime and stime are fields 14 and 15.
    let (_, rest) = stat.rsplit_once(')')?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state).
    if fields.first() == Some(&"Z") {
        return None;
    }
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss_kib = field_value(&status, "VmRSS:").unwrap_or(0);
    let io = std::fs::read_to_string(format!("/proc/{pid}/io")).unwrap_or_default();
    Some(ProcessReading {
        t,
        cpu_seconds: ticks as f64 / clock_ticks_per_second(),
        rss_bytes: rss_kib * 1024,
        read_bytes: field_value(&io, "read_bytes:").unwrap_or(0),
        write_bytes: field_value(&io, "write_bytes:").unwrap_or(0),
    })
}

/// The first number after `key` on a line starting with it.
fn field_value(text: &str, key: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

fn clock_ticks_per_second() -> f64 {
    // SAFETY: sysconf reads a constant of the running kernel; no memory is passed.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 {
        ticks as f64
    } else {
        100.0
    }
}

/// Bytes received on the loopback interface since boot.
fn loopback_bytes() -> Option<u64> {
    let dev = std::fs::read_to_string("/proc/net/dev").ok()?;
    dev.lines().find_map(|l| {
        let (name, counters) = l.split_once(':')?;
        (name.trim() == "lo")
            .then(|| counters.split_whitespace().next()?.parse().ok())
            .flatten()
    })
}

/// Families left out of the samples: per-RPC and runtime internals (etcd
/// alone exports ~800 gRPC series), which would make every result file
/// megabytes without saying anything about the comparison.
const DROPPED_FAMILIES: [&str; 3] = ["grpc_", "go_", "promhttp_"];

/// Counters and gauges of a Prometheus text page; histogram buckets,
/// comments and [`DROPPED_FAMILIES`] are dropped.
pub fn parse_metrics(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let name = series.split('{').next()?;
            if name.ends_with("_bucket") || DROPPED_FAMILIES.iter().any(|f| name.starts_with(f)) {
                return None;
            }
            Some((series.to_string(), value.parse().ok()?))
        })
        .collect()
}

/// Samples `watch` every `interval` until dropped; `snapshot` reads the
/// log so far.
pub struct Sampler {
    log: Arc<Mutex<Samples>>,
    task: tokio::task::JoinHandle<()>,
}

impl Sampler {
    pub fn start(watch: WatchList, interval: Duration, origin: Instant) -> Sampler {
        let log = Arc::new(Mutex::new(Samples {
            interval_seconds: interval.as_secs_f64(),
            ..Default::default()
        }));
        let task = tokio::spawn(sample_loop(watch, interval, origin, log.clone()));
        Sampler { log, task }
    }

    /// Takes one more sample now (at the end of a phase) and returns the log.
    pub async fn finish(self, watch: &WatchList, origin: Instant) -> Samples {
        self.task.abort();
        sample_once(watch, origin, &self.log).await;
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }
}

async fn sample_loop(
    watch: WatchList,
    interval: Duration,
    origin: Instant,
    log: Arc<Mutex<Samples>>,
) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        sample_once(&watch, origin, &log).await;
    }
}

async fn sample_once(watch: &WatchList, origin: Instant, log: &Mutex<Samples>) {
    let watched = watch.lock().map(|w| w.clone()).unwrap_or_default();
    let t = origin.elapsed().as_secs_f64();
    let http = reqwest::Client::new();
    let mut scraped = Vec::with_capacity(watched.len());
    for w in &watched {
        let metrics = match &w.metrics_url {
            Some(url) => scrape(&http, url).await,
            None => None,
        };
        scraped.push((read_process(w.pid, t), metrics));
    }
    let Ok(mut log) = log.lock() else { return };
    if let Some(lo) = loopback_bytes() {
        log.host_loopback_bytes.push((t, lo));
    }
    for (w, (reading, metrics)) in watched.iter().zip(scraped) {
        let index = match log
            .processes
            .iter()
            .position(|p| p.name == w.name && p.pid == w.pid)
        {
            Some(i) => i,
            None => {
                log.processes.push(ProcessSeries {
                    name: w.name.clone(),
                    pid: w.pid,
                    ..Default::default()
                });
                log.processes.len() - 1
            }
        };
        let series = &mut log.processes[index];
        if let Some(r) = reading {
            series.readings.push(r);
        }
        if let Some(m) = metrics {
            series.metrics.push((t, m));
        }
    }
}

async fn scrape(http: &reqwest::Client, url: &str) -> Option<BTreeMap<String, f64>> {
    let response = tokio::time::timeout(Duration::from_secs(2), http.get(url).send())
        .await
        .ok()?
        .ok()?;
    let text = response.text().await.ok()?;
    Some(parse_metrics(&text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_can_be_read() {
        let r = read_process(std::process::id(), 1.5).expect("/proc/self");
        assert!(r.rss_bytes > 0);
        assert_eq!(r.t, 1.5);
        assert!(read_process(u32::MAX, 0.0).is_none());
    }

    #[test]
    fn metrics_keep_counters_and_drop_buckets() {
        let text = "# HELP x help\n# TYPE x counter\nmagnetar_broker_x 3\n\
                    magnetar_broker_h_bucket{le=\"0.1\"} 1\nmagnetar_broker_h_sum 0.5\n\
                    magnetar_bookie_add_errors_total{code=\"fenced\"} 2\n\
                    grpc_server_handled_total{grpc_code=\"OK\"} 9\ngo_goroutines 7\n";
        let m = parse_metrics(text);
        assert_eq!(m.get("magnetar_broker_x"), Some(&3.0));
        assert_eq!(m.get("magnetar_broker_h_sum"), Some(&0.5));
        assert_eq!(
            m.get("magnetar_bookie_add_errors_total{code=\"fenced\"}"),
            Some(&2.0)
        );
        assert_eq!(m.len(), 3);
    }

    #[test]
    fn cpu_and_disk_come_from_differences() {
        let reading = |t, cpu, w| ProcessReading {
            t,
            cpu_seconds: cpu,
            rss_bytes: 10,
            read_bytes: 0,
            write_bytes: w,
        };
        let s = ProcessSeries {
            readings: vec![reading(0.0, 1.0, 100), reading(10.0, 6.0, 1100)],
            ..Default::default()
        };
        assert_eq!(s.cpu_percent(), vec![(10.0, 50.0)]);
        assert_eq!(s.mean_cpu_percent(0.0, 10.0), Some(50.0));
        assert_eq!(s.disk_bytes(), (0, 1000));
        assert_eq!(s.peak_rss(), 10);
    }
}
