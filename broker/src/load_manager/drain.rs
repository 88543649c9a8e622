//! Removing a broker from service: every bundle it owns moves to the
//! least-loaded other broker (in the monolithic architecture copying the
//! bundle's partitions there first), and, where copies live on brokers,
//! every other copy it holds moves to a broker holding none of that
//! partition (of another rack where one is left). Returns once nothing is
//! left on it but what it reports as skipped; the operator then stops it.
//!
//! It does not keep new bundles away from the broker while it runs: a
//! topic first looked up meanwhile may still land there (drain again).

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use super::moves::move_bundle;
use super::requests::BundleOpError;
use crate::ownership::{balancer, BrokerIdentity, BundleRef, ClusterView, Ownership};
use crate::storage::{LogName, LogStore, StorageError};
use crate::topic::BrokerService;

/// How often a drain looks at the copies it is moving.
const SETTLE_POLL: Duration = Duration::from_millis(500);
/// How long a drain waits for a reassignment it did not start (a bundle
/// move finishing) before it reports the partition skipped.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(60);

/// What a drain did.
#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DrainReport {
    /// (bundle, broker it moved to).
    pub bundles_moved: Vec<(String, String)>,
    /// Partitions whose copy on the broker moved elsewhere.
    pub copies_moved: Vec<String>,
    /// What could not be moved, and why.
    pub skipped: Vec<String>,
}

pub async fn drain(
    service: &Arc<BrokerService>,
    ownership: &Ownership,
    broker: &BrokerIdentity,
    throttle: Option<u64>,
) -> Result<DrainReport, BundleOpError> {
    let mut report = DrainReport::default();
    let view = ClusterView::read(service.metadata().as_ref()).await?;
    let mut loads: Vec<_> = view
        .broker_loads()
        .into_iter()
        .filter(|l| l.broker_id != broker.broker_id)
        .collect();
    let owned: Vec<BundleRef> = view
        .owners
        .iter()
        .filter(|(_, owner)| **owner == broker.broker_id)
        .filter_map(|(key, _)| ClusterView::bundle_name(key))
        .filter_map(|name| BundleRef::parse(&name))
        .collect();
    for bundle in owned {
        let Some(chosen) = balancer::choose(&loads, ownership.balancer_config()) else {
            report
                .skipped
                .push(format!("{}: no other live broker", bundle.full_name()));
            continue;
        };
        let to = chosen.broker_id.clone();
        let Some(target) = view.brokers.iter().find(|b| b.broker_id == to) else {
            continue;
        };
        move_bundle(service, ownership, &bundle, target, throttle).await?;
        tracing::info!(bundle = %bundle.full_name(), from = %broker.broker_id, %to, "drained a bundle");
        if let Some(load) = loads.iter_mut().find(|l| l.broker_id == to) {
            load.pending += 1;
        }
        report.bundles_moved.push((bundle.full_name(), to));
    }

    let logs = service.logs();
    let held = logs
        .logs_with_copy_on(&broker.broker_id)
        .await
        .map_err(|e| storage_failed(broker, e))?;
    let mut moving = Vec::new();
    for (name, leads) in held {
        // A move of the bundles above may still be finishing on this
        // partition (its new leader dropping this broker's copy).
        let settled = wait_settled(logs.as_ref(), &name)
            .await
            .map_err(|e| storage_failed(broker, e))?;
        if !settled {
            report.skipped.push(format!(
                "{}: a reassignment under way did not finish within {SETTLE_TIMEOUT:?}",
                name.full_name()
            ));
            continue;
        }
        if leads {
            report.skipped.push(format!(
                "{}: recorded as led by this broker but served by none; look it up, then drain again",
                name.full_name()
            ));
            continue;
        }
        match logs.move_copy_off(&name, &broker.broker_id, throttle).await {
            Ok(true) => moving.push(name),
            Ok(false) => {}
            Err(StorageError::Rejected(why)) => report.skipped.push(why),
            Err(e) => return Err(storage_failed(broker, e)),
        }
    }
    while !moving.is_empty() {
        let mut still = Vec::new();
        for name in moving {
            match logs.settled(&name).await {
                Ok(true) => report.copies_moved.push(name.full_name()),
                Ok(false) => still.push(name),
                Err(e) => return Err(storage_failed(broker, e)),
            }
        }
        moving = still;
        if !moving.is_empty() {
            tokio::time::sleep(SETTLE_POLL).await;
        }
    }
    Ok(report)
}

/// Waits (a while) until no reassignment of `name` is under way.
async fn wait_settled(logs: &dyn LogStore, name: &LogName) -> Result<bool, StorageError> {
    let deadline = tokio::time::Instant::now() + SETTLE_TIMEOUT;
    while !logs.settled(name).await? {
        if tokio::time::Instant::now() >= deadline {
            return Ok(false);
        }
        tokio::time::sleep(SETTLE_POLL).await;
    }
    Ok(true)
}

fn storage_failed(broker: &BrokerIdentity, e: StorageError) -> BundleOpError {
    BundleOpError::Storage {
        bundle: "(every bundle)".into(),
        to: format!("the brokers other than {}", broker.broker_id),
        reason: e.to_string(),
    }
}
