//! A follower replica: copies one partition's batches from its leader into
//! this broker's copy of the log, verbatim (`Log::append_raw`), making each
//! fetch durable before the next fetch tells the leader it holds it.
//!
//! Before fetching in a leader's epoch the follower asks the leader where
//! its own latest epoch ended (KIP-101/279) and truncates whatever it holds
//! past that point: a tail written by a deposed leader never survives.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use magnetar_log::Log;
use magnetar_proto::replication::{
    replication_client::ReplicationClient, EpochRequest, FetchRequest, ReplicaError,
};
use prometheus::IntCounter;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

/// A replication stub presenting this broker's credentials.
type FetchClient = ReplicationClient<InterceptedService<Channel, magnetar_auth::PeerCredentials>>;

use super::{FlushPolicy, LocalLogConfig};
use crate::storage::StorageError;

/// How long a follower's fetch waits at the leader for new batches.
const FETCH_WAIT: Duration = Duration::from_millis(500);
const FETCH_BYTES: u32 = 4 << 20;
/// Pause after a failed request before the next try.
const RETRY_PAUSE: Duration = Duration::from_millis(200);
/// Largest response a follower accepts.
const MAX_RESPONSE: usize = 32 << 20;

/// The partition a follower copies, and from whom.
#[derive(Clone, Debug)]
pub struct FollowTarget {
    pub key: String,
    pub log_id: u64,
    pub epoch: u32,
    pub leader_url: String,
    pub me: String,
    pub dir: PathBuf,
    /// The leader's flush policy: a follower syncs (or not) alike.
    pub flush: FlushPolicy,
}

/// A running follower.
pub struct Follower {
    pub target: FollowTarget,
    stop: watch::Sender<bool>,
    task: Mutex<Option<JoinHandle<()>>>,
    progress: Arc<Progress>,
}

/// What a follower's task shares with its handle.
struct Progress {
    /// The leader's high watermark as of the last fetch.
    high_watermark: AtomicU64,
    /// The end of this copy, as of the last fetch.
    log_end: AtomicU64,
    /// Bytes per second this copy may fetch; 0 is unthrottled.
    throttle: AtomicU64,
    /// Bytes fetched, over every follower of this broker.
    fetched_bytes: IntCounter,
    shared_throttle: Arc<Throttle>,
}

impl Follower {
    pub fn start(
        target: FollowTarget,
        config: LocalLogConfig,
        throttle: Option<u64>,
        (fetched_bytes, shared_throttle): (IntCounter, Arc<Throttle>),
    ) -> Arc<Follower> {
        let (stop, stopped) = watch::channel(false);
        let progress = Arc::new(Progress {
            high_watermark: AtomicU64::new(0),
            log_end: AtomicU64::new(0),
            throttle: AtomicU64::new(throttle.unwrap_or(0)),
            fetched_bytes,
            shared_throttle,
        });
        let task = tokio::spawn(follow(target.clone(), config, stopped, progress.clone()));
        Arc::new(Follower {
            target,
            stop,
            task: Mutex::new(Some(task)),
            progress,
        })
    }

    /// Kafka's `follower.replication.throttled.rate` for this copy, applied
    /// from the next fetch on.
    pub fn set_throttle(&self, bytes_per_sec: Option<u64>) {
        self.progress
            .throttle
            .store(bytes_per_sec.unwrap_or(0), Ordering::Release);
    }

    pub fn high_watermark(&self) -> u64 {
        self.progress.high_watermark.load(Ordering::Acquire)
    }

    pub fn log_end(&self) -> u64 {
        self.progress.log_end.load(Ordering::Acquire)
    }

    /// Stops fetching and waits until the copy's files are closed.
    pub async fn stop(&self) {
        let _ = self.stop.send(true);
        let task = self.task.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(task) = task {
            let _ = task.await;
        }
    }
}

fn backend(e: impl std::fmt::Display) -> StorageError {
    StorageError::Backend(format!("follower: {e}"))
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, magnetar_log::LogError> + Send + 'static,
) -> Result<T, StorageError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(backend)?
        .map_err(backend)
}

async fn follow(
    target: FollowTarget,
    config: LocalLogConfig,
    mut stopped: watch::Receiver<bool>,
    progress: Arc<Progress>,
) {
    let run = async {
        let dir = target.dir.clone();
        let segment = config.segment.clone();
        let log = Arc::new(blocking(move || Log::open(&dir, segment)).await?);
        progress
            .log_end
            .store(log.log_end_offset(), Ordering::Release);
        let mut endpoint = Channel::from_shared(target.leader_url.clone()).map_err(backend)?;
        if let (Some(tls), true) = (&config.tls, target.leader_url.starts_with("https://")) {
            endpoint = endpoint.tls_config(tls.clone()).map_err(backend)?;
        }
        let channel = endpoint
            .connect_timeout(Duration::from_secs(2))
            .tcp_nodelay(true)
            .connect_lazy();
        let mut client = ReplicationClient::with_interceptor(channel, config.credentials.clone())
            .max_decoding_message_size(MAX_RESPONSE);
        tracing::info!(partition = %target.key, epoch = target.epoch, leader = %target.leader_url, end = log.log_end_offset(), "following");
        while !truncate_divergent_tail(&target, &mut client, &log).await? {
            tokio::time::sleep(RETRY_PAUSE).await;
        }
        let fsync = target.flush == FlushPolicy::Fsync;
        loop {
            let fetch_offset = log.log_end_offset();
            progress.log_end.store(fetch_offset, Ordering::Release);
            let throttle = progress.throttle.load(Ordering::Acquire);
            progress.shared_throttle.before_fetch(throttle).await;
            let request = FetchRequest {
                partition: target.key.clone(),
                log_id: target.log_id,
                replica_id: target.me.clone(),
                leader_epoch: target.epoch,
                fetch_offset,
                max_bytes: fetch_bytes(throttle),
                max_wait_ms: FETCH_WAIT.as_millis() as u32,
            };
            let response = match client.fetch(request).await {
                Ok(r) => r.into_inner(),
                Err(status) => {
                    tracing::debug!(partition = %target.key, %status, "fetch failed");
                    tokio::time::sleep(RETRY_PAUSE).await;
                    continue;
                }
            };
            match response.error() {
                ReplicaError::None => {}
                ReplicaError::OutOfRange if fetch_offset < response.log_start_offset => {
                    // Trimmed at the leader: start over at its log start.
                    let start = response.log_start_offset;
                    let log = log.clone();
                    blocking(move || log.truncate_fully_and_start_at(start)).await?;
                    continue;
                }
                ReplicaError::OutOfRange => {
                    let end = response.log_end_offset;
                    let log = log.clone();
                    blocking(move || log.truncate_to(end)).await?;
                    continue;
                }
                error => {
                    // A new epoch or leader: the replica manager restarts
                    // this follower from the record.
                    tracing::debug!(partition = %target.key, ?error, message = %response.message, "fetch refused");
                    tokio::time::sleep(RETRY_PAUSE).await;
                    continue;
                }
            }
            if !response.records.is_empty() {
                let log = log.clone();
                let records = response.records;
                let fetched = records.len() as u64;
                progress.fetched_bytes.inc_by(fetched);
                progress
                    .shared_throttle
                    .after_fetch(fetched, throttle)
                    .await;
                blocking(move || {
                    log.append_raw(&records)?;
                    if fsync {
                        log.flush()?;
                    }
                    Ok(())
                })
                .await?;
            }
            progress
                .high_watermark
                .fetch_max(response.high_watermark, Ordering::AcqRel);
        }
        #[allow(unreachable_code)]
        Ok::<(), StorageError>(())
    };
    tokio::select! {
        result = run => {
            if let Err(e) = result {
                tracing::error!(partition = %target.key, error = %e, "follower stopped");
            }
        }
        _ = stopped.wait_for(|s| *s) => {}
    }
}

/// What one fetch may ask for under `throttle` bytes/s (0: unthrottled):
/// about a quarter second's worth, so the copy's rate stays smooth.
fn fetch_bytes(throttle: u64) -> u32 {
    if throttle == 0 {
        return FETCH_BYTES;
    }
    (throttle / 4).clamp(64 << 10, u64::from(FETCH_BYTES)) as u32
}

/// Kafka's `follower.replication.throttled.rate`, for one broker: the
/// throttled followers of a broker share it, so that their fetches bring
/// at most that many bytes per second together. Each fetch's bytes push
/// back the earliest start of the next throttled fetch.
#[derive(Default)]
pub struct Throttle {
    next_fetch: tokio::sync::Mutex<Option<tokio::time::Instant>>,
}

impl Throttle {
    /// Waits until a fetch under `rate` bytes/s may start.
    async fn before_fetch(&self, rate: u64) {
        if rate == 0 {
            return;
        }
        let next = self.next_fetch.lock().await;
        if let Some(at) = *next {
            // Holding the lock: throttled fetches take turns.
            tokio::time::sleep_until(at).await;
        }
    }

    /// Accounts for `bytes` fetched under `rate` bytes/s.
    async fn after_fetch(&self, bytes: u64, rate: u64) {
        if rate == 0 {
            return;
        }
        let mut next = self.next_fetch.lock().await;
        *next = Some(next_fetch_start(
            *next,
            tokio::time::Instant::now(),
            bytes,
            rate,
        ));
    }
}

/// When the next throttled fetch may start, after one that brought `bytes`
/// at `now`: the budget they used is spent from the later of `now` and the
/// earliest start already owed, so idle time is not saved up.
fn next_fetch_start<T>(owed: Option<T>, now: T, bytes: u64, rate: u64) -> T
where
    T: Ord + Copy + std::ops::Add<Duration, Output = T>,
{
    let from = owed.map_or(now, |at| at.max(now));
    from + Duration::from_secs_f64(bytes as f64 / rate.max(1) as f64)
}

/// KIP-279: asks the leader where this copy's latest epoch ended there and
/// cuts the copy back to that point. False when the leader could not be
/// asked (try again).
async fn truncate_divergent_tail(
    target: &FollowTarget,
    client: &mut FetchClient,
    log: &Arc<Log>,
) -> Result<bool, StorageError> {
    let Some(latest) = log.latest_epoch() else {
        return Ok(true);
    };
    let request = EpochRequest {
        partition: target.key.clone(),
        log_id: target.log_id,
        leader_epoch: target.epoch,
        epoch: latest,
    };
    let response = match client.offset_for_leader_epoch(request).await {
        Ok(r) => r.into_inner(),
        Err(status) => {
            tracing::debug!(partition = %target.key, %status, "epoch request failed");
            return Ok(false);
        }
    };
    if response.error() != ReplicaError::None {
        tracing::debug!(partition = %target.key, message = %response.message, "epoch request refused");
        return Ok(false);
    }
    let end = log.log_end_offset();
    let cut = if response.known {
        // Where the leader's epoch ended, but no further than where ours
        // did (the leader may know an epoch we never saw the end of).
        let ours = log
            .end_offset_for_epoch(response.epoch)
            .map_or(0, |(_, o)| o);
        response.end_offset.min(ours).min(end)
    } else {
        0
    };
    if cut < end {
        tracing::warn!(partition = %target.key, from = end, to = cut, "truncating a divergent tail");
        let log = log.clone();
        if cut == 0 {
            blocking(move || log.truncate_fully_and_start_at(0)).await?;
        } else {
            blocking(move || log.truncate_to(cut)).await?;
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttled_fetches_average_at_most_the_rate() {
        let t0 = std::time::Instant::now();
        let rate = 1_000_000;
        // Back to back: each 250 kB fetch owes a quarter second.
        let mut owed = None;
        for _ in 0..4 {
            let now = owed.unwrap_or(t0);
            owed = Some(next_fetch_start(owed, now, 250_000, rate));
        }
        assert_eq!(owed, Some(t0 + Duration::from_secs(1)));
        // After an idle spell the budget starts from now, not from before.
        let later = t0 + Duration::from_secs(10);
        assert_eq!(
            next_fetch_start(owed, later, 500_000, rate),
            later + Duration::from_millis(500)
        );
    }

    #[test]
    fn throttled_fetches_ask_for_a_quarter_second_of_bytes() {
        assert_eq!(fetch_bytes(0), FETCH_BYTES);
        assert_eq!(fetch_bytes(4 << 20), 1 << 20);
        assert_eq!(fetch_bytes(1000), 64 << 10);
        assert_eq!(fetch_bytes(u64::MAX), FETCH_BYTES);
    }
}
