//! Topics as a broker serves them: names, the topics this broker has open
//! (managed ledger + subscriptions), and dispatch to consumers.
//!
//! Nothing here touches a socket: connections (`crate::server`) call in with
//! decoded commands and hand over a channel to write to.

mod counters;
mod housekeeping;
mod key_shared;
mod limits;
mod name;
mod policies;
mod rate_limit;
mod service;
mod subscription;
#[allow(clippy::module_inception)]
mod topic;

pub use counters::{PublishRate, PublishTotals, TopicCounters};
pub use housekeeping::{retention_limits, DEFAULT_HOUSEKEEPING_INTERVAL};
pub use key_shared::{sticky_key_hash, KeySharedError, KeySharedMode, HASH_RANGE_SIZE};
pub(crate) use name::valid_segment;
pub use name::{InvalidTopicName, TopicName};
pub use policies::{
    create_namespace_if_absent, BacklogQuota, BacklogQuotaPolicy, DispatchRateLimit,
    InactiveTopicDeleteMode, InactiveTopicPolicies, NamespacePolicies, PersistencePolicy,
    PublishRateLimit, RetentionPolicy, TenantInfo,
};
pub use rate_limit::{RateLimit, RateLimiter};
pub use service::{BrokerConfig, BrokerService, ServiceError};
pub use subscription::{
    Acknowledgement, ConsumerHandle, ConsumerKey, KeySharedOptions, SubscribeError, Subscription,
    SubscriptionType, FLUSH_INTERVAL,
};
pub use topic::{InitialPosition, ProducerCloser, ProducerKey, SubscribeRequest, Topic};
