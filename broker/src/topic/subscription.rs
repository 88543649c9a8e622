//! A subscription: its cursor, its consumers, and the dispatcher task that
//! reads entries and hands them to consumers within their permits.
//!
//! Delivered but unacknowledged entries are remembered per consumer; when a
//! consumer leaves (or asks), they go back to a redelivery set that is
//! served before new entries. A flusher task persists the cursor of a durable
//! subscription at most every [`FLUSH_INTERVAL`], when it changed; idle, it
//! sleeps.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::Notify;

use super::key_shared::{HashSelector, KeySharedError, KeySharedMode};
use super::rate_limit::{RateLimit, RateLimiter};
use crate::clock::now_ms;
use crate::cursor::{CursorSnapshot, CursorState, DurableCursor};
use crate::metrics::BrokerMetrics;
use crate::protocol::{commands, OutboundQueue};
use crate::storage::{Entry, PartitionLog, Position, StorageError};

/// How often a durable cursor is persisted when it changed.
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(100);
/// Most entries one dispatch round reads.
const MAX_ENTRIES_PER_READ: usize = 100;
/// Key_Shared: most entries held back (their key's consumer is busy or
/// still draining) before the dispatcher stops reading ahead.
const MAX_KEY_SHARED_LOOKAHEAD: usize = 2_000;

/// A consumer is known by its connection and its id on that connection.
pub type ConsumerKey = (u64, u64);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SubscriptionType {
    Exclusive,
    Shared,
    Failover,
    KeyShared,
}

/// A Key_Shared consumer's request (KeySharedMeta).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeySharedOptions {
    pub mode: KeySharedMode,
    /// The consumer accepts a key's messages before earlier ones of that key
    /// were acknowledged by its previous consumer.
    pub allow_out_of_order: bool,
}

impl Default for KeySharedOptions {
    fn default() -> Self {
        KeySharedOptions {
            mode: KeySharedMode::AutoSplit,
            allow_out_of_order: false,
        }
    }
}

/// What the subscription needs to reach a consumer.
#[derive(Clone, Debug)]
pub struct ConsumerHandle {
    pub key: ConsumerKey,
    pub name: String,
    pub priority: i32,
    pub outbound: OutboundQueue,
    /// Only for Key_Shared subscriptions.
    pub key_shared: KeySharedOptions,
}

#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum SubscribeError {
    #[error("exclusive subscription {0} already has a consumer")]
    ExclusiveBusy(String),
    #[error("subscription {name} is {existing:?}, not {requested:?}")]
    TypeMismatch {
        name: String,
        existing: SubscriptionType,
        requested: SubscriptionType,
    },
    #[error("subscription {0} has other consumers")]
    OtherConsumers(String),
    #[error("subscription {0} is closed")]
    Closed(String),
    #[error(transparent)]
    KeyShared(#[from] KeySharedError),
}

struct ConsumerSlot {
    handle: ConsumerHandle,
    permits: i64,
}

impl ConsumerSlot {
    /// Permits that may be used now: none while the consumer's connection
    /// has more queued than its bound (the client is not reading), so a
    /// consumer that asks for everything and never reads holds at most one
    /// bound of entries in the broker.
    fn usable_permits(&self) -> i64 {
        if self.handle.outbound.is_full() {
            0
        } else {
            self.permits.max(0)
        }
    }
}

/// A delivered, unacknowledged entry.
#[derive(Clone, Copy, Debug)]
struct Pending {
    consumer: ConsumerKey,
    /// Messages in the entry (a batch holds several).
    messages: u32,
    /// Sticky key hash, on Key_Shared subscriptions.
    hash: Option<u16>,
}

/// An entry waiting in the redelivery set: what is known of it without
/// reading it again (`messages` 0: not known).
#[derive(Clone, Copy, Debug, Default)]
struct Waiting {
    messages: u32,
    hash: Option<u16>,
}

struct SubState {
    cursor: CursorState,
    sub_type: SubscriptionType,
    consumers: Vec<ConsumerSlot>,
    /// Next consumer to try for Shared round robin.
    round_robin: usize,
    /// Failover: the consumer last told it is active.
    active: Option<ConsumerKey>,
    /// Key_Shared: which consumer owns which key hashes.
    selector: HashSelector,
    /// Key_Shared: per key hash, the consumer holding delivered but
    /// unacknowledged entries of it and how many. A hash whose owner changed
    /// is not delivered to the new owner until this drains.
    pending_hashes: HashMap<u16, (ConsumerKey, u32)>,
    /// Key_Shared: skip the per-key ordering checks.
    allow_out_of_order: bool,
    /// The dispatcher's read position: the next new entry is after it.
    last_read: Position,
    /// Entries to deliver again (or, on Key_Shared, held back) before new ones.
    redeliver: BTreeMap<Position, Waiting>,
    /// Shared subscriptions: entries whose `deliver_at_time` (ms since the
    /// epoch) has not come yet, held back until it does. Not persisted: after
    /// a restart the cursor reads them again and holds them again.
    delayed: BTreeSet<(u64, Position)>,
    /// Delivered, not yet acknowledged.
    pending: BTreeMap<Position, Pending>,
    redelivery_counts: HashMap<Position, u32>,
    /// Bumped by a seek, so a read started before it is discarded.
    epoch: u64,
    /// Recent average of messages per entry, to turn message permits into
    /// an entry count to read (a batch is one entry of many messages).
    messages_per_entry: f64,
    /// The mark-delete position of the last state stored.
    persisted_mark_delete: Position,
    closed: bool,
}

pub struct Subscription {
    name: String,
    topic: String,
    log: Arc<dyn PartitionLog>,
    metrics: BrokerMetrics,
    durable: Option<DurableCursor>,
    /// The partition this topic is, for Failover's active-consumer choice.
    partition: Option<u32>,
    state: Mutex<SubState>,
    /// Wakes the dispatcher: new permits, consumers, acks, or a consumer's
    /// connection drained (registered with its outbound queue).
    wake: Arc<Notify>,
    /// Wakes the flush loop: the cursor changed (or the subscription closed).
    flush_wanted: Notify,
    /// The namespace's dispatch rate: checked when a round plans its read,
    /// counted with what the round read.
    dispatch_limiter: Mutex<RateLimiter>,
    /// Messages and bytes sent to consumers since the topic opened here
    /// (the load manager's outbound rate).
    dispatched_messages: std::sync::atomic::AtomicU64,
    dispatched_bytes: std::sync::atomic::AtomicU64,
}

enum Plan {
    Read { after: Position, max: usize },
    Redeliver(Vec<(Position, Waiting)>),
}

impl SubState {
    fn record_pending(&mut self, position: Position, pending: Pending) {
        if let Some(hash) = pending.hash {
            let slot = self
                .pending_hashes
                .entry(hash)
                .or_insert((pending.consumer, 0));
            slot.0 = pending.consumer;
            slot.1 += 1;
        }
        self.pending.insert(position, pending);
    }

    fn forget_hash(&mut self, pending: &Pending) {
        let Some(hash) = pending.hash else { return };
        if let Some(slot) = self.pending_hashes.get_mut(&hash) {
            slot.1 = slot.1.saturating_sub(1);
            if slot.1 == 0 {
                self.pending_hashes.remove(&hash);
            }
        }
    }

    fn take_pending(&mut self, position: &Position) -> Option<Pending> {
        let pending = self.pending.remove(position)?;
        self.forget_hash(&pending);
        Some(pending)
    }

    /// Drops everything pending or waiting at or before `mark_delete`.
    fn forget_through(&mut self, mark_delete: Position) {
        let after = Position::new(
            mark_delete.ledger_id,
            mark_delete.entry_id.saturating_add(1),
        );
        let kept = self.pending.split_off(&after);
        for (_, pending) in std::mem::replace(&mut self.pending, kept) {
            self.forget_hash(&pending);
        }
        self.redeliver = self.redeliver.split_off(&after);
        self.redelivery_counts.retain(|p, _| *p >= after);
    }

    /// Puts a delivered entry back in line for redelivery.
    fn requeue(&mut self, position: Position) {
        if let Some(pending) = self.take_pending(&position) {
            *self.redelivery_counts.entry(position).or_insert(0) += 1;
            self.redeliver.insert(
                position,
                Waiting {
                    messages: pending.messages,
                    hash: pending.hash,
                },
            );
        }
    }

    fn index_of(&self, key: ConsumerKey) -> Option<usize> {
        self.consumers.iter().position(|c| c.handle.key == key)
    }

    /// Key_Shared: the consumer that may take an entry of `hash` now, given
    /// the permits left in `permits` (per consumer index).
    fn key_shared_target(&self, hash: u16, permits: impl Fn(usize) -> i64) -> Option<usize> {
        let target = self.selector.select(hash)?;
        if !self.allow_out_of_order {
            if let Some((holder, _)) = self.pending_hashes.get(&hash) {
                if *holder != target {
                    return None;
                }
            }
        }
        let index = self.index_of(target)?;
        (permits(index) > 0).then_some(index)
    }

    /// Exclusive and Failover deliver to one consumer: among those of the
    /// best priority level (lowest number), sorted by name, the first, or on
    /// a partition the one at `partition % count`, so a partitioned topic's
    /// partitions spread over the consumers.
    fn active_consumer(&self, partition: Option<u32>) -> Option<usize> {
        let best = self.consumers.iter().map(|c| c.handle.priority).min()?;
        let mut candidates: Vec<usize> = (0..self.consumers.len())
            .filter(|i| self.consumers[*i].handle.priority == best)
            .collect();
        candidates.sort_by(|a, b| {
            let (a, b) = (&self.consumers[*a].handle, &self.consumers[*b].handle);
            (&a.name, a.key).cmp(&(&b.name, b.key))
        });
        let index = partition.unwrap_or(0) as usize % candidates.len();
        Some(candidates[index])
    }
}

impl Subscription {
    /// Messages and bytes dispatched to consumers since the topic opened
    /// on this broker.
    pub fn dispatched_totals(&self) -> (u64, u64) {
        (
            self.dispatched_messages
                .load(std::sync::atomic::Ordering::Relaxed),
            self.dispatched_bytes
                .load(std::sync::atomic::Ordering::Relaxed),
        )
    }

    /// Opens a durable subscription over the stored `cursor` (see
    /// [`crate::cursor::CursorStorage::open`]).
    pub fn open_durable(
        topic: String,
        name: String,
        (log, metrics): (Arc<dyn PartitionLog>, BrokerMetrics),
        (durable, cursor): (DurableCursor, CursorState),
        sub_type: SubscriptionType,
    ) -> Arc<Subscription> {
        Self::start(topic, name, (log, metrics), Some(durable), sub_type, cursor)
    }

    /// A subscription that is never stored (a Reader): it starts after
    /// `mark_delete` and disappears with its consumer.
    pub fn open_non_durable(
        topic: String,
        name: String,
        log: Arc<dyn PartitionLog>,
        metrics: BrokerMetrics,
        sub_type: SubscriptionType,
        mark_delete: Position,
    ) -> Arc<Subscription> {
        Self::start(
            topic,
            name,
            (log, metrics),
            None,
            sub_type,
            CursorState::new(mark_delete),
        )
    }

    fn start(
        topic: String,
        name: String,
        (log, metrics): (Arc<dyn PartitionLog>, BrokerMetrics),
        durable: Option<DurableCursor>,
        sub_type: SubscriptionType,
        cursor: CursorState,
    ) -> Arc<Subscription> {
        let last_read = cursor.mark_delete();
        let partition = topic
            .rsplit_once("-partition-")
            .and_then(|(_, n)| n.parse().ok());
        let sub = Arc::new(Subscription {
            name,
            topic,
            log,
            metrics,
            durable,
            partition,
            dispatched_messages: Default::default(),
            dispatched_bytes: Default::default(),
            state: Mutex::new(SubState {
                cursor,
                sub_type,
                consumers: Vec::new(),
                round_robin: 0,
                active: None,
                selector: HashSelector::default(),
                pending_hashes: HashMap::new(),
                allow_out_of_order: false,
                last_read,
                redeliver: BTreeMap::new(),
                delayed: BTreeSet::new(),
                pending: BTreeMap::new(),
                redelivery_counts: HashMap::new(),
                epoch: 0,
                messages_per_entry: 1.0,
                persisted_mark_delete: last_read,
                closed: false,
            }),
            wake: Arc::new(Notify::new()),
            flush_wanted: Notify::new(),
            dispatch_limiter: Mutex::new(RateLimiter::new(std::time::Instant::now())),
        });
        tokio::spawn(sub.clone().dispatch_loop());
        if sub.durable.is_some() {
            tokio::spawn(sub.clone().flush_loop());
        }
        sub
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn is_durable(&self) -> bool {
        self.durable.is_some()
    }

    fn lock(&self) -> MutexGuard<'_, SubState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn dispatch_limiter(&self) -> MutexGuard<'_, RateLimiter> {
        self.dispatch_limiter
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Limits dispatch to `limit` per period from now on (`None`: no limit).
    pub fn set_dispatch_limit(&self, limit: Option<RateLimit>) {
        let changed = self
            .dispatch_limiter()
            .set_limit(limit, std::time::Instant::now());
        if changed {
            self.wake.notify_one();
        }
    }

    pub fn add_consumer(
        &self,
        handle: ConsumerHandle,
        sub_type: SubscriptionType,
    ) -> Result<(), SubscribeError> {
        let mut st = self.lock();
        if st.closed {
            return Err(SubscribeError::Closed(self.name.clone()));
        }
        if !st.consumers.is_empty() {
            if st.sub_type != sub_type {
                return Err(SubscribeError::TypeMismatch {
                    name: self.name.clone(),
                    existing: st.sub_type,
                    requested: sub_type,
                });
            }
            if sub_type == SubscriptionType::Exclusive {
                return Err(SubscribeError::ExclusiveBusy(self.name.clone()));
            }
        }
        if sub_type == SubscriptionType::KeyShared {
            st.selector.remove_consumer(handle.key);
            st.selector
                .add_consumer(handle.key, &handle.key_shared.mode)?;
            if st.consumers.is_empty() {
                st.allow_out_of_order = handle.key_shared.allow_out_of_order;
            }
        }
        st.sub_type = sub_type;
        st.consumers.retain(|c| c.handle.key != handle.key);
        let key = handle.key;
        handle.outbound.wake_on_drain(&self.wake);
        st.consumers.push(ConsumerSlot { handle, permits: 0 });
        if sub_type == SubscriptionType::Failover {
            self.update_active(&mut st, Some(key));
        }
        drop(st);
        self.wake.notify_one();
        Ok(())
    }

    /// Removes a consumer; what it had not acknowledged is redelivered to
    /// the others. Returns whether the subscription has no consumers left.
    pub fn remove_consumer(&self, key: ConsumerKey) -> bool {
        let mut st = self.lock();
        st.consumers.retain(|c| c.handle.key != key);
        st.selector.remove_consumer(key);
        Self::requeue_pending_of(&mut st, key, None);
        if st.sub_type == SubscriptionType::Failover {
            self.update_active(&mut st, None);
        }
        let empty = st.consumers.is_empty();
        drop(st);
        self.wake.notify_one();
        empty
    }

    /// Failover: after a membership change, tells consumers who is active if
    /// that changed (ACTIVE_CONSUMER_CHANGE), and hands what the previous
    /// active consumer had not acknowledged to the new one. `joined` also
    /// gets told its state when nothing changed.
    fn update_active(&self, st: &mut SubState, joined: Option<ConsumerKey>) {
        let active = st
            .active_consumer(self.partition)
            .map(|i| st.consumers[i].handle.key);
        if active == st.active {
            if let Some(index) = joined.and_then(|k| st.index_of(k)) {
                let handle = &st.consumers[index].handle;
                let _ = handle.outbound.send(commands::active_consumer_change(
                    handle.key.1,
                    active == Some(handle.key),
                ));
            }
            return;
        }
        if let Some(previous) = st.active {
            Self::requeue_pending_of(st, previous, None);
        }
        st.active = active;
        tracing::debug!(topic = %self.topic, subscription = %self.name, ?active, "active consumer changed");
        for slot in &st.consumers {
            let is_active = Some(slot.handle.key) == active;
            let _ = slot.handle.outbound.send(commands::active_consumer_change(
                slot.handle.key.1,
                is_active,
            ));
        }
    }

    fn requeue_pending_of(st: &mut SubState, key: ConsumerKey, only: Option<&[Position]>) {
        let positions: Vec<Position> = match only {
            None => st
                .pending
                .iter()
                .filter(|(_, p)| p.consumer == key)
                .map(|(p, _)| *p)
                .collect(),
            Some(list) => list
                .iter()
                .filter(|p| st.pending.get(p).map(|p| p.consumer) == Some(key))
                .copied()
                .collect(),
        };
        for p in positions {
            st.requeue(p);
        }
    }

    pub fn add_permits(&self, key: ConsumerKey, permits: u32) {
        let mut st = self.lock();
        if let Some(slot) = st.consumers.iter_mut().find(|c| c.handle.key == key) {
            slot.permits = slot.permits.saturating_add(i64::from(permits));
        }
        drop(st);
        self.wake.notify_one();
    }

    /// Applies acknowledgements. A non-empty ack set acknowledges only part
    /// of a batch; so does a batch index without one (clients that ack each
    /// message of a batch by its index), when the batch size is known.
    pub fn acknowledge(&self, cumulative: bool, acks: &[Acknowledgement]) {
        let last = self.log.last_confirmed();
        let mut st = self.lock();
        self.acknowledge_locked(&mut st, last, cumulative, acks);
    }

    /// Acknowledgements sent by the consumer `from`, applied only while it
    /// is attached: one the broker disconnected (an admin reset-cursor)
    /// acknowledges nothing more, as in Pulsar, since late acks would mark
    /// the entries the reset is about to deliver again. Checked under the
    /// same lock as the acks are applied.
    pub fn acknowledge_from(&self, from: ConsumerKey, cumulative: bool, acks: &[Acknowledgement]) {
        let last = self.log.last_confirmed();
        let mut st = self.lock();
        if st.index_of(from).is_some() {
            self.acknowledge_locked(&mut st, last, cumulative, acks);
        }
    }

    fn acknowledge_locked(
        &self,
        st: &mut SubState,
        last: Position,
        cumulative: bool,
        acks: &[Acknowledgement],
    ) {
        let mut ignored = 0usize;
        for ack in acks {
            let position = &ack.position;
            // Past the last entry it was never delivered (acknowledging it
            // would hide it once written); elsewhere it must name a stored
            // entry, unless it is already acknowledged (a harmless repeat).
            if *position > last || !(st.cursor.is_acked(*position) || self.log.holds(*position)) {
                ignored += 1;
                continue;
            }
            let messages = st.pending.get(position).map(|p| p.messages);
            let derived;
            let ack_set = if ack.ack_set.is_empty() && ack.batch_index >= 0 {
                // Known size: an index past the entry's messages names
                // none of them and acknowledges nothing.
                match messages {
                    Some(messages) => {
                        derived = remaining_after_ack(messages, ack.batch_index, cumulative);
                        &derived[..]
                    }
                    _ => &ack.ack_set[..],
                }
            } else {
                derived = bounded_ack_set(&ack.ack_set, messages);
                &derived[..]
            };
            if cumulative {
                st.cursor
                    .ack_cumulative(self.log.as_ref(), *position, ack_set);
                let mark_delete = st.cursor.mark_delete();
                st.forget_through(mark_delete);
            } else if st.cursor.ack(self.log.as_ref(), *position, ack_set) {
                st.take_pending(position);
                st.redeliver.remove(position);
                st.redelivery_counts.remove(position);
            }
        }
        if ignored > 0 {
            tracing::warn!(topic = %self.topic, subscription = %self.name, ignored, last = %last, "ignoring acks that name no stored entry");
        }
        self.flush_wanted.notify_one();
        // On Key_Shared an ack may release a key held for a new consumer.
        if st.sub_type == SubscriptionType::KeyShared && !st.redeliver.is_empty() {
            self.wake.notify_one();
        }
    }

    /// Redelivers what `key` has not acknowledged: everything, or only the
    /// listed positions.
    pub fn redeliver_unacknowledged(&self, key: ConsumerKey, only: Option<&[Position]>) {
        let mut st = self.lock();
        Self::requeue_pending_of(&mut st, key, only);
        drop(st);
        self.wake.notify_one();
    }

    /// Moves the cursor so delivery restarts at `target` and forgets all
    /// acknowledgements after it. Returns the consumers, which the caller
    /// disconnects (clients reconnect and resume from the new position).
    pub fn seek(&self, target: Position) -> Vec<ConsumerHandle> {
        let mark_delete = if target <= Position::new(0, 0) {
            self.log.first_position()
        } else {
            self.log.previous_position(target)
        };
        let mut st = self.lock();
        st.cursor.reset(mark_delete);
        self.flush_wanted.notify_one();
        st.last_read = mark_delete;
        st.pending.clear();
        st.pending_hashes.clear();
        st.redeliver.clear();
        st.delayed.clear();
        st.redelivery_counts.clear();
        st.epoch += 1;
        st.selector = HashSelector::default();
        st.active = None;
        let consumers = std::mem::take(&mut st.consumers)
            .into_iter()
            .map(|c| c.handle)
            .collect();
        drop(st);
        self.wake.notify_one();
        consumers
    }

    /// The position `n` unacknowledged entries past the mark-delete
    /// position (the last entry, when the backlog is shorter): acknowledging
    /// up to it skips `n` entries, as Pulsar's skip does.
    pub fn position_after_unacknowledged(&self, n: u64) -> Position {
        let st = self.lock();
        let mut position = st.cursor.mark_delete();
        let mut skipped = 0;
        while skipped < n {
            let Some(next) = self.log.next_position(position) else {
                break;
            };
            if !st.cursor.is_acked(next) {
                skipped += 1;
            }
            position = next;
        }
        position
    }

    pub fn mark_delete_position(&self) -> Position {
        self.lock().cursor.mark_delete()
    }

    /// Entries not yet acknowledged (approximate: counts whole entries).
    pub fn backlog_entries(&self) -> u64 {
        let st = self.lock();
        self.log
            .entries_after(st.cursor.mark_delete())
            .saturating_sub(st.cursor.individually_acked())
    }

    /// Stops dispatching if `key` is the only consumer; the caller then
    /// deletes the cursor with [`Self::delete_cursor`].
    pub fn begin_unsubscribe(&self, key: ConsumerKey) -> Result<(), SubscribeError> {
        let mut st = self.lock();
        if st.consumers.iter().any(|c| c.handle.key != key) {
            return Err(SubscribeError::OtherConsumers(self.name.clone()));
        }
        st.closed = true;
        st.consumers.clear();
        st.selector = HashSelector::default();
        drop(st);
        self.wake.notify_one();
        Ok(())
    }

    /// Deletes the stored cursor (after [`Self::close`]).
    pub async fn delete_cursor(&self) -> Result<(), StorageError> {
        if let Some(durable) = &self.durable {
            durable.delete().await?;
        }
        Ok(())
    }

    /// Persists the cursor and stops the subscription's tasks.
    pub async fn close(&self) {
        if let Err(e) = self.flush().await {
            tracing::warn!(topic = %self.topic, subscription = %self.name, error = %e, "final cursor flush failed");
        }
        self.lock().closed = true;
        self.wake.notify_one();
        self.flush_wanted.notify_one();
        if let Some(durable) = &self.durable {
            durable.close().await;
        }
    }

    fn is_closed(&self) -> bool {
        self.lock().closed
    }

    /// Stores the cursor if it changed since the last write (a write
    /// that fails because another broker took the topic over fails here).
    pub async fn flush(&self) -> Result<(), StorageError> {
        let Some(durable) = &self.durable else {
            return Ok(());
        };
        let mut taken = None;
        let stored = durable
            .persist(|| {
                let mut st = self.lock();
                if st.closed || !st.cursor.take_dirty() {
                    return None;
                }
                let snapshot = st.cursor.snapshot();
                taken = Some(snapshot.mark_delete);
                Some(snapshot)
            })
            .await;
        let mut st = self.lock();
        match (&stored, taken) {
            (Ok(()), Some(mark_delete)) => st.persisted_mark_delete = mark_delete,
            (Err(_), _) => st.cursor.mark_dirty(),
            _ => {}
        }
        stored
    }

    /// Writes the cursor at most once per [`FLUSH_INTERVAL`], and only after
    /// it changed: an idle subscription's task sleeps until an ack, a seek
    /// or its close wakes it.
    async fn flush_loop(self: Arc<Self>) {
        loop {
            if self.is_closed() {
                return;
            }
            // The acks of one interval go out in one write.
            tokio::time::sleep(FLUSH_INTERVAL).await;
            if let Err(e) = self.flush().await {
                tracing::warn!(topic = %self.topic, subscription = %self.name, error = %e, "cursor flush failed");
                // Still dirty: try again after the next interval.
                self.flush_wanted.notify_one();
            }
            self.flush_wanted.notified().await;
        }
    }

    async fn dispatch_loop(self: Arc<Self>) {
        let mut changes = self.log.subscribe_changes();
        loop {
            if self.is_closed() {
                return;
            }
            // Dispatch rate used up: nothing goes out until the next period.
            let allowed = self.dispatch_limiter().available(std::time::Instant::now());
            if let Err(until) = allowed {
                tokio::select! {
                    _ = self.wake.notified() => {}
                    _ = tokio::time::sleep_until(until.into()) => {}
                }
                continue;
            }
            let round = match crate::isolate::caught(self.dispatch_once()).await {
                Ok(round) => round,
                Err(panic) => {
                    // A bug reached by one entry or consumer stops only
                    // this subscription's dispatch, and only for a while.
                    tracing::error!(topic = %self.topic, subscription = %self.name, %panic, "dispatch panicked; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            match round {
                Ok(true) => continue,
                Ok(false) => {
                    let next_due = self.lock().delayed.first().map(|(at, _)| *at);
                    let until_due = next_due
                        .map(|at| Duration::from_millis(at.saturating_sub(now_ms())))
                        .unwrap_or(Duration::from_secs(3600));
                    tokio::select! {
                        _ = self.wake.notified() => {}
                        changed = changes.changed() => if changed.is_err() { return },
                        _ = tokio::time::sleep(until_due), if next_due.is_some() => {}
                    }
                }
                Err(e) => {
                    tracing::warn!(topic = %self.topic, subscription = %self.name, error = %e, "dispatch read failed; retrying");
                    tokio::select! {
                        _ = self.wake.notified() => {}
                        _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                    }
                }
            }
        }
    }

    /// One round: read what the consumers have permits for and deliver it.
    /// `Ok(false)` when there is nothing to do until something changes.
    async fn dispatch_once(&self) -> Result<bool, StorageError> {
        let (plan, epoch, hashed) = {
            let mut st = self.lock();
            Self::release_due(&mut st);
            let permits = Self::available_permits(&st);
            if permits <= 0 {
                return Ok(false);
            }
            // No more messages than the dispatch rate has left this period.
            let allowed = self
                .dispatch_limiter()
                .available(std::time::Instant::now())
                .unwrap_or(0);
            let permits = permits.min(i64::try_from(allowed).unwrap_or(i64::MAX));
            let entries = (permits as f64 / st.messages_per_entry).ceil() as usize;
            let max = entries.clamp(1, MAX_ENTRIES_PER_READ);
            let plan = if st.sub_type == SubscriptionType::KeyShared {
                match Self::plan_key_shared(&mut st, max) {
                    Some(plan) => plan,
                    None => return Ok(false),
                }
            } else if st.redeliver.is_empty() {
                Plan::Read {
                    after: st.last_read,
                    max,
                }
            } else {
                let mut positions = Vec::with_capacity(max);
                while positions.len() < max {
                    match st.redeliver.pop_first() {
                        Some(p) => positions.push(p),
                        None => break,
                    }
                }
                Plan::Redeliver(positions)
            };
            (plan, st.epoch, st.sub_type == SubscriptionType::KeyShared)
        };
        let (entries, is_read) = match &plan {
            Plan::Read { after, max } => {
                let entries = self.log.read_entries(*after, *max).await?;
                if entries.is_empty() {
                    return Ok(false);
                }
                (entries, true)
            }
            Plan::Redeliver(positions) => (self.read_positions(positions).await, false),
        };
        // Each entry's metadata is decoded once, before taking the lock.
        let infos: Vec<commands::EntryInfo> = entries
            .iter()
            .map(|e| commands::entry_info(&e.data, hashed))
            .collect();
        let messages = infos.iter().map(|i| u64::from(i.messages.max(1))).sum();
        let bytes = entries.iter().map(|e| e.data.len() as u64).sum();
        self.dispatch_limiter()
            .record(std::time::Instant::now(), messages, bytes);
        let mut st = self.lock();
        if st.epoch != epoch || st.closed {
            return Ok(true);
        }
        let key_shared = st.sub_type == SubscriptionType::KeyShared;
        // Key_Shared keeps each key in order: an entry waits while an
        // earlier one of its key waits.
        let mut first_waiting: HashMap<u16, Position> = HashMap::new();
        if key_shared && !st.allow_out_of_order {
            for (position, waiting) in &st.redeliver {
                if let Some(hash) = waiting.hash {
                    first_waiting.entry(hash).or_insert(*position);
                }
            }
        }
        let mut undelivered = Vec::new();
        let now = now_ms();
        for (entry, mut info) in entries.into_iter().zip(infos) {
            let position = entry.position;
            if st.cursor.is_acked(position) {
                if is_read {
                    st.last_read = position;
                }
                continue;
            }
            if st.sub_type == SubscriptionType::Shared {
                if let Some(at) = info.deliver_at.filter(|at| *at > now) {
                    st.delayed.insert((at, position));
                    if is_read {
                        st.last_read = position;
                    }
                    continue;
                }
            }
            if key_shared {
                if !hashed {
                    // The subscription became Key_Shared during this round.
                    info.key_hash = commands::entry_info(&entry.data, true).key_hash;
                }
                let hash = info.key_hash;
                let held = first_waiting.get(&hash).is_some_and(|p| *p < position);
                if held || !self.deliver(&mut st, entry, info) {
                    st.redeliver.insert(
                        position,
                        Waiting {
                            messages: info.messages,
                            hash: Some(hash),
                        },
                    );
                    if !st.allow_out_of_order {
                        first_waiting.entry(hash).or_insert(position);
                    }
                }
                if is_read {
                    st.last_read = position;
                }
                continue;
            }
            if !undelivered.is_empty() || !self.deliver(&mut st, entry, info) {
                if is_read {
                    break;
                }
                undelivered.push((position, Waiting::default()));
                continue;
            }
            if is_read {
                st.last_read = position;
            }
        }
        st.redeliver.extend(undelivered);
        Ok(true)
    }

    /// Key_Shared: the waiting entries that can go out now (in order, at most
    /// one blocked entry per key stopping that key), else new entries if the
    /// look-ahead allows; `None` when there is nothing to do.
    fn plan_key_shared(st: &mut SubState, max: usize) -> Option<Plan> {
        let mut permits: Vec<i64> = st
            .consumers
            .iter()
            .map(ConsumerSlot::usable_permits)
            .collect();
        let mut blocked = std::collections::HashSet::new();
        let mut chosen = Vec::new();
        for (position, waiting) in &st.redeliver {
            if chosen.len() >= max {
                break;
            }
            let Some(hash) = waiting.hash else {
                // Not read yet: read it and decide then.
                chosen.push(*position);
                continue;
            };
            if blocked.contains(&hash) {
                continue;
            }
            match st.key_shared_target(hash, |i| permits[i]) {
                Some(index) => {
                    permits[index] -= waiting.messages.max(1) as i64;
                    chosen.push(*position);
                }
                None => {
                    if !st.allow_out_of_order {
                        blocked.insert(hash);
                    }
                }
            }
        }
        if !chosen.is_empty() {
            let taken = chosen
                .into_iter()
                .filter_map(|p| st.redeliver.remove(&p).map(|w| (p, w)))
                .collect();
            return Some(Plan::Redeliver(taken));
        }
        (st.redeliver.len() < MAX_KEY_SHARED_LOOKAHEAD).then_some(Plan::Read {
            after: st.last_read,
            max,
        })
    }

    /// Reads entries at given positions, skipping any that no longer exist.
    async fn read_positions(&self, positions: &[(Position, Waiting)]) -> Vec<Entry> {
        let mut entries = Vec::with_capacity(positions.len());
        for (p, waiting) in positions {
            let before = self.log.previous_position(*p);
            match self.log.read_entries(before, 1).await {
                Ok(mut read) if read.first().map(|e| e.position) == Some(*p) => {
                    entries.append(&mut read)
                }
                Ok(_) => tracing::debug!(position = %p, "redelivery skipped a missing entry"),
                Err(e) => {
                    tracing::warn!(position = %p, error = %e, "redelivery read failed");
                    self.lock().redeliver.insert(*p, *waiting);
                }
            }
        }
        entries
    }

    /// Moves held-back entries whose delivery time has come to the front of
    /// the line.
    fn release_due(st: &mut SubState) {
        let now = now_ms();
        while let Some((at, position)) = st.delayed.first().copied() {
            if at > now {
                break;
            }
            st.delayed.pop_first();
            st.redeliver.insert(position, Waiting::default());
        }
    }

    fn available_permits(st: &SubState) -> i64 {
        match st.sub_type {
            SubscriptionType::Shared | SubscriptionType::KeyShared => {
                st.consumers.iter().map(ConsumerSlot::usable_permits).sum()
            }
            SubscriptionType::Failover => st
                .active
                .and_then(|k| st.index_of(k))
                .map(|i| st.consumers[i].usable_permits())
                .unwrap_or(0),
            SubscriptionType::Exclusive => st
                .active_consumer(None)
                .map(|i| st.consumers[i].usable_permits())
                .unwrap_or(0),
        }
    }

    fn pick_consumer(&self, st: &mut SubState, info: &commands::EntryInfo) -> Option<usize> {
        match st.sub_type {
            SubscriptionType::Shared => {
                let n = st.consumers.len();
                for i in 0..n {
                    let index = (st.round_robin + i) % n;
                    if st.consumers[index].usable_permits() > 0 {
                        st.round_robin = (index + 1) % n;
                        return Some(index);
                    }
                }
                None
            }
            SubscriptionType::KeyShared => {
                st.key_shared_target(info.key_hash, |i| st.consumers[i].usable_permits())
            }
            SubscriptionType::Failover => st
                .active
                .and_then(|k| st.index_of(k))
                .filter(|i| st.consumers[*i].usable_permits() > 0),
            SubscriptionType::Exclusive => st
                .active_consumer(None)
                .filter(|i| st.consumers[*i].usable_permits() > 0),
        }
    }

    /// Sends `entry` to a consumer with permits; false if none may take it.
    fn deliver(&self, st: &mut SubState, entry: Entry, info: commands::EntryInfo) -> bool {
        let Some(index) = self.pick_consumer(st, &info) else {
            return false;
        };
        let messages = info.messages;
        let position = entry.position;
        let redelivery_count = st.redelivery_counts.get(&position).copied().unwrap_or(0);
        let ack_set = st
            .cursor
            .outstanding_batch(position)
            .map(|s| s.to_vec())
            .unwrap_or_default();
        st.messages_per_entry = 0.9 * st.messages_per_entry + 0.1 * messages as f64;
        let slot = &mut st.consumers[index];
        slot.permits -= messages as i64;
        let key = slot.handle.key;
        self.metrics.entries_out.inc();
        self.metrics.messages_out.inc_by(messages as u64);
        self.metrics.bytes_out.inc_by(entry.data.len() as u64);
        self.dispatched_messages
            .fetch_add(messages as u64, std::sync::atomic::Ordering::Relaxed);
        self.dispatched_bytes.fetch_add(
            entry.data.len() as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
        let frame = commands::message(
            key.1,
            (position, self.partition),
            redelivery_count,
            ack_set,
            entry.data,
        );
        // A closed connection removes its consumers, which requeues this.
        let _ = slot.handle.outbound.send(frame);
        let hash = (st.sub_type == SubscriptionType::KeyShared).then_some(info.key_hash);
        st.record_pending(
            position,
            Pending {
                consumer: key,
                messages,
                hash,
            },
        );
        true
    }

    // Read-only views for admin stats and topic deletion.

    pub fn sub_type(&self) -> SubscriptionType {
        self.lock().sub_type
    }

    /// The attached consumers (clones of their handles).
    pub fn consumers(&self) -> Vec<ConsumerHandle> {
        self.lock()
            .consumers
            .iter()
            .map(|c| c.handle.clone())
            .collect()
    }

    /// The cursor as it would be stored now.
    /// The cursor as it would be stored now (within the persist limits).
    pub fn cursor_snapshot(&self) -> CursorSnapshot {
        self.lock().cursor.snapshot()
    }

    /// Runs of individually acknowledged entries, all of them (also those
    /// past what is persisted).
    pub fn acked_runs(&self) -> usize {
        self.lock().cursor.acked_runs()
    }

    /// The mark-delete position of the last state stored: what a broker
    /// crash now would restart from (`None` for a non-durable one).
    pub fn persisted_mark_delete(&self) -> Option<Position> {
        self.durable
            .as_ref()
            .map(|_| self.lock().persisted_mark_delete)
    }

    // Lifecycle policies (message TTL, backlog eviction; see `housekeeping`).

    /// Acknowledges on the broker's behalf every entry up to and including
    /// `position` (cumulatively), as message expiry and backlog eviction do:
    /// they are never delivered afterwards, and entries waiting for
    /// (re)delivery up to there are dropped. Returns whether the
    /// mark-delete position moved.
    pub fn expire_until(&self, position: Position) -> bool {
        if position <= self.mark_delete_position() {
            return false;
        }
        self.acknowledge(
            true,
            &[Acknowledgement {
                position,
                batch_index: -1,
                ack_set: Vec::new(),
            }],
        );
        let mut st = self.lock();
        let mark_delete = st.cursor.mark_delete();
        st.delayed.retain(|(_, p)| *p > mark_delete);
        if st.last_read < mark_delete {
            st.last_read = mark_delete;
        }
        mark_delete >= position
    }
}

/// One acknowledged message id, as a consumer sent it.
#[derive(Clone, Debug)]
pub struct Acknowledgement {
    pub position: Position,
    /// Index inside a batch, -1 for a whole entry.
    pub batch_index: i32,
    /// Pulsar's ack set: bit i set = message i still unacknowledged.
    pub ack_set: Vec<i64>,
}

/// The ack set left after acknowledging message `index` of a batch of
/// `messages` (and, when `cumulative`, every message before it).
fn remaining_after_ack(messages: u32, index: i32, cumulative: bool) -> Vec<i64> {
    let messages = messages.min(commands::MAX_MESSAGES_PER_BATCH) as usize;
    let mut words = vec![-1i64; messages.div_ceil(64)];
    clear_bits_from(&mut words, messages);
    let index = index as usize;
    if cumulative {
        clear_bits_below(&mut words, index.saturating_add(1).min(messages));
    } else if index < messages {
        words[index / 64] &= !(1i64 << (index % 64));
    }
    words
}

/// A client's ack set cut to the messages the entry holds (`messages`, if
/// known; else the most a batch may hold): bits past them name nothing and
/// would keep the entry from ever being fully acknowledged.
fn bounded_ack_set(ack_set: &[i64], messages: Option<u32>) -> Vec<i64> {
    let messages = messages
        .unwrap_or(commands::MAX_MESSAGES_PER_BATCH)
        .min(commands::MAX_MESSAGES_PER_BATCH) as usize;
    let mut words = ack_set[..ack_set.len().min(messages.div_ceil(64))].to_vec();
    clear_bits_from(&mut words, messages);
    words
}

/// Clears bits `from..` of a bit set held in words of 64.
fn clear_bits_from(words: &mut [i64], from: usize) {
    for (i, word) in words.iter_mut().enumerate() {
        let first = i * 64;
        if first >= from {
            *word = 0;
        } else if from - first < 64 {
            *word &= ((1u64 << (from - first)) - 1) as i64;
        }
    }
}

/// Clears bits `..below`.
fn clear_bits_below(words: &mut [i64], below: usize) {
    for (i, word) in words.iter_mut().enumerate() {
        let first = i * 64;
        if first + 64 <= below {
            *word = 0;
        } else if below > first {
            *word &= !(((1u64 << (below - first)) - 1) as i64);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ack_sets_for_batch_indexes() {
        assert_eq!(remaining_after_ack(3, 1, false), vec![0b101]);
        assert_eq!(remaining_after_ack(3, 1, true), vec![0b100]);
        assert_eq!(remaining_after_ack(3, 2, true), vec![0]);
        let big = remaining_after_ack(70, 65, false);
        assert_eq!(big.len(), 2);
        assert_eq!(big[0], -1);
        assert_eq!(big[1], 0b111101);
        assert_eq!(remaining_after_ack(70, 65, true), vec![0, 0b111100]);
        assert_eq!(remaining_after_ack(64, 63, false), vec![i64::MAX]);
        assert_eq!(remaining_after_ack(64, 70, false), vec![-1]);
        assert_eq!(remaining_after_ack(64, i32::MAX, true), vec![0]);
        // A count no batch can hold is cut to the most one may.
        let huge = remaining_after_ack(u32::MAX, 0, false);
        assert_eq!(
            huge.len(),
            (commands::MAX_MESSAGES_PER_BATCH as usize).div_ceil(64)
        );
    }

    #[test]
    fn client_ack_sets_are_cut_to_the_batch() {
        assert_eq!(bounded_ack_set(&[-1, -1, -1], Some(3)), vec![0b111]);
        assert_eq!(bounded_ack_set(&[0b1010], Some(64)), vec![0b1010]);
        assert_eq!(bounded_ack_set(&[-1, -1], Some(65)), vec![-1, 1]);
        let long = vec![-1i64; 1 << 20];
        let cut = bounded_ack_set(&long, None);
        assert_eq!(
            cut.len(),
            (commands::MAX_MESSAGES_PER_BATCH as usize).div_ceil(64)
        );
    }

    proptest::proptest! {
        #[test]
        fn batch_index_acks_match_bit_by_bit(messages in 1u32..300, index in 0i32..400, cumulative: bool) {
            let words = remaining_after_ack(messages, index, cumulative);
            proptest::prop_assert_eq!(words.len(), (messages as usize).div_ceil(64));
            for i in 0..words.len() * 64 {
                let set = words[i / 64] & (1 << (i % 64)) != 0;
                let acked = if cumulative { i <= index as usize } else { i == index as usize };
                proptest::prop_assert_eq!(set, i < messages as usize && !acked, "bit {}", i);
            }
        }
    }
}
