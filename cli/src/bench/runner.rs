//! `magnetar bench run`: one workload, start to finish. Starts the topology
//! (or takes `--service-url`), creates the namespace with the workload's
//! persistence and the topics through the admin REST API, runs the load
//! through warm-up and the measured phase (with the backlog phases, rate
//! discovery and the scheduled faults), waits for the consumers to read
//! what was acknowledged, verifies, writes one result file, and tears down
//! what it started on every exit path. Phases and timing live here; what
//! each step does lives in its own module.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{anyhow, bail, Result};
use clap::Args;
use futures::stream::FuturesUnordered;
use futures::StreamExt;
use tokio::sync::Mutex;

use super::discovery::{RateController, CONTROL_PERIOD};
use super::faults::{self, FaultContext};
use super::load::{Load, Shared};
use super::phases::{adjust_rate, advance_backlog, take_period, BacklogPhase};
use super::results::{
    quantiles, FaultOutcome, LatencySummary, Machine, MagnetarSection, OmbResult, Phases, RateInfo,
    RunResult, TopologyInfo, Totals, Verification,
};
use super::sample::{Sampler, Watched};
use super::setup::{create_namespace, create_topics, prepare_moves};
use super::summary::{print_period, print_summary};
use super::topology::{Topology, TopologyKind, TopologySpec};
use super::workload::{FaultAction, Persistence, Replication, Workload};
use crate::admin::AdminClient;

/// How often the fault timeline records the acknowledged count.
const TIMELINE_STEP: Duration = Duration::from_millis(100);

#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    /// Workload file (OpenMessaging Benchmark YAML).
    pub workload: PathBuf,
    /// Start this topology on 127.0.0.1 (etcd from PATH, servers from this binary).
    #[arg(long, value_enum, required_unless_present = "service_url")]
    pub topology: Option<TopologyKind>,
    /// Brokers to start (decoupled, monolithic).
    #[arg(long, default_value_t = 3)]
    pub brokers: usize,
    /// Bookies to start (decoupled).
    #[arg(long, default_value_t = 3)]
    pub bookies: usize,
    /// Run against this Pulsar-protocol service instead of starting one.
    #[arg(long, conflicts_with = "topology", requires = "admin_url")]
    pub service_url: Option<String>,
    /// Its admin REST API (`http://host:port`).
    #[arg(long, requires = "service_url")]
    pub admin_url: Option<String>,
    /// The result file to write.
    #[arg(long)]
    pub output: PathBuf,
    /// Resource and OMB statistics period (OMB: 10 s).
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub sample_interval: Duration,
    /// Replaces the workload's testDurationMinutes.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub test_duration: Option<Duration>,
    /// Replaces the workload's warmupDurationMinutes.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub warmup: Option<Duration>,
    /// Replaces the workload's producerRate (0 = find the highest).
    #[arg(long)]
    pub rate: Option<f64>,
    /// Replaces the workload's consumerBacklogSizeGB.
    #[arg(long)]
    pub backlog_size_gb: Option<f64>,
    /// Monolithic: the brokers' --flush-policy (fsync, or os as Kafka's default).
    #[arg(long)]
    pub flush_policy: Option<String>,
    /// The brokers' --lease-ttl (how soon a dead broker's bundles move).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub lease_ttl: Option<Duration>,
    /// One more flag for every broker (repeatable), e.g. --broker-arg=--load-shedding=false.
    #[arg(long = "broker-arg", allow_hyphen_values = true)]
    pub broker_args: Vec<String>,
    /// Tenant the benchmark's namespaces are created in.
    #[arg(long, default_value = "bench")]
    pub tenant: String,
    /// Keep the topology's directory (logs, data) after the run.
    #[arg(long)]
    pub keep: bool,
    /// Log filter of the servers the runner starts.
    #[arg(long, default_value = "warn")]
    pub server_log: String,
}

pub async fn run(args: RunArgs) -> Result<()> {
    let command: Vec<String> = std::env::args().collect();
    let mut workload = Workload::load(&args.workload)?;
    if let Some(d) = args.test_duration {
        workload.test_duration_minutes = d.as_secs_f64() / 60.0;
    }
    if let Some(d) = args.warmup {
        workload.warmup_duration_minutes = d.as_secs_f64() / 60.0;
    }
    if let Some(rate) = args.rate {
        workload.producer_rate = rate;
    }
    if let Some(gb) = args.backlog_size_gb {
        workload.consumer_backlog_size_gb = gb;
    }
    let mut notes: Vec<String> = workload
        .ignored
        .keys()
        .map(|k| format!("workload field {k} is not implemented by this runner and was ignored"))
        .collect();
    for note in &notes {
        eprintln!("bench: {note}");
    }
    let spec = match args.topology {
        Some(kind) => Some(topology_spec(kind, &args, &workload)?),
        None => None,
    };
    let topology = match spec {
        Some(spec) => {
            eprintln!(
                "bench: starting {} ({} brokers, {} bookies)",
                spec.kind.name(),
                spec.brokers,
                spec.bookies
            );
            Some(Arc::new(Mutex::new(Topology::start(spec).await?)))
        }
        None => None,
    };
    if let Some(t) = &topology {
        eprintln!("bench: processes under {}", t.lock().await.dir().display());
    }
    let outcome = tokio::select! {
        r = execute(&args, &workload, topology.clone(), &mut notes) => r,
        r = crate::shutdown::requested() => {
            r?;
            Err(anyhow!("interrupted"))
        }
    };
    // Kill what was started, whatever happened above.
    if let Some(t) = topology {
        t.lock().await.shutdown();
    }
    let mut result = outcome?;
    if let Some(m) = result.magnetar.as_mut() {
        m.command = command;
        m.notes = notes;
    }
    result.write(&args.output)?;
    print_summary(&result, &args.output);
    let passed = result
        .magnetar
        .as_ref()
        .is_some_and(|m| m.verification.passed);
    if !passed {
        bail!("verification failed (details in {})", args.output.display());
    }
    Ok(())
}

/// The topology a run starts, with the namespace policy the workload asks
/// for (decoupled: E/Qw/Qa, default 3/3/2 as the public runs; monolithic:
/// replicas / min.insync, default 3 / 2, stored as E = Qw = replicas and
/// Qa = min.insync).
fn topology_spec(kind: TopologyKind, args: &RunArgs, w: &Workload) -> Result<TopologySpec> {
    let persistence = match kind {
        TopologyKind::Standalone => Persistence {
            ensemble_size: 1,
            write_quorum: 1,
            ack_quorum: 1,
        },
        TopologyKind::Decoupled => w.magnetar.persistence.unwrap_or(Persistence {
            ensemble_size: 3,
            write_quorum: 3,
            ack_quorum: 2,
        }),
        TopologyKind::Monolithic => {
            let r = w.magnetar.replication.unwrap_or(Replication {
                replication_factor: 3,
                min_insync_replicas: 2,
            });
            Persistence {
                ensemble_size: r.replication_factor,
                write_quorum: r.replication_factor,
                ack_quorum: r.min_insync_replicas,
            }
        }
    };
    let (brokers, bookies) = match kind {
        TopologyKind::Standalone => (1, 0),
        TopologyKind::Decoupled => (args.brokers, args.bookies),
        TopologyKind::Monolithic => (args.brokers, 0),
    };
    if brokers == 0 {
        bail!("--brokers must be at least 1");
    }
    let p = persistence;
    if !(p.ack_quorum >= 1 && p.ack_quorum <= p.write_quorum && p.write_quorum <= p.ensemble_size) {
        bail!(
            "persistence {}/{}/{} needs 1 <= Qa <= Qw <= E",
            p.ensemble_size,
            p.write_quorum,
            p.ack_quorum
        );
    }
    match kind {
        TopologyKind::Decoupled if (bookies as u32) < p.ensemble_size => bail!(
            "an ensemble of {} needs at least that many bookies (--bookies {bookies})",
            p.ensemble_size
        ),
        TopologyKind::Monolithic if (brokers as u32) < p.ensemble_size => bail!(
            "{} replicas need at least that many brokers (--brokers {brokers})",
            p.ensemble_size
        ),
        _ => {}
    }
    if args.flush_policy.is_some() && kind != TopologyKind::Monolithic {
        bail!("--flush-policy applies to the monolithic topology");
    }
    Ok(TopologySpec {
        kind,
        brokers,
        bookies,
        persistence,
        flush_policy: args.flush_policy.clone(),
        lease_ttl: args.lease_ttl,
        broker_args: args.broker_args.clone(),
        keep_dir: args.keep,
        log_filter: args.server_log.clone(),
    })
}

/// When a receipt is sent, relative to fsync, in the words of each
/// architecture.
fn fsync_policy(kind: Option<TopologyKind>, flush: Option<&str>) -> String {
    match kind {
        Some(TopologyKind::Standalone) => {
            "decoupled, one in-process bookie: the receipt follows the bookie's fsync of the \
             group commit holding the entry"
                .into()
        }
        Some(TopologyKind::Decoupled) => {
            "bookie journal fsync: each bookie fsyncs a group commit before it acknowledges; \
             the receipt follows Qa acknowledgements"
                .into()
        }
        Some(TopologyKind::Monolithic) => match flush.unwrap_or("fsync") {
            "os" => "--flush-policy os: appends are written to the OS, not fsynced, before the \
                     receipt (Kafka's default; a power loss can lose receipts)"
                .into(),
            other => format!(
                "--flush-policy {other}: each group of appends is fsynced before it counts; \
                 the receipt follows the high watermark over the in-sync replicas"
            ),
        },
        None => "unknown (a service the runner did not start)".into(),
    }
}

/// Where the load goes, and the broker the clients bootstrap from (the
/// highest-numbered one no kill or pause targets by index).
struct Endpoints {
    service_url: String,
    admin_url: String,
    bootstrap: Option<usize>,
}

async fn endpoints(
    args: &RunArgs,
    w: &Workload,
    topology: Option<&Arc<Mutex<Topology>>>,
) -> Result<Endpoints> {
    let Some(t) = topology else {
        return Ok(Endpoints {
            service_url: args.service_url.clone().unwrap_or_default(),
            admin_url: args
                .admin_url
                .clone()
                .unwrap_or_default()
                .trim_end_matches('/')
                .to_string(),
            bootstrap: None,
        });
    };
    let t = t.lock().await;
    let targeted: Vec<usize> = w
        .magnetar
        .faults
        .iter()
        .filter(|f| matches!(f.action, FaultAction::KillBroker | FaultAction::PauseBroker))
        .filter_map(|f| f.broker)
        .collect();
    let index = (0..t.brokers.len())
        .rev()
        .find(|i| !targeted.contains(i))
        .unwrap_or(0);
    let broker = &t.brokers[index];
    Ok(Endpoints {
        service_url: broker.service_url(),
        admin_url: broker.process.http_url.clone(),
        bootstrap: Some(index),
    })
}

async fn execute(
    args: &RunArgs,
    w: &Workload,
    topology: Option<Arc<Mutex<Topology>>>,
    notes: &mut Vec<String>,
) -> Result<RunResult> {
    let started_at = humantime::format_rfc3339_seconds(SystemTime::now()).to_string();
    let ends = endpoints(args, w, topology.as_ref()).await?;
    let admin = Arc::new(AdminClient::new(&ends.admin_url, None));
    let run_id = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let namespace = format!("run-{run_id}");
    let setup_started = Instant::now();
    let tenant = args.tenant.as_str();
    let kind = args.topology;
    let persistence = match &topology {
        Some(t) => Some(t.lock().await.spec.persistence),
        None => w
            .magnetar
            .persistence
            .or(w.magnetar.replication.map(|r| Persistence {
                ensemble_size: r.replication_factor,
                write_quorum: r.replication_factor,
                ack_quorum: r.min_insync_replicas,
            })),
    };
    create_namespace(&admin, tenant, &namespace, w.magnetar.bundles, persistence).await?;
    let topics = create_topics(&admin, tenant, &namespace, w).await?;
    eprintln!(
        "bench: {} topic(s) of {} partitions in {tenant}/{namespace}, service {}",
        topics.len(),
        w.partitions_per_topic,
        ends.service_url
    );
    let moves = prepare_moves(
        &admin,
        tenant,
        &namespace,
        &ends.service_url,
        w,
        persistence,
    )
    .await?;
    let setup_seconds = setup_started.elapsed().as_secs_f64();

    // Load and sampling.
    let origin = Instant::now();
    let watch = match &topology {
        Some(t) => t.lock().await.watch_list(),
        None => Default::default(),
    };
    if let Ok(mut list) = watch.lock() {
        let metrics_url = topology
            .is_none()
            .then(|| format!("{}/metrics", ends.admin_url));
        list.push(Watched {
            name: "bench-client".into(),
            pid: std::process::id(),
            metrics_url,
        });
    }
    let sampler = Sampler::start(watch.clone(), args.sample_interval, origin);
    let discovering = w.producer_rate == 0.0;
    let first_rate = if discovering {
        w.magnetar.discovery_start_rate
    } else {
        w.producer_rate
    };
    // As OMB does, nothing is sent until every producer and consumer exists.
    let shared = Shared::new(topics.len(), w.total_producers(), w.message_size, 0.0);
    let clients_started = Instant::now();
    let mut load = Load::start(w, &ends.service_url, &topics, shared.clone()).await?;
    let clients_seconds = clients_started.elapsed().as_secs_f64();
    shared.set_rate(first_rate);
    let sending_since = Instant::now();
    let mut reached: Option<f64> = None;
    let mut note_reach = |load: &Load| {
        if reached.is_none() {
            let (got, all) = load.subscriptions_reached();
            if got == all {
                reached = Some(sending_since.elapsed().as_secs_f64());
            }
        }
    };
    let mut controller = RateController::default();
    let mut rate_changes = Vec::new();
    let subs = w.subscriptions_per_topic;

    // Warm-up.
    let warmup = Duration::from_secs_f64(w.warmup_duration_minutes * 60.0);
    let warmup_start = origin.elapsed().as_secs_f64();
    let mut control =
        tokio::time::interval_at((Instant::now() + CONTROL_PERIOD).into(), CONTROL_PERIOD);
    let mut last_control = Instant::now();
    let warmup_end = Instant::now() + warmup;
    let mut progress = tokio::time::interval_at(
        (Instant::now() + args.sample_interval).into(),
        args.sample_interval,
    );
    let mut last = shared.counters.snapshot();
    let mut last_at = Instant::now();
    let mut step = tokio::time::interval(TIMELINE_STEP);
    while Instant::now() < warmup_end {
        tokio::select! {
            _ = tokio::time::sleep_until(warmup_end.into()) => {}
            _ = step.tick() => note_reach(&load),
            _ = control.tick(), if discovering => {
                adjust_rate(&shared, &mut controller, &mut last_control, subs, &mut rate_changes, None);
            }
            _ = progress.tick() => {
                let now = shared.counters.snapshot();
                let p = take_period(&shared, &last, &now, last_at.elapsed().as_secs_f64(), subs);
                print_period("warm-up", origin, &p, shared.rate());
                (last, last_at) = (now, Instant::now());
            }
        }
    }

    // Measured phase.
    let test_start = Instant::now();
    shared.set_measuring(true);
    {
        // Warm-up latencies stay out of the first period.
        let l = &shared.latencies;
        l.publish.take_interval();
        l.publish_delay.take_interval();
        l.end_to_end.take_interval();
        l.publish_from_intended.take_interval();
    }
    let at_start = shared.counters.snapshot();
    let (mut last, mut last_at) = (at_start, test_start);
    let duration = Duration::from_secs_f64(w.test_duration_minutes * 60.0);
    let backlog_target =
        (w.consumer_backlog_size_gb * (1u64 << 30) as f64) as i64 / w.message_size.max(1) as i64;
    let mut backlog = if backlog_target > 0 {
        shared.pause_consumers(true);
        eprintln!("bench: consumers paused to build a backlog of {backlog_target} messages");
        BacklogPhase::Building { since: test_start }
    } else {
        BacklogPhase::Off
    };
    let mut backlog_build = None;
    let mut backlog_drain = None;
    // A backlog run lasts until drained, but not forever.
    let hard_end = test_start + duration * 4 + Duration::from_secs(600);
    let fault_ctx = FaultContext {
        topology: topology.clone(),
        admin: admin.clone(),
        admin_url: ends.admin_url.clone(),
        service_url: ends.service_url.clone(),
        bootstrap: ends.bootstrap,
        tenant: tenant.to_string(),
        namespace: namespace.clone(),
        topic: "topic-0".into(),
        partitions: w.partitions_per_topic,
        test_start,
    };
    let mut pending_faults: Vec<usize> = (0..w.magnetar.faults.len()).collect();
    pending_faults.sort_by(|a, b| {
        w.magnetar.faults[*a]
            .at_seconds
            .total_cmp(&w.magnetar.faults[*b].at_seconds)
    });
    pending_faults.reverse();
    let mut running_faults = FuturesUnordered::new();
    let mut outcomes: Vec<(usize, FaultOutcome)> = Vec::new();
    let mut periods = Vec::new();
    let mut period_ends = Vec::new();
    let mut timeline = vec![(0.0, at_start.published)];
    let mut progress = tokio::time::interval_at(
        (test_start + args.sample_interval).into(),
        args.sample_interval,
    );
    loop {
        let now = Instant::now();
        let backlog_busy = matches!(
            backlog,
            BacklogPhase::Building { .. } | BacklogPhase::Draining { .. }
        );
        let faults_busy = !running_faults.is_empty();
        if (now >= test_start + duration && !backlog_busy && !faults_busy) || now >= hard_end {
            if backlog_busy {
                notes.push("the backlog was not drained before the run's time limit".into());
            }
            break;
        }
        let next_fault = pending_faults
            .last()
            .map(|i| test_start + Duration::from_secs_f64(w.magnetar.faults[*i].at_seconds));
        let fault_due = async {
            match next_fault {
                Some(at) => tokio::time::sleep_until(at.into()).await,
                None => futures::future::pending().await,
            }
        };
        tokio::select! {
            _ = fault_due => {
                if let Some(i) = pending_faults.pop() {
                    let fault = &w.magnetar.faults[i];
                    eprintln!("bench: [{:>6.1}s] fault {i}: {}", test_start.elapsed().as_secs_f64(), fault.action.name());
                    let ctx = &fault_ctx;
                    let prepared = moves.get(i).and_then(Option::as_ref);
                    running_faults.push(async move { (i, faults::execute(fault, prepared, ctx).await) });
                }
            }
            Some((i, outcome)) = running_faults.next(), if faults_busy => {
                eprintln!(
                    "bench: fault {i} {}: {}{}",
                    outcome.action,
                    outcome.status,
                    outcome.reason.as_deref().map(|r| format!(" ({r})")).unwrap_or_default()
                );
                outcomes.push((i, outcome));
            }
            _ = step.tick() => {
                note_reach(&load);
                let c = shared.counters.snapshot();
                timeline.push((test_start.elapsed().as_secs_f64(), c.published));
                backlog = advance_backlog(backlog, &c, subs, backlog_target, w.backlog_drain_ratio, &shared, &mut backlog_build, &mut backlog_drain);
            }
            _ = control.tick(), if discovering => {
                adjust_rate(&shared, &mut controller, &mut last_control, subs, &mut rate_changes, Some(test_start));
            }
            _ = progress.tick() => {
                let now = shared.counters.snapshot();
                let p = take_period(&shared, &last, &now, last_at.elapsed().as_secs_f64(), subs);
                print_period("", origin, &p, shared.rate());
                period_ends.push(test_start.elapsed().as_secs_f64());
                periods.push(p);
                (last, last_at) = (now, Instant::now());
            }
        }
    }
    let at_end = shared.counters.snapshot();
    let tail = last_at.elapsed().as_secs_f64();
    if tail > 0.2 * args.sample_interval.as_secs_f64() || periods.is_empty() {
        periods.push(take_period(&shared, &last, &at_end, tail, subs));
        period_ends.push(test_start.elapsed().as_secs_f64());
    }
    let test_end = origin.elapsed().as_secs_f64();
    let test_seconds = test_start.elapsed().as_secs_f64();
    shared.set_measuring(false);
    for i in pending_faults.into_iter().rev() {
        let fault = &w.magnetar.faults[i];
        outcomes.push((
            i,
            FaultOutcome {
                action: fault.action.name().into(),
                at_seconds: fault.at_seconds,
                status: "not-run".into(),
                reason: Some("scheduled after the end of the measured phase".into()),
                ..Default::default()
            },
        ));
    }
    drop(running_faults);
    drop(fault_ctx);

    // Stop, drain, verify.
    shared.pause_consumers(false);
    let records = load.stop_producers().await;
    let drain_timeout = Duration::from_secs_f64(w.magnetar.drain_timeout_seconds);
    let drained = load.drain(drain_timeout).await;
    if !drained {
        notes.push(format!(
            "the consumers had not read everything acknowledged {drain_timeout:?} after the \
             producers stopped"
        ));
    }
    let drain_end = origin.elapsed().as_secs_f64();
    let verdicts = load.finish(&records).await;
    let samples = sampler.finish(&watch, origin).await;

    let l = &shared.latencies;
    let (publish, delay, end_to_end, from_intended) = (
        l.publish.measured(),
        l.publish_delay.measured(),
        l.end_to_end.measured(),
        l.publish_from_intended.measured(),
    );
    outcomes.sort_by_key(|(i, _)| *i);
    let faults_out: Vec<FaultOutcome> = outcomes
        .into_iter()
        .map(|(_, mut o)| {
            if let Some(at) = o.fired_at_seconds.filter(|_| o.status == "done") {
                if o.action != "add-broker" {
                    o.measurements
                        .extend(faults::resume_measurements(&timeline, at));
                }
            }
            o
        })
        .collect();

    let (topology_info, versions) = match &topology {
        Some(t) => {
            let t = t.lock().await;
            (
                TopologyInfo {
                    kind: t.spec.kind.name().into(),
                    brokers: t.brokers.len(),
                    bookies: t.bookies.len(),
                    persistence,
                    replication: (t.spec.kind == TopologyKind::Monolithic).then(|| Replication {
                        replication_factor: t.spec.persistence.ensemble_size,
                        min_insync_replicas: t.spec.persistence.ack_quorum,
                    }),
                    fsync_policy: fsync_policy(kind, t.spec.flush_policy.as_deref()),
                    lease_ttl_seconds: t.spec.lease_ttl.map(|d| d.as_secs_f64()),
                    service_url: ends.service_url.clone(),
                    admin_url: ends.admin_url.clone(),
                    broker_args: t.spec.broker_args.clone(),
                },
                t.versions.iter().cloned().collect(),
            )
        }
        None => (
            TopologyInfo {
                kind: "external".into(),
                persistence,
                fsync_policy: fsync_policy(None, None),
                service_url: ends.service_url.clone(),
                admin_url: ends.admin_url.clone(),
                ..Default::default()
            },
            [(
                "magnetar-bench".to_string(),
                env!("CARGO_PKG_VERSION").to_string(),
            )]
            .into_iter()
            .collect(),
        ),
    };
    let mut versions: std::collections::BTreeMap<String, String> = versions;
    versions.insert("pulsar-client".into(), "pulsar crate 6.9 (Rust)".into());

    let secs = test_seconds.max(1e-9);
    let totals = Totals {
        seconds: test_seconds,
        published: at_end.published - at_start.published,
        publish_errors: at_end.publish_errors - at_start.publish_errors,
        received: at_end.received - at_start.received,
        publish_rate: (at_end.published - at_start.published) as f64 / secs,
        consume_rate: (at_end.received - at_start.received) as f64 / secs,
        publish_mb_per_second: (at_end.published_bytes - at_start.published_bytes) as f64
            / secs
            / 1e6,
        consume_mb_per_second: (at_end.received_bytes - at_start.received_bytes) as f64
            / secs
            / 1e6,
    };
    let verification = Verification {
        passed: drained && verdicts.iter().all(|v| v.passed()),
        drained,
        sent: records.iter().map(|r| r.sent).sum(),
        acknowledged: records.iter().map(|r| r.acknowledged.len()).sum(),
        failed_sends: records.iter().map(|r| r.failed).sum(),
        subscriptions: verdicts,
    };
    let omb = OmbResult {
        workload: w.name.clone(),
        driver: format!(
            "Magnetar ({})",
            kind.map_or("external service", |k| k.name())
        ),
        message_size: w.message_size as u64,
        topics: w.topics as u64,
        partitions: w.partitions_per_topic as u64,
        producers_per_topic: w.producers_per_topic as u64,
        consumers_per_topic: (w.subscriptions_per_topic * w.consumer_per_subscription) as u64,
        publish_rate: periods.iter().map(|p| p.publish_rate).collect(),
        publish_error_rate: periods.iter().map(|p| p.error_rate).collect(),
        consume_rate: periods.iter().map(|p| p.consume_rate).collect(),
        backlog: periods.iter().map(|p| p.backlog).collect(),
        publish_latency: periods.iter().map(|p| p.publish).collect(),
        publish_delay_latency: periods.iter().map(|p| p.delay).collect(),
        end_to_end_latency: periods.iter().map(|p| p.end_to_end).collect(),
        aggregated_publish_latency: LatencySummary::from_histogram(&publish, 1000.0),
        aggregated_publish_delay_latency: LatencySummary::from_histogram(&delay, 1.0),
        aggregated_end_to_end_latency: LatencySummary::from_histogram(&end_to_end, 1000.0),
        aggregated_publish_latency_quantiles: quantiles(&publish, 1000.0),
        aggregated_publish_delay_latency_quantiles: quantiles(&delay, 1.0),
        aggregated_end_to_end_latency_quantiles: quantiles(&end_to_end, 1000.0),
    };
    let periods_seconds: Vec<f64> = periods.iter().map(|p| p.seconds).collect();
    debug_assert_eq!(periods_seconds.len(), period_ends.len());
    let magnetar = MagnetarSection {
        schema_version: 1,
        started_at,
        command: Vec::new(),
        workload_file: args.workload.display().to_string(),
        workload: Some(w.clone()),
        machine: Machine::this(),
        versions,
        topology: topology_info,
        phases: Phases {
            setup_seconds,
            clients_seconds,
            all_subscriptions_reached_seconds: reached,
            warmup_start,
            test_start: test_end - test_seconds,
            test_end,
            drain_end,
            backlog_build_seconds: backlog_build,
            backlog_drain_seconds: backlog_drain,
            period_ends,
        },
        rate: RateInfo {
            requested: w.producer_rate,
            last: shared.rate(),
            changes: rate_changes,
        },
        totals,
        aggregated_publish_latency_from_intended: LatencySummary::from_histogram(
            &from_intended,
            1000.0,
        ),
        aggregated_publish_latency_from_intended_quantiles: quantiles(&from_intended, 1000.0),
        publish_latency_from_intended: periods.iter().map(|p| p.from_intended).collect(),
        verification,
        faults: faults_out,
        samples,
        notes: Vec::new(),
    };
    Ok(RunResult {
        omb,
        magnetar: Some(magnetar),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topologies_check_their_quorums() {
        let w: Workload = serde_norway::from_str(
            "name: x\ntopics: 1\npartitionsPerTopic: 1\nmessageSize: 100\n\
             subscriptionsPerTopic: 1\nconsumerPerSubscription: 1\nproducersPerTopic: 1\n\
             producerRate: 10\ntestDurationMinutes: 1\n",
        )
        .expect("parses");
        let args = |topology: &str, extra: &[&str]| {
            #[derive(clap::Parser)]
            struct Cli {
                #[command(flatten)]
                run: RunArgs,
            }
            let mut argv = vec![
                "run",
                "w.yaml",
                "--output",
                "o.json",
                "--topology",
                topology,
            ];
            argv.extend(extra);
            <Cli as clap::Parser>::try_parse_from(argv)
                .expect("parses")
                .run
        };
        let spec =
            topology_spec(TopologyKind::Decoupled, &args("decoupled", &[]), &w).expect("3/3/2");
        assert_eq!(
            (
                spec.persistence.ensemble_size,
                spec.persistence.write_quorum,
                spec.persistence.ack_quorum
            ),
            (3, 3, 2)
        );
        let spec =
            topology_spec(TopologyKind::Monolithic, &args("monolithic", &[]), &w).expect("rf 3");
        assert_eq!(
            (spec.persistence.ensemble_size, spec.persistence.ack_quorum),
            (3, 2)
        );
        assert_eq!(spec.bookies, 0);
        assert!(topology_spec(
            TopologyKind::Decoupled,
            &args("decoupled", &["--bookies", "2"]),
            &w
        )
        .is_err());
        assert!(topology_spec(
            TopologyKind::Monolithic,
            &args("monolithic", &["--brokers", "2"]),
            &w
        )
        .is_err());
        let spec =
            topology_spec(TopologyKind::Standalone, &args("standalone", &[]), &w).expect("1/1/1");
        assert_eq!((spec.brokers, spec.persistence.ensemble_size), (1, 1));
    }
}
