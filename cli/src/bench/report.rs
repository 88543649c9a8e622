//! `magnetar bench report`: reads result files (ours, or OMB's own) and
//! writes `report.md` with PNG charts beside it: latency quantiles as OMB
//! draws them, throughput and latency over time with fault markers, move
//! time against data size, and side-by-side tables of the runs of each
//! workload. It reads and draws; it never runs anything.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;

use super::charts::{quantile_chart, time_chart, xy_chart, Marker, Series};
use super::results::{LatencySummary, RunResult};

#[derive(Args, Debug)]
pub struct ReportArgs {
    /// Result files written by `magnetar bench run` (or OMB).
    #[arg(required = true)]
    pub results: Vec<PathBuf>,
    /// Directory for report.md and the charts.
    #[arg(long)]
    pub output: PathBuf,
    /// The report's title.
    #[arg(long, default_value = "Magnetar benchmark report")]
    pub title: String,
}

pub fn run(args: ReportArgs) -> Result<()> {
    let mut runs = Vec::new();
    for path in &args.results {
        runs.push((path.clone(), RunResult::read(path)?));
    }
    if runs.is_empty() {
        bail!("no result files");
    }
    std::fs::create_dir_all(&args.output)
        .with_context(|| format!("creating {}", args.output.display()))?;
    let report = write_report(&args, &runs)?;
    let path = args.output.join("report.md");
    std::fs::write(&path, report).with_context(|| format!("writing {}", path.display()))?;
    println!("report: {}", path.display());
    Ok(())
}

/// One figure per OMB period of a run.
type PerPeriod = dyn Fn(&RunResult) -> Vec<f64>;

/// Runs grouped by workload name, in the order first seen.
fn by_workload(runs: &[(PathBuf, RunResult)]) -> Vec<(String, Vec<&RunResult>)> {
    let mut groups: Vec<(String, Vec<&RunResult>)> = Vec::new();
    for (_, run) in runs {
        match groups
            .iter_mut()
            .find(|(name, _)| *name == run.omb.workload)
        {
            Some((_, members)) => members.push(run),
            None => groups.push((run.omb.workload.clone(), vec![run])),
        }
    }
    groups
}

/// A file-name-safe form of a workload name.
fn slug(name: &str) -> String {
    let mut out: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    while out.contains("--") {
        out = out.replace("--", "-");
    }
    let short: String = out.trim_matches('-').chars().take(40).collect();
    short.trim_end_matches('-').to_string()
}

/// Seconds since the measured phase started at the end of each period.
fn period_times(run: &RunResult) -> Vec<f64> {
    match &run.magnetar {
        Some(m) if m.phases.period_ends.len() == run.omb.publish_rate.len() => {
            m.phases.period_ends.clone()
        }
        // OMB's own files: one period every 10 s.
        _ => (1..=run.omb.publish_rate.len())
            .map(|i| i as f64 * 10.0)
            .collect(),
    }
}

fn markers(runs: &[&RunResult]) -> Vec<Marker> {
    let several = runs.len() > 1;
    let name = |what: &str, label: &str| {
        if several {
            format!("{what} ({label})")
        } else {
            what.to_string()
        }
    };
    // The backlog phases: built from the start of the measured phase.
    let backlog = runs.iter().filter_map(|r| {
        let m = r.magnetar.as_ref()?;
        let built = m.phases.backlog_build_seconds?;
        let mut marks = vec![Marker {
            x: built,
            label: name("backlog drain starts", &r.label()),
        }];
        if let Some(drained) = m.phases.backlog_drain_seconds {
            marks.push(Marker {
                x: built + drained,
                label: name("drained", &r.label()),
            });
        }
        Some(marks)
    });
    let mut all: Vec<Marker> = backlog.flatten().collect();
    all.extend(fault_markers(runs, several));
    all
}

fn fault_markers(runs: &[&RunResult], several: bool) -> Vec<Marker> {
    runs.iter()
        .filter_map(|r| r.magnetar.as_ref().map(|m| (r.label(), m)))
        .flat_map(|(label, m)| {
            m.faults.iter().filter_map(move |f| {
                let x = f.fired_at_seconds?;
                Some(Marker {
                    x,
                    label: if several {
                        format!("{} ({label})", f.action)
                    } else {
                        f.action.clone()
                    },
                })
            })
        })
        .collect()
}

fn ms(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

fn count(v: f64) -> String {
    let whole = v.round() as i64;
    let digits = whole.abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if whole < 0 {
        format!("-{out}")
    } else {
        out
    }
}

fn bytes(v: f64) -> String {
    if v >= 1e9 {
        format!("{:.2} GB", v / 1e9)
    } else if v >= 1e6 {
        format!("{:.1} MB", v / 1e6)
    } else if v >= 1e3 {
        format!("{:.1} kB", v / 1e3)
    } else {
        format!("{v:.0} B")
    }
}

/// Minutes as a short number (0.25, 1, 0.33).
fn minutes(m: f64) -> String {
    let text = format!("{m:.2}");
    text.trim_end_matches('0').trim_end_matches('.').to_string()
}

fn mean(values: &[f64]) -> f64 {
    if values.is_empty() {
        0.0
    } else {
        values.iter().sum::<f64>() / values.len() as f64
    }
}

/// One table row: a name and a cell per run.
fn row(out: &mut String, name: &str, cells: impl IntoIterator<Item = String>) {
    let cells: Vec<String> = cells.into_iter().collect();
    let _ = writeln!(out, "| {name} | {} |", cells.join(" | "));
}

fn latency_cells(s: &LatencySummary) -> String {
    format!(
        "{} / {} / {} / {}",
        ms(s.p50),
        ms(s.p99),
        ms(s.p999),
        ms(s.max)
    )
}

/// Server resources over the measured phase: (mean CPU % summed over the
/// servers, peak RSS summed, bytes written summed), client apart.
fn resources(run: &RunResult) -> Option<(f64, f64, u64, f64)> {
    let m = run.magnetar.as_ref()?;
    let (from, to) = (m.phases.test_start, m.phases.test_end);
    let servers = m
        .samples
        .processes
        .iter()
        .filter(|p| p.name != "bench-client");
    let mut cpu = 0.0;
    let mut rss = 0u64;
    let mut written = 0u64;
    for p in servers {
        cpu += p.mean_cpu_percent(from, to).unwrap_or(0.0);
        rss += p.peak_rss();
        written += p.disk_bytes().1;
    }
    let client = m
        .samples
        .processes
        .iter()
        .find(|p| p.name == "bench-client")
        .and_then(|p| p.mean_cpu_percent(from, to))
        .unwrap_or(0.0);
    Some((cpu, rss as f64, written, client))
}

fn write_report(args: &ReportArgs, runs: &[(PathBuf, RunResult)]) -> Result<String> {
    let mut out = String::new();
    let _ = writeln!(out, "# {}\n", args.title);
    let _ = writeln!(
        out,
        "From {} result file(s). Latencies are in ms (publish delay in µs), as in \
         OpenMessaging Benchmark results; p50 / p99 / p99.9 / max. Compare runs made \
         together on one machine; the charts are beside this file.\n",
        runs.len()
    );
    side_by_side(&mut out, runs);
    for (g, (name, members)) in by_workload(runs).into_iter().enumerate() {
        workload_section(&mut out, args, g, &name, &members)?;
    }
    moves_section(&mut out, args, runs)?;
    runs_section(&mut out, runs);
    Ok(out)
}

/// Both architectures (every label) per workload: throughput and p99s.
fn side_by_side(out: &mut String, runs: &[(PathBuf, RunResult)]) {
    let mut labels: Vec<String> = Vec::new();
    for (_, r) in runs {
        if !labels.contains(&r.label()) {
            labels.push(r.label());
        }
    }
    let _ = writeln!(out, "## Side by side\n");
    let _ = writeln!(
        out,
        "Per workload and run: published msg/s (MB/s) · publish p99 · end-to-end p99 · \
         verification.\n"
    );
    let _ = writeln!(out, "| workload | {} |", labels.join(" | "));
    let _ = writeln!(out, "|---|{}", "---|".repeat(labels.len()));
    for (name, members) in by_workload(runs) {
        let cells = labels.iter().map(|label| {
            members
                .iter()
                .filter(|r| r.label() == *label)
                .map(|r| {
                    let (rate, mb) = match &r.magnetar {
                        Some(m) => (m.totals.publish_rate, m.totals.publish_mb_per_second),
                        None => (
                            mean(&r.omb.publish_rate),
                            mean(&r.omb.publish_rate) * r.omb.message_size as f64 / 1e6,
                        ),
                    };
                    let verdict = match &r.magnetar {
                        Some(m) if m.verification.passed => "ok".to_string(),
                        Some(m) => format!(
                            "**{} lost**",
                            m.verification
                                .subscriptions
                                .iter()
                                .map(|s| s.lost)
                                .sum::<u64>()
                        ),
                        None => "—".into(),
                    };
                    format!(
                        "{} ({:.1} MB/s) · {} ms · {} ms · {verdict}",
                        count(rate),
                        mb,
                        ms(r.omb.aggregated_publish_latency.p99),
                        ms(r.omb.aggregated_end_to_end_latency.p99)
                    )
                })
                .collect::<Vec<_>>()
                .join("<br>")
        });
        row(
            out,
            &name,
            cells.map(|c| if c.is_empty() { "—".into() } else { c }),
        );
    }
    out.push('\n');
}

fn workload_section(
    out: &mut String,
    args: &ReportArgs,
    g: usize,
    name: &str,
    members: &[&RunResult],
) -> Result<()> {
    let _ = writeln!(out, "## {name}\n");
    if let Some(w) = members
        .iter()
        .find_map(|r| r.magnetar.as_ref().and_then(|m| m.workload.as_ref()))
    {
        let _ =
            writeln!(
            out,
            "{} topic(s) × {} partitions, {} B messages, {} producer(s) and {} subscription(s) × \
             {} consumer(s) per topic, rate {}{}, {} min measured after {} min warm-up.\n",
            w.topics,
            w.partitions_per_topic,
            w.message_size,
            w.producers_per_topic,
            w.subscriptions_per_topic,
            w.consumer_per_subscription,
            if w.producer_rate == 0.0 {
                "found by discovery".to_string()
            } else {
                format!("{} msg/s", count(w.producer_rate))
            },
            if w.consumer_backlog_size_gb > 0.0 {
                format!(", backlog of {} GB built then drained", w.consumer_backlog_size_gb)
            } else {
                String::new()
            },
            minutes(w.test_duration_minutes),
            minutes(w.warmup_duration_minutes)
        );
    }
    let labels: Vec<String> = members.iter().map(|r| r.label()).collect();
    let _ = writeln!(out, "| | {} |", labels.join(" | "));
    let _ = writeln!(out, "|---|{}", "---|".repeat(labels.len()));
    let totals =
        |f: &dyn Fn(&RunResult) -> String| members.iter().map(|r| f(r)).collect::<Vec<_>>();
    row(
        out,
        "published msg/s (MB/s)",
        totals(&|r| match &r.magnetar {
            Some(m) => format!(
                "{} ({:.1})",
                count(m.totals.publish_rate),
                m.totals.publish_mb_per_second
            ),
            None => count(mean(&r.omb.publish_rate)),
        }),
    );
    row(
        out,
        "consumed msg/s",
        totals(&|r| match &r.magnetar {
            Some(m) => count(m.totals.consume_rate),
            None => count(mean(&r.omb.consume_rate)),
        }),
    );
    row(
        out,
        "publish latency ms",
        totals(&|r| latency_cells(&r.omb.aggregated_publish_latency)),
    );
    row(
        out,
        "end-to-end latency ms",
        totals(&|r| latency_cells(&r.omb.aggregated_end_to_end_latency)),
    );
    row(
        out,
        "publish delay µs (p50 / p99 / p99.9 / max)",
        totals(&|r| {
            let d = &r.omb.aggregated_publish_delay_latency;
            format!("{:.0} / {:.0} / {:.0} / {:.0}", d.p50, d.p99, d.p999, d.max)
        }),
    );
    row(
        out,
        "publish from intended send ms",
        totals(&|r| match &r.magnetar {
            Some(m) => latency_cells(&m.aggregated_publish_latency_from_intended),
            None => "—".into(),
        }),
    );
    row(
        out,
        "verification",
        totals(&|r| match &r.magnetar {
            Some(m) => {
                let v = &m.verification;
                let sum = |f: &dyn Fn(&super::verify::SubscriptionVerdict) -> u64| {
                    v.subscriptions.iter().map(f).sum::<u64>()
                };
                format!(
                    "{}: {} acknowledged, {} lost, {} duplicates, {} out of order",
                    if v.passed { "passed" } else { "**FAILED**" },
                    count(v.acknowledged as f64),
                    sum(&|s| s.lost),
                    sum(&|s| s.duplicates),
                    sum(&|s| s.out_of_order.unwrap_or(0))
                )
            }
            None => "—".into(),
        }),
    );
    row(
        out,
        "servers: CPU % (sum) · peak RSS · disk written",
        totals(&|r| match resources(r) {
            Some((cpu, rss, written, _)) => {
                format!("{cpu:.0}% · {} · {}", bytes(rss), bytes(written as f64))
            }
            None => "—".into(),
        }),
    );
    row(
        out,
        "etcd operations during the run (writes · reads)",
        totals(&|r| match etcd_operations(r) {
            Some((writes, reads)) => format!("{} · {}", count(writes), count(reads)),
            None => "—".into(),
        }),
    );
    row(
        out,
        "load generator CPU %",
        totals(&|r| match resources(r) {
            Some((_, _, _, client)) => format!("{client:.0}%"),
            None => "—".into(),
        }),
    );
    row(
        out,
        "topology",
        totals(&|r| match &r.magnetar {
            Some(m) => {
                let t = &m.topology;
                let policy = match (&t.replication, &t.persistence) {
                    (Some(r), _) => format!(
                        ", replicas {}, min.insync {}",
                        r.replication_factor, r.min_insync_replicas
                    ),
                    (None, Some(p)) => format!(
                        ", E/Qw/Qa {}/{}/{}",
                        p.ensemble_size, p.write_quorum, p.ack_quorum
                    ),
                    (None, None) => String::new(),
                };
                format!("{} broker(s), {} bookie(s){policy}", t.brokers, t.bookies)
            }
            None => r.omb.driver.clone(),
        }),
    );
    row(
        out,
        "fsync policy",
        totals(&|r| {
            r.magnetar
                .as_ref()
                .map_or("—".into(), |m| m.topology.fsync_policy.clone())
        }),
    );
    out.push('\n');

    let prefix = format!("{g:02}-{}", slug(name));
    let quantile_series = |pick: &dyn Fn(&RunResult) -> Vec<(f64, f64)>| -> Vec<Series> {
        members
            .iter()
            .map(|r| Series {
                label: r.label(),
                points: pick(r),
            })
            .collect()
    };
    let charts: [(&str, &str, Vec<Series>); 2] = [
        (
            "publish-latency-quantiles",
            "Publish latency by percentile",
            quantile_series(&|r| r.omb.aggregated_publish_latency_quantiles.clone()),
        ),
        (
            "end-to-end-latency-quantiles",
            "End-to-end latency by percentile",
            quantile_series(&|r| r.omb.aggregated_end_to_end_latency_quantiles.clone()),
        ),
    ];
    for (file, title, series) in charts {
        let png = format!("{prefix}-{file}.png");
        quantile_chart(&args.output.join(&png), title, "ms", &series, 99.99)?;
        let _ = writeln!(out, "![{title}]({png})\n");
    }
    let marks = markers(members);
    let over_time = |values: &dyn Fn(&RunResult) -> Vec<f64>, suffix: &str| -> Vec<Series> {
        members
            .iter()
            .map(|r| Series {
                label: format!("{}{suffix}", r.label()),
                points: period_times(r).into_iter().zip(values(r)).collect(),
            })
            .collect()
    };
    let mut throughput = over_time(&|r| r.omb.publish_rate.clone(), " publish");
    throughput.extend(over_time(&|r| r.omb.consume_rate.clone(), " consume"));
    let png = format!("{prefix}-throughput.png");
    time_chart(
        &args.output.join(&png),
        "Throughput over time",
        "msg/s",
        &throughput,
        &marks,
    )?;
    let _ = writeln!(out, "![Throughput over time]({png})\n");
    // Publish and end-to-end apart: a backlog's end-to-end latency is
    // minutes and would flatten the publish curve.
    let kinds: [(&str, &str, &PerPeriod); 2] = [
        ("publish-latency", "Publish latency p99 over time", &|r| {
            r.omb.publish_latency.iter().map(|s| s.p99).collect()
        }),
        (
            "end-to-end-latency",
            "End-to-end latency p99 over time",
            &|r| r.omb.end_to_end_latency.iter().map(|s| s.p99).collect(),
        ),
    ];
    for (file, title, values) in kinds {
        let png = format!("{prefix}-{file}.png");
        time_chart(
            &args.output.join(&png),
            title,
            "ms",
            &over_time(values, ""),
            &marks,
        )?;
        let _ = writeln!(out, "![{title}]({png})\n");
    }
    let cpu = cpu_series(members);
    if !cpu.is_empty() {
        let png = format!("{prefix}-cpu.png");
        time_chart(
            &args.output.join(&png),
            "CPU by role over time (100% = one core)",
            "% of one core",
            &cpu,
            &marks,
        )?;
        let _ = writeln!(out, "![CPU by role over time]({png})\n");
    }
    faults_table(out, members);
    Ok(())
}

/// Metadata operations: differences of etcd's MVCC counters between its
/// first and last /metrics sample (writes: put + txn + delete; reads: range).
fn etcd_operations(run: &RunResult) -> Option<(f64, f64)> {
    let etcd = run
        .magnetar
        .as_ref()?
        .samples
        .processes
        .iter()
        .find(|p| p.name == "etcd")?;
    let (first, last) = (&etcd.metrics.first()?.1, &etcd.metrics.last()?.1);
    let delta =
        |k: &str| last.get(k).copied().unwrap_or(0.0) - first.get(k).copied().unwrap_or(0.0);
    Some((
        delta("etcd_mvcc_put_total")
            + delta("etcd_mvcc_txn_total")
            + delta("etcd_mvcc_delete_total"),
        delta("etcd_mvcc_range_total"),
    ))
}

/// The role of a sampled process: its name without the index.
fn role(name: &str) -> &str {
    name.trim_end_matches(|c: char| c.is_ascii_digit())
}

/// Per run and role (brokers, bookies, etcd, the load generator), CPU
/// summed over the role's processes at each sample of the measured phase.
fn cpu_series(members: &[&RunResult]) -> Vec<Series> {
    let mut out = Vec::new();
    for r in members {
        let Some(m) = &r.magnetar else { continue };
        let (start, end) = (m.phases.test_start, m.phases.test_end);
        let mut by_role: BTreeMap<&str, BTreeMap<u64, f64>> = BTreeMap::new();
        for p in &m.samples.processes {
            for (t, cpu) in p.cpu_percent() {
                if t >= start && t <= end + 1e-6 {
                    // Samples of one pass share their time: key by milliseconds.
                    let key = ((t - start) * 1000.0).round() as u64;
                    *by_role
                        .entry(role(&p.name))
                        .or_default()
                        .entry(key)
                        .or_default() += cpu;
                }
            }
        }
        for (name, points) in by_role {
            out.push(Series {
                label: format!("{} {name}", r.label()),
                points: points
                    .into_iter()
                    .map(|(k, v)| (k as f64 / 1000.0, v))
                    .collect(),
            });
        }
    }
    out
}

fn faults_table(out: &mut String, members: &[&RunResult]) {
    let faults: Vec<(String, &super::results::FaultOutcome)> = members
        .iter()
        .filter_map(|r| r.magnetar.as_ref().map(|m| (r.label(), m)))
        .flat_map(|(label, m)| m.faults.iter().map(move |f| (label.clone(), f)))
        .collect();
    if faults.is_empty() {
        return;
    }
    let _ = writeln!(out, "Faults (times in seconds after the measured phase started; `resumeSeconds`: until the acknowledged rate over 1 s is back at 90% of the 5 s before the fault, 0 if it never fell below half; `maxAckGapSeconds`: longest time without any receipt):\n");
    let _ = writeln!(out, "| run | fault | at | target | status | figures |");
    let _ = writeln!(out, "|---|---|---|---|---|---|");
    for (label, f) in faults {
        let figures: Vec<String> = f
            .measurements
            .iter()
            .map(|(k, v)| {
                if k.to_lowercase().contains("bytes") {
                    format!("{k} {}", bytes(*v))
                } else {
                    format!("{k} {v:.3}")
                }
            })
            .chain(f.reason.iter().cloned())
            .chain(f.notes.iter().cloned())
            .collect();
        let _ = writeln!(
            out,
            "| {label} | {} | {} | {} | {} | {} |",
            f.action,
            f.fired_at_seconds
                .map_or(format!("{} (planned)", f.at_seconds), |t| format!("{t:.1}")),
            f.target.as_deref().unwrap_or("—"),
            f.status,
            figures.join("; ")
        );
    }
    out.push('\n');
}

/// Move time against data size, over every run with sized moves.
fn moves_section(out: &mut String, args: &ReportArgs, runs: &[(PathBuf, RunResult)]) -> Result<()> {
    let mut by_label: BTreeMap<String, Vec<(f64, f64, f64)>> = BTreeMap::new();
    for (_, r) in runs {
        let Some(m) = &r.magnetar else { continue };
        for f in m
            .faults
            .iter()
            .filter(|f| f.action == "move-bundle" && f.status == "done")
        {
            let (Some(size), Some(time)) = (
                f.measurements.get("dataBytes"),
                f.measurements.get("moveSeconds"),
            ) else {
                continue;
            };
            let copied = f
                .measurements
                .get("brokerBytesWritten")
                .copied()
                .unwrap_or(0.0);
            by_label.entry(r.label()).or_default().push((
                size / (1u64 << 30) as f64,
                *time,
                copied,
            ));
        }
    }
    let _ = writeln!(out, "## Moving a topic with data\n");
    if by_label.is_empty() {
        let _ = writeln!(
            out,
            "No result holds a completed move of a filled topic (`move-bundle` with `sizeGB`).\n"
        );
        return Ok(());
    }
    let series: Vec<Series> = by_label
        .iter()
        .map(|(label, points)| {
            let mut p: Vec<(f64, f64)> = points.iter().map(|(s, t, _)| (*s, *t)).collect();
            p.sort_by(|a, b| a.0.total_cmp(&b.0));
            Series {
                label: label.clone(),
                points: p,
            }
        })
        .collect();
    let png = "move-time-vs-size.png";
    xy_chart(
        &args.output.join(png),
        "Time to move a bundle against its data",
        (
            "GiB in the topic",
            "seconds until read and written through the new owner",
        ),
        &series,
        1.0,
    )?;
    let _ = writeln!(out, "![Move time against data size]({png})\n");
    let _ = writeln!(
        out,
        "| run | GB | seconds | bytes written by brokers meanwhile |"
    );
    let _ = writeln!(out, "|---|---|---|---|");
    for (label, points) in &by_label {
        for (size, time, copied) in points {
            let _ = writeln!(
                out,
                "| {label} | {size:.2} | {time:.3} | {} |",
                bytes(*copied)
            );
        }
    }
    out.push('\n');
    Ok(())
}

fn runs_section(out: &mut String, runs: &[(PathBuf, RunResult)]) {
    let _ = writeln!(out, "## Runs\n");
    for (path, r) in runs {
        let _ = writeln!(
            out,
            "- `{}`: {} on {}",
            path.display(),
            r.omb.workload,
            r.label()
        );
        if let Some(m) = &r.magnetar {
            let mc = &m.machine;
            let _ = writeln!(
                out,
                "  - {} · {} cores, {} memory, kernel {} ({})",
                m.started_at,
                mc.cores,
                bytes(mc.memory_bytes as f64),
                mc.kernel,
                mc.cpu_model
            );
            let versions: Vec<String> =
                m.versions.iter().map(|(k, v)| format!("{k} {v}")).collect();
            let _ = writeln!(out, "  - versions: {}", versions.join(", "));
            let _ = writeln!(out, "  - command: `{}`", m.command.join(" "));
            for note in &m.notes {
                let _ = writeln!(out, "  - note: {note}");
            }
        }
    }
    out.push('\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_become_file_names() {
        assert_eq!(
            slug("500k rate 4 producers / 100 partition"),
            "500k-rate-4-producers-100-partition"
        );
        assert_eq!(count(1234567.4), "1,234,567");
        assert_eq!(count(-1000.0), "-1,000");
        assert_eq!(bytes(2_500_000.0), "2.5 MB");
        assert_eq!(ms(0.1234), "0.12");
        assert_eq!(minutes(1.0 / 3.0), "0.33");
        assert_eq!(minutes(5.0), "5");
    }
}
