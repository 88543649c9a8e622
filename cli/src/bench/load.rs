//! The workload's load: producers and consumers over the Pulsar protocol
//! (the `pulsar` crate, batching on), as OMB's Pulsar driver makes them.
//! Producers send on a schedule and every latency is measured against it:
//! publish latency from the send call to the receipt (OMB's
//! publishLatency), publish delay from the intended send time to the send
//! call (OMB's publishDelayLatency, where coordinated omission shows), and
//! their sum; consumers measure end-to-end latency from the send time in the
//! payload header and feed [`SubscriptionCheck`]. The runner decides when
//! to start, pause, measure and stop; this module only does what it is told.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{anyhow, Context, Result};
use futures::stream::FuturesUnordered;
use futures::{StreamExt, TryStreamExt};
use pulsar::producer::{Message, SendFuture};
use pulsar::{Consumer, ConsumerOptions, Producer, Pulsar, TokioExecutor};
use rand::{Rng, RngCore};
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;

use super::verify::{
    partition_of, unix_micros, Header, ProducerRecord, SubscriptionCheck, SubscriptionVerdict,
};
use super::workload::{KeyDistributor, Workload};
use crate::client::ack::Acker;
use crate::client::{connect_with_outbound_queue, producer_options, ConnectArgs, StartPosition};
use crate::perf::report::{LatencyRecorder, Recorders};
use crate::perf::schedule::Schedule;

/// Distinct keys of KEY_ROUND_ROBIN and RANDOM_NANO, as OMB's KeyDistributor.
const KEY_POOL: usize = 10_000;
/// How long closing a producer or consumer may take once the figures are in.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);
/// Consumers (then producers) being created at once during set-up, as
/// OMB's driver creates them together: many topics are set up at the
/// service's pace, not at one round trip per client.
const CREATE_CONCURRENCY: usize = 16;

/// Counters over the whole run (warm-up included); the runner takes
/// differences.
#[derive(Default)]
pub struct Counters {
    pub published: AtomicU64,
    pub published_bytes: AtomicU64,
    pub publish_errors: AtomicU64,
    pub received: AtomicU64,
    pub received_bytes: AtomicU64,
}

impl Counters {
    pub fn snapshot(&self) -> CounterSnapshot {
        CounterSnapshot {
            published: self.published.load(Ordering::Relaxed),
            published_bytes: self.published_bytes.load(Ordering::Relaxed),
            publish_errors: self.publish_errors.load(Ordering::Relaxed),
            received: self.received.load(Ordering::Relaxed),
            received_bytes: self.received_bytes.load(Ordering::Relaxed),
        }
    }
}

#[derive(Debug, Clone, Copy, Default)]
pub struct CounterSnapshot {
    pub published: u64,
    pub published_bytes: u64,
    pub publish_errors: u64,
    pub received: u64,
    pub received_bytes: u64,
}

/// Latency recorders, one set per kind, merged by the runner.
#[derive(Default)]
pub struct Latencies {
    /// Send call to receipt (µs).
    pub publish: Recorders,
    /// Intended send time to send call (µs).
    pub publish_delay: Recorders,
    /// Intended send time to receipt (µs).
    pub publish_from_intended: Recorders,
    /// Send time to receipt by a consumer (µs).
    pub end_to_end: Recorders,
}

/// The total send rate, which rate discovery changes while producers run.
struct RateTarget {
    /// Messages per second over all producers, as f64 bits.
    total_bits: AtomicU64,
    /// Bumped on every change, so each producer restarts its schedule.
    epoch: AtomicU64,
}

/// What the runner and the load tasks share.
pub struct Shared {
    pub counters: Counters,
    pub latencies: Latencies,
    /// Acknowledged messages per topic (for the drain at the end).
    acked_per_topic: Vec<AtomicU64>,
    measuring: AtomicBool,
    rate: RateTarget,
    producers: usize,
    /// Payload bytes per message (for the byte counters).
    message_size: u64,
    stop_producers: watch::Sender<bool>,
    stop_consumers: watch::Sender<bool>,
    paused: watch::Sender<bool>,
    /// Maps `Instant`s to wall-clock microseconds, once for the whole run.
    clock: (Instant, u64),
}

impl Shared {
    pub fn new(topics: usize, producers: usize, message_size: usize, rate: f64) -> Arc<Shared> {
        Arc::new(Shared {
            counters: Counters::default(),
            latencies: Latencies::default(),
            acked_per_topic: (0..topics).map(|_| AtomicU64::new(0)).collect(),
            measuring: AtomicBool::new(false),
            rate: RateTarget {
                total_bits: AtomicU64::new(rate.to_bits()),
                epoch: AtomicU64::new(0),
            },
            producers,
            message_size: message_size as u64,
            stop_producers: watch::Sender::new(false),
            stop_consumers: watch::Sender::new(false),
            paused: watch::Sender::new(false),
            clock: (Instant::now(), unix_micros(SystemTime::now())),
        })
    }

    fn unix_micros_at(&self, at: Instant) -> u64 {
        let (base, base_micros) = self.clock;
        base_micros + at.saturating_duration_since(base).as_micros() as u64
    }

    fn now_micros(&self) -> u64 {
        self.unix_micros_at(Instant::now())
    }

    /// Whether latencies go into the measured histograms.
    pub fn set_measuring(&self, on: bool) {
        self.measuring.store(on, Ordering::SeqCst);
    }

    fn measuring(&self) -> bool {
        self.measuring.load(Ordering::Relaxed)
    }

    /// Sets the total rate over all producers.
    pub fn set_rate(&self, total: f64) {
        self.rate
            .total_bits
            .store(total.to_bits(), Ordering::SeqCst);
        self.rate.epoch.fetch_add(1, Ordering::SeqCst);
    }

    pub fn rate(&self) -> f64 {
        f64::from_bits(self.rate.total_bits.load(Ordering::SeqCst))
    }

    fn per_producer_rate(&self) -> (u64, f64) {
        let epoch = self.rate.epoch.load(Ordering::SeqCst);
        (epoch, self.rate() / self.producers.max(1) as f64)
    }

    /// Consumers stop taking messages (the broker keeps them: a backlog).
    pub fn pause_consumers(&self, paused: bool) {
        self.paused.send_replace(paused);
    }

    pub fn acked_for_topic(&self, topic: usize) -> u64 {
        self.acked_per_topic
            .get(topic)
            .map_or(0, |a| a.load(Ordering::Relaxed))
    }
}

/// Payloads to send: a pool picked from in turn (a payload file, OMB's
/// randomized pool, or one random payload).
pub struct Payloads(Vec<Vec<u8>>);

impl Payloads {
    pub fn for_workload(w: &Workload) -> Result<Payloads> {
        if let Some(file) = &w.payload_file {
            let bytes = std::fs::read(file)
                .with_context(|| format!("reading payloadFile {}", file.display()))?;
            if bytes.len() < super::workload::HEADER_BYTES {
                return Err(anyhow!(
                    "payloadFile {} holds {} bytes; the verification header needs {}",
                    file.display(),
                    bytes.len(),
                    super::workload::HEADER_BYTES
                ));
            }
            return Ok(Payloads(vec![bytes]));
        }
        let mut rng = rand::rng();
        if w.use_randomized_payloads {
            let random = (w.message_size as f64 * w.random_bytes_ratio) as usize;
            let pool = (0..w.randomized_payload_pool_size.max(1))
                .map(|_| {
                    let mut p = vec![0u8; w.message_size];
                    rng.fill_bytes(&mut p[..random.min(w.message_size)]);
                    p
                })
                .collect();
            return Ok(Payloads(pool));
        }
        let mut p = vec![0u8; w.message_size];
        rng.fill_bytes(&mut p);
        Ok(Payloads(vec![p]))
    }

    fn get(&self, n: u64) -> &[u8] {
        &self.0[(n % self.0.len() as u64) as usize]
    }
}

/// Message keys per OMB's key distributors.
struct Keys {
    distributor: KeyDistributor,
    pool: Arc<Vec<String>>,
    next: usize,
}

impl Keys {
    fn next(&mut self) -> Option<String> {
        let index = match self.distributor {
            KeyDistributor::NoKey => return None,
            KeyDistributor::KeyRoundRobin => {
                self.next = (self.next + 1) % self.pool.len();
                self.next
            }
            KeyDistributor::RandomNano => {
                let nanos = SystemTime::now()
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .map(|d| d.subsec_nanos())
                    .unwrap_or(0);
                nanos as usize % self.pool.len()
            }
        };
        self.pool.get(index).cloned()
    }
}

/// OMB's key pool: random 7-byte keys, base64url without padding.
fn key_pool() -> Vec<String> {
    use base64::Engine;
    let mut rng = rand::rng();
    (0..KEY_POOL)
        .map(|_| {
            let bytes: [u8; 7] = rng.random();
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
        })
        .collect()
}

/// The running producers and consumers of one workload.
pub struct Load {
    shared: Arc<Shared>,
    producers: Vec<JoinHandle<Result<ProducerRecord>>>,
    consumers: Vec<JoinHandle<()>>,
    /// (subscription name, topic index, its check).
    checks: Vec<(String, usize, Arc<Mutex<SubscriptionCheck>>)>,
    order_checked: bool,
    clients: Vec<Pulsar<TokioExecutor>>,
}

impl Load {
    /// Subscribes every consumer (so the subscriptions exist before the
    /// first send), then creates the producers; they send at the shared
    /// rate (none while it is 0).
    pub async fn start(
        w: &Workload,
        service_url: &str,
        topics: &[String],
        shared: Arc<Shared>,
    ) -> Result<Load> {
        let connect = ConnectArgs::new(service_url.to_string());
        let consumer_client = connect_with_outbound_queue(&connect, None).await?;
        let producer_client =
            connect_with_outbound_queue(&connect, Some(w.magnetar.max_pending_messages.max(100)))
                .await?;
        let mut load = Load {
            shared: shared.clone(),
            producers: Vec::new(),
            consumers: Vec::new(),
            checks: Vec::new(),
            order_checked: w.magnetar.subscription_type.keeps_partition_order(),
            clients: vec![consumer_client.clone(), producer_client.clone()],
        };
        let sub_type = crate::client::SubscriptionType::from(w.magnetar.subscription_type);
        let mut subscribing = Vec::new();
        for (t, topic) in topics.iter().enumerate() {
            for s in 0..w.subscriptions_per_topic {
                let name = format!("sub-{s:03}");
                let check = Arc::new(Mutex::new(SubscriptionCheck::default()));
                for c in 0..w.consumer_per_subscription {
                    subscribing.push((topic.as_str(), name.clone(), c, check.clone()));
                }
                load.checks.push((format!("{topic}/{name}"), t, check));
            }
        }
        let mut subscribed = futures::stream::iter(subscribing)
            .map(|(topic, name, c, check)| {
                let client = consumer_client.clone();
                async move {
                    let consumer: Consumer<Vec<u8>, TokioExecutor> = client
                        .consumer()
                        .with_topic(topic)
                        .with_subscription(name.as_str())
                        .with_subscription_type(sub_type.into())
                        .with_consumer_name(format!("{name}-consumer-{c:03}"))
                        .with_options(
                            ConsumerOptions::default()
                                .with_initial_position(StartPosition::Earliest.into()),
                        )
                        .build()
                        .await
                        .with_context(|| format!("subscribing {name} to {topic}"))?;
                    anyhow::Ok((consumer, check))
                }
            })
            .buffer_unordered(CREATE_CONCURRENCY);
        while let Some(subscribed) = subscribed.next().await {
            let (consumer, check) = subscribed?;
            load.consumers.push(tokio::spawn(consume(
                consumer,
                Acker::new(sub_type.acks_cumulatively()),
                check,
                shared.clone(),
            )));
        }
        let payloads = Arc::new(Payloads::for_workload(w)?);
        let pool = Arc::new(key_pool());
        let b = w.magnetar.batching;
        let total_producers = topics.len() as u32 * w.producers_per_topic;
        let creating = topics.iter().enumerate().flat_map(|(t, topic)| {
            (0..w.producers_per_topic)
                .map(move |p| (t, topic.as_str(), (t as u32) * w.producers_per_topic + p))
        });
        let mut created = futures::stream::iter(creating)
            .map(|(t, topic, id)| {
                let client = producer_client.clone();
                async move {
                    let producer = client
                        .producer()
                        .with_topic(topic)
                        .with_name(format!("bench-producer-{id:04}"))
                        .with_options(producer_options(
                            b.max_messages,
                            Some(b.max_bytes),
                            Duration::from_millis(b.max_delay_ms),
                        ))
                        .build()
                        .await
                        .with_context(|| format!("creating producer {id} on {topic}"))?;
                    anyhow::Ok((t, id, producer))
                }
            })
            .buffer_unordered(CREATE_CONCURRENCY);
        while let Some(created) = created.next().await {
            let (t, id, producer) = created?;
            let spec = ProducerSpec {
                id,
                topic: t,
                payloads: payloads.clone(),
                keys: Keys {
                    distributor: w.key_distributor,
                    pool: pool.clone(),
                    next: rand::rng().random_range(0..KEY_POOL),
                },
                max_pending: w.magnetar.max_pending_messages,
                phase: f64::from(id) / f64::from(total_producers.max(1)),
            };
            load.producers
                .push(tokio::spawn(produce(spec, producer, shared.clone())));
        }
        Ok(load)
    }

    /// Stops sending and waits for the receipts still pending; what each
    /// producer was told.
    pub async fn stop_producers(&mut self) -> Vec<ProducerRecord> {
        self.shared.stop_producers.send_replace(true);
        let mut records = Vec::new();
        // Together: each may wait up to the client's operation timeout.
        let done = futures::future::join_all(self.producers.drain(..)).await;
        for task in done {
            match task {
                Ok(Ok(record)) => records.push(record),
                Ok(Err(e)) => eprintln!("bench: a producer failed: {e:#}"),
                Err(e) => eprintln!("bench: a producer task failed: {e}"),
            }
        }
        records
    }

    /// Waits until every subscription has received as many distinct
    /// messages as its topic's producers were told are stored, or `timeout`.
    pub async fn drain(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            let done = self.checks.iter().all(|(_, topic, check)| {
                let unique = check.lock().map(|c| c.unique()).unwrap_or(0);
                unique >= self.shared.acked_for_topic(*topic)
            });
            if done {
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Subscriptions that have received at least one message, and all.
    pub fn subscriptions_reached(&self) -> (usize, usize) {
        let reached = self
            .checks
            .iter()
            .filter(|(_, _, c)| c.lock().map(|c| c.unique() > 0).unwrap_or(false))
            .count();
        (reached, self.checks.len())
    }

    /// Stops the consumers and judges each subscription against `records`.
    pub async fn finish(mut self, records: &[ProducerRecord]) -> Vec<SubscriptionVerdict> {
        self.shared.stop_consumers.send_replace(true);
        let aborts: Vec<_> = self.consumers.iter().map(|t| t.abort_handle()).collect();
        let all = futures::future::join_all(self.consumers.drain(..));
        if tokio::time::timeout(2 * CLOSE_TIMEOUT, all).await.is_err() {
            for a in aborts {
                a.abort();
            }
        }
        let by_topic: HashMap<usize, Vec<(u32, &ProducerRecord)>> =
            records.iter().fold(HashMap::new(), |mut map, r| {
                map.entry(r.topic).or_default().push((r.producer, r));
                map
            });
        let verdicts = self
            .checks
            .iter()
            .map(|(name, topic, check)| {
                let producers = by_topic.get(topic).map(Vec::as_slice).unwrap_or(&[]);
                match check.lock() {
                    Ok(c) => c.verdict(name, producers, self.order_checked),
                    Err(_) => SubscriptionCheck::default().verdict(name, producers, false),
                }
            })
            .collect();
        self.clients.clear();
        verdicts
    }
}

struct ProducerSpec {
    /// Unique over the whole run; the headers carry it.
    id: u32,
    topic: usize,
    payloads: Arc<Payloads>,
    keys: Keys,
    max_pending: usize,
    /// Where in one message interval this producer's schedule starts: the
    /// producers' sends are spread evenly instead of falling due together.
    phase: f64,
}

/// A send awaiting its receipt.
struct Pending {
    sequence: u64,
    intended: Instant,
    sent_at: Instant,
    receipt: SendFuture,
    _window: OwnedSemaphorePermit,
}

/// One producer: sends each message when the schedule says, at most
/// `max_pending` awaiting receipts, until told to stop.
async fn produce(
    mut spec: ProducerSpec,
    mut producer: Producer<TokioExecutor>,
    shared: Arc<Shared>,
) -> Result<ProducerRecord> {
    let delay = shared.latencies.publish_delay.add();
    let (tx, rx) = mpsc::unbounded_channel::<Pending>();
    let receipts = tokio::spawn(await_receipts(rx, spec.topic, shared.clone()));
    let window = Arc::new(Semaphore::new(spec.max_pending));
    let mut stop = shared.stop_producers.subscribe();
    let mut epoch = u64::MAX;
    let mut schedule = None;
    let mut start = Instant::now();
    let mut due = 0u64;
    let mut sequence = 0u64;
    let mut failed = 0u64;
    while !*stop.borrow() {
        let (current, rate) = shared.per_producer_rate();
        if current != epoch {
            epoch = current;
            schedule = Schedule::new(rate);
            start =
                Instant::now() + schedule.map_or(Duration::ZERO, |s| s.phase_offset(spec.phase));
            due = 0;
        }
        let Some(s) = schedule else {
            // A rate of 0 sends nothing until it changes.
            tokio::select! {
                _ = stop.changed() => {}
                _ = tokio::time::sleep(Duration::from_millis(50)) => {}
            }
            continue;
        };
        let intended = start + s.send_time(due);
        let now = Instant::now();
        if intended > now {
            // Short naps, so that a rate change or the stop is noticed.
            let nap = intended.min(now + Duration::from_millis(50));
            tokio::select! {
                _ = stop.changed() => {}
                _ = tokio::time::sleep_until(nap.into()) => {}
            }
            continue;
        }
        let permit = tokio::select! {
            permit = window.clone().acquire_owned() => permit?,
            _ = stop.changed() => break,
        };
        let mut payload = spec.payloads.get(sequence).to_vec();
        let sent_at = Instant::now();
        Header {
            producer: spec.id,
            sequence,
            intended_micros: shared.unix_micros_at(intended),
            sent_micros: shared.unix_micros_at(sent_at),
        }
        .write(&mut payload);
        let message = Message {
            payload,
            partition_key: spec.keys.next(),
            ..Default::default()
        };
        record(&delay, (sent_at - intended).as_micros() as u64, &shared);
        match producer.send_non_blocking(message).await {
            Ok(receipt) => {
                let pending = Pending {
                    sequence,
                    intended,
                    sent_at,
                    receipt,
                    _window: permit,
                };
                if tx.send(pending).is_err() {
                    break;
                }
            }
            Err(e) => {
                failed += 1;
                if shared
                    .counters
                    .publish_errors
                    .fetch_add(1, Ordering::Relaxed)
                    == 0
                {
                    eprintln!("bench: first failed send: {e}");
                }
            }
        }
        sequence += 1;
        due += 1;
    }
    drop(tx);
    let (acknowledged, receipt_failures) = receipts.await?;
    if tokio::time::timeout(CLOSE_TIMEOUT, producer.close())
        .await
        .is_err()
    {
        eprintln!("bench: a producer did not close within {CLOSE_TIMEOUT:?}");
    }
    Ok(ProducerRecord {
        producer: spec.id,
        topic: spec.topic,
        acknowledged,
        sent: sequence,
        failed: failed + receipt_failures,
    })
}

fn record(recorder: &Mutex<LatencyRecorder>, micros: u64, shared: &Shared) {
    if let Ok(mut r) = recorder.lock() {
        r.record_n(micros, 1, shared.measuring());
    }
}

/// Receipts of one producer, as they come (a partitioned producer's
/// partitions answer independently, so none waits behind a slower one).
async fn await_receipts(
    mut pending: mpsc::UnboundedReceiver<Pending>,
    topic: usize,
    shared: Arc<Shared>,
) -> (super::verify::SequenceSet, u64) {
    let publish = shared.latencies.publish.add();
    let from_intended = shared.latencies.publish_from_intended.add();
    let mut acknowledged = super::verify::SequenceSet::default();
    let mut failed = 0u64;
    let mut inflight = FuturesUnordered::new();
    let mut open = true;
    loop {
        tokio::select! {
            next = pending.recv(), if open => match next {
                Some(p) => inflight.push(async move {
                    let result = p.receipt.await;
                    (p.sequence, p.intended, p.sent_at, p._window, result)
                }),
                None => open = false,
            },
            Some((sequence, intended, sent_at, permit, result)) = inflight.next(), if !inflight.is_empty() => {
                let now = Instant::now();
                match result {
                    Ok(_) => {
                        let c = &shared.counters;
                        c.published.fetch_add(1, Ordering::Relaxed);
                        c.published_bytes.fetch_add(shared.message_size, Ordering::Relaxed);
                        if let Some(a) = shared.acked_per_topic.get(topic) {
                            a.fetch_add(1, Ordering::Relaxed);
                        }
                        acknowledged.insert(sequence);
                        record(&publish, (now - sent_at).as_micros() as u64, &shared);
                        record(&from_intended, (now - intended).as_micros() as u64, &shared);
                    }
                    Err(e) => {
                        failed += 1;
                        if shared.counters.publish_errors.fetch_add(1, Ordering::Relaxed) == 0 {
                            eprintln!("bench: first failed receipt: {e}");
                        }
                    }
                }
                drop(permit);
            }
            else => break,
        }
    }
    (acknowledged, failed)
}

/// One consumer: receive, verify, measure, acknowledge, until told to stop;
/// while paused it takes nothing (the broker keeps the backlog).
async fn consume(
    mut consumer: Consumer<Vec<u8>, TokioExecutor>,
    mut acker: Acker,
    check: Arc<Mutex<SubscriptionCheck>>,
    shared: Arc<Shared>,
) {
    let end_to_end = shared.latencies.end_to_end.add();
    let mut stop = shared.stop_consumers.subscribe();
    let mut paused = shared.paused.subscribe();
    let mut errors = 0u64;
    loop {
        if *paused.borrow() {
            tokio::select! {
                _ = paused.wait_for(|p| !*p) => {}
                _ = stop.wait_for(|s| *s) => break,
            }
        }
        let next = tokio::select! {
            biased;
            _ = stop.wait_for(|s| *s) => break,
            _ = paused.wait_for(|p| *p) => continue,
            next = consumer.try_next() => next,
        };
        let message = match next {
            Ok(Some(m)) => m,
            Ok(None) => {
                eprintln!("bench: a consumer's stream ended");
                break;
            }
            Err(e) => {
                errors += 1;
                if errors == 1 {
                    eprintln!("bench: a consumer could not receive: {e}");
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let header = Header::read(&message.payload.data);
        if let Some(h) = header {
            let micros = shared.now_micros().saturating_sub(h.sent_micros);
            record(&end_to_end, micros, &shared);
        }
        if let Ok(mut c) = check.lock() {
            c.received(partition_of(&message.topic), header);
        }
        let counters = &shared.counters;
        counters.received.fetch_add(1, Ordering::Relaxed);
        counters
            .received_bytes
            .fetch_add(message.payload.data.len() as u64, Ordering::Relaxed);
        if let Err(e) = acker.received(&mut consumer, &message).await {
            // The message comes again (a duplicate), which verification counts.
            errors += 1;
            if errors == 1 {
                eprintln!("bench: an acknowledgement failed: {e:#}");
            }
        }
    }
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, async {
        let _ = acker.flush(&mut consumer).await;
        let _ = consumer.close().await;
    })
    .await;
}

/// Creates the durable `subscription` on `topic` (at its start) by
/// subscribing once; the subscription outlives the consumer.
pub async fn subscribe(service_url: &str, topic: &str, subscription: &str) -> Result<()> {
    let client =
        connect_with_outbound_queue(&ConnectArgs::new(service_url.to_string()), None).await?;
    let mut consumer: Consumer<Vec<u8>, TokioExecutor> = client
        .consumer()
        .with_topic(topic)
        .with_subscription(subscription)
        .with_options(
            ConsumerOptions::default().with_initial_position(StartPosition::Earliest.into()),
        )
        .build()
        .await
        .with_context(|| format!("subscribing {subscription} to {topic}"))?;
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, consumer.close()).await;
    Ok(())
}

/// Fills `topic` with at least `bytes` of `message_size`-byte messages as
/// fast as the service takes them; returns the messages acknowledged.
pub async fn fill(service_url: &str, topic: &str, bytes: u64, message_size: usize) -> Result<u64> {
    let client =
        connect_with_outbound_queue(&ConnectArgs::new(service_url.to_string()), Some(1000)).await?;
    let mut producer = client
        .producer()
        .with_topic(topic)
        .with_options(producer_options(
            1000,
            Some(131_072),
            Duration::from_millis(1),
        ))
        .build()
        .await
        .with_context(|| format!("creating a producer on {topic}"))?;
    let mut payload = vec![0u8; message_size];
    rand::rng().fill_bytes(&mut payload);
    let target = bytes.div_ceil(message_size.max(1) as u64);
    let window = Arc::new(Semaphore::new(2000));
    let acked = Arc::new(AtomicU64::new(0));
    let mut receipts = FuturesUnordered::new();
    let mut sent = 0u64;
    while acked.load(Ordering::Relaxed) < target {
        if sent < target {
            let permit = window.clone().acquire_owned().await?;
            let receipt = producer
                .send_non_blocking(Message {
                    payload: payload.clone(),
                    ..Default::default()
                })
                .await
                .with_context(|| format!("filling {topic}"))?;
            let acked = acked.clone();
            receipts.push(async move {
                let r = receipt.await;
                if r.is_ok() {
                    acked.fetch_add(1, Ordering::Relaxed);
                }
                drop(permit);
                r
            });
            sent += 1;
        }
        // Reap what has completed without waiting for the rest.
        while let Some(Some(result)) = futures::FutureExt::now_or_never(receipts.next()) {
            result.with_context(|| format!("filling {topic}"))?;
        }
        if sent >= target {
            match receipts.next().await {
                Some(result) => {
                    result.with_context(|| format!("filling {topic}"))?;
                }
                None => break,
            }
        }
    }
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, producer.close()).await;
    Ok(acked.load(Ordering::Relaxed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_robin_keys_cycle_through_the_pool() {
        let mut keys = Keys {
            distributor: KeyDistributor::KeyRoundRobin,
            pool: Arc::new(vec!["a".into(), "b".into(), "c".into()]),
            next: 0,
        };
        let got: Vec<_> = (0..4).filter_map(|_| keys.next()).collect();
        assert_eq!(got, ["b", "c", "a", "b"]);
        keys.distributor = KeyDistributor::NoKey;
        assert_eq!(keys.next(), None);
        keys.distributor = KeyDistributor::RandomNano;
        assert!(keys.next().is_some());
    }

    #[test]
    fn omb_keys_are_seven_random_bytes() {
        let pool = key_pool();
        assert_eq!(pool.len(), KEY_POOL);
        assert!(pool.iter().all(|k| k.len() == 10), "7 bytes in base64url");
    }

    #[test]
    fn randomized_payloads_are_partly_random() {
        let w: Workload = serde_norway::from_str(
            "name: x\ntopics: 1\npartitionsPerTopic: 1\nmessageSize: 100\n\
             useRandomizedPayloads: true\nrandomBytesRatio: 0.5\nrandomizedPayloadPoolSize: 3\n\
             subscriptionsPerTopic: 1\nconsumerPerSubscription: 1\nproducersPerTopic: 1\n\
             producerRate: 10\ntestDurationMinutes: 1\n",
        )
        .expect("parses");
        let p = Payloads::for_workload(&w).expect("payloads");
        assert_eq!(p.0.len(), 3);
        assert!(p.0.iter().all(|x| x.len() == 100));
        assert!(p.0.iter().all(|x| x[50..].iter().all(|b| *b == 0)));
        assert_eq!(p.get(4), p.0[1].as_slice());
    }

    #[test]
    fn the_rate_is_split_over_producers_and_changes_bump_the_epoch() {
        let shared = Shared::new(1, 4, 100, 1000.0);
        assert_eq!(shared.per_producer_rate(), (0, 250.0));
        shared.set_rate(2000.0);
        assert_eq!(shared.per_producer_rate(), (1, 500.0));
    }
}
