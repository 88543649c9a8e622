//! Managed ledger: a topic's storage as a list of ledgers (Pulsar's
//! `ManagedLedgerImpl`). It appends entries to the current ledger, rolls over
//! to a new one by entry count, size or age, reads by position from its cache
//! or from bookies, on open recovers (fences and closes) any ledger a
//! previous owner left open, and deletes closed ledgers that every cursor has
//! passed once retention no longer keeps them (`trim`).
//!
//! It stores entries as opaque bytes and must never know what a message is.

mod cache;
mod delete;
mod error;
mod ledger_list;
mod log;
mod stats;
mod store;
mod trim;

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use magnetar_metadata::{MetadataStore, Version};
use tokio::sync::{oneshot, watch};

use crate::clock::now_ms;
use crate::ledger::{EntryId, LedgerClient, LedgerConfig, LedgerId, LedgerReader, LedgerWriter};
pub use cache::EntryCache;
pub use delete::delete_stored;
pub use error::ManagedLedgerError;
pub use ledger_list::{LedgerInfo, LedgerList, LedgerListStore};
pub use stats::{LedgerStats, StorageStats};
pub use store::LedgerLogStore;
pub use trim::ledgers_to_trim;

pub use crate::storage::{Entry, Position, RetentionLimits};

/// Rollover thresholds and replication of a topic's ledgers (Pulsar's
/// defaults: 50,000 entries, 2 GiB, 4 hours).
#[derive(Clone, Debug)]
pub struct ManagedLedgerConfig {
    pub ledger: LedgerConfig,
    pub max_entries_per_ledger: u64,
    pub max_ledger_bytes: u64,
    pub max_ledger_age: Duration,
    /// Recent entries in memory; clones of a config share one cache, so a
    /// broker's topics share one budget.
    pub cache: EntryCache,
}

impl Default for ManagedLedgerConfig {
    fn default() -> Self {
        ManagedLedgerConfig {
            ledger: LedgerConfig::default(),
            max_entries_per_ledger: 50_000,
            max_ledger_bytes: 2 << 30,
            max_ledger_age: Duration::from_secs(4 * 3600),
            cache: EntryCache::new(256 << 20),
        }
    }
}

type AppendResult = Result<Position, ManagedLedgerError>;

/// Reads of the ledger list a takeover tries before giving up on an owner
/// that keeps changing it.
const TAKEOVER_ATTEMPTS: u32 = 10;

/// The ledger being written.
struct CurrentLedger {
    writer: LedgerWriter,
    id: LedgerId,
    next_entry: EntryId,
    bytes: u64,
    created: Instant,
}

struct State {
    list: LedgerList,
    version: Version,
    current: Option<CurrentLedger>,
    /// A rollover (or failure replacement) is under way.
    rolling: bool,
    /// Appends that arrived while no ledger was writable.
    queued: VecDeque<(Bytes, oneshot::Sender<AppendResult>)>,
    /// The current ledger failed and is being replaced. Appends fail
    /// meanwhile instead of queueing: earlier appends of the same producers
    /// failed with the ledger, and a later one written first to the
    /// replacement would come before their resends.
    replacing_failed: bool,
    /// Last confirmed entry of each ledger that is still open in the list.
    open_confirmed: BTreeMap<LedgerId, EntryId>,
    /// Bytes written to ledgers replaced by a rollover and not yet sealed
    /// (the list records a ledger's size only when it is sealed).
    sealing_bytes: BTreeMap<LedgerId, u64>,
    /// Set once closed or fenced: every later append fails with it.
    terminal: Option<ManagedLedgerError>,
    /// Ledgers trimmed from the list whose deletion failed, retried on the
    /// next trim.
    undeleted: Vec<LedgerId>,
}

pub struct ManagedLedger {
    name: String,
    config: ManagedLedgerConfig,
    client: LedgerClient,
    list_store: LedgerListStore,
    state: Mutex<State>,
    cache: EntryCache,
    readers: tokio::sync::Mutex<HashMap<LedgerId, LedgerReader>>,
    /// Serialises changes of the ledger list.
    list_updates: tokio::sync::Mutex<()>,
    /// Bumped on every confirmation or seal, so readers waiting for entries wake.
    changed: watch::Sender<u64>,
}

impl ManagedLedger {
    /// Opens (or creates) the topic stored at `key`: recovers ledgers a
    /// previous owner left open, then starts a fresh ledger for appends.
    pub async fn open(
        name: String,
        store: Arc<dyn MetadataStore>,
        key: String,
        client: LedgerClient,
        config: ManagedLedgerConfig,
    ) -> Result<Arc<ManagedLedger>, ManagedLedgerError> {
        let list_store = LedgerListStore::new(store, key);
        // A previous owner still running (a zombie, or one whose lease just
        // lapsed) may change the list between our read and our CAS, e.g.
        // rolling over: read it again and recover what it added. Its next
        // change then fails, as its ledgers are fenced.
        let mut backoff = Duration::from_millis(50);
        let mut attempt = 1;
        let (list, version, writer) = loop {
            match Self::take_over(&name, &list_store, &client, &config).await {
                Ok(taken) => break taken,
                Err(ManagedLedgerError::Fenced(why)) if attempt < TAKEOVER_ATTEMPTS => {
                    tracing::info!(topic = %name, attempt, %why, "ledger list changed during takeover; retrying");
                    attempt += 1;
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
                Err(e) => return Err(e),
            }
        };
        let mut open_confirmed = BTreeMap::new();
        open_confirmed.insert(writer.id(), -1);
        tracing::info!(topic = %name, ledger = writer.id(), ledgers = list.ledgers.len(), "managed ledger open");
        Ok(Arc::new(ManagedLedger {
            name,
            cache: config.cache.clone(),
            config,
            client,
            list_store,
            state: Mutex::new(State {
                list,
                version,
                current: Some(CurrentLedger {
                    id: writer.id(),
                    writer,
                    next_entry: 0,
                    bytes: 0,
                    created: Instant::now(),
                }),
                rolling: false,
                queued: VecDeque::new(),
                replacing_failed: false,
                open_confirmed,
                sealing_bytes: BTreeMap::new(),
                terminal: None,
                undeleted: Vec::new(),
            }),
            readers: tokio::sync::Mutex::new(HashMap::new()),
            list_updates: tokio::sync::Mutex::new(()),
            changed: watch::channel(0).0,
        }))
    }

    /// One attempt at taking the topic over: seals (recovers) every ledger
    /// left open, then lists a new ledger for this owner's appends.
    async fn take_over(
        name: &str,
        list_store: &LedgerListStore,
        client: &LedgerClient,
        config: &ManagedLedgerConfig,
    ) -> Result<(LedgerList, Version, LedgerWriter), ManagedLedgerError> {
        let (mut list, mut version) = list_store.load_or_create().await?;
        let mut sealed_any = false;
        for info in list.ledgers.iter_mut().filter(|l| l.entries.is_none()) {
            let metadata = client.recover(info.ledger_id).await?;
            info.entries = Some((metadata.last_entry_id + 1) as u64);
            info.size = metadata.length;
            info.closed_ms = now_ms();
            sealed_any = true;
            tracing::info!(topic = %name, ledger = info.ledger_id, entries = ?info.entries, "recovered open ledger");
        }
        if sealed_any {
            version = list_store.update(&list, version).await?;
        }
        let writer = client.create(&config.ledger).await?;
        list.ledgers.push(LedgerInfo {
            ledger_id: writer.id(),
            entries: None,
            size: 0,
            created_ms: now_ms(),
            closed_ms: 0,
        });
        match list_store.update(&list, version).await {
            Ok(version) => Ok((list, version, writer)),
            Err(e) => {
                // Never listed: nothing can reference it.
                let id = writer.id();
                let _ = writer.close().await;
                if let Err(delete) = client.delete(id).await {
                    tracing::debug!(topic = %name, ledger = id, error = %delete, "deleting an unlisted ledger failed");
                }
                Err(e)
            }
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends `data` as the next entry. Entries are ordered by call order;
    /// the future resolves once the entry is durable on an ack quorum.
    pub fn append(self: &Arc<Self>, data: Bytes) -> impl Future<Output = AppendResult> + Send {
        let pending = self.start_append(&mut self.lock(), data);
        self.clone().finish_append(pending)
    }

    /// Assigns the entry its position (or queues it while no ledger is
    /// writable), under the state lock so that call order is entry order.
    fn start_append(self: &Arc<Self>, state: &mut State, data: Bytes) -> Pending {
        if let Some(err) = state.terminal.clone() {
            return Pending::Failed(err);
        }
        let Some(current) = state.current.as_mut() else {
            if state.replacing_failed {
                return Pending::Failed(ManagedLedgerError::NoWritableLedger(
                    "the topic's ledger failed and is being replaced".into(),
                ));
            }
            let (tx, rx) = oneshot::channel();
            state.queued.push_back((data, tx));
            return Pending::Queued(rx);
        };
        let position = Position::new(current.id, current.next_entry);
        current.next_entry += 1;
        current.bytes += data.len() as u64;
        let ack = current.writer.append(data.clone());
        self.cache.insert(position, data);
        if self.needs_rollover(current) && !state.rolling {
            state.rolling = true;
            let ml = self.clone();
            tokio::spawn(async move { ml.roll_over().await });
        }
        Pending::Writing(position, Box::pin(ack))
    }

    async fn finish_append(self: Arc<Self>, pending: Pending) -> AppendResult {
        match pending {
            Pending::Failed(err) => Err(err),
            Pending::Queued(rx) => rx.await.unwrap_or(Err(ManagedLedgerError::Closed)),
            Pending::Writing(position, ack) => match ack.await {
                Ok(entry_id) => {
                    debug_assert_eq!(entry_id, position.entry_id);
                    self.mark_confirmed(position);
                    Ok(position)
                }
                Err(e) => {
                    self.on_write_failed(position.ledger_id, &e);
                    Err(e.into())
                }
            },
        }
    }

    fn needs_rollover(&self, current: &CurrentLedger) -> bool {
        current.next_entry as u64 >= self.config.max_entries_per_ledger
            || current.bytes >= self.config.max_ledger_bytes
            || current.created.elapsed() >= self.config.max_ledger_age
    }

    /// The writer confirms entries of a ledger in order, so a confirmed
    /// position implies every earlier one of its ledger.
    fn mark_confirmed(&self, position: Position) {
        let mut state = self.lock();
        if let Some(last) = state.open_confirmed.get_mut(&position.ledger_id) {
            if position.entry_id > *last {
                *last = position.entry_id;
                drop(state);
                self.changed.send_modify(|v| *v += 1);
            }
        }
    }

    fn on_write_failed(self: &Arc<Self>, ledger_id: LedgerId, error: &crate::ledger::LedgerError) {
        let mut state = self.lock();
        let is_current = state.current.as_ref().map(|c| c.id) == Some(ledger_id);
        if !is_current {
            return;
        }
        tracing::warn!(topic = %self.name, ledger = ledger_id, %error, "write failed; replacing the ledger");
        let failed = state.current.take();
        state.replacing_failed = true;
        let start_rollover = !state.rolling;
        state.rolling = true;
        drop(state);
        self.cache.invalidate_ledger(ledger_id);
        if let Some(failed) = failed {
            // Recover (fence and close) it: its last entry is whatever an
            // ack quorum holds, which may be past what was confirmed here.
            let ml = self.clone();
            tokio::spawn(async move { ml.seal_until_done(failed.id, None).await });
        }
        if start_rollover {
            let ml = self.clone();
            tokio::spawn(async move { ml.roll_over().await });
        }
    }

    /// Rolls the current ledger over if it depends on one of `bookies`
    /// (lost or being drained), so that it gets closed and the auditor can
    /// copy its entries: an open ledger's metadata is its writer's alone.
    /// True if a rollover was started.
    pub async fn roll_over_if_on(self: &Arc<Self>, bookies: &HashSet<String>) -> bool {
        let Some(current) = self.lock().current.as_ref().map(|c| c.id) else {
            return false;
        };
        let Ok((md, _)) = self.client.metadata().read(current).await else {
            return false;
        };
        if !crate::ledger::rereplication::references(&md, |b| bookies.contains(b)) {
            return false;
        }
        let mut state = self.lock();
        if state.rolling || state.current.as_ref().map(|c| c.id) != Some(current) {
            return false;
        }
        state.rolling = true;
        drop(state);
        tracing::info!(topic = %self.name, ledger = current, "rolling over a ledger on a bookie being re-replicated");
        let ml = self.clone();
        tokio::spawn(async move { ml.roll_over().await });
        true
    }

    /// Replaces the current ledger (rollover, or after a write failure),
    /// retrying with backoff until a new one is in place.
    async fn roll_over(self: Arc<Self>) {
        let mut backoff = Duration::from_millis(100);
        loop {
            match self.try_roll_over().await {
                Ok(()) => return,
                Err(ManagedLedgerError::Fenced(why)) => {
                    self.fail_terminally(ManagedLedgerError::Fenced(why));
                    return;
                }
                Err(e) => {
                    tracing::warn!(topic = %self.name, error = %e, "rollover failed; retrying");
                    let mut state = self.lock();
                    if state.current.is_none() {
                        // Nothing can be written: fail what waits rather than hold it.
                        for (_, tx) in state.queued.drain(..) {
                            let _ =
                                tx.send(Err(ManagedLedgerError::NoWritableLedger(e.to_string())));
                        }
                    }
                }
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }

    /// Creates the next ledger, adds it to the list and switches appends to
    /// it; then seals the previous one in the background (retrying), since
    /// readers cannot move past it until it is sealed.
    async fn try_roll_over(self: &Arc<Self>) -> Result<(), ManagedLedgerError> {
        let writer = self.client.create(&self.config.ledger).await?;
        let new_id = writer.id();
        let added = self
            .update_list(|list| {
                list.ledgers.push(LedgerInfo {
                    ledger_id: new_id,
                    entries: None,
                    size: 0,
                    created_ms: now_ms(),
                    closed_ms: 0,
                })
            })
            .await;
        if let Err(e) = added {
            let _ = writer.close().await;
            return Err(e);
        }
        let old = {
            let mut state = self.lock();
            state.open_confirmed.insert(new_id, -1);
            let old = state.current.replace(CurrentLedger {
                writer,
                id: new_id,
                next_entry: 0,
                bytes: 0,
                created: Instant::now(),
            });
            state.rolling = false;
            state.replacing_failed = false;
            // Appends that waited go first, in their order, still under the lock.
            let queued = std::mem::take(&mut state.queued);
            for (data, tx) in queued {
                let pending = self.start_append(&mut state, data);
                let ml = self.clone();
                tokio::spawn(async move {
                    let _ = tx.send(ml.finish_append(pending).await);
                });
            }
            old
        };
        tracing::debug!(topic = %self.name, ledger = new_id, "rolled over");
        if let Some(old) = old {
            self.lock().sealing_bytes.insert(old.id, old.bytes);
            let ml = self.clone();
            tokio::spawn(async move { ml.seal_until_done(old.id, Some(old.writer)).await });
        }
        Ok(())
    }

    /// Seals `id`, retrying until it is recorded (or this broker is fenced).
    async fn seal_until_done(self: Arc<Self>, id: LedgerId, writer: Option<LedgerWriter>) {
        let mut writer = writer;
        let mut backoff = Duration::from_millis(100);
        loop {
            match self.seal(id, writer.take()).await {
                Ok(()) => return,
                Err(ManagedLedgerError::Fenced(why)) => {
                    self.fail_terminally(ManagedLedgerError::Fenced(why));
                    return;
                }
                Err(e) => {
                    tracing::warn!(topic = %self.name, ledger = id, error = %e, "sealing failed; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    /// Closes `id` (through its writer, or by recovery when the writer is gone
    /// or failed) and records its final entry count in the list.
    async fn seal(
        &self,
        id: LedgerId,
        writer: Option<LedgerWriter>,
    ) -> Result<(), ManagedLedgerError> {
        let metadata = match writer {
            Some(w) => match w.close().await {
                Ok(md) => md,
                Err(_) => self.client.recover(id).await?,
            },
            None => self.client.recover(id).await?,
        };
        let entries = (metadata.last_entry_id + 1) as u64;
        self.update_list(|list| {
            if let Some(info) = list.info_mut(id) {
                info.entries = Some(entries);
                info.size = metadata.length;
                info.closed_ms = now_ms();
            }
        })
        .await?;
        {
            let mut state = self.lock();
            state.open_confirmed.remove(&id);
            state.sealing_bytes.remove(&id);
        }
        self.readers.lock().await.remove(&id);
        self.changed.send_modify(|v| *v += 1);
        Ok(())
    }

    /// Applies `change` to the ledger list and stores it by CAS. Changes are
    /// serialised here; a CAS conflict means another broker changed the
    /// topic, which fences this one.
    async fn update_list(
        &self,
        change: impl FnOnce(&mut LedgerList),
    ) -> Result<(), ManagedLedgerError> {
        let _serial = self.list_updates.lock().await;
        let (mut list, version) = {
            let state = self.lock();
            (state.list.clone(), state.version)
        };
        change(&mut list);
        let version = self.list_store.update(&list, version).await?;
        let mut state = self.lock();
        state.list = list;
        state.version = version;
        Ok(())
    }

    fn fail_terminally(&self, error: ManagedLedgerError) {
        tracing::error!(topic = %self.name, %error, "managed ledger stopped");
        let mut state = self.lock();
        state.terminal = Some(error.clone());
        state.current = None;
        for (_, tx) in state.queued.drain(..) {
            let _ = tx.send(Err(error.clone()));
        }
    }

    /// Seals the current ledger; later appends fail with `Closed`.
    pub async fn close(&self) -> Result<(), ManagedLedgerError> {
        let current = {
            let mut state = self.lock();
            if state.terminal.is_some() {
                return Ok(());
            }
            state.terminal = Some(ManagedLedgerError::Closed);
            state.current.take()
        };
        if let Some(current) = current {
            self.seal(current.id, Some(current.writer)).await?;
        }
        Ok(())
    }

    /// Number of entries of `info` that are readable now, and whether more
    /// may follow in that ledger.
    fn readable_entries(state: &State, info: &LedgerInfo) -> (u64, bool) {
        match info.entries {
            Some(n) => (n, false),
            None => (
                state
                    .open_confirmed
                    .get(&info.ledger_id)
                    .map(|e| (e + 1) as u64)
                    .unwrap_or(0),
                true,
            ),
        }
    }

    /// The first readable position after `after`, or `None` if there is none
    /// yet. Never skips past a ledger that is still open.
    pub fn next_readable(&self, after: Position) -> Option<Position> {
        let state = self.lock();
        for info in &state.list.ledgers {
            if info.ledger_id < after.ledger_id {
                continue;
            }
            let (readable, open) = Self::readable_entries(&state, info);
            let first = if info.ledger_id == after.ledger_id {
                after.entry_id.saturating_add(1).max(0)
            } else {
                0
            };
            if (first as u64) < readable {
                return Some(Position::new(info.ledger_id, first));
            }
            if open {
                return None;
            }
        }
        None
    }

    /// The position just before `position` in topic order: what a cursor's
    /// mark-delete must be for reading to start at `position`.
    pub fn position_before(&self, position: Position) -> Position {
        if position.entry_id > 0 {
            return Position::new(position.ledger_id, position.entry_id - 1);
        }
        let state = self.lock();
        let mut previous = Position::new(position.ledger_id, -1);
        for info in &state.list.ledgers {
            if info.ledger_id >= position.ledger_id {
                break;
            }
            let (readable, _) = Self::readable_entries(&state, info);
            if readable > 0 {
                previous = Position::new(info.ledger_id, readable as i64 - 1);
            }
        }
        previous
    }

    /// The last confirmed entry of the topic, or (current ledger, -1) if
    /// the topic has none.
    pub fn last_confirmed(&self) -> Position {
        let state = self.lock();
        let mut last = None;
        for info in &state.list.ledgers {
            let (readable, _) = Self::readable_entries(&state, info);
            if readable > 0 {
                last = Some(Position::new(info.ledger_id, readable as i64 - 1));
            }
        }
        last.unwrap_or_else(|| {
            let ledger = state
                .current
                .as_ref()
                .map(|c| c.id)
                .or_else(|| state.list.ledgers.last().map(|l| l.ledger_id))
                .unwrap_or(0);
            Position::new(ledger, -1)
        })
    }

    /// The first position of the topic (reading from the start begins after
    /// it), i.e. the position before its first entry.
    pub fn first_position(&self) -> Position {
        let state = self.lock();
        let first = state.list.ledgers.first().map(|l| l.ledger_id).unwrap_or(0);
        Position::new(first, -1)
    }

    /// Number of entries after `after` that are readable now (backlog).
    pub fn entries_after(&self, after: Position) -> u64 {
        let state = self.lock();
        let mut n = 0;
        for info in &state.list.ledgers {
            let (readable, _) = Self::readable_entries(&state, info);
            if info.ledger_id > after.ledger_id {
                n += readable;
            } else if info.ledger_id == after.ledger_id {
                n += readable.saturating_sub(after.entry_id.saturating_add(1).max(0) as u64);
            }
        }
        n
    }

    /// A receiver that changes whenever new entries become readable.
    pub fn subscribe_changes(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// Reads up to `max_entries` consecutive entries after `after`, within
    /// one ledger, from the cache where possible and from bookies otherwise.
    /// Empty when nothing is readable yet.
    pub async fn read_entries(
        &self,
        after: Position,
        max_entries: usize,
    ) -> Result<Vec<Entry>, ManagedLedgerError> {
        let Some(first) = self.next_readable(after) else {
            return Ok(Vec::new());
        };
        let last_readable = {
            let state = self.lock();
            let Some(info) = state
                .list
                .ledgers
                .iter()
                .find(|l| l.ledger_id == first.ledger_id)
            else {
                return Ok(Vec::new());
            };
            Self::readable_entries(&state, info).0 as i64 - 1
        };
        let last = last_readable.min(first.entry_id + max_entries as i64 - 1);
        let mut entries = Vec::with_capacity((last - first.entry_id + 1) as usize);
        entries.extend(
            self.cache
                .get_run(first.ledger_id, first.entry_id, last)
                .into_iter()
                .map(|(position, data)| Entry { position, data }),
        );
        let from = first.entry_id + entries.len() as i64;
        if from <= last {
            let read = self.read_from_bookies(first.ledger_id, from, last).await?;
            entries.extend(read);
        }
        Ok(entries)
    }

    async fn read_from_bookies(
        &self,
        ledger_id: LedgerId,
        first: EntryId,
        last: EntryId,
    ) -> Result<Vec<Entry>, ManagedLedgerError> {
        for attempt in 0..2 {
            // The map lock covers opening only; reads of one ledger by
            // several subscriptions run concurrently, each on a copy.
            let mut reader = {
                let mut readers = self.readers.lock().await;
                if let std::collections::hash_map::Entry::Vacant(slot) = readers.entry(ledger_id) {
                    slot.insert(self.client.open_reader(ledger_id).await?);
                }
                let Some(reader) = readers.get(&ledger_id) else {
                    continue;
                };
                reader.clone()
            };
            // Entries this broker saw confirmed are readable even before the
            // bookies' LAC catches up.
            reader.raise_last_confirmed(last);
            match reader.read_range(first, last).await {
                Ok(read) => {
                    return Ok(read
                        .into_iter()
                        .map(|(e, data)| Entry {
                            position: Position::new(ledger_id, e),
                            data,
                        })
                        .collect())
                }
                Err(e) if attempt == 0 => {
                    // The ensemble may have changed since the reader opened.
                    tracing::debug!(topic = %self.name, ledger = ledger_id, error = %e, "read failed; reopening");
                    self.readers.lock().await.remove(&ledger_id);
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(ManagedLedgerError::Closed)
    }

    /// Ledger ids in order, with their entry counts (None while open).
    pub fn ledgers(&self) -> Vec<LedgerInfo> {
        self.lock().list.ledgers.clone()
    }

    /// Deletes the closed ledgers that every cursor has passed and that
    /// `limits` no longer keep, and closed ledgers without entries (see
    /// [`ledgers_to_trim`]). `slowest` is the slowest cursor's mark-delete
    /// position; a topic without cursors passes its last entry. Returns the
    /// ledgers taken off the list.
    ///
    /// The list changes first (CAS, serialised with rollovers and seals),
    /// then each ledger's metadata is deleted: a crash in between leaves
    /// unlisted ledgers behind, never a list naming a missing ledger.
    /// Bookies drop the entries of ledgers without metadata on their
    /// garbage-collection scans. Cursors and readers positioned in a deleted
    /// ledger move on to the next one (see [`Self::next_readable`]).
    pub async fn trim_consumed(
        &self,
        slowest: Position,
        limits: &RetentionLimits,
    ) -> Result<Vec<LedgerId>, ManagedLedgerError> {
        let trimmed = {
            let _serial = self.list_updates.lock().await;
            let (list, version) = {
                let state = self.lock();
                if state.terminal.is_some() {
                    return Ok(Vec::new());
                }
                (state.list.clone(), state.version)
            };
            let doomed = ledgers_to_trim(&list.ledgers, slowest, limits, now_ms());
            if !doomed.is_empty() {
                let mut kept = list;
                kept.ledgers.retain(|l| !doomed.contains(&l.ledger_id));
                let version = match self.list_store.update(&kept, version).await {
                    Ok(version) => version,
                    Err(ManagedLedgerError::Fenced(why)) => {
                        self.fail_terminally(ManagedLedgerError::Fenced(why.clone()));
                        return Err(ManagedLedgerError::Fenced(why));
                    }
                    Err(e) => return Err(e),
                };
                let mut state = self.lock();
                state.list = kept;
                state.version = version;
            }
            doomed
        };
        let mut to_delete = std::mem::take(&mut self.lock().undeleted);
        to_delete.extend(&trimmed);
        if !to_delete.is_empty() {
            let mut readers = self.readers.lock().await;
            for id in &to_delete {
                readers.remove(id);
            }
        }
        for id in to_delete {
            self.cache.invalidate_ledger(id);
            match self.client.delete(id).await {
                Ok(()) | Err(crate::ledger::LedgerError::NoSuchLedger(_)) => {
                    tracing::info!(topic = %self.name, ledger = id, "deleted consumed ledger");
                }
                Err(e) => {
                    tracing::warn!(topic = %self.name, ledger = id, error = %e, "deleting a trimmed ledger failed; retrying on the next trim");
                    self.lock().undeleted.push(id);
                }
            }
        }
        Ok(trimmed)
    }

    /// `(ledger, entries, bytes)` of each listed ledger as far as known now:
    /// what closed ledgers recorded, the confirmed entries and the bytes
    /// appended so far of the current one, nothing yet for a ledger whose
    /// seal is under way.
    fn ledger_sizes(state: &State) -> Vec<(LedgerId, u64, u64)> {
        state
            .list
            .ledgers
            .iter()
            .map(|info| match info.entries {
                Some(n) => (info.ledger_id, n, info.size),
                None => {
                    // The ledger being written, or one a rollover replaced
                    // that is still being sealed.
                    let bytes = state
                        .current
                        .as_ref()
                        .filter(|c| c.id == info.ledger_id)
                        .map(|c| c.bytes)
                        .or_else(|| state.sealing_bytes.get(&info.ledger_id).copied())
                        .unwrap_or(0);
                    let (entries, _) = Self::readable_entries(state, info);
                    (info.ledger_id, entries, bytes)
                }
            })
            .collect()
    }

    /// Bytes stored after `after` (a cursor's backlog in bytes). The ledger
    /// `after` falls in counts its entries after it at that ledger's average
    /// entry size, as Pulsar estimates backlog size.
    pub fn bytes_after(&self, after: Position) -> u64 {
        let state = self.lock();
        Self::ledger_sizes(&state)
            .into_iter()
            .filter(|(id, _, _)| *id >= after.ledger_id)
            .map(|(id, entries, bytes)| {
                if id > after.ledger_id {
                    bytes
                } else {
                    let left =
                        entries.saturating_sub(after.entry_id.saturating_add(1).max(0) as u64);
                    share(bytes, left, entries)
                }
            })
            .sum()
    }

    /// The earliest mark-delete position that leaves at most `max_bytes`
    /// after it (counting whole entries at their ledger's average size,
    /// rounded so the estimate stays within `max_bytes`): where backlog
    /// eviction moves cursors that are behind it. Never past the last
    /// confirmed entry.
    pub fn mark_delete_leaving(&self, max_bytes: u64) -> Position {
        let target = {
            let state = self.lock();
            let sizes = Self::ledger_sizes(&state);
            let mut kept = 0u64;
            let mut target = None;
            for (id, entries, bytes) in sizes.iter().rev() {
                if kept + bytes <= max_bytes {
                    kept += bytes;
                    continue;
                }
                let average = bytes.div_ceil((*entries).max(1)).max(1);
                let fit = ((max_bytes - kept) / average).min(*entries);
                target = Some(Position::new(*id, *entries as i64 - fit as i64 - 1));
                break;
            }
            match target {
                Some(p) => p,
                None => {
                    let first = state.list.ledgers.first().map_or(0, |l| l.ledger_id);
                    return Position::new(first, -1);
                }
            }
        };
        target.min(self.last_confirmed())
    }
}

/// `part` of `whole` entries' share of `bytes`.
fn share(bytes: u64, part: u64, whole: u64) -> u64 {
    if whole == 0 {
        return 0;
    }
    (u128::from(bytes) * u128::from(part.min(whole)) / u128::from(whole)) as u64
}

impl crate::storage::PositionOrder for ManagedLedger {
    fn next_position(&self, after: Position) -> Option<Position> {
        self.next_readable(after)
    }

    fn previous_position(&self, position: Position) -> Position {
        self.position_before(position)
    }
}

enum Pending {
    Failed(ManagedLedgerError),
    Queued(oneshot::Receiver<AppendResult>),
    Writing(
        Position,
        std::pin::Pin<Box<dyn Future<Output = Result<EntryId, crate::ledger::LedgerError>> + Send>>,
    ),
}
