//! Carrying out the faults a workload schedules, the same way in every
//! architecture: kill -9 or pause a process the runner started, start one
//! more broker, or move a bundle with Pulsar's admin call (`PUT
//! .../{bundle}/unload?destinationBroker=`). A fault that cannot run here
//! (no topology of ours, wrong architecture, no such process) is reported
//! as not run with the reason, never approximated. What a fault did to the
//! load (time until sends resume) is read afterwards from the run's
//! timeline by [`resume_measurements`].

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::TryStreamExt;
use magnetar_broker::ownership::{topic_hash, BrokerIdentity, BundleLayout, BundlesData};
use magnetar_metadata::keys;
use pulsar::{Consumer, ConsumerOptions, TokioExecutor};
use serde_json::Value;
use tokio::sync::Mutex;

use super::results::FaultOutcome;
use super::sample::read_process;
use super::topology::{Role, Topology, TopologyKind};
use super::workload::{Fault, FaultAction};
use crate::admin::AdminClient;
use crate::client::{connect, ConnectArgs, StartPosition};

/// How long a move's first read and first send may take.
const MOVE_TIMEOUT: Duration = Duration::from_secs(120);
/// How long an added broker has to take a bundle.
const CARRY_TIMEOUT: Duration = Duration::from_secs(60);

/// Everything a fault may act on.
pub struct FaultContext {
    /// The cluster the runner started (none with `--service-url`).
    pub topology: Option<Arc<Mutex<Topology>>>,
    pub admin: Arc<AdminClient>,
    /// `http://host:port` of the broker the runner administers through.
    pub admin_url: String,
    pub service_url: String,
    /// The broker the clients bootstrap from (the `pulsar` crate takes one
    /// address, so killing it would cut every client off from lookups).
    pub bootstrap: Option<usize>,
    pub tenant: String,
    pub namespace: String,
    /// Local name of the first topic (`topic-0`).
    pub topic: String,
    pub partitions: u32,
    /// The start of the measured phase.
    pub test_start: Instant,
}

/// A topic filled before the run for a `move-bundle` with `sizeGB`.
#[derive(Debug, Clone)]
pub struct PreparedMove {
    pub namespace: String,
    /// Local topic name.
    pub topic: String,
    pub subscription: String,
    pub bytes: u64,
    pub messages: u64,
    pub fill_seconds: f64,
}

/// Why a fault did not do its job.
enum Refusal {
    NotRun(String),
    Failed(String),
}

type Outcome = Result<(String, BTreeMap<String, f64>, Vec<String>), Refusal>;

fn failed(e: impl std::fmt::Display) -> Refusal {
    Refusal::Failed(e.to_string())
}

/// Carries out `fault` now and says what happened.
pub async fn execute(
    fault: &Fault,
    prepared: Option<&PreparedMove>,
    ctx: &FaultContext,
) -> FaultOutcome {
    let fired = ctx.test_start.elapsed().as_secs_f64();
    let result = match fault.action {
        FaultAction::KillBroker => {
            kill_broker(ctx, fault.broker.unwrap_or(0), "the broker index").await
        }
        FaultAction::KillBookie => kill_bookie(ctx, fault.bookie.unwrap_or(0)).await,
        FaultAction::KillLeader => kill_leader(ctx, fault.partition.unwrap_or(0)).await,
        FaultAction::KillFollower => kill_follower(ctx, fault.partition.unwrap_or(0)).await,
        FaultAction::PauseBroker => {
            pause_broker(
                ctx,
                fault.broker.unwrap_or(0),
                fault.duration_seconds.unwrap_or(0.0),
            )
            .await
        }
        FaultAction::AddBroker => add_broker(ctx).await,
        FaultAction::MoveBundle => match prepared {
            Some(p) => {
                let mut r = move_bundle(ctx, &p.namespace, &p.topic, Some(&p.subscription)).await;
                if let Ok((_, m, _)) = &mut r {
                    m.insert("dataBytes".into(), p.bytes as f64);
                    m.insert("dataMessages".into(), p.messages as f64);
                    m.insert("fillSeconds".into(), p.fill_seconds);
                }
                r
            }
            None => {
                let partition = fault.partition.unwrap_or(0);
                let topic = partition_topic(ctx, partition);
                move_bundle(ctx, &ctx.namespace, &topic, None).await
            }
        },
    };
    let mut outcome = FaultOutcome {
        action: fault.action.name().to_string(),
        at_seconds: fault.at_seconds,
        fired_at_seconds: Some(fired),
        ..Default::default()
    };
    match result {
        Ok((target, measurements, notes)) => {
            outcome.status = "done".into();
            outcome.target = Some(target);
            outcome.measurements = measurements;
            outcome.notes = notes;
        }
        Err(Refusal::NotRun(reason)) => {
            outcome.status = "not-run".into();
            outcome.fired_at_seconds = None;
            outcome.reason = Some(reason);
        }
        Err(Refusal::Failed(reason)) => {
            outcome.status = "failed".into();
            outcome.reason = Some(reason);
        }
    }
    outcome
}

fn partition_topic(ctx: &FaultContext, partition: u32) -> String {
    format!("{}-partition-{partition}", ctx.topic)
}

fn topology(ctx: &FaultContext) -> Result<&Arc<Mutex<Topology>>, Refusal> {
    ctx.topology.as_ref().ok_or_else(|| {
        Refusal::NotRun(
            "needs a topology started by the runner (--topology); with --service-url the \
             runner does not own the servers"
                .into(),
        )
    })
}

async fn kill_broker(ctx: &FaultContext, index: usize, what: &str) -> Outcome {
    let topology = topology(ctx)?;
    if ctx.bootstrap == Some(index) {
        return Err(Refusal::NotRun(format!(
            "{what} names broker{index}, which the clients bootstrap from (the pulsar crate takes \
             one service address); target another broker"
        )));
    }
    let name = topology
        .lock()
        .await
        .kill(Role::Broker, index)
        .map_err(failed)?;
    Ok((name, BTreeMap::new(), Vec::new()))
}

async fn kill_bookie(ctx: &FaultContext, index: usize) -> Outcome {
    let topology = topology(ctx)?;
    let mut t = topology.lock().await;
    if t.spec.kind != TopologyKind::Decoupled {
        return Err(Refusal::NotRun(format!(
            "the {} topology has no separate bookies",
            t.spec.kind.name()
        )));
    }
    let name = t.kill(Role::Bookie, index).map_err(failed)?;
    Ok((name, BTreeMap::new(), Vec::new()))
}

/// The broker serving `topic` now, as a lookup answers.
async fn owner_of(ctx: &FaultContext, namespace: &str, topic: &str) -> Result<String, Refusal> {
    let url = format!(
        "{}/lookup/v2/topic/persistent/{}/{namespace}/{topic}",
        ctx.admin_url, ctx.tenant
    );
    let response = reqwest::get(&url).await.map_err(failed)?;
    let answer = json_of(response).await.map_err(failed)?;
    answer
        .get("brokerUrl")
        .and_then(Value::as_str)
        .map(|u| {
            u.trim_start_matches("pulsar://")
                .trim_end_matches('/')
                .to_string()
        })
        .ok_or_else(|| Refusal::Failed(format!("lookup of {topic} answered {answer}")))
}

/// The JSON body of a successful answer (`reqwest` is built without its
/// JSON feature here).
async fn json_of(response: reqwest::Response) -> Result<Value, String> {
    let status = response.status();
    let text = response.text().await.map_err(|e| e.to_string())?;
    if !status.is_success() {
        return Err(format!("{status}: {text}"));
    }
    serde_json::from_str(&text).map_err(|e| format!("{e}: {text}"))
}

/// Kills the broker serving `partition` (its owner; monolithic: its
/// leader). If that is the clients' bootstrap broker, the next partition
/// served by another broker is used instead, and the outcome says so.
async fn kill_leader(ctx: &FaultContext, partition: u32) -> Outcome {
    let topology = topology(ctx)?;
    let mut notes = Vec::new();
    for offset in 0..ctx.partitions.max(1) {
        let p = (partition + offset) % ctx.partitions.max(1);
        let owner = owner_of(ctx, &ctx.namespace, &partition_topic(ctx, p)).await?;
        let index =
            topology.lock().await.broker_index(&owner).ok_or_else(|| {
                Refusal::Failed(format!("{owner} is not a broker of this topology"))
            })?;
        if Some(index) == ctx.bootstrap {
            continue;
        }
        if p != partition {
            notes.push(format!(
                "partition {partition} is served by the clients' bootstrap broker; killed the \
                 leader of partition {p} instead"
            ));
        }
        let name = topology
            .lock()
            .await
            .kill(Role::Broker, index)
            .map_err(failed)?;
        let mut m = BTreeMap::new();
        m.insert("partition".into(), p as f64);
        return Ok((name, m, notes));
    }
    Err(Refusal::NotRun(
        "every partition is served by the clients' bootstrap broker".into(),
    ))
}

/// Replica ids of monolithic brokers, mapped to their broker ids.
async fn replica_ids(topology: &Topology) -> Result<BTreeMap<String, String>, Refusal> {
    let store = topology.store().await.map_err(failed)?;
    let registered = store
        .list(&keys::brokers_available_prefix())
        .await
        .map_err(failed)?;
    Ok(registered
        .iter()
        .filter_map(|kv| serde_json::from_slice::<BrokerIdentity>(&kv.value).ok())
        .filter_map(|b| Some((b.replica?.id, b.broker_id)))
        .collect())
}

/// (leader broker id, replica broker ids) of a monolithic partition.
async fn replicas_of(
    topology: &Topology,
    tenant: &str,
    namespace: &str,
    topic: &str,
) -> Result<(Option<String>, Vec<String>), Refusal> {
    let store = topology.store().await.map_err(failed)?;
    let record = store
        .get(&keys::topic(tenant, namespace, topic))
        .await
        .map_err(failed)?
        .ok_or_else(|| Refusal::Failed(format!("no metadata record for {topic}")))?;
    let value: Value = serde_json::from_slice(&record.value).map_err(failed)?;
    let ids = replica_ids(topology).await?;
    let to_broker = |id: &str| ids.get(id).cloned().unwrap_or_else(|| id.to_string());
    let leader = value.get("leader").and_then(Value::as_str).map(&to_broker);
    let replicas = value
        .get("replicas")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).map(to_broker).collect())
        .unwrap_or_default();
    Ok((leader, replicas))
}

async fn kill_follower(ctx: &FaultContext, partition: u32) -> Outcome {
    let topology = topology(ctx)?;
    let mut t = topology.lock().await;
    if t.spec.kind != TopologyKind::Monolithic {
        return Err(Refusal::NotRun(format!(
            "a follower replica exists only in the monolithic architecture (this is {}; the \
             decoupled counterpart is kill-bookie)",
            t.spec.kind.name()
        )));
    }
    let topic = partition_topic(ctx, partition);
    let (leader, replicas) = replicas_of(&t, &ctx.tenant, &ctx.namespace, &topic).await?;
    let follower = replicas
        .iter()
        .filter(|r| Some(*r) != leader.as_ref())
        .filter_map(|r| t.broker_index(r))
        .filter(|i| t.brokers[*i].process.running())
        .find(|i| Some(*i) != ctx.bootstrap)
        .ok_or_else(|| {
            Refusal::NotRun(format!(
                "{topic} has no running follower outside the clients' bootstrap broker (replicas \
                 {replicas:?}, leader {leader:?})"
            ))
        })?;
    let name = t.kill(Role::Broker, follower).map_err(failed)?;
    let mut m = BTreeMap::new();
    m.insert("partition".into(), partition as f64);
    Ok((name, m, Vec::new()))
}

async fn pause_broker(ctx: &FaultContext, index: usize, seconds: f64) -> Outcome {
    let topology = topology(ctx)?;
    if ctx.bootstrap == Some(index) {
        return Err(Refusal::NotRun(format!(
            "broker{index} is the clients' bootstrap broker; pause another one"
        )));
    }
    let name = topology
        .lock()
        .await
        .pause(Role::Broker, index, true)
        .map_err(failed)?;
    tokio::time::sleep(Duration::from_secs_f64(seconds)).await;
    topology
        .lock()
        .await
        .pause(Role::Broker, index, false)
        .map_err(failed)?;
    let mut m = BTreeMap::new();
    m.insert("pausedSeconds".into(), seconds);
    Ok((name, m, Vec::new()))
}

/// Bytes written to storage so far by every running broker, by index.
fn broker_write_bytes(topology: &Topology) -> BTreeMap<usize, u64> {
    topology
        .brokers
        .iter()
        .enumerate()
        .filter(|(_, b)| b.process.running())
        .filter_map(|(i, b)| Some((i, read_process(b.process.pid, 0.0)?.write_bytes)))
        .collect()
}

async fn add_broker(ctx: &FaultContext) -> Outcome {
    let topology = topology(ctx)?;
    let started = Instant::now();
    let (index, address, pid, store) = {
        let mut t = topology.lock().await;
        if t.spec.kind == TopologyKind::Standalone {
            return Err(Refusal::NotRun(
                "a standalone topology cannot take another broker".into(),
            ));
        }
        let index = t.add_broker().await.map_err(failed)?;
        let b = &t.brokers[index];
        (
            index,
            b.address.clone(),
            b.process.pid,
            t.store().await.map_err(failed)?,
        )
    };
    let mut m = BTreeMap::new();
    m.insert("startSeconds".into(), started.elapsed().as_secs_f64());
    let mut notes = Vec::new();
    // Carrying load: owning at least one bundle of the benchmark namespace.
    let prefix = keys::bundle_owners_prefix(&ctx.tenant, &ctx.namespace);
    let deadline = Instant::now() + CARRY_TIMEOUT;
    loop {
        let owned = store
            .list(&prefix)
            .await
            .map_err(failed)?
            .iter()
            .filter_map(|kv| serde_json::from_slice::<Value>(&kv.value).ok())
            .filter(|v| v.get("brokerId").and_then(Value::as_str) == Some(address.as_str()))
            .count();
        if owned > 0 {
            m.insert("carriesLoadSeconds".into(), started.elapsed().as_secs_f64());
            m.insert("bundlesOwned".into(), owned as f64);
            break;
        }
        if Instant::now() > deadline {
            notes.push(format!(
                "the new broker owned no bundle of {}/{} within {CARRY_TIMEOUT:?} (the load \
                 manager did not move one to it)",
                ctx.tenant, ctx.namespace
            ));
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    if let Some(r) = read_process(pid, 0.0) {
        m.insert("newBrokerBytesWritten".into(), r.write_bytes as f64);
    }
    Ok((format!("broker{index}"), m, notes))
}

/// Moves the bundle holding `topic` of `namespace` to another broker and
/// times, from the admin request, the first read (on `subscription`, when
/// given, else a new subscription at the latest position) and the first
/// acknowledged send through the new owner.
async fn move_bundle(
    ctx: &FaultContext,
    namespace: &str,
    topic: &str,
    subscription: Option<&str>,
) -> Outcome {
    let topology = topology(ctx)?;
    let full = format!("persistent://{}/{namespace}/{topic}", ctx.tenant);
    let owner = owner_of(ctx, namespace, topic).await?;
    let mut notes = Vec::new();
    let (destination, dest_index, bytes_before, dest_data_before) = {
        let t = topology.lock().await;
        let holders = if t.spec.kind == TopologyKind::Monolithic {
            replicas_of(&t, &ctx.tenant, namespace, topic)
                .await
                .map(|(_, r)| r)
                .unwrap_or_default()
        } else {
            Vec::new()
        };
        let candidates: Vec<usize> = (0..t.brokers.len())
            .filter(|i| t.brokers[*i].process.running() && t.brokers[*i].address != owner)
            .collect();
        // Monolithic: a broker without a replica, so that data must move.
        let pick = candidates
            .iter()
            .copied()
            .find(|i| !holders.contains(&t.brokers[*i].address))
            .or_else(|| {
                if !holders.is_empty() {
                    notes.push(
                        "every other broker already holds a replica: nothing needs copying".into(),
                    );
                }
                candidates.first().copied()
            })
            .ok_or_else(|| Refusal::NotRun("no other running broker to move to".into()))?;
        (
            t.brokers[pick].address.clone(),
            pick,
            broker_write_bytes(&t),
            t.data_bytes(Role::Broker, pick),
        )
    };
    let layout: BundlesData = ctx
        .admin
        .get(&format!("namespaces/{}/{namespace}/bundles", ctx.tenant))
        .await
        .map_err(failed)?
        .and_then(|v| serde_json::from_value(v).ok())
        .ok_or_else(|| Refusal::Failed("no bundles answer".into()))?;
    let bundle = BundleLayout::from_data(&layout)
        .map_err(failed)?
        .find(topic_hash(&full))
        .name();
    let started = Instant::now();
    ctx.admin
        .put(
            &format!(
                "namespaces/{}/{namespace}/{bundle}/unload?destinationBroker={destination}",
                ctx.tenant
            ),
            None,
        )
        .await
        .map_err(|e| {
            Refusal::Failed(format!(
                "PUT .../{bundle}/unload?destinationBroker={destination}: {e:#}"
            ))
        })?;
    let request = started.elapsed().as_secs_f64();
    let read = first_read(ctx, &full, subscription);
    // A probe message would reach the workload's own subscriptions (and
    // fail their verification as foreign): on a workload topic the load's
    // own producers show when sends resume.
    let probe_send = subscription.is_some();
    let send = async {
        if probe_send {
            first_send(ctx, &full).await.map(Some)
        } else {
            Ok(None)
        }
    };
    let (read, send) = tokio::join!(
        tokio::time::timeout(MOVE_TIMEOUT, read),
        tokio::time::timeout(MOVE_TIMEOUT, send)
    );
    let read = read.unwrap_or_else(|_| Err(format!("no read within {MOVE_TIMEOUT:?}")));
    let send = send.unwrap_or_else(|_| Err(format!("no send within {MOVE_TIMEOUT:?}")));
    let after = started.elapsed().as_secs_f64();
    let owner_after = owner_of(ctx, namespace, topic).await.ok();
    let mut m = BTreeMap::new();
    m.insert("requestSeconds".into(), request);
    let (bytes_after, dest_data_after) = {
        let t = topology.lock().await;
        (
            broker_write_bytes(&t),
            t.data_bytes(Role::Broker, dest_index),
        )
    };
    let written: u64 = bytes_after
        .iter()
        .map(|(i, after)| after.saturating_sub(bytes_before.get(i).copied().unwrap_or(*after)))
        .sum();
    m.insert("brokerBytesWritten".into(), written as f64);
    m.insert("destinationDataBytesBefore".into(), dest_data_before as f64);
    m.insert("destinationDataBytesAfter".into(), dest_data_after as f64);
    let mut errors = Vec::new();
    match read {
        Ok(t) => {
            m.insert("firstReadSeconds".into(), t);
        }
        Err(e) => errors.push(format!("first read: {e}")),
    }
    match send {
        Ok(Some(t)) => {
            m.insert("firstSendSeconds".into(), t);
        }
        Ok(None) => {}
        Err(e) => errors.push(format!("first send: {e}")),
    }
    if !errors.is_empty() {
        return Err(Refusal::Failed(format!(
            "bundle {bundle} of {namespace} to {destination}: {}",
            errors.join("; ")
        )));
    }
    // From the request until both the read and the send went through the
    // new owner (the probes start when the request returns; in the
    // monolithic architecture the request itself includes the copy).
    let done = ["firstReadSeconds", "firstSendSeconds"]
        .iter()
        .filter_map(|k| m.get(*k).copied())
        .fold(0.0, f64::max);
    m.insert("moveSeconds".into(), request + done);
    m.insert("probesClosedSeconds".into(), after);
    match owner_after {
        Some(o) if o == destination => {}
        Some(o) => notes.push(format!(
            "lookups answer {o} after the move, not {destination}"
        )),
        None => notes.push("no lookup answer after the move".into()),
    }
    Ok((
        format!("{namespace}/{bundle}: {owner} -> {destination}"),
        m,
        notes,
    ))
}

/// Seconds until a consumer reads its first message of `topic`.
async fn first_read(
    ctx: &FaultContext,
    topic: &str,
    subscription: Option<&str>,
) -> Result<f64, String> {
    let started = Instant::now();
    let client = connect(&ConnectArgs::new(ctx.service_url.clone()))
        .await
        .map_err(|e| format!("{e:#}"))?;
    let (name, position) = match subscription {
        Some(s) => (s.to_string(), StartPosition::Earliest),
        None => ("move-probe".to_string(), StartPosition::Latest),
    };
    let mut consumer: Consumer<Vec<u8>, TokioExecutor> = client
        .consumer()
        .with_topic(topic)
        .with_subscription(name)
        .with_options(ConsumerOptions::default().with_initial_position(position.into()))
        .build()
        .await
        .map_err(|e| e.to_string())?;
    consumer
        .try_next()
        .await
        .map_err(|e| e.to_string())?
        .ok_or("the consumer stopped")?;
    let t = started.elapsed().as_secs_f64();
    let _ = tokio::time::timeout(Duration::from_secs(5), consumer.close()).await;
    Ok(t)
}

/// Seconds until one message sent to `topic` is acknowledged.
async fn first_send(ctx: &FaultContext, topic: &str) -> Result<f64, String> {
    let started = Instant::now();
    let client = connect(&ConnectArgs::new(ctx.service_url.clone()))
        .await
        .map_err(|e| format!("{e:#}"))?;
    let mut producer = client
        .producer()
        .with_topic(topic)
        .build()
        .await
        .map_err(|e| e.to_string())?;
    producer
        .send_non_blocking(b"move-probe".to_vec())
        .await
        .map_err(|e| e.to_string())?
        .await
        .map_err(|e| e.to_string())?;
    let t = started.elapsed().as_secs_f64();
    let _ = tokio::time::timeout(Duration::from_secs(5), producer.close()).await;
    Ok(t)
}

/// How the acknowledged rate answered a fault at `at` (seconds since the
/// test start), from a timeline of (seconds, messages acknowledged so far):
/// the rate before (mean over the 5 s before); whether it fell below half
/// of that within 10 s; if so, the seconds from the fault until the rate
/// over one second was back at 90% of it (`resumeSeconds`); and the longest
/// interval without any receipt after the fault (`maxAckGapSeconds`).
pub fn resume_measurements(timeline: &[(f64, u64)], at: f64) -> BTreeMap<String, f64> {
    let mut m = BTreeMap::new();
    let count_at = |t: f64| -> Option<u64> {
        timeline
            .iter()
            .take_while(|(s, _)| *s <= t)
            .last()
            .map(|(_, c)| *c)
    };
    let rate = |from: f64, to: f64| -> Option<f64> {
        let (a, b) = (count_at(from)?, count_at(to)?);
        (to > from).then(|| b.saturating_sub(a) as f64 / (to - from))
    };
    let Some(before) = rate((at - 5.0).max(0.0), at).filter(|r| *r > 0.0) else {
        return m;
    };
    m.insert("rateBefore".into(), before);
    let after: Vec<&(f64, u64)> = timeline.iter().filter(|(t, _)| *t >= at).collect();
    let dip = after
        .iter()
        .map(|(t, _)| *t)
        .filter(|t| *t >= at + 1.0 && *t <= at + 10.0)
        .find(|t| rate(t - 1.0, *t).is_some_and(|r| r < 0.5 * before));
    match dip {
        None => {
            m.insert("resumeSeconds".into(), 0.0);
        }
        Some(d) => {
            match after
                .iter()
                .map(|(t, _)| *t)
                .filter(|t| *t > d)
                .find(|t| rate(t - 1.0, *t).is_some_and(|r| r >= 0.9 * before))
            {
                Some(t) => {
                    m.insert("resumeSeconds".into(), t - at);
                }
                // No figure is made up: `resumed` 0 says it never came back.
                None => {
                    m.insert("resumed".into(), 0.0);
                }
            }
        }
    }
    let mut gap: f64 = 0.0;
    let mut last_change = at;
    let mut last_count = count_at(at).unwrap_or(0);
    let end = after.last().map_or(at, |(t, _)| *t);
    for (t, c) in after {
        if *c != last_count {
            gap = gap.max(t - last_change);
            last_change = *t;
            last_count = *c;
        }
    }
    // A stall that lasts to the end of the run is a gap too.
    gap = gap.max(end - last_change);
    m.insert("maxAckGapSeconds".into(), gap);
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timeline(rate_at: impl Fn(f64) -> f64, until: f64) -> Vec<(f64, u64)> {
        let mut out = Vec::new();
        let mut total = 0.0;
        let mut t = 0.0;
        while t <= until {
            out.push((t, total as u64));
            total += rate_at(t) * 0.1;
            t = ((t + 0.1) * 10.0f64).round() / 10.0;
        }
        out
    }

    #[test]
    fn a_stall_and_its_end_are_measured() {
        // 1,000/s, nothing from 10 s to 13 s, then a catch-up burst.
        let line = timeline(
            |t| match t {
                t if (10.0..13.0).contains(&t) => 0.0,
                t if (13.0..14.0).contains(&t) => 4000.0,
                _ => 1000.0,
            },
            30.0,
        );
        let m = resume_measurements(&line, 10.0);
        assert!((m["rateBefore"] - 1000.0).abs() < 30.0, "{m:?}");
        let resume = m["resumeSeconds"];
        assert!((3.0..=4.0).contains(&resume), "{m:?}");
        assert!((2.9..=3.2).contains(&m["maxAckGapSeconds"]), "{m:?}");
    }

    #[test]
    fn an_unfelt_fault_resumes_at_once() {
        let line = timeline(|_| 1000.0, 30.0);
        let m = resume_measurements(&line, 10.0);
        assert_eq!(m["resumeSeconds"], 0.0);
        assert!(m["maxAckGapSeconds"] < 0.2);
    }

    #[test]
    fn a_stall_to_the_end_is_reported_as_not_resumed() {
        let line = timeline(|t| if t < 10.0 { 1000.0 } else { 0.0 }, 30.0);
        let m = resume_measurements(&line, 10.0);
        assert_eq!(m.get("resumed"), Some(&0.0));
        assert!(!m.contains_key("resumeSeconds"));
        assert!(m["maxAckGapSeconds"] > 19.0, "{m:?}");
    }

    #[test]
    fn no_rate_before_means_no_figures() {
        let line = timeline(|_| 0.0, 30.0);
        assert!(resume_measurements(&line, 10.0).is_empty());
    }
}
