//! `/admin/v2/brokers`: the live brokers of the cluster (their
//! registrations under `keys::brokers_available_prefix`), the load
//! manager's leader, this broker's health, and the namespace bundles a
//! broker owns (the ownership keys). A standalone broker registers nowhere
//! and owns everything: it answers about itself.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use magnetar_metadata::keys::{self, BookieRegistration};
use serde::Serialize;

use super::host_port;
use crate::admin::{AdminError, AdminResult};
use crate::load_manager;
use crate::ownership::BrokerIdentity;
use crate::storage::Architecture;
use crate::topic::BrokerService;

/// The bundle a namespace is when it is not split: the whole hash range.
const FULL_BUNDLE: &str = "0x00000000_0xffffffff";

pub(super) fn routes() -> Router<Arc<BrokerService>> {
    Router::new()
        .route("/admin/v2/brokers/leaderBroker", get(leader))
        .route("/admin/v2/brokers/health", get(health))
        .route("/admin/v2/brokers/{cluster}", get(list))
        .route(
            "/admin/v2/brokers/{cluster}/{broker}/ownedNamespaces",
            get(owned_namespaces),
        )
        .route(
            "/admin/v2/brokers/{cluster}/{broker}/drain",
            axum::routing::post(drain),
        )
}

/// Moves everything a broker serves or stores to the other brokers, so
/// that it can be removed (Magnetar's; see `load_manager::drain`). In the
/// monolithic architecture its data is copied, at most
/// `throttleBytesPerSecond` into each receiving broker.
async fn drain(
    State(service): State<Arc<BrokerService>>,
    Path((cluster, broker)): Path<(String, String)>,
    RawQuery(query): RawQuery,
) -> AdminResult<Json<load_manager::DrainReport>> {
    require_local_cluster(&service, &cluster)?;
    let ownership = service.ownership().cloned().ok_or_else(|| {
        AdminError::PreconditionFailed(
            "draining needs brokers sharing metadata (this one runs standalone)".into(),
        )
    })?;
    let target = crate::admin::bundles::live_broker(&service, &broker).await?;
    let throttle = crate::admin::bundles::throttle_param(query.as_deref())?;
    let drainer = service.clone();
    // A drain outlives a client that stops waiting for it.
    let report =
        tokio::spawn(
            async move { load_manager::drain(&drainer, &ownership, &target, throttle).await },
        )
        .await
        .map_err(|e| AdminError::Internal(format!("drain task: {e}")))??;
    tracing::info!(%broker, ?report, "broker drained");
    Ok(Json(report))
}

/// Pulsar's `NamespaceOwnershipStatus`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
struct NamespaceOwnershipStatus {
    broker_assignment: &'static str,
    is_controlled: bool,
    is_active: bool,
}

const SHARED: NamespaceOwnershipStatus = NamespaceOwnershipStatus {
    broker_assignment: "shared",
    is_controlled: false,
    is_active: true,
};

/// 404 unless `cluster` is this broker's cluster (the only one whose
/// brokers it knows).
fn require_local_cluster(service: &BrokerService, cluster: &str) -> AdminResult<()> {
    if cluster == service.config().cluster_name {
        Ok(())
    } else {
        Err(AdminError::NotFound(format!(
            "Cluster {cluster} is not the cluster of this broker ({})",
            service.config().cluster_name
        )))
    }
}

fn this_broker(service: &BrokerService) -> AdminResult<BrokerIdentity> {
    service
        .identity()
        .cloned()
        .ok_or_else(|| AdminError::Unavailable("this broker's address is not known yet".into()))
}

/// The live brokers' registrations, sorted by id; undecodable ones skipped.
async fn live_brokers(service: &BrokerService) -> AdminResult<Vec<BrokerIdentity>> {
    if service.ownership().is_none() {
        return Ok(vec![this_broker(service)?]);
    }
    let mut brokers: Vec<BrokerIdentity> = service
        .metadata()
        .list(&keys::brokers_available_prefix())
        .await?
        .iter()
        .filter_map(|kv| match serde_json::from_slice(&kv.value) {
            Ok(identity) => Some(identity),
            Err(e) => {
                tracing::warn!(key = %kv.key, error = %e, "skipping broker registration");
                None
            }
        })
        .collect();
    brokers.sort_by(|a, b| a.broker_id.cmp(&b.broker_id));
    Ok(brokers)
}

/// `GET /admin/v2/brokers/{cluster}`: the live brokers' HTTP `host:port`.
async fn list(
    State(service): State<Arc<BrokerService>>,
    Path(cluster): Path<String>,
) -> AdminResult<Json<Vec<String>>> {
    require_local_cluster(&service, &cluster)?;
    let brokers = live_brokers(&service).await?;
    Ok(Json(
        brokers
            .iter()
            .map(|b| host_port(&b.http_url).to_string())
            .collect(),
    ))
}

/// `GET /admin/v2/brokers/leaderBroker`: Pulsar's `LeaderBroker`.
async fn leader(State(service): State<Arc<BrokerService>>) -> AdminResult<Json<serde_json::Value>> {
    let leader = if service.ownership().is_none() {
        this_broker(&service)?
    } else {
        let kv = service
            .metadata()
            .get(&keys::load_manager_leader())
            .await?
            .ok_or_else(|| AdminError::NotFound("No leader broker elected".into()))?;
        leader_identity(&service, &kv.value).await?
    };
    Ok(Json(serde_json::json!({
        "serviceUrl": leader.http_url,
        "brokerId": leader.broker_id,
    })))
}

/// The leader's identity from its election key: a `BrokerIdentity`, or
/// just a broker id to find among the live brokers.
async fn leader_identity(service: &BrokerService, value: &[u8]) -> AdminResult<BrokerIdentity> {
    if let Ok(identity) = serde_json::from_slice::<BrokerIdentity>(value) {
        return Ok(identity);
    }
    let id = String::from_utf8_lossy(value).trim().to_string();
    live_brokers(service)
        .await?
        .into_iter()
        .find(|b| b.broker_id == id)
        .ok_or_else(|| AdminError::Internal(format!("leader {id:?} is not a live broker")))
}

/// Why the broker could not store a new ledger now, if it could not:
/// fewer writable bookies than the default ensemble.
fn storage_problem(bookies: &[BookieRegistration], ensemble: usize) -> Option<String> {
    let writable = bookies.iter().filter(|b| !b.read_only).count();
    (writable < ensemble).then(|| {
        format!(
            "{writable} writable bookies registered ({} in all), the default ensemble needs {ensemble}",
            bookies.len()
        )
    })
}

/// `GET /admin/v2/brokers/health`: "ok" when metadata answers and enough
/// writable bookies are registered for the default ensemble; else 503.
async fn health(State(service): State<Arc<BrokerService>>) -> AdminResult<(StatusCode, String)> {
    if service.architecture() == Architecture::Monolithic {
        // Partitions live on brokers: no bookies to count.
        return match service.metadata().get(&keys::cluster_architecture()).await {
            Ok(_) => Ok((StatusCode::OK, "ok".to_string())),
            Err(e) => Err(AdminError::Unavailable(format!(
                "metadata store unavailable: {e}"
            ))),
        };
    }
    let listed = service
        .metadata()
        .list(&keys::bookies_available_prefix())
        .await
        .map_err(|e| AdminError::Unavailable(format!("metadata store unavailable: {e}")))?;
    let bookies: Vec<BookieRegistration> = listed
        .iter()
        .filter_map(|kv| BookieRegistration::from_bytes(&kv.value).ok())
        .collect();
    let ensemble = service.config().default_replication.ensemble_size as usize;
    match storage_problem(&bookies, ensemble) {
        None => Ok((StatusCode::OK, "ok".to_string())),
        Some(problem) => Err(AdminError::Unavailable(problem)),
    }
}

/// One ownership key's `tenant/namespace/bundle`, unescaped.
fn bundle_of_key(prefix: &str, key: &str) -> Option<String> {
    let rest = key.strip_prefix(prefix)?;
    let parts: Vec<&str> = rest.split('/').collect();
    let [tenant, namespace, bundle] = parts.as_slice() else {
        return None;
    };
    Some(format!(
        "{}/{}/{}",
        keys::unescape_segment(tenant)?,
        keys::unescape_segment(namespace)?,
        keys::unescape_segment(bundle)?
    ))
}

fn is_broker(identity: &BrokerIdentity, broker: &str) -> bool {
    host_port(&identity.http_url) == broker || identity.broker_id == broker
}

/// `GET /admin/v2/brokers/{cluster}/{broker}/ownedNamespaces`: the bundles
/// `broker` (its HTTP `host:port` or its id) owns.
async fn owned_namespaces(
    State(service): State<Arc<BrokerService>>,
    Path((cluster, broker)): Path<(String, String)>,
) -> AdminResult<Json<BTreeMap<String, NamespaceOwnershipStatus>>> {
    require_local_cluster(&service, &cluster)?;
    let store = service.metadata();
    let mut owned = BTreeMap::new();
    if service.ownership().is_none() {
        // Standalone: this broker serves every namespace whole.
        if !is_broker(&this_broker(&service)?, &broker) {
            return Err(AdminError::NotFound(format!("Broker {broker} is not live")));
        }
        let tenants = keys::tenants_prefix();
        for tenant_kv in store.list(&tenants).await? {
            let Some(tenant) = keys::child_name(&tenants, &tenant_kv.key) else {
                continue;
            };
            let namespaces = keys::namespaces_prefix(&tenant);
            for kv in store.list(&namespaces).await? {
                if let Some(namespace) = keys::child_name(&namespaces, &kv.key) {
                    owned.insert(format!("{tenant}/{namespace}/{FULL_BUNDLE}"), SHARED);
                }
            }
        }
        return Ok(Json(owned));
    }
    if !live_brokers(&service)
        .await?
        .iter()
        .any(|b| is_broker(b, &broker))
    {
        return Err(AdminError::NotFound(format!("Broker {broker} is not live")));
    }
    let prefix = keys::ownership_prefix();
    for kv in store.list(&prefix).await? {
        let Ok(owner) = serde_json::from_slice::<BrokerIdentity>(&kv.value) else {
            continue;
        };
        if !is_broker(&owner, &broker) {
            continue;
        }
        if let Some(bundle) = bundle_of_key(&prefix, &kv.key) {
            owned.insert(bundle, SHARED);
        }
    }
    Ok(Json(owned))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::testing::broker;

    fn bookie(address: &str, read_only: bool) -> BookieRegistration {
        BookieRegistration {
            address: address.into(),
            rack: None,
            read_only,
            free_disk_bytes: 0,
            total_disk_bytes: 0,
            http_address: None,
        }
    }

    #[test]
    fn health_needs_an_ensemble_of_writable_bookies() {
        assert_eq!(storage_problem(&[bookie("a:1", false)], 1), None);
        let problem = storage_problem(&[bookie("a:1", false), bookie("b:1", true)], 2);
        assert!(problem.unwrap().contains("1 writable bookies"));
        assert!(storage_problem(&[], 1).is_some());
    }

    #[test]
    fn ownership_keys_name_bundles() {
        let prefix = keys::ownership_prefix();
        let key = keys::bundle_owner("acme", "orders", "0x00000000_0x80000000");
        assert_eq!(
            bundle_of_key(&prefix, &key).as_deref(),
            Some("acme/orders/0x00000000_0x80000000")
        );
        assert_eq!(bundle_of_key(&prefix, "/ownership/acme/orders"), None);
        assert_eq!(bundle_of_key(&prefix, "/tenants/acme"), None);
    }

    #[test]
    fn ownership_status_uses_pulsars_names() {
        assert_eq!(
            serde_json::to_value(SHARED).unwrap(),
            serde_json::json!({"broker_assignment":"shared","is_controlled":false,"is_active":true})
        );
    }

    #[tokio::test]
    async fn standalone_answers_about_itself() {
        let broker = broker().await;
        let s = || State(broker.service.clone());
        broker.service.set_identity(BrokerIdentity {
            broker_id: "127.0.0.1:6650".into(),
            pulsar_url: "pulsar://127.0.0.1:6650".into(),
            http_url: "http://127.0.0.1:8080".into(),
            pulsar_url_tls: None,
            http_url_tls: None,
            replica: None,
        });
        let Json(brokers) = list(s(), Path("standalone".into())).await.unwrap();
        assert_eq!(brokers, vec!["127.0.0.1:8080".to_string()]);
        let err = list(s(), Path("elsewhere".into())).await.unwrap_err();
        assert_eq!(err.status(), StatusCode::NOT_FOUND);
        let Json(leader) = leader(s()).await.unwrap();
        assert_eq!(leader["serviceUrl"], "http://127.0.0.1:8080");
        assert_eq!(leader["brokerId"], "127.0.0.1:6650");
        let Json(owned) =
            owned_namespaces(s(), Path(("standalone".into(), "127.0.0.1:8080".into())))
                .await
                .unwrap();
        assert_eq!(
            owned.keys().collect::<Vec<_>>(),
            vec!["acme/orders/0x00000000_0xffffffff"]
        );
        let err = owned_namespaces(s(), Path(("standalone".into(), "other:1".into())))
            .await
            .unwrap_err();
        assert_eq!(err.status(), StatusCode::NOT_FOUND);
        // No bookie registered in the test broker.
        let err = health(s()).await.unwrap_err();
        assert_eq!(err.status(), StatusCode::SERVICE_UNAVAILABLE);
    }
}
