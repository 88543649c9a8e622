//! `/admin/v2/tenants`: create, list, read, update and delete tenants (the
//! records at `keys::tenant`). A tenant with namespaces cannot be deleted.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use bytes::Bytes;
use magnetar_metadata::{keys, Expect, MetadataError, MetadataStore};
use serde::{Deserialize, Serialize};

use super::ops::check_clusters_exist;
use super::{check_name, parse_optional_body, AdminError, AdminResult, DONE};
use crate::topic::{BrokerService, TenantInfo};

pub(super) fn routes() -> Router<Arc<BrokerService>> {
    Router::new().route("/admin/v2/tenants", get(list)).route(
        "/admin/v2/tenants/{tenant}",
        get(read).put(create).post(update).delete(delete),
    )
}

/// Pulsar's `TenantInfo` JSON.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct TenantInfoJson {
    #[serde(default)]
    admin_roles: Vec<String>,
    #[serde(default)]
    allowed_clusters: Vec<String>,
}

impl From<TenantInfoJson> for TenantInfo {
    fn from(json: TenantInfoJson) -> Self {
        TenantInfo {
            admin_roles: json.admin_roles,
            allowed_clusters: json.allowed_clusters,
        }
    }
}

impl From<TenantInfo> for TenantInfoJson {
    fn from(info: TenantInfo) -> Self {
        TenantInfoJson {
            admin_roles: info.admin_roles,
            allowed_clusters: info.allowed_clusters,
        }
    }
}

fn encode(info: &TenantInfo) -> AdminResult<Bytes> {
    serde_json::to_vec(info)
        .map(Bytes::from)
        .map_err(|e| AdminError::Internal(format!("encoding tenant: {e}")))
}

/// The tenant's record, or 404.
pub(super) async fn require_tenant(
    store: &dyn MetadataStore,
    tenant: &str,
) -> AdminResult<(TenantInfo, i64)> {
    let kv = store
        .get(&keys::tenant(tenant))
        .await?
        .ok_or_else(|| AdminError::NotFound(format!("Tenant {tenant} does not exist")))?;
    let info = serde_json::from_slice(&kv.value)
        .map_err(|e| AdminError::Internal(format!("corrupt tenant record {tenant}: {e}")))?;
    Ok((info, kv.version))
}

async fn list(State(service): State<Arc<BrokerService>>) -> AdminResult<Json<Vec<String>>> {
    let prefix = keys::tenants_prefix();
    let mut tenants: Vec<String> = service
        .metadata()
        .list(&prefix)
        .await?
        .iter()
        .filter_map(|kv| keys::child_name(&prefix, &kv.key))
        .collect();
    tenants.sort();
    Ok(Json(tenants))
}

async fn read(
    State(service): State<Arc<BrokerService>>,
    Path(tenant): Path<String>,
) -> AdminResult<Json<TenantInfoJson>> {
    let (info, _) = require_tenant(service.metadata().as_ref(), &tenant).await?;
    Ok(Json(info.into()))
}

async fn create(
    State(service): State<Arc<BrokerService>>,
    Path(tenant): Path<String>,
    body: Bytes,
) -> AdminResult<StatusCode> {
    check_name("tenant", &tenant)?;
    let info: TenantInfo = parse_optional_body::<TenantInfoJson>(&body, "TenantInfo")?
        .unwrap_or_default()
        .into();
    check_clusters_exist(&service, &info.allowed_clusters).await?;
    match service
        .metadata()
        .put(&keys::tenant(&tenant), encode(&info)?, Expect::Absent, None)
        .await
    {
        Ok(_) => {
            tracing::info!(%tenant, "tenant created");
            Ok(DONE)
        }
        Err(MetadataError::Conflict { .. }) => Err(AdminError::Conflict(format!(
            "Tenant {tenant} already exists"
        ))),
        Err(e) => Err(e.into()),
    }
}

async fn update(
    State(service): State<Arc<BrokerService>>,
    Path(tenant): Path<String>,
    body: Bytes,
) -> AdminResult<StatusCode> {
    let info: TenantInfo = parse_optional_body::<TenantInfoJson>(&body, "TenantInfo")?
        .unwrap_or_default()
        .into();
    let (_, version) = require_tenant(service.metadata().as_ref(), &tenant).await?;
    check_clusters_exist(&service, &info.allowed_clusters).await?;
    match service
        .metadata()
        .put(
            &keys::tenant(&tenant),
            encode(&info)?,
            Expect::Version(version),
            None,
        )
        .await
    {
        Ok(_) => Ok(DONE),
        Err(MetadataError::Conflict { .. }) => Err(AdminError::Conflict(format!(
            "Tenant {tenant} was changed concurrently; retry"
        ))),
        Err(e) => Err(e.into()),
    }
}

async fn delete(
    State(service): State<Arc<BrokerService>>,
    Path(tenant): Path<String>,
) -> AdminResult<StatusCode> {
    let store = service.metadata();
    require_tenant(store.as_ref(), &tenant).await?;
    if !store
        .list(&keys::namespaces_prefix(&tenant))
        .await?
        .is_empty()
    {
        return Err(AdminError::Conflict(format!(
            "The tenant {tenant} still has active namespaces"
        )));
    }
    store.delete(&keys::tenant(&tenant), Expect::Any).await?;
    tracing::info!(%tenant, "tenant deleted");
    Ok(DONE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_info_uses_pulsar_names() {
        let json: TenantInfoJson =
            serde_json::from_str(r#"{"adminRoles":["ops"],"allowedClusters":["standalone"]}"#)
                .unwrap();
        let info: TenantInfo = json.clone().into();
        assert_eq!(info.admin_roles, vec!["ops".to_string()]);
        assert_eq!(
            serde_json::to_value(TenantInfoJson::from(info)).unwrap(),
            serde_json::json!({"adminRoles":["ops"],"allowedClusters":["standalone"]})
        );
        let empty: TenantInfoJson = serde_json::from_str("{}").unwrap();
        assert_eq!(empty, TenantInfoJson::default());
    }
}
