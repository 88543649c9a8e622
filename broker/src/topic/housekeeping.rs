//! Topic lifecycle policies (Pulsar's message expiry, backlog quota and
//! ledger trimming), applied by one broker-wide periodic task. Each tick,
//! for every topic open here, it reads the namespace's policies again (so
//! changes apply to loaded topics) and applies, in this order:
//! - message TTL: on every subscription, unacknowledged entries published
//!   before now − TTL are acknowledged by the broker (expired);
//! - the backlog quota (backlog: from the slowest durable cursor to the
//!   end): with `producer_request_hold` or `producer_exception`, producers
//!   are disconnected and new ones refused while it is exceeded; with
//!   `consumer_backlog_eviction`, durable cursors skip their oldest entries
//!   until the backlog is back under the limit;
//! - retention: closed ledgers every cursor has passed are deleted once the
//!   retention policy no longer keeps them (see `PartitionLog::trim_consumed`);
//! - inactive topics: one without producers, consumers and (by default)
//!   subscriptions for the namespace's `inactiveTopicPolicies` duration is
//!   deleted, as Pulsar's `brokerDeleteInactiveTopicsEnabled` does.
//!
//! As in Pulsar, quotas are checked here and when a producer attaches, never
//! per message: a backlog may pass its quota by what producers send within
//! one interval.
//!
//! Nothing here moves a cursor except expiry and eviction, and nothing here
//! decides which ledgers are safe to delete: the managed ledger does.

use std::collections::HashMap;
use std::sync::{Arc, MutexGuard, Weak};
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::policies::{BacklogQuota, BacklogQuotaPolicy, NamespacePolicies, RetentionPolicy};
use super::{BrokerService, ServiceError, Subscription, Topic};
use crate::clock::now_ms;
use crate::storage::{Position, RetentionLimits};

/// How often policies are applied unless configured (Pulsar checks backlog
/// quotas and message expiry about once a minute).
pub const DEFAULT_HOUSEKEEPING_INTERVAL: Duration = Duration::from_secs(60);

/// Eviction moves cursors until the backlog is this share of the size limit
/// (Pulsar's reduction factor), so a backlog at its limit is not evicted a
/// little at every tick.
const EVICTION_TARGET: f64 = 0.9;

/// A topic's backlog quota as last read, and whether its backlog was over it
/// at the last check.
#[derive(Debug, Default)]
pub(super) struct QuotaState {
    quota: Option<BacklogQuota>,
    exceeded: bool,
}

impl QuotaState {
    /// The policy refusing producers now, if any.
    pub(super) fn producer_block(&self) -> Option<BacklogQuotaPolicy> {
        let policy = self.quota?.policy;
        let blocks = matches!(
            policy,
            BacklogQuotaPolicy::ProducerRequestHold | BacklogQuotaPolicy::ProducerException
        );
        (self.exceeded && blocks).then_some(policy)
    }
}

/// The running housekeeping task.
pub(super) struct Housekeeper {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Housekeeper {
    /// Starts applying policies to `service`'s topics every `interval`; the
    /// first tick is one interval from now. `None` outside a Tokio runtime.
    pub(super) fn start(service: Weak<BrokerService>, interval: Duration) -> Option<Housekeeper> {
        let runtime = tokio::runtime::Handle::try_current().ok()?;
        let (stop, stopped) = watch::channel(false);
        // tokio's interval refuses a zero period.
        let interval = interval.max(Duration::from_millis(10));
        let task = runtime.spawn(run(service, interval, stopped));
        Some(Housekeeper { stop, task })
    }

    /// Stops the task, waiting for the topic it is working on to finish.
    pub(super) async fn stop(self) {
        let _ = self.stop.send(true);
        if let Err(e) = self.task.await {
            tracing::warn!(error = %e, "housekeeping task failed");
        }
    }
}

async fn run(service: Weak<BrokerService>, interval: Duration, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        let Some(service) = service.upgrade() else {
            return;
        };
        // Policies are read once per namespace per tick.
        let mut policies: HashMap<String, Option<NamespacePolicies>> = HashMap::new();
        for topic in service.open_topics().await {
            if *stop.borrow() {
                return;
            }
            let namespace = topic.name().namespace_name();
            if !policies.contains_key(&namespace) {
                let read = match service.namespace_policies(topic.name()).await {
                    Ok(p) => Some(p),
                    Err(e) => {
                        tracing::warn!(namespace = %namespace, error = %e, "reading namespace policies failed; skipping its topics this round");
                        None
                    }
                };
                policies.insert(namespace.clone(), read);
            }
            let Some(Some(namespace_policies)) = policies.get(&namespace) else {
                continue;
            };
            // One topic's failure, even a panic, must not stop the others.
            match crate::isolate::caught(topic.apply_policies(namespace_policies)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::warn!(topic = %topic.full_name(), error = %e, "applying lifecycle policies failed")
                }
                Err(panic) => {
                    tracing::error!(topic = %topic.full_name(), %panic, "applying lifecycle policies panicked")
                }
            }
            let inactive = namespace_policies
                .inactive_topic_policies
                .unwrap_or(service.config().inactive_topics);
            if topic.is_inactive(&inactive, crate::clock::now_ms()).await
                && service.still_serves(topic.name()).await
            {
                // Refused (TopicBusy) if a client attached meanwhile.
                match service.delete_topic(topic.name(), false).await {
                    Ok(()) => {
                        tracing::info!(topic = %topic.full_name(), ?inactive, "deleted inactive topic")
                    }
                    Err(e) => {
                        tracing::debug!(topic = %topic.full_name(), error = %e, "inactive topic not deleted")
                    }
                }
            }
        }
    }
}

/// Retention in storage terms: `None` (no policy) keeps nothing once
/// consumed, as in Pulsar; a negative limit is no limit.
pub fn retention_limits(policy: Option<RetentionPolicy>) -> RetentionLimits {
    let Some(policy) = policy else {
        return RetentionLimits::NONE;
    };
    RetentionLimits {
        max_age: u64::try_from(policy.retention_time_in_minutes)
            .ok()
            .map(|m| Duration::from_secs(m.saturating_mul(60))),
        max_bytes: u64::try_from(policy.retention_size_in_mb)
            .ok()
            .map(|mb| mb.saturating_mul(1 << 20)),
    }
}

/// Lifecycle policies of one topic.
impl Topic {
    fn quota_state(&self) -> MutexGuard<'_, QuotaState> {
        self.quota.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Remembers the namespace's backlog quota (read at open and each tick),
    /// which producer admission checks against.
    pub(super) fn set_backlog_quota(&self, quota: Option<BacklogQuota>) {
        let mut state = self.quota_state();
        state.quota = quota;
        if quota.is_none() {
            state.exceeded = false;
        }
    }

    /// The quota policy refusing new producers, if the backlog was over a
    /// producer-blocking quota at the last check.
    pub(super) fn producer_block(&self) -> Option<BacklogQuotaPolicy> {
        self.quota_state().producer_block()
    }

    /// Applies `policies` once: message TTL, then the backlog quota, then
    /// retention (expiry and eviction first, so what they acknowledge can
    /// be trimmed in the same round).
    pub async fn apply_policies(&self, policies: &NamespacePolicies) -> Result<(), ServiceError> {
        self.set_backlog_quota(policies.backlog_quota);
        // Rate and client limits too, for changes made through another
        // broker (this broker's admin calls apply them at once).
        self.apply_limits(policies).await;
        if let Some(ttl) = policies.message_ttl_seconds.filter(|t| *t > 0) {
            self.expire_messages(Duration::from_secs(ttl.into()))
                .await?;
        }
        self.enforce_backlog_quota().await?;
        self.trim_ledgers(&retention_limits(policies.retention))
            .await
    }

    /// Checks the backlog quota again now, so producers that retry while
    /// held get in as soon as consumers have caught up rather than at the
    /// next tick. Called when a producer attaches; a failed check keeps the
    /// previous verdict.
    pub async fn recheck_backlog_quota(&self) {
        let Some(quota) = self.quota_state().quota else {
            return;
        };
        if quota.policy == BacklogQuotaPolicy::ConsumerBacklogEviction {
            return;
        }
        match self.backlog_exceeds(&quota).await {
            Ok(exceeded) => self.quota_state().exceeded = exceeded,
            Err(e) => {
                tracing::warn!(topic = %self.full_name(), error = %e, "backlog quota check failed")
            }
        }
    }

    async fn all_subscriptions(&self) -> Vec<Arc<Subscription>> {
        self.subscriptions.lock().await.values().cloned().collect()
    }

    /// The slowest durable cursor's mark-delete position, where the backlog
    /// starts; `None` without durable subscriptions (no backlog).
    async fn slowest_durable(&self) -> Option<Position> {
        self.subscriptions
            .lock()
            .await
            .values()
            .filter(|s| s.is_durable())
            .map(|s| s.mark_delete_position())
            .min()
    }

    /// Publish time (ms since the epoch) of the first entry after `after`,
    /// if one is readable.
    async fn publish_time_after(&self, after: Position) -> Result<Option<u64>, ServiceError> {
        let entries = self.log().read_entries(after, 1).await?;
        Ok(entries
            .first()
            .and_then(|e| crate::protocol::entry_metadata(&e.data).ok())
            .map(|m| m.publish_time))
    }

    /// The last entry published before `cutoff_ms`, or a position before
    /// every entry if there is none.
    async fn last_published_before(&self, cutoff_ms: u64) -> Result<Position, ServiceError> {
        let first_kept = self.position_at_publish_time(cutoff_ms).await?;
        Ok(self.log().previous_position(first_kept))
    }

    /// Message TTL: acknowledges, on every subscription behind it, what was
    /// published more than `ttl` ago.
    async fn expire_messages(&self, ttl: Duration) -> Result<(), ServiceError> {
        self.expire_messages_older_than(ttl, None).await
    }

    /// Acknowledges what was published more than `age` ago, on the
    /// subscription named `only` or on every subscription (message TTL, and
    /// the admin's expire-messages).
    pub async fn expire_messages_older_than(
        &self,
        age: Duration,
        only: Option<&str>,
    ) -> Result<(), ServiceError> {
        let ttl = age;
        let log = self.log();
        let last = log.last_confirmed();
        let behind: Vec<Arc<Subscription>> = self
            .all_subscriptions()
            .await
            .into_iter()
            .filter(|s| only.is_none_or(|name| s.name() == name))
            .filter(|s| s.mark_delete_position() < last)
            .collect();
        let Some(slowest) = behind.iter().map(|s| s.mark_delete_position()).min() else {
            return Ok(());
        };
        let cutoff = now_ms().saturating_sub(ttl.as_millis() as u64);
        // Usually the oldest unacknowledged entry is recent: one read, no search.
        match self.publish_time_after(slowest).await? {
            Some(published) if published < cutoff => {}
            _ => return Ok(()),
        }
        let expire_to = self.last_published_before(cutoff).await?;
        for subscription in behind {
            if subscription.expire_until(expire_to) {
                tracing::info!(topic = %self.full_name(), subscription = %subscription.name(), until = %expire_to, "expired messages past the TTL");
            }
        }
        Ok(())
    }

    /// Whether the backlog from the slowest durable cursor is over `quota`:
    /// in bytes (estimated, see `PartitionLog::bytes_after`), or in age of
    /// the oldest unacknowledged entry.
    async fn backlog_exceeds(&self, quota: &BacklogQuota) -> Result<bool, ServiceError> {
        let Some(slowest) = self.slowest_durable().await else {
            return Ok(false);
        };
        if let Ok(limit) = u64::try_from(quota.limit_size) {
            if self.log().bytes_after(slowest) > limit {
                return Ok(true);
            }
        }
        if let Ok(limit_secs) = u64::try_from(quota.limit_time) {
            if let Some(published) = self.publish_time_after(slowest).await? {
                let age_ms = now_ms().saturating_sub(published);
                if age_ms > limit_secs.saturating_mul(1000) {
                    return Ok(true);
                }
            }
        }
        Ok(false)
    }

    async fn enforce_backlog_quota(&self) -> Result<(), ServiceError> {
        let Some(quota) = self.quota_state().quota else {
            return Ok(());
        };
        let exceeded = self.backlog_exceeds(&quota).await?;
        self.quota_state().exceeded = exceeded;
        if !exceeded {
            return Ok(());
        }
        match quota.policy {
            BacklogQuotaPolicy::ProducerRequestHold | BacklogQuotaPolicy::ProducerException => {
                if self.producer_count() > 0 {
                    tracing::info!(topic = %self.full_name(), policy = ?quota.policy, "backlog quota exceeded; disconnecting producers");
                    self.disconnect_producers();
                }
                Ok(())
            }
            BacklogQuotaPolicy::ConsumerBacklogEviction => self.evict_backlog(&quota).await,
        }
    }

    /// Moves durable cursors forward until the backlog is within the quota:
    /// to [`EVICTION_TARGET`] of the size limit, and past what is older than
    /// the time limit.
    async fn evict_backlog(&self, quota: &BacklogQuota) -> Result<(), ServiceError> {
        let mut target: Option<Position> = None;
        if let Ok(limit) = u64::try_from(quota.limit_size) {
            let keep = (limit as f64 * EVICTION_TARGET) as u64;
            target = Some(self.log().mark_delete_leaving(keep));
        }
        if let Ok(limit_secs) = u64::try_from(quota.limit_time) {
            let cutoff = now_ms().saturating_sub(limit_secs.saturating_mul(1000));
            let before = self.last_published_before(cutoff).await?;
            target = target.max(Some(before));
        }
        let Some(target) = target else {
            return Ok(());
        };
        for subscription in self.all_subscriptions().await {
            if subscription.is_durable() && subscription.expire_until(target) {
                tracing::warn!(topic = %self.full_name(), subscription = %subscription.name(), until = %target, "backlog quota exceeded; evicted the oldest unacknowledged messages");
            }
        }
        Ok(())
    }

    /// Deletes consumed ledgers that `limits` no longer keep. Every
    /// subscription counts, readers too, so no reader loses entries it is
    /// about to read.
    async fn trim_ledgers(&self, limits: &RetentionLimits) -> Result<(), ServiceError> {
        let log = self.log();
        // Held throughout: a subscription created meanwhile (at Earliest)
        // would start in a ledger about to go.
        let subscriptions = self.subscriptions.lock().await;
        let slowest = subscriptions
            .values()
            .map(|s| s.mark_delete_position())
            .min()
            .unwrap_or_else(|| log.last_confirmed());
        let trimmed = log.trim_consumed(slowest, limits).await?;
        drop(subscriptions);
        if trimmed > 0 {
            tracing::debug!(topic = %self.full_name(), segments = trimmed, "trimmed consumed segments");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retention_policies_map_to_storage_limits() {
        assert_eq!(retention_limits(None), RetentionLimits::NONE);
        let policy = |minutes, mb| {
            Some(RetentionPolicy {
                retention_time_in_minutes: minutes,
                retention_size_in_mb: mb,
            })
        };
        assert_eq!(retention_limits(policy(-1, -1)), RetentionLimits::UNLIMITED);
        assert_eq!(retention_limits(policy(0, 0)), RetentionLimits::NONE);
        assert_eq!(
            retention_limits(policy(90, 5)),
            RetentionLimits {
                max_age: Some(Duration::from_secs(90 * 60)),
                max_bytes: Some(5 << 20),
            }
        );
        assert_eq!(
            retention_limits(policy(-1, 1)),
            RetentionLimits {
                max_age: None,
                max_bytes: Some(1 << 20),
            }
        );
    }

    #[test]
    fn only_producer_policies_block_and_only_while_exceeded() {
        let quota = |policy| {
            Some(BacklogQuota {
                limit_size: 10,
                limit_time: -1,
                policy,
            })
        };
        let state = |quota, exceeded| QuotaState { quota, exceeded };
        assert_eq!(state(None, true).producer_block(), None);
        let hold = BacklogQuotaPolicy::ProducerRequestHold;
        let exception = BacklogQuotaPolicy::ProducerException;
        let eviction = BacklogQuotaPolicy::ConsumerBacklogEviction;
        assert_eq!(state(quota(hold), false).producer_block(), None);
        assert_eq!(state(quota(hold), true).producer_block(), Some(hold));
        assert_eq!(
            state(quota(exception), true).producer_block(),
            Some(exception)
        );
        assert_eq!(state(quota(eviction), true).producer_block(), None);
    }

    #[test]
    fn refusals_carry_pulsars_codes_for_hold_and_exception() {
        use pulsar::proto::ServerError;
        let refusal = |policy| ServiceError::BacklogQuotaExceeded {
            topic: "persistent://t/ns/x".into(),
            policy,
        };
        // The official clients retry a producer refused with the Error code
        // (its sends are held) and fail pending sends on the Exception code.
        assert_eq!(
            refusal(BacklogQuotaPolicy::ProducerRequestHold).server_error(),
            ServerError::ProducerBlockedQuotaExceededError
        );
        assert_eq!(
            refusal(BacklogQuotaPolicy::ProducerException).server_error(),
            ServerError::ProducerBlockedQuotaExceededException
        );
    }
}
