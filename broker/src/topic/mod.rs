//! Topics as a broker serves them: names, the topics this broker has open
//! (managed ledger + subscriptions), and dispatch to consumers.
//!
//! Nothing here touches a socket: connections (`crate::server`) call in with
//! decoded commands and hand over a channel to write to.

mod name;
mod policies;
mod service;
mod subscription;
#[allow(clippy::module_inception)]
mod topic;

pub use name::{InvalidTopicName, TopicName};
pub use policies::{
    create_namespace_if_absent, BacklogQuota, BacklogQuotaPolicy, NamespacePolicies,
    PersistencePolicy, RetentionPolicy, TenantInfo,
};
pub use service::{BrokerConfig, BrokerService, ServiceError};
pub use subscription::{
    Acknowledgement, ConsumerHandle, ConsumerKey, SubscribeError, Subscription, SubscriptionType,
    FLUSH_INTERVAL,
};
pub use topic::{InitialPosition, ProducerKey, SubscribeRequest, Topic};
