//! Namespace bundles over admin REST, as Pulsar names them: the layout
//! (`GET .../bundles`), unloading a namespace or one bundle, splitting a
//! bundle, and this broker's load report. Unload and split are carried out
//! by the bundle's owner wherever the request arrives.

use std::sync::Arc;

use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::routing::{get, put};
use axum::{Json, Router};

use super::{query_flag, AdminError, AdminResult, DONE};
use crate::load_manager::{self, BundleOpError};
use crate::ownership::{
    BrokerIdentity, BundleRange, BundleRef, BundlesData, LoadReport, OwnershipError,
};
use crate::topic::{BrokerService, NamespacePolicies};
use magnetar_metadata::keys;

pub(super) fn routes() -> Router<Arc<BrokerService>> {
    const NS: &str = "/admin/v2/namespaces/{tenant}/{namespace}";
    Router::new()
        .route(&format!("{NS}/bundles"), get(bundles))
        .route(&format!("{NS}/unload"), put(unload_namespace))
        .route(&format!("{NS}/{{bundle}}/unload"), put(unload_bundle))
        .route(&format!("{NS}/{{bundle}}/split"), put(split_bundle))
        .route("/admin/v2/broker-stats/load-report", get(load_report))
}

impl From<BundleOpError> for AdminError {
    fn from(e: BundleOpError) -> Self {
        match e {
            BundleOpError::Ownership(e) => e.into(),
            BundleOpError::Metadata(e) => e.into(),
            e @ BundleOpError::Timeout { .. } => AdminError::Unavailable(e.to_string()),
            e @ BundleOpError::Failed { .. } => AdminError::Internal(e.to_string()),
            e @ BundleOpError::Storage { .. } => AdminError::PreconditionFailed(e.to_string()),
            e @ BundleOpError::NotServed(_) => AdminError::PreconditionFailed(e.to_string()),
        }
    }
}

impl From<OwnershipError> for AdminError {
    fn from(e: OwnershipError) -> Self {
        let reason = e.to_string();
        match e {
            OwnershipError::NamespaceNotFound(_) => AdminError::NotFound(reason),
            OwnershipError::Bundle(_) => AdminError::PreconditionFailed(reason),
            OwnershipError::OwnedElsewhere { .. } | OwnershipError::Unloading { .. } => {
                AdminError::PreconditionFailed(reason)
            }
            OwnershipError::NoLease
            | OwnershipError::Metadata(_)
            | OwnershipError::NoEligibleLeader(_) => AdminError::Unavailable(reason),
        }
    }
}

async fn policies(
    service: &BrokerService,
    tenant: &str,
    namespace: &str,
) -> AdminResult<NamespacePolicies> {
    let kv = service
        .metadata()
        .get(&keys::namespace(tenant, namespace))
        .await?
        .ok_or_else(|| {
            AdminError::NotFound(format!("Namespace {tenant}/{namespace} does not exist"))
        })?;
    serde_json::from_slice(&kv.value)
        .map_err(|e| AdminError::Internal(format!("corrupt policies of {tenant}/{namespace}: {e}")))
}

/// The bundle a path names, which must be one of the namespace's bundles.
async fn bundle_of_path(
    service: &BrokerService,
    tenant: &str,
    namespace: &str,
    bundle: &str,
) -> AdminResult<BundleRef> {
    let range = BundleRange::parse(bundle).map_err(|e| AdminError::BadRequest(e.to_string()))?;
    let layout = policies(service, tenant, namespace).await?.bundle_layout();
    if !layout.contains(range) {
        return Err(AdminError::NotFound(format!(
            "Bundle {bundle} is not a bundle of {tenant}/{namespace} (see .../bundles)"
        )));
    }
    Ok(BundleRef::new(tenant, namespace, range))
}

async fn bundles(
    State(service): State<Arc<BrokerService>>,
    Path((tenant, namespace)): Path<(String, String)>,
) -> AdminResult<Json<BundlesData>> {
    let layout = policies(&service, &tenant, &namespace)
        .await?
        .bundle_layout();
    Ok(Json(layout.to_data()))
}

async fn unload_namespace(
    State(service): State<Arc<BrokerService>>,
    Path((tenant, namespace)): Path<(String, String)>,
) -> AdminResult<StatusCode> {
    let unloaded = load_manager::unload_namespace(&service, &tenant, &namespace).await?;
    tracing::info!(%tenant, %namespace, bundles = unloaded, "namespace unloaded");
    Ok(DONE)
}

/// `?destinationBroker=host:port` (Pulsar's name) moves the bundle to that
/// broker; without it the load manager places it on its next lookup. In
/// the monolithic architecture the move copies the bundle's partitions to
/// the destination first, at most `throttleBytesPerSecond` into it
/// (Magnetar's parameter; unthrottled by default), and the request
/// returns once the destination serves them.
async fn unload_bundle(
    State(service): State<Arc<BrokerService>>,
    Path((tenant, namespace, bundle)): Path<(String, String, String)>,
    RawQuery(query): RawQuery,
) -> AdminResult<StatusCode> {
    let bundle = bundle_of_path(&service, &tenant, &namespace, &bundle).await?;
    let destination =
        super::query_param(query.as_deref(), "destinationBroker").filter(|d| !d.is_empty());
    if let Some(destination) = destination {
        let ownership = service.ownership().ok_or_else(|| {
            AdminError::PreconditionFailed(
                "destinationBroker needs brokers sharing metadata (this one runs standalone)"
                    .into(),
            )
        })?;
        let target = live_broker(&service, destination).await?;
        let throttle = throttle_param(query.as_deref())?;
        // A copying move outlives a client that stops waiting for it.
        let (mover, ownership, moved) = (service.clone(), ownership.clone(), bundle.clone());
        let target_id = target.clone();
        tokio::spawn(async move {
            load_manager::move_bundle(&mover, &ownership, &moved, &target_id, throttle).await
        })
        .await
        .map_err(|e| AdminError::Internal(format!("bundle move task: {e}")))??;
        tracing::info!(bundle = %bundle.full_name(), to = %target.broker_id, "bundle moved by request");
        return Ok(DONE);
    }
    let outcome = load_manager::unload(&service, &bundle).await?;
    tracing::info!(bundle = %bundle.full_name(), ?outcome, "bundle unload requested");
    Ok(DONE)
}

/// `throttleBytesPerSecond`, if given: a positive number of bytes.
pub(in crate::admin) fn throttle_param(query: Option<&str>) -> AdminResult<Option<u64>> {
    match super::query_param(query, "throttleBytesPerSecond") {
        None | Some("") => Ok(None),
        Some(text) => match text.parse::<u64>() {
            Ok(0) | Err(_) => Err(AdminError::BadRequest(format!(
                "throttleBytesPerSecond must be a positive integer, not {text:?}"
            ))),
            Ok(n) => Ok(Some(n)),
        },
    }
}

/// The live broker named by its id (Pulsar address) or HTTP address.
pub(in crate::admin) async fn live_broker(
    service: &BrokerService,
    name: &str,
) -> AdminResult<BrokerIdentity> {
    let name = name
        .trim_start_matches("pulsar://")
        .trim_start_matches("http://");
    service
        .metadata()
        .list(&keys::brokers_available_prefix())
        .await?
        .iter()
        .filter_map(|kv| serde_json::from_slice::<BrokerIdentity>(&kv.value).ok())
        .find(|b| b.broker_id == name || b.http_url.trim_start_matches("http://") == name)
        .ok_or_else(|| AdminError::PreconditionFailed(format!("no live broker {name}")))
}

async fn split_bundle(
    State(service): State<Arc<BrokerService>>,
    Path((tenant, namespace, bundle)): Path<(String, String, String)>,
    RawQuery(query): RawQuery,
) -> AdminResult<StatusCode> {
    let unload = query_flag(query.as_deref(), "unload")?;
    if let Some(algorithm) = super::query_param(query.as_deref(), "splitAlgorithmName") {
        if algorithm != "range_equally_divide" {
            return Err(AdminError::PreconditionFailed(format!(
                "unsupported split algorithm {algorithm:?}: only range_equally_divide"
            )));
        }
    }
    let bundle = bundle_of_path(&service, &tenant, &namespace, &bundle).await?;
    load_manager::split(&service, &bundle, unload).await?;
    Ok(DONE)
}

async fn load_report(State(service): State<Arc<BrokerService>>) -> AdminResult<Json<LoadReport>> {
    service
        .load_manager()
        .and_then(|m| m.latest_report())
        .map(Json)
        .ok_or_else(|| {
            AdminError::NotFound(
                "no load report: this broker runs without a load manager (standalone) or has not reported yet"
                    .into(),
            )
        })
}
