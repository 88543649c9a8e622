//! Conformance suite for [`PartitionLog`] implementations: one async
//! function per property, written once against the traits and run against
//! every architecture (as `magnetar_metadata::conformance` is for metadata
//! stores). An implementation is correct when [`run_all`] passes.
//!
//! Each property opens logs under a name of its own through a [`Harness`],
//! which gives stores as separate broker processes would have them over
//! the same storage: a store opening a log another one has open takes it
//! over (fencing the old owner), as a new owner does after failover.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

use super::{
    position_at_publish_time, Entry, LogName, LogPolicies, LogStore, PartitionLog, Position,
    RetentionLimits, StorageError,
};

/// Bound on one property, so a hung implementation fails instead of hanging.
const PROPERTY_DEADLINE: Duration = Duration::from_secs(120);
/// How long a change notification may take to arrive.
const NOTIFY_DEADLINE: Duration = Duration::from_secs(10);

/// What the suite needs to know about the implementation under test.
#[async_trait]
pub trait Harness: Send + Sync {
    /// A fresh store, as a new broker process over the shared storage
    /// would have it (the same metadata, the same bookies or data
    /// directory).
    async fn store(&self) -> Result<Arc<dyn LogStore>, StorageError>;
    /// Entries per segment (ledger) at which the stores roll over; small,
    /// so properties cross segment boundaries.
    fn entries_per_segment(&self) -> u64;
}

/// Why a property failed.
#[derive(Debug)]
pub struct Failure(pub String);

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<StorageError> for Failure {
    fn from(e: StorageError) -> Self {
        Failure(format!("unexpected storage error: {e}"))
    }
}

pub type Outcome = Result<(), Failure>;

/// Every property that failed in a [`run_all`].
#[derive(Debug)]
pub struct SuiteFailure(pub Vec<(&'static str, Failure)>);

impl fmt::Display for SuiteFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{} propert(ies) failed:", self.0.len())?;
        for (name, failure) in &self.0 {
            writeln!(f, "  {name}: {failure}")?;
        }
        Ok(())
    }
}

macro_rules! ensure {
    ($cond:expr, $($arg:tt)+) => {
        if !$cond {
            return Err(Failure(format!($($arg)+)));
        }
    };
}

type Property = for<'a> fn(&'a dyn Harness) -> Pin<Box<dyn Future<Output = Outcome> + Send + 'a>>;

/// Every property, by name.
pub fn properties() -> Vec<(&'static str, Property)> {
    vec![
        ("appends_are_ordered_by_call", |h| {
            Box::pin(appends_are_ordered_by_call(h))
        }),
        ("confirmed_entries_are_readable", |h| {
            Box::pin(confirmed_entries_are_readable(h))
        }),
        ("reads_cross_segment_boundaries", |h| {
            Box::pin(reads_cross_segment_boundaries(h))
        }),
        ("readers_are_woken_by_appends", |h| {
            Box::pin(readers_are_woken_by_appends(h))
        }),
        ("trim_drops_only_consumed_segments", |h| {
            Box::pin(trim_drops_only_consumed_segments(h))
        }),
        ("takeover_fences_the_old_owner", |h| {
            Box::pin(takeover_fences_the_old_owner(h))
        }),
        ("crashed_owner_loses_nothing_confirmed", |h| {
            Box::pin(crashed_owner_loses_nothing_confirmed(h))
        }),
        ("closed_log_refuses_appends_and_keeps_entries", |h| {
            Box::pin(closed_log_refuses_appends_and_keeps_entries(h))
        }),
        ("positions_by_publish_time", |h| {
            Box::pin(positions_by_publish_time(h))
        }),
        ("stats_and_backlog_count_what_is_stored", |h| {
            Box::pin(stats_and_backlog_count_what_is_stored(h))
        }),
        ("deleted_log_is_gone", |h| Box::pin(deleted_log_is_gone(h))),
    ]
}

/// Runs every property (one after another), each bounded in time.
pub async fn run_all(harness: &dyn Harness) -> Result<(), SuiteFailure> {
    let mut failed = Vec::new();
    for (name, property) in properties() {
        let outcome = match tokio::time::timeout(PROPERTY_DEADLINE, property(harness)).await {
            Ok(outcome) => outcome,
            Err(_) => Err(Failure(format!("did not finish in {PROPERTY_DEADLINE:?}"))),
        };
        match outcome {
            Ok(()) => tracing::info!(property = name, "passed"),
            Err(failure) => {
                tracing::error!(property = name, %failure, "failed");
                failed.push((name, failure));
            }
        }
    }
    if failed.is_empty() {
        Ok(())
    } else {
        Err(SuiteFailure(failed))
    }
}

fn name(property: &str) -> LogName {
    LogName::new("conformance", "logs", property)
}

/// Entry `i`: its index and a publish time (10 ms apart), so properties
/// can check identity and search by time.
fn entry(i: u64) -> Bytes {
    let mut data = Vec::with_capacity(24);
    data.extend_from_slice(&i.to_be_bytes());
    data.extend_from_slice(&publish_time_of_index(i).to_be_bytes());
    data.extend_from_slice(b"payload!");
    Bytes::from(data)
}

fn publish_time_of_index(i: u64) -> u64 {
    1_000_000 + i * 10
}

fn index_of(data: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(data.get(..8)?.try_into().ok()?))
}

fn publish_time(data: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(data.get(8..16)?.try_into().ok()?))
}

/// Appends `from..to`, all called before any is awaited, and returns the
/// confirmed positions in call order.
async fn append_all(
    log: &Arc<dyn PartitionLog>,
    from: u64,
    to: u64,
) -> Result<Vec<Position>, Failure> {
    let pending: Vec<_> = (from..to).map(|i| log.clone().append(entry(i))).collect();
    let mut positions = Vec::with_capacity(pending.len());
    for (i, confirmed) in (from..).zip(pending) {
        positions.push(
            confirmed
                .await
                .map_err(|e| Failure(format!("append of entry {i} failed: {e}")))?,
        );
    }
    Ok(positions)
}

/// Reads everything readable after `after`, following the log's order.
async fn read_all(log: &dyn PartitionLog, mut after: Position) -> Result<Vec<Entry>, Failure> {
    let mut entries = Vec::new();
    loop {
        let batch = log.read_entries(after, 7).await?;
        let Some(last) = batch.last() else {
            return Ok(entries);
        };
        after = last.position;
        entries.extend(batch);
    }
}

/// Checks that `entries` are entries `from..to` in order, at `positions`.
fn check_entries(entries: &[Entry], from: u64, positions: &[Position]) -> Outcome {
    ensure!(
        entries.len() == positions.len(),
        "read {} entries, expected {}",
        entries.len(),
        positions.len()
    );
    for ((i, e), position) in (from..).zip(entries).zip(positions) {
        ensure!(
            e.position == *position,
            "entry {i} read at {}, confirmed at {position}",
            e.position
        );
        ensure!(
            e.data == entry(i),
            "entry {i} at {} has other bytes ({:?})",
            e.position,
            index_of(&e.data)
        );
    }
    Ok(())
}

fn strictly_increasing(positions: &[Position]) -> Outcome {
    for pair in positions.windows(2) {
        ensure!(
            pair[0] < pair[1],
            "positions out of order: {} then {}",
            pair[0],
            pair[1]
        );
    }
    Ok(())
}

/// Waits until the first `count` segments of `log` are closed.
async fn wait_for_closed_segments(log: &dyn PartitionLog, count: usize) -> Outcome {
    let deadline = tokio::time::Instant::now() + NOTIFY_DEADLINE;
    let mut changes = log.subscribe_changes();
    loop {
        let segments = log.stats().segments;
        if segments.len() > count && segments[..count].iter().all(|s| s.closed) {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(Failure(format!(
                "the first {count} segments did not close: {segments:?}"
            )));
        }
        // Woken by a change, or checked again shortly.
        let _ = tokio::time::timeout(Duration::from_millis(50), changes.changed()).await;
    }
}

async fn open(harness: &dyn Harness, property: &str) -> Result<Arc<dyn PartitionLog>, Failure> {
    let store = harness.store().await?;
    Ok(store.open(&name(property), &LogPolicies::default()).await?)
}

async fn appends_are_ordered_by_call(harness: &dyn Harness) -> Outcome {
    let log = open(harness, "ordered").await?;
    let n = harness.entries_per_segment() * 2 + 3;
    let positions = append_all(&log, 0, n).await?;
    strictly_increasing(&positions)?;
    let entries = read_all(log.as_ref(), log.first_position()).await?;
    check_entries(&entries, 0, &positions)?;
    log.close().await?;
    Ok(())
}

async fn confirmed_entries_are_readable(harness: &dyn Harness) -> Outcome {
    let log = open(harness, "read-after-confirm").await?;
    let empty_last = log.last_confirmed();
    ensure!(
        empty_last.entry_id < 0,
        "an empty log's last confirmed is {empty_last}"
    );
    ensure!(
        log.read_entries(log.first_position(), 10).await?.is_empty(),
        "an empty log returned entries"
    );
    for i in 0..(harness.entries_per_segment() + 2) {
        let position = log.clone().append(entry(i)).await?;
        ensure!(
            log.last_confirmed() >= position,
            "last confirmed {} is before the confirmed {position}",
            log.last_confirmed()
        );
        let before = log.previous_position(position);
        let read = log.read_entries(before, 1).await?;
        ensure!(
            read.first().map(|e| (e.position, &e.data)) == Some((position, &entry(i))),
            "entry {i} confirmed at {position} not read back after {before}: {:?}",
            read.first().map(|e| e.position)
        );
        ensure!(
            log.next_position(before) == Some(position),
            "next position after {before} is {:?}, not {position}",
            log.next_position(before)
        );
    }
    log.close().await?;
    Ok(())
}

async fn reads_cross_segment_boundaries(harness: &dyn Harness) -> Outcome {
    let log = open(harness, "boundaries").await?;
    let per = harness.entries_per_segment();
    let n = per * 3 + per / 2;
    let positions = append_all(&log, 0, n).await?;
    // Every position's predecessor leads back to it.
    for pair in positions.windows(2) {
        ensure!(
            log.previous_position(pair[1]) == pair[0],
            "position before {} is {}, expected {}",
            pair[1],
            log.previous_position(pair[1]),
            pair[0]
        );
        ensure!(
            log.next_position(pair[0]) == Some(pair[1]),
            "position after {} is {:?}, expected {}",
            pair[0],
            log.next_position(pair[0]),
            pair[1]
        );
    }
    // Reads from every position see the rest, in order.
    for start in [0, per - 1, per, per + 1, 2 * per, n - 1] {
        let after = log.previous_position(positions[start as usize]);
        let entries = read_all(log.as_ref(), after).await?;
        check_entries(&entries, start, &positions[start as usize..])?;
    }
    let runs: u64 = log.position_runs().iter().map(|r| r.count).sum();
    ensure!(runs == n, "position runs hold {runs} entries, expected {n}");
    log.close().await?;
    Ok(())
}

async fn readers_are_woken_by_appends(harness: &dyn Harness) -> Outcome {
    let log = open(harness, "wake").await?;
    let last = log.last_confirmed();
    let mut changes = log.subscribe_changes();
    changes.borrow_and_update();
    let writer = log.clone();
    let appended = tokio::spawn(async move { writer.append(entry(0)).await });
    tokio::time::timeout(NOTIFY_DEADLINE, changes.changed())
        .await
        .map_err(|_| Failure("no change notified after an append".into()))?
        .map_err(|_| Failure("change channel closed".into()))?;
    let position = appended
        .await
        .map_err(|e| Failure(format!("append task: {e}")))??;
    let read = log.read_entries(last, 10).await?;
    ensure!(
        read.iter().any(|e| e.position == position),
        "the appended entry at {position} is not readable after the notification"
    );
    log.close().await?;
    Ok(())
}

async fn trim_drops_only_consumed_segments(harness: &dyn Harness) -> Outcome {
    let log = open(harness, "trim").await?;
    // One at a time, so the log rolls at its own pace, until it has rolled
    // twice: a ledger rolls once its successor is created, which may take
    // more than a segment's worth of appends on a loaded machine.
    let at_least = harness.entries_per_segment() * 3;
    let mut positions = Vec::new();
    let mut n = 0;
    while n < at_least || log.stats().segments.len() < 3 {
        ensure!(
            n < at_least * 20,
            "{n} appends and still fewer than 3 segments: {:?}",
            log.stats().segments
        );
        positions.extend(append_all(&log, n, n + 1).await?);
        n += 1;
    }
    // Keeping everything trims no entry.
    log.trim_consumed(positions[(n - 1) as usize], &RetentionLimits::UNLIMITED)
        .await?;
    let all = read_all(log.as_ref(), log.first_position()).await?;
    check_entries(&all, 0, &positions)?;
    // Segments close in the background (a ledger is sealed after its
    // successor takes appends): trimming considers closed ones only.
    wait_for_closed_segments(log.as_ref(), 2).await?;
    let first = log.stats().segments[0].clone();
    let last_of_first = Position::new(first.id, first.first_entry + first.entries as i64 - 1);
    let consumed = positions
        .iter()
        .position(|p| *p == last_of_first)
        .ok_or_else(|| {
            Failure(format!(
                "the first segment ends at {last_of_first}, no entry's position"
            ))
        })?;
    // Consumed through the first segment and one entry into the second:
    // only the first may go.
    let slowest = positions[consumed + 1];
    let trimmed = log.trim_consumed(slowest, &RetentionLimits::NONE).await?;
    ensure!(
        trimmed == 1,
        "{trimmed} segments trimmed, only the first was consumed"
    );
    let left = read_all(log.as_ref(), log.first_position()).await?;
    check_entries(&left, consumed as u64 + 1, &positions[consumed + 1..])?;
    ensure!(
        log.entries_after(log.first_position()) == n - consumed as u64 - 1,
        "{} entries counted after trimming, {} left",
        log.entries_after(log.first_position()),
        n - consumed as u64 - 1
    );
    log.close().await?;
    Ok(())
}

async fn takeover_fences_the_old_owner(harness: &dyn Harness) -> Outcome {
    let old = open(harness, "fence").await?;
    let confirmed = append_all(&old, 0, 5).await?;
    let new = open(harness, "fence").await?;
    // Nothing the old owner appends after the takeover is confirmed.
    // (One that never resolves is not confirmed either.)
    let late: Vec<_> = (100..110).map(|i| old.clone().append(entry(i))).collect();
    if let Ok(results) =
        tokio::time::timeout(Duration::from_secs(30), futures::future::join_all(late)).await
    {
        if let Some(position) = results.into_iter().find_map(Result::ok) {
            return Err(Failure(format!(
                "the fenced owner had an entry confirmed at {position}"
            )));
        }
    }
    let entries = read_all(new.as_ref(), new.first_position()).await?;
    check_entries(&entries, 0, &confirmed)?;
    let next = append_all(&new, 5, 8).await?;
    ensure!(
        next[0] > confirmed[4],
        "the new owner appended at {} before the old owner's last {}",
        next[0],
        confirmed[4]
    );
    let entries = read_all(new.as_ref(), new.first_position()).await?;
    let mut all = confirmed.clone();
    all.extend(next);
    check_entries(&entries, 0, &all)?;
    new.close().await?;
    Ok(())
}

async fn crashed_owner_loses_nothing_confirmed(harness: &dyn Harness) -> Outcome {
    let crashed = open(harness, "crash").await?;
    let per = harness.entries_per_segment();
    let confirmed = append_all(&crashed, 0, per + 3).await?;
    // The owner vanishes without closing anything.
    drop(crashed);
    let next = open(harness, "crash").await?;
    let entries = read_all(next.as_ref(), next.first_position()).await?;
    check_entries(&entries, 0, &confirmed)?;
    let more = append_all(&next, per + 3, per + 6).await?;
    strictly_increasing(&[confirmed[confirmed.len() - 1], more[0]])?;
    next.close().await?;
    Ok(())
}

async fn closed_log_refuses_appends_and_keeps_entries(harness: &dyn Harness) -> Outcome {
    let log = open(harness, "close").await?;
    let confirmed = append_all(&log, 0, 4).await?;
    log.close().await?;
    match log.clone().append(entry(9)).await {
        Err(StorageError::Closed) => {}
        other => {
            return Err(Failure(format!(
                "append after close gave {other:?}, expected Closed"
            )))
        }
    }
    let reopened = open(harness, "close").await?;
    let entries = read_all(reopened.as_ref(), reopened.first_position()).await?;
    check_entries(&entries, 0, &confirmed)?;
    reopened.close().await?;
    Ok(())
}

async fn positions_by_publish_time(harness: &dyn Harness) -> Outcome {
    let log = open(harness, "by-time").await?;
    let n = harness.entries_per_segment() * 2 + 1;
    let positions = append_all(&log, 0, n).await?;
    for i in [0, 1, n / 2, n - 1] {
        let exact =
            position_at_publish_time(log.as_ref(), publish_time_of_index(i), publish_time).await?;
        ensure!(
            exact == positions[i as usize],
            "entry {i}'s publish time found {exact}, expected {}",
            positions[i as usize]
        );
        let between =
            position_at_publish_time(log.as_ref(), publish_time_of_index(i) - 5, publish_time)
                .await?;
        ensure!(
            between == positions[i as usize],
            "a time just before entry {i}'s found {between}"
        );
    }
    let early = position_at_publish_time(log.as_ref(), 0, publish_time).await?;
    ensure!(
        early == positions[0],
        "a time before all entries found {early}"
    );
    let late =
        position_at_publish_time(log.as_ref(), publish_time_of_index(n) + 1, publish_time).await?;
    ensure!(
        late > positions[(n - 1) as usize],
        "a time after every entry found {late}, not past the last entry"
    );
    log.close().await?;
    Ok(())
}

async fn stats_and_backlog_count_what_is_stored(harness: &dyn Harness) -> Outcome {
    let log = open(harness, "stats").await?;
    let per = harness.entries_per_segment();
    let n = per * 2 + 2;
    let positions = append_all(&log, 0, n).await?;
    let bytes: u64 = (0..n).map(|i| entry(i).len() as u64).sum();
    let stats = log.stats();
    ensure!(
        stats.entries == n,
        "stats count {} entries, expected {n}",
        stats.entries
    );
    ensure!(
        stats.size >= bytes,
        "stats count {} bytes, at least {bytes} were appended",
        stats.size
    );
    ensure!(
        stats.last_confirmed == positions[(n - 1) as usize],
        "stats' last confirmed is {}",
        stats.last_confirmed
    );
    let from_start = log.entries_after(log.first_position());
    ensure!(
        from_start == n,
        "{from_start} entries after the start, expected {n}"
    );
    let half = positions[(n / 2 - 1) as usize];
    let after_half = log.entries_after(half);
    ensure!(
        after_half == n - n / 2,
        "{after_half} entries after {half}, expected {}",
        n - n / 2
    );
    ensure!(
        log.bytes_after(log.last_confirmed()) == 0,
        "bytes after the last entry: {}",
        log.bytes_after(log.last_confirmed())
    );
    ensure!(
        log.bytes_after(log.first_position()) >= bytes,
        "bytes after the start {} < {bytes}",
        log.bytes_after(log.first_position())
    );
    let keep = log.mark_delete_leaving(bytes / 2);
    ensure!(
        keep <= log.last_confirmed() && log.bytes_after(keep) <= bytes / 2 + 64,
        "mark-delete leaving {} bytes is {keep}, which leaves {}",
        bytes / 2,
        log.bytes_after(keep)
    );
    log.close().await?;
    Ok(())
}

async fn deleted_log_is_gone(harness: &dyn Harness) -> Outcome {
    let store = harness.store().await?;
    let name = name("delete");
    let log = store.open(&name, &LogPolicies::default()).await?;
    append_all(&log, 0, 3).await?;
    ensure!(store.exists(&name).await?, "an open log does not exist");
    log.delete().await?;
    ensure!(!store.exists(&name).await?, "a deleted log still exists");
    ensure!(
        log.clone().append(entry(5)).await.is_err(),
        "a deleted log accepted an append"
    );
    // Created again, it starts empty and orders after its old self.
    ensure!(store.create(&name).await?, "could not create it again");
    let again = store.open(&name, &LogPolicies::default()).await?;
    let entries = read_all(again.as_ref(), again.first_position()).await?;
    ensure!(
        entries.is_empty(),
        "a log created again holds {} old entries",
        entries.len()
    );
    again.close().await?;
    ensure!(
        store.delete_stored(&name).await?,
        "delete_stored found no log"
    );
    ensure!(
        !store.delete_stored(&name).await?,
        "delete_stored deleted a log twice"
    );
    Ok(())
}
