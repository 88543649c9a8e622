//! A namespace's rate and client limits as one topic applies them: the
//! publish rate (checked per SEND; the connection pauses reading while it
//! is used up), each subscription's dispatch rate, and how many producers
//! and consumers may attach (checked as they attach).
//!
//! Limits are applied when a topic opens, at each housekeeping tick, and at
//! once when an admin call on this broker changes them; applying them does
//! no I/O, so it is cheap enough for all three. Nothing here drops, fails
//! or delays a message already accepted.

use std::sync::atomic::Ordering;
use std::sync::MutexGuard;
use std::time::{Duration, Instant};

use super::policies::{DispatchRateLimit, NamespacePolicies, PublishRateLimit};
use super::rate_limit::{RateLimit, RateLimiter};
use super::{BrokerService, Topic};

/// How many producers and consumers a topic accepts (0: unlimited).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct ClientLimits {
    pub max_producers: u32,
    pub max_consumers_per_topic: u32,
    pub max_consumers_per_subscription: u32,
    /// Subscriptions the topic keeps at most (durable ones, stored or open,
    /// and readers alike).
    pub max_subscriptions: u32,
    /// Each subscription's dispatch limit.
    pub dispatch: Option<RateLimit>,
}

/// Pulsar's publish rate is per second.
pub(super) fn publish_limit(rate: Option<PublishRateLimit>) -> Option<RateLimit> {
    let rate = rate?;
    RateLimit::new(
        rate.publish_throttling_rate_in_msg.into(),
        rate.publish_throttling_rate_in_byte,
        Duration::from_secs(1),
    )
}

pub(super) fn dispatch_limit(rate: Option<DispatchRateLimit>) -> Option<RateLimit> {
    let rate = rate?;
    let period = u64::try_from(rate.rate_period_in_second).ok()?;
    RateLimit::new(
        rate.dispatch_throttling_rate_in_msg.into(),
        rate.dispatch_throttling_rate_in_byte,
        Duration::from_secs(period),
    )
}

impl ClientLimits {
    /// The namespace's limits; `broker_max_subscriptions` stands where
    /// the namespace sets none.
    pub(super) fn of(policies: &NamespacePolicies, broker_max_subscriptions: u32) -> Self {
        ClientLimits {
            max_subscriptions: policies
                .max_subscriptions_per_topic
                .unwrap_or(broker_max_subscriptions),
            max_producers: policies.max_producers_per_topic.unwrap_or(0),
            max_consumers_per_topic: policies.max_consumers_per_topic.unwrap_or(0),
            max_consumers_per_subscription: policies.max_consumers_per_subscription.unwrap_or(0),
            dispatch: dispatch_limit(policies.subscription_dispatch_rate),
        }
    }
}

/// Whether `count` attached clients leave room for one more under `max`.
pub(super) fn has_room(count: usize, max: u32) -> bool {
    max == 0 || count < max as usize
}

impl Topic {
    pub(super) fn client_limits(&self) -> ClientLimits {
        *self.limits.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn publish_limiter(&self) -> MutexGuard<'_, RateLimiter> {
        self.publish_limiter
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Applies the namespace's rate and client limits to this topic and its
    /// open subscriptions. Clients already attached beyond a lowered
    /// producer or consumer limit stay, as in Pulsar.
    pub async fn apply_limits(&self, policies: &NamespacePolicies) {
        let now = Instant::now();
        let publish = publish_limit(policies.publish_rate);
        {
            let mut limiter = self.publish_limiter();
            limiter.set_limit(publish, now);
            self.publish_limited
                .store(publish.is_some(), Ordering::Release);
        }
        let limits = ClientLimits::of(policies, self.broker_max_subscriptions);
        *self.limits.lock().unwrap_or_else(|p| p.into_inner()) = limits;
        for subscription in self.subscriptions.lock().await.values() {
            subscription.set_dispatch_limit(limits.dispatch);
        }
    }

    /// Counts one SEND of `messages` messages and `bytes` bytes against the
    /// publish rate. Returns when its connection may read again if the rate
    /// is used up; the SEND itself always goes ahead.
    pub fn throttle_publish(&self, messages: u64, bytes: u64) -> Option<Instant> {
        if !self.publish_limited.load(Ordering::Acquire) {
            return None;
        }
        let mut limiter = self.publish_limiter();
        limiter.limit()?;
        limiter.record(Instant::now(), messages, bytes)
    }
}

impl BrokerService {
    /// Applies `policies`' limits at once to the topics of
    /// `tenant/namespace` open on this broker (after an admin change).
    pub async fn apply_limits(&self, tenant: &str, namespace: &str, policies: &NamespacePolicies) {
        for topic in self.open_topics().await {
            let name = topic.name();
            if name.tenant == tenant && name.namespace == namespace {
                topic.apply_limits(policies).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_become_limits() {
        assert_eq!(publish_limit(None), None);
        assert_eq!(
            publish_limit(Some(PublishRateLimit {
                publish_throttling_rate_in_msg: -1,
                publish_throttling_rate_in_byte: 0,
            })),
            None
        );
        assert_eq!(
            publish_limit(Some(PublishRateLimit {
                publish_throttling_rate_in_msg: 100,
                publish_throttling_rate_in_byte: -1,
            })),
            Some(RateLimit {
                messages: Some(100),
                bytes: None,
                period: Duration::from_secs(1),
            })
        );
        let dispatch = |msg, period| {
            dispatch_limit(Some(DispatchRateLimit {
                dispatch_throttling_rate_in_msg: msg,
                dispatch_throttling_rate_in_byte: 0,
                rate_period_in_second: period,
                relative_to_publish_rate: false,
            }))
        };
        assert_eq!(dispatch(10, 0), None);
        assert_eq!(dispatch(10, -5), None);
        assert_eq!(
            dispatch(10, 2),
            Some(RateLimit {
                messages: Some(10),
                bytes: None,
                period: Duration::from_secs(2),
            })
        );
        let limits = ClientLimits::of(
            &NamespacePolicies {
                max_producers_per_topic: Some(1),
                ..NamespacePolicies::default()
            },
            7,
        );
        assert_eq!(limits.max_producers, 1);
        assert_eq!(limits.max_consumers_per_topic, 0);
        assert_eq!(limits.max_subscriptions, 7, "the broker's default");
        let limits = ClientLimits::of(
            &NamespacePolicies {
                max_subscriptions_per_topic: Some(0),
                ..NamespacePolicies::default()
            },
            7,
        );
        assert_eq!(
            limits.max_subscriptions, 0,
            "the namespace's own, unlimited"
        );
    }

    #[test]
    fn zero_is_unlimited() {
        assert!(has_room(1_000_000, 0));
        assert!(has_room(0, 1));
        assert!(!has_room(1, 1));
        assert!(has_room(1, 2));
    }
}
