//! `/admin/v2/clusters`: the cluster records at `keys::cluster` in Pulsar's
//! `ClusterData` JSON. A broker registers its own cluster (its
//! `cluster_name`) when it starts, if absent; tenants may only list
//! clusters that exist, and a cluster a tenant lists cannot be deleted.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use bytes::Bytes;
use magnetar_metadata::{keys, Expect, MetadataError};
use serde::{Deserialize, Serialize};

use crate::admin::{check_name, parse_optional_body, AdminError, AdminResult, DONE};
use crate::topic::{BrokerService, TenantInfo};

/// How long a starting broker waits for its own address before it
/// registers its cluster without one.
const REGISTRATION_WAIT: Duration = Duration::from_secs(10);
const REGISTRATION_POLL: Duration = Duration::from_millis(50);

pub(super) fn routes() -> Router<Arc<BrokerService>> {
    Router::new().route("/admin/v2/clusters", get(list)).route(
        "/admin/v2/clusters/{cluster}",
        get(read).put(create).post(update).delete(delete),
    )
}

/// Pulsar's `ClusterData`: the URLs by which the cluster is reached. Fields
/// this broker does not use are kept as given.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct ClusterData {
    #[serde(default)]
    pub service_url: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub service_url_tls: String,
    #[serde(default)]
    pub broker_service_url: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub broker_service_url_tls: String,
    #[serde(flatten)]
    pub other: serde_json::Map<String, serde_json::Value>,
}

fn encode(data: &ClusterData) -> AdminResult<Bytes> {
    serde_json::to_vec(data)
        .map(Bytes::from)
        .map_err(|e| AdminError::Internal(format!("encoding cluster data: {e}")))
}

/// This broker's cluster as it registers it: its own HTTP and Pulsar URLs.
fn local_cluster_data(service: &BrokerService) -> ClusterData {
    let (service_url, broker_service_url) = match service.identity() {
        Some(identity) => (identity.http_url.clone(), identity.pulsar_url.clone()),
        None => (
            String::new(),
            service
                .config()
                .advertised_address
                .as_ref()
                .map(|a| format!("pulsar://{a}"))
                .unwrap_or_default(),
        ),
    };
    ClusterData {
        service_url,
        broker_service_url,
        ..ClusterData::default()
    }
}

/// Writes this broker's cluster record unless one exists.
async fn register_local(service: &BrokerService) -> AdminResult<()> {
    let name = &service.config().cluster_name;
    let key = keys::cluster(name);
    if service.metadata().get(&key).await?.is_some() {
        return Ok(());
    }
    let data = encode(&local_cluster_data(service))?;
    match service
        .metadata()
        .put(&key, data, Expect::Absent, None)
        .await
    {
        Ok(_) => {
            tracing::info!(cluster = %name, "cluster registered");
            Ok(())
        }
        // Another broker of the cluster registered it first.
        Err(MetadataError::Conflict { .. }) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Registers the cluster in the background once the broker knows its own
/// address (it is set just after the HTTP server starts). Requests that
/// need the record register it themselves, so none depends on this task.
pub(super) fn spawn_registration(service: &Arc<BrokerService>) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    let service = Arc::downgrade(service);
    runtime.spawn(async move {
        let mut waited = Duration::ZERO;
        loop {
            let Some(service) = service.upgrade() else {
                return;
            };
            if service.identity().is_some() || waited >= REGISTRATION_WAIT {
                if let Err(e) = register_local(&service).await {
                    tracing::warn!(error = %e, "registering the cluster failed");
                }
                return;
            }
            drop(service);
            tokio::time::sleep(REGISTRATION_POLL).await;
            waited += REGISTRATION_POLL;
        }
    });
}

/// 412 "Clusters do not exist" (Pulsar's words) unless every cluster named
/// is registered; this broker's own cluster always is.
pub(in crate::admin) async fn check_clusters_exist(
    service: &BrokerService,
    clusters: &[String],
) -> AdminResult<()> {
    for cluster in clusters {
        if *cluster == service.config().cluster_name {
            register_local(service).await?;
            continue;
        }
        if cluster.is_empty()
            || service
                .metadata()
                .get(&keys::cluster(cluster))
                .await?
                .is_none()
        {
            return Err(AdminError::PreconditionFailed(
                "Clusters do not exist".to_string(),
            ));
        }
    }
    Ok(())
}

/// 403 when a tenant that names its allowed clusters does not allow this
/// broker's cluster (a namespace created here would live in it).
pub(in crate::admin) fn check_local_cluster_allowed(
    service: &BrokerService,
    tenant: &str,
    info: &TenantInfo,
) -> AdminResult<()> {
    let local = &service.config().cluster_name;
    if info.allowed_clusters.is_empty() || info.allowed_clusters.contains(local) {
        return Ok(());
    }
    Err(AdminError::Forbidden(format!(
        "Cluster [{local}] is not in the list of allowed clusters list for tenant [{tenant}]"
    )))
}

/// The cluster's record and its version, or 404.
async fn require_cluster(
    service: &BrokerService,
    cluster: &str,
) -> AdminResult<(ClusterData, i64)> {
    if *cluster == service.config().cluster_name {
        register_local(service).await?;
    }
    let kv = service
        .metadata()
        .get(&keys::cluster(cluster))
        .await?
        .ok_or_else(|| AdminError::NotFound(format!("Cluster {cluster} does not exist")))?;
    let data = serde_json::from_slice(&kv.value)
        .map_err(|e| AdminError::Internal(format!("corrupt cluster record {cluster}: {e}")))?;
    Ok((data, kv.version))
}

async fn list(State(service): State<Arc<BrokerService>>) -> AdminResult<Json<Vec<String>>> {
    register_local(&service).await?;
    let prefix = keys::clusters_prefix();
    let mut clusters: Vec<String> = service
        .metadata()
        .list(&prefix)
        .await?
        .iter()
        .filter_map(|kv| keys::child_name(&prefix, &kv.key))
        .collect();
    clusters.sort();
    Ok(Json(clusters))
}

async fn read(
    State(service): State<Arc<BrokerService>>,
    Path(cluster): Path<String>,
) -> AdminResult<Json<ClusterData>> {
    let (data, _) = require_cluster(&service, &cluster).await?;
    Ok(Json(data))
}

async fn create(
    State(service): State<Arc<BrokerService>>,
    Path(cluster): Path<String>,
    body: Bytes,
) -> AdminResult<StatusCode> {
    check_name("cluster", &cluster)?;
    let data = parse_optional_body::<ClusterData>(&body, "ClusterData")?.unwrap_or_default();
    match service
        .metadata()
        .put(
            &keys::cluster(&cluster),
            encode(&data)?,
            Expect::Absent,
            None,
        )
        .await
    {
        Ok(_) => {
            tracing::info!(%cluster, "cluster created");
            Ok(DONE)
        }
        Err(MetadataError::Conflict { .. }) => Err(AdminError::Conflict(format!(
            "Cluster {cluster} already exists"
        ))),
        Err(e) => Err(e.into()),
    }
}

async fn update(
    State(service): State<Arc<BrokerService>>,
    Path(cluster): Path<String>,
    body: Bytes,
) -> AdminResult<StatusCode> {
    let data = parse_optional_body::<ClusterData>(&body, "ClusterData")?.unwrap_or_default();
    let (_, version) = require_cluster(&service, &cluster).await?;
    match service
        .metadata()
        .put(
            &keys::cluster(&cluster),
            encode(&data)?,
            Expect::Version(version),
            None,
        )
        .await
    {
        Ok(_) => Ok(DONE),
        Err(MetadataError::Conflict { .. }) => Err(AdminError::Conflict(format!(
            "Cluster {cluster} was changed concurrently; retry"
        ))),
        Err(e) => Err(e.into()),
    }
}

/// Refused (412) for this broker's own cluster and for one a tenant lists.
async fn delete(
    State(service): State<Arc<BrokerService>>,
    Path(cluster): Path<String>,
) -> AdminResult<StatusCode> {
    require_cluster(&service, &cluster).await?;
    if cluster == service.config().cluster_name {
        return Err(AdminError::PreconditionFailed(format!(
            "Cluster {cluster} is the cluster of this broker"
        )));
    }
    let store = service.metadata();
    for kv in store.list(&keys::tenants_prefix()).await? {
        let Ok(info) = serde_json::from_slice::<TenantInfo>(&kv.value) else {
            continue;
        };
        if info.allowed_clusters.contains(&cluster) {
            let tenant = keys::child_name(&keys::tenants_prefix(), &kv.key).unwrap_or_default();
            return Err(AdminError::PreconditionFailed(format!(
                "Cluster {cluster} is in use by tenant {tenant}"
            )));
        }
    }
    store.delete(&keys::cluster(&cluster), Expect::Any).await?;
    tracing::info!(%cluster, "cluster deleted");
    Ok(DONE)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::testing::broker;

    fn status<T: std::fmt::Debug>(result: AdminResult<T>) -> StatusCode {
        match result {
            Ok(_) => StatusCode::OK,
            Err(e) => e.status(),
        }
    }

    #[test]
    fn cluster_data_keeps_pulsars_fields() {
        let json = r#"{"serviceUrl":"http://a:8080","brokerServiceUrl":"pulsar://a:6650","peerClusterNames":["x"]}"#;
        let data: ClusterData = serde_json::from_str(json).unwrap();
        assert_eq!(data.service_url, "http://a:8080");
        assert_eq!(
            serde_json::to_value(&data).unwrap(),
            serde_json::from_str::<serde_json::Value>(json).unwrap()
        );
    }

    #[tokio::test]
    async fn clusters_are_created_checked_and_deleted() {
        let broker = broker().await;
        let s = || State(broker.service.clone());
        let body = |v: &str| Bytes::from(v.to_string());

        // The local cluster exists from the first request on.
        let Json(names) = list(s()).await.unwrap();
        assert_eq!(names, vec!["standalone".to_string()]);
        let service = broker.service.as_ref();
        check_clusters_exist(service, &["standalone".into()])
            .await
            .unwrap();
        let missing = check_clusters_exist(service, &["east".into()]).await;
        assert_eq!(status(missing), StatusCode::PRECONDITION_FAILED);

        create(
            s(),
            Path("east".into()),
            body(r#"{"serviceUrl":"http://e:8080"}"#),
        )
        .await
        .unwrap();
        assert_eq!(
            status(create(s(), Path("east".into()), body("")).await),
            StatusCode::CONFLICT
        );
        assert_eq!(
            status(create(s(), Path("bad name".into()), body("")).await),
            StatusCode::BAD_REQUEST
        );
        check_clusters_exist(service, &["standalone".into(), "east".into()])
            .await
            .unwrap();
        let Json(east) = read(s(), Path("east".into())).await.unwrap();
        assert_eq!(east.service_url, "http://e:8080");
        update(
            s(),
            Path("east".into()),
            body(r#"{"serviceUrl":"http://e2:8080"}"#),
        )
        .await
        .unwrap();
        let Json(east) = read(s(), Path("east".into())).await.unwrap();
        assert_eq!(east.service_url, "http://e2:8080");
        assert_eq!(
            status(update(s(), Path("west".into()), body("{}")).await),
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            status(read(s(), Path("west".into())).await),
            StatusCode::NOT_FOUND
        );

        // In use by a tenant: kept.
        let tenant = TenantInfo {
            admin_roles: Vec::new(),
            allowed_clusters: vec!["east".into()],
        };
        service
            .metadata()
            .put(
                &keys::tenant("t1"),
                Bytes::from(serde_json::to_vec(&tenant).unwrap()),
                Expect::Absent,
                None,
            )
            .await
            .unwrap();
        assert_eq!(
            status(delete(s(), Path("east".into())).await),
            StatusCode::PRECONDITION_FAILED
        );
        assert_eq!(
            status(check_local_cluster_allowed(service, "t1", &tenant)),
            StatusCode::FORBIDDEN
        );
        assert!(check_local_cluster_allowed(service, "t0", &TenantInfo::default()).is_ok());
        service
            .metadata()
            .delete(&keys::tenant("t1"), Expect::Any)
            .await
            .unwrap();
        delete(s(), Path("east".into())).await.unwrap();
        assert_eq!(
            status(delete(s(), Path("east".into())).await),
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            status(delete(s(), Path("standalone".into())).await),
            StatusCode::PRECONDITION_FAILED
        );
    }
}
