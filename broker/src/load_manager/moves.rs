//! Moving a bundle to a named broker. In the decoupled architecture only
//! ownership moves: the ledgers stay on the bookies and the new owner
//! opens them. In the monolithic one the destination must first hold an
//! in-sync copy of every partition of the bundle: each gets a
//! reassignment that replaces its leader's copy with one on the
//! destination (throttled), and ownership moves once every copy has caught
//! up; the new leader then drops the old copies. This is the contrast the
//! two architectures are compared on.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::ownership::{topic_hash, BrokerIdentity, BundleRef, Ownership, OwnershipError};
use crate::storage::Architecture;
use crate::topic::{BrokerService, TopicName};

use super::requests::{self, BundleOpError};

/// How often a move looks at its copies' progress.
const PROGRESS_POLL: Duration = Duration::from_millis(500);
/// How often a move logs its progress.
const PROGRESS_LOG: Duration = Duration::from_secs(10);

/// Moves `bundle` to `target`: copies its partitions there first where
/// the architecture keeps them on brokers (at most `throttle` bytes/s
/// into the target), then records the assignment (so lookups made
/// meanwhile go there), has the owner unload it, and writes the ownership
/// key for the target.
pub async fn move_bundle(
    service: &Arc<BrokerService>,
    ownership: &Ownership,
    bundle: &BundleRef,
    target: &BrokerIdentity,
    throttle: Option<u64>,
) -> Result<(), BundleOpError> {
    if service.architecture() == Architecture::Monolithic {
        copy_partitions(service, ownership, bundle, target, throttle).await?;
    }
    ownership.assign(bundle, target).await?;
    requests::unload(service, bundle).await?;
    if !ownership.place(bundle, target).await? {
        tracing::info!(bundle = %bundle.full_name(), "moved bundle was claimed before it was placed");
    }
    if service.architecture() == Architecture::Monolithic {
        // The new owner leads from now on even before a client comes
        // back, so that it finishes the moves and the old copies go.
        if let Err(e) = requests::load(service, ownership, bundle).await {
            tracing::warn!(bundle = %bundle.full_name(), error = %e, "opening a moved bundle's topics on its new owner");
        }
    }
    Ok(())
}

/// The stored topics whose names hash into `bundle`.
pub(super) async fn stored_topics(
    service: &BrokerService,
    bundle: &BundleRef,
) -> Result<Vec<TopicName>, BundleOpError> {
    let names = service
        .topics_of_namespace(&bundle.namespace_name())
        .await
        .map_err(|e| OwnershipError::Metadata(e.to_string()))?;
    Ok(names
        .iter()
        .filter(|n| bundle.range.holds(topic_hash(n)))
        .filter_map(|n| TopicName::parse(n).ok())
        .collect())
}

/// Gives `target` an in-sync copy of every partition of `bundle`.
async fn copy_partitions(
    service: &Arc<BrokerService>,
    ownership: &Ownership,
    bundle: &BundleRef,
    target: &BrokerIdentity,
    throttle: Option<u64>,
) -> Result<(), BundleOpError> {
    let topics = stored_topics(service, bundle).await?;
    if topics.is_empty() {
        return Ok(());
    }
    // A leader serves its followers only while its log is open.
    requests::load(service, ownership, bundle).await?;
    let logs = service.logs();
    for topic in &topics {
        logs.make_leader_ready(&topic.log_name(), &target.broker_id, throttle)
            .await
            .map_err(|e| moving_failed(bundle, target, e))?;
    }
    let started = Instant::now();
    let mut logged = Instant::now();
    let mut waiting = topics;
    loop {
        let mut still = Vec::new();
        for topic in waiting {
            let ready = logs
                .can_lead(&topic.log_name(), &target.broker_id)
                .await
                .map_err(|e| moving_failed(bundle, target, e))?;
            if !ready {
                still.push(topic);
            }
        }
        waiting = still;
        if waiting.is_empty() {
            tracing::info!(bundle = %bundle.full_name(), to = %target.broker_id, took = ?started.elapsed(), "every partition is in sync on the destination");
            return Ok(());
        }
        if logged.elapsed() >= PROGRESS_LOG {
            logged = Instant::now();
            tracing::info!(bundle = %bundle.full_name(), to = %target.broker_id, copying = waiting.len(), elapsed = ?started.elapsed(), "copying partitions to the destination");
        }
        tokio::time::sleep(PROGRESS_POLL).await;
    }
}

fn moving_failed(
    bundle: &BundleRef,
    target: &BrokerIdentity,
    e: crate::storage::StorageError,
) -> BundleOpError {
    BundleOpError::Storage {
        bundle: bundle.full_name(),
        to: target.broker_id.clone(),
        reason: e.to_string(),
    }
}
