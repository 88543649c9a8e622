//! Unloading and splitting bundles. Only a bundle's owner may do either
//! (it closes the bundle's topics first); any broker may ask it, through a
//! request key the owner watches and deletes once done. The asker waits
//! for that, so the admin call returns when the change has happened.

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use futures::StreamExt;
use magnetar_metadata::{keys, Expect, MetadataError, WatchEventKind};
use serde::{Deserialize, Serialize};

use crate::ownership::{split_bundle, BrokerIdentity, BundleRef, Ownership, OwnershipError};
use crate::topic::BrokerService;

/// How long an asker waits for the owner to carry out a request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
const POLL_INTERVAL: Duration = Duration::from_millis(50);

#[derive(Debug, thiserror::Error)]
pub enum BundleOpError {
    #[error(transparent)]
    Ownership(#[from] OwnershipError),
    #[error("metadata: {0}")]
    Metadata(#[from] MetadataError),
    #[error("broker {owner} did not carry out the request on bundle {bundle} within {REQUEST_TIMEOUT:?}")]
    Timeout { bundle: String, owner: String },
    /// Copying a bundle's partitions to the broker it moves to failed.
    #[error("moving bundle {bundle} to {to}: {reason}")]
    Storage {
        bundle: String,
        to: String,
        reason: String,
    },
    /// Nobody serves the bundle, so nothing of it can be copied.
    #[error("bundle {0} is not served by any broker now: look up one of its topics first, or unload it without a destination")]
    NotServed(String),
    #[error("broker {owner} could not {op} bundle {bundle}")]
    Failed {
        op: &'static str,
        bundle: String,
        owner: String,
    },
}

/// What [`unload`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UnloadOutcome {
    /// The bundle's topics were closed by this broker (id).
    Unloaded { by: String },
    /// Nobody owned the bundle: nothing to do.
    NotOwned,
}

/// The two halves a split made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SplitOutcome {
    pub low: BundleRef,
    pub high: BundleRef,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Operation {
    Unload,
    Split,
    /// Open every stored topic of the bundle (a move's copies need their
    /// leaders serving).
    Load,
}

/// The value of a request key.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct BundleRequest {
    /// `tenant/namespace/0xSTART_0xEND`.
    bundle: String,
    op: Operation,
    /// For a split: unload both halves afterwards.
    #[serde(default)]
    unload: bool,
    /// The asking broker, for the owner's log.
    requested_by: String,
}

/// Unloads `bundle` wherever it is owned: its topics close, their clients
/// look them up again, and the bundle is free to be claimed.
pub async fn unload(
    service: &Arc<BrokerService>,
    bundle: &BundleRef,
) -> Result<UnloadOutcome, BundleOpError> {
    let Some(ownership) = service.ownership() else {
        // Standalone: clients reconnect to this same broker.
        service
            .unload_bundle(&bundle.namespace_name(), bundle.range)
            .await;
        return Ok(UnloadOutcome::Unloaded {
            by: local_id(service),
        });
    };
    if release_here(service, ownership, bundle).await? {
        return Ok(UnloadOutcome::Unloaded {
            by: ownership.identity().broker_id.clone(),
        });
    }
    let store = service.metadata();
    let Some(owner_kv) = store.get(&bundle.owner_key()).await? else {
        return Ok(UnloadOutcome::NotOwned);
    };
    let owner = decode_owner(&owner_kv.value, &owner_kv.key)?;
    if owner.broker_id == ownership.identity().broker_id {
        // Written under an earlier lease of this broker: nothing is open.
        store
            .delete(&bundle.owner_key(), Expect::Version(owner_kv.version))
            .await?;
        return Ok(UnloadOutcome::Unloaded {
            by: owner.broker_id,
        });
    }
    ask(service, ownership, bundle, Operation::Unload, false, &owner).await?;
    let still_owned = store
        .get(&bundle.owner_key())
        .await?
        .is_some_and(|kv| kv.version == owner_kv.version);
    if still_owned {
        return Err(BundleOpError::Failed {
            op: "unload",
            bundle: bundle.full_name(),
            owner: owner.broker_id,
        });
    }
    Ok(UnloadOutcome::Unloaded {
        by: owner.broker_id,
    })
}

/// Has the owner of `bundle` open every stored topic of it.
pub(super) async fn load(
    service: &Arc<BrokerService>,
    ownership: &Ownership,
    bundle: &BundleRef,
) -> Result<(), BundleOpError> {
    if ownership.holds(bundle).await? {
        return load_here(service, bundle).await;
    }
    let Some(owner_kv) = service.metadata().get(&bundle.owner_key()).await? else {
        return Err(BundleOpError::NotServed(bundle.full_name()));
    };
    let owner = decode_owner(&owner_kv.value, &owner_kv.key)?;
    ask(service, ownership, bundle, Operation::Load, false, &owner).await
}

async fn load_here(service: &Arc<BrokerService>, bundle: &BundleRef) -> Result<(), BundleOpError> {
    for topic in super::moves::stored_topics(service, bundle).await? {
        if let Err(e) = service.topic(&topic).await {
            tracing::warn!(%topic, error = %e, "opening a topic of a bundle that moves");
        }
    }
    Ok(())
}

/// Unloads every bundle of `tenant/namespace`; returns how many were owned.
pub async fn unload_namespace(
    service: &Arc<BrokerService>,
    tenant: &str,
    namespace: &str,
) -> Result<usize, BundleOpError> {
    let layout = current_layout(service, tenant, namespace).await?;
    let mut unloaded = 0;
    for range in layout.ranges() {
        let bundle = BundleRef::new(tenant, namespace, range);
        if unload(service, &bundle).await? != UnloadOutcome::NotOwned {
            unloaded += 1;
        }
    }
    Ok(unloaded)
}

/// Splits `bundle` in two halves, on its owner; with `unload_halves`
/// the halves are unloaded afterwards so the load manager can place them.
pub async fn split(
    service: &Arc<BrokerService>,
    bundle: &BundleRef,
    unload_halves: bool,
) -> Result<SplitOutcome, BundleOpError> {
    let layout = current_layout(service, &bundle.tenant, &bundle.namespace).await?;
    let (_, low, high) = layout.split(bundle.range).map_err(OwnershipError::from)?;
    let halves = SplitOutcome {
        low: BundleRef::new(&bundle.tenant, &bundle.namespace, low),
        high: BundleRef::new(&bundle.tenant, &bundle.namespace, high),
    };
    let Some(ownership) = service.ownership() else {
        split_bundle(service.metadata().as_ref(), bundle, None).await?;
        if unload_halves {
            service
                .unload_bundle(&bundle.namespace_name(), bundle.range)
                .await;
        }
        return Ok(halves);
    };
    if ownership.holds(bundle).await? {
        split_here(service, ownership, bundle, unload_halves).await?;
        return Ok(halves);
    }
    let store = service.metadata();
    let owner = match store.get(&bundle.owner_key()).await? {
        Some(kv) => decode_owner(&kv.value, &kv.key)?,
        None => {
            ownership.split_bundle(bundle).await?;
            return Ok(halves);
        }
    };
    ask(
        service,
        ownership,
        bundle,
        Operation::Split,
        unload_halves,
        &owner,
    )
    .await?;
    let after = current_layout(service, &bundle.tenant, &bundle.namespace).await?;
    if after.contains(bundle.range) {
        return Err(BundleOpError::Failed {
            op: "split",
            bundle: bundle.full_name(),
            owner: owner.broker_id,
        });
    }
    Ok(halves)
}

fn local_id(service: &BrokerService) -> String {
    service
        .identity()
        .map_or_else(|| "this broker".to_string(), |i| i.broker_id.clone())
}

fn decode_owner(value: &[u8], key: &str) -> Result<BrokerIdentity, OwnershipError> {
    serde_json::from_slice(value)
        .map_err(|e| OwnershipError::Metadata(format!("corrupt {key}: {e}")))
}

async fn current_layout(
    service: &BrokerService,
    tenant: &str,
    namespace: &str,
) -> Result<crate::ownership::BundleLayout, BundleOpError> {
    let kv = service
        .metadata()
        .get(&keys::namespace(tenant, namespace))
        .await?
        .ok_or_else(|| OwnershipError::NamespaceNotFound(format!("{tenant}/{namespace}")))?;
    let policies: crate::topic::NamespacePolicies = serde_json::from_slice(&kv.value)
        .map_err(|e| OwnershipError::Metadata(format!("corrupt {}: {e}", kv.key)))?;
    Ok(policies.bundle_layout())
}

/// Unloads `bundle` if this broker owns it; false if it does not.
async fn release_here(
    service: &Arc<BrokerService>,
    ownership: &Ownership,
    bundle: &BundleRef,
) -> Result<bool, OwnershipError> {
    let namespace = bundle.namespace_name();
    ownership
        .release_bundle(bundle, || async {
            service.unload_bundle(&namespace, bundle.range).await;
        })
        .await
}

async fn split_here(
    service: &Arc<BrokerService>,
    ownership: &Ownership,
    bundle: &BundleRef,
    unload_halves: bool,
) -> Result<(), OwnershipError> {
    let (low, high) = ownership.split_bundle(bundle).await?;
    if unload_halves {
        for half in [&low, &high] {
            release_here(service, ownership, half).await?;
        }
    }
    Ok(())
}

/// Writes a request for `owner` and waits until it is carried out (the
/// owner deletes it) or times out (then withdraws it).
async fn ask(
    service: &BrokerService,
    ownership: &Ownership,
    bundle: &BundleRef,
    op: Operation,
    unload: bool,
    owner: &BrokerIdentity,
) -> Result<(), BundleOpError> {
    let store = service.metadata();
    let request = BundleRequest {
        bundle: bundle.full_name(),
        op,
        unload,
        requested_by: ownership.identity().broker_id.clone(),
    };
    let value = serde_json::to_vec(&request)
        .map_err(|e| OwnershipError::Metadata(format!("encoding a bundle request: {e}")))?;
    let key = bundle.request_key();
    let lease = ownership.lease().ok_or(OwnershipError::NoLease)?;
    store
        .put(&key, value.into(), Expect::Any, Some(lease))
        .await?;
    let deadline = Instant::now() + REQUEST_TIMEOUT;
    while Instant::now() < deadline {
        if store.get(&key).await?.is_none() {
            return Ok(());
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
    let _ = store.delete(&key, Expect::Any).await;
    Err(BundleOpError::Timeout {
        bundle: bundle.full_name(),
        owner: owner.broker_id.clone(),
    })
}

/// The owner side: watches request keys and carries out those on bundles
/// this broker owns. Ends when the service is gone.
pub(super) async fn serve_requests(service: Weak<BrokerService>, ownership: Arc<Ownership>) {
    let store = ownership.store().clone();
    let prefix = keys::bundle_requests_prefix();
    loop {
        if service.strong_count() == 0 {
            return;
        }
        let start = match store.revision().await {
            Ok(revision) => revision,
            Err(e) => {
                tracing::warn!(error = %e, "bundle requests: reading the revision failed");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        // Requests made before the watch starts.
        match store.list(&prefix).await {
            Ok(existing) => {
                for kv in existing {
                    handle(&service, &ownership, kv.key, &kv.value);
                }
            }
            Err(e) => tracing::warn!(error = %e, "bundle requests: listing failed"),
        }
        let mut events = match store.watch(&prefix, Some(start + 1)).await {
            Ok(events) => events,
            Err(e) => {
                tracing::warn!(error = %e, "bundle requests: watch failed; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        while let Some(event) = events.next().await {
            match event {
                Ok(event) if event.kind == WatchEventKind::Put => {
                    handle(&service, &ownership, event.key, &event.value)
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "bundle requests: watch ended");
                    break;
                }
            }
            if service.strong_count() == 0 {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn handle(service: &Weak<BrokerService>, ownership: &Arc<Ownership>, key: String, value: &[u8]) {
    let Ok(request) = serde_json::from_slice::<BundleRequest>(value) else {
        tracing::warn!(%key, "ignoring a malformed bundle request");
        return;
    };
    let Some(bundle) = BundleRef::parse(&request.bundle) else {
        tracing::warn!(%key, bundle = %request.bundle, "ignoring a bundle request naming no bundle");
        return;
    };
    let Some(service) = service.upgrade() else {
        return;
    };
    let ownership = ownership.clone();
    tokio::spawn(async move {
        match ownership.holds(&bundle).await {
            Ok(true) => {}
            Ok(false) => return,
            Err(e) => {
                tracing::warn!(error = %e, bundle = %bundle.full_name(), "bundle request: checking ownership failed");
                return;
            }
        }
        tracing::info!(bundle = %bundle.full_name(), op = ?request.op, by = %request.requested_by, "carrying out a bundle request");
        let result = match request.op {
            Operation::Unload => release_here(&service, &ownership, &bundle)
                .await
                .map(|_| ()),
            Operation::Split => split_here(&service, &ownership, &bundle, request.unload).await,
            Operation::Load => load_here(&service, &bundle).await.map_err(|e| match e {
                BundleOpError::Ownership(e) => e,
                other => OwnershipError::Metadata(other.to_string()),
            }),
        };
        if let Err(e) = result {
            tracing::warn!(error = %e, bundle = %bundle.full_name(), "bundle request failed");
        }
        if let Err(e) = service.metadata().delete(&key, Expect::Any).await {
            tracing::warn!(error = %e, %key, "deleting a done bundle request failed");
        }
    });
}
