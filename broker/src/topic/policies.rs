//! Tenant and namespace records as stored in metadata (`keys::tenant`,
//! `keys::namespace`). Unknown fields are kept out of the way with defaults,
//! so later policies (retention, quotas) extend these without a migration.

use bytes::Bytes;
use magnetar_metadata::{keys, Expect, MetadataError, MetadataStore};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantInfo {
    #[serde(default)]
    pub admin_roles: Vec<String>,
    #[serde(default)]
    pub allowed_clusters: Vec<String>,
}

/// Replication of a namespace's ledgers (Pulsar's persistence policy).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PersistencePolicy {
    pub ensemble_size: u32,
    pub write_quorum: u32,
    pub ack_quorum: u32,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamespacePolicies {
    /// `None`: the broker's default persistence.
    #[serde(default)]
    pub persistence: Option<PersistencePolicy>,
}

/// Creates a tenant and a namespace unless they exist (standalone's
/// `public/default` on first start). Existing records are left unchanged.
pub async fn create_namespace_if_absent(
    store: &dyn MetadataStore,
    tenant: &str,
    namespace: &str,
    tenant_info: &TenantInfo,
    policies: &NamespacePolicies,
) -> Result<(), MetadataError> {
    let records = [
        (keys::tenant(tenant), serde_json::to_vec(tenant_info)),
        (
            keys::namespace(tenant, namespace),
            serde_json::to_vec(policies),
        ),
    ];
    for (key, value) in records {
        let value = value.map_err(|e| MetadataError::InvalidArgument(e.to_string()))?;
        match store
            .put(&key, Bytes::from(value), Expect::Absent, None)
            .await
        {
            Ok(_) | Err(MetadataError::Conflict { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
