//! `/admin/v2/namespaces`: create, list, read and delete namespaces, and
//! their policies (retention, message TTL, backlog quota, persistence) in
//! Pulsar's JSON. Policies live in one `NamespacePolicies` record per
//! namespace, changed by compare-and-set read-modify-write so concurrent
//! admin calls never lose each other's changes.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use bytes::Bytes;
use magnetar_metadata::{keys, Expect, MetadataError, MetadataStore};
use serde::{Deserialize, Serialize};

use super::tenants::require_tenant;
use super::{
    check_name, parse_body, parse_optional_body, query_param, AdminError, AdminResult, DONE,
};
use crate::auth::{AuthAction, Permissions};
use crate::ownership::{BundleLayout, BundlesData};
mod inactive_topics;
mod limits;
mod local_logs;

use crate::topic::{
    BacklogQuota, BacklogQuotaPolicy, BrokerService, NamespacePolicies, PersistencePolicy,
    RetentionPolicy,
};

pub(super) fn routes() -> Router<Arc<BrokerService>> {
    const NS: &str = "/admin/v2/namespaces/{tenant}/{namespace}";
    Router::new()
        .route("/admin/v2/namespaces/{tenant}", get(list))
        .route(NS, get(read).put(create).delete(delete))
        .route(
            &format!("{NS}/retention"),
            get(get_retention)
                .post(set_retention)
                .delete(remove_retention),
        )
        .route(
            &format!("{NS}/messageTTL"),
            get(get_ttl).post(set_ttl).delete(remove_ttl),
        )
        .route(
            &format!("{NS}/backlogQuota"),
            post(set_backlog_quota).delete(remove_backlog_quota),
        )
        .route(&format!("{NS}/backlogQuotaMap"), get(get_backlog_quotas))
        .merge(limits::routes(NS))
        .merge(local_logs::routes(NS))
        .merge(inactive_topics::routes(NS))
        .route(&format!("{NS}/permissions"), get(get_permissions))
        .route(
            &format!("{NS}/permissions/{{role}}"),
            post(grant_permission).delete(revoke_permission),
        )
        .route(
            &format!("{NS}/persistence"),
            get(get_persistence)
                .post(set_persistence)
                .delete(remove_persistence),
        )
}

type NamespacePath = Path<(String, String)>;

// Pulsar's JSON shapes, and their checks.

/// Pulsar's `PersistencePolicies`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PersistenceJson {
    bookkeeper_ensemble: i64,
    bookkeeper_write_quorum: i64,
    bookkeeper_ack_quorum: i64,
    /// Accepted for compatibility; cursors here are persisted on a timer.
    #[serde(default)]
    managed_ledger_max_mark_delete_rate: f64,
}

impl PersistenceJson {
    fn validate(&self) -> AdminResult<PersistencePolicy> {
        let (e, w, a) = (
            self.bookkeeper_ensemble,
            self.bookkeeper_write_quorum,
            self.bookkeeper_ack_quorum,
        );
        if !(a >= 1 && w >= a && e >= w && e <= u32::MAX as i64) {
            return Err(AdminError::BadRequest(format!(
                "Bookkeeper Ensemble >= WriteQuorum >= AckQuorum >= 1 is required, got {e}/{w}/{a}"
            )));
        }
        if self.managed_ledger_max_mark_delete_rate < 0.0 {
            return Err(AdminError::BadRequest(
                "managedLedgerMaxMarkDeleteRate must be >= 0".into(),
            ));
        }
        Ok(PersistencePolicy {
            ensemble_size: e as u32,
            write_quorum: w as u32,
            ack_quorum: a as u32,
        })
    }
}

impl From<PersistencePolicy> for PersistenceJson {
    fn from(p: PersistencePolicy) -> Self {
        PersistenceJson {
            bookkeeper_ensemble: p.ensemble_size as i64,
            bookkeeper_write_quorum: p.write_quorum as i64,
            bookkeeper_ack_quorum: p.ack_quorum as i64,
            managed_ledger_max_mark_delete_rate: 0.0,
        }
    }
}

/// Pulsar's rules for `RetentionPolicies`: each limit is -1 (none) or
/// more, and 0 only for both (no retention).
fn validate_retention(r: &RetentionPolicy) -> AdminResult<()> {
    let (time, size) = (r.retention_time_in_minutes, r.retention_size_in_mb);
    if time < -1 || size < -1 {
        return Err(AdminError::BadRequest(format!(
            "Invalid retention policy: limits must be >= -1, got time {time} minutes, size {size} MB"
        )));
    }
    if (time == 0) != (size == 0) {
        return Err(AdminError::BadRequest(
            "Invalid retention policy: setting a single time or size limit to 0 is invalid when \
             the other is not 0; use -1 to ignore a limit, or 0 for both to disable retention"
                .into(),
        ));
    }
    Ok(())
}

fn validate_ttl(ttl: i64) -> AdminResult<u32> {
    u32::try_from(ttl).map_err(|_| {
        AdminError::BadRequest(format!(
            "Invalid value for message TTL: {ttl} (seconds, 0 to {})",
            u32::MAX
        ))
    })
}

/// Pulsar's `BacklogQuota` as a request carries it (`limit` is the old
/// name of `limitSize`).
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct BacklogQuotaJson {
    #[serde(default)]
    limit: Option<i64>,
    #[serde(default)]
    limit_size: Option<i64>,
    #[serde(default)]
    limit_time: Option<i64>,
    policy: BacklogQuotaPolicy,
}

impl BacklogQuotaJson {
    fn validate(&self) -> AdminResult<BacklogQuota> {
        let limit_size = self.limit_size.or(self.limit).unwrap_or(-1);
        let limit_time = self.limit_time.unwrap_or(-1);
        if limit_size < -1 || limit_time < -1 {
            return Err(AdminError::BadRequest(format!(
                "Invalid backlog quota: limitSize and limitTime must be >= -1, got {limit_size} and {limit_time}"
            )));
        }
        Ok(BacklogQuota {
            limit_size,
            limit_time,
            policy: self.policy,
        })
    }
}

/// Which part of the quota a request is about (Pulsar's `BacklogQuotaType`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum QuotaType {
    /// The size limit (and, as this record keeps both, the time limit).
    DestinationStorage,
    /// The time limit only.
    MessageAge,
}

fn quota_type(query: Option<&str>) -> AdminResult<QuotaType> {
    parse_quota_type(query_param(query, "backlogQuotaType"))
}

fn parse_quota_type(name: Option<&str>) -> AdminResult<QuotaType> {
    match name {
        None | Some("destination_storage") => Ok(QuotaType::DestinationStorage),
        Some("message_age") => Ok(QuotaType::MessageAge),
        Some(other) => Err(AdminError::BadRequest(format!(
            "unknown backlogQuotaType {other:?} (destination_storage or message_age)"
        ))),
    }
}

/// The subset of Pulsar's `Policies` a namespace creation may carry.
#[derive(Clone, Debug, Default, Deserialize)]
struct PoliciesJson {
    #[serde(default)]
    persistence: Option<PersistenceJson>,
    #[serde(default)]
    retention_policies: Option<RetentionPolicy>,
    #[serde(default)]
    message_ttl_in_seconds: Option<i64>,
    #[serde(default)]
    backlog_quota_map: BTreeMap<String, BacklogQuotaJson>,
    /// Boundaries, or just `numBundles` (`pulsar-admin namespaces create
    /// --bundles N`).
    #[serde(default)]
    bundles: Option<BundlesData>,
}

impl PoliciesJson {
    fn validate(&self) -> AdminResult<NamespacePolicies> {
        let mut policies = NamespacePolicies {
            persistence: self
                .persistence
                .as_ref()
                .map(|p| p.validate())
                .transpose()?,
            retention: self.retention_policies,
            message_ttl_seconds: self.message_ttl_in_seconds.map(validate_ttl).transpose()?,
            backlog_quota: None,
            bundles: self
                .bundles
                .as_ref()
                .map(|b| BundleLayout::from_data(b).map(|l| l.to_data()))
                .transpose()
                .map_err(|e| AdminError::PreconditionFailed(e.to_string()))?,
            ..NamespacePolicies::default()
        };
        if let Some(r) = &policies.retention {
            validate_retention(r)?;
        }
        for (kind, quota) in &self.backlog_quota_map {
            let quota = quota.validate()?;
            policies.backlog_quota = Some(match parse_quota_type(Some(kind))? {
                QuotaType::DestinationStorage => quota,
                QuotaType::MessageAge => BacklogQuota {
                    limit_size: policies.backlog_quota.map_or(-1, |q| q.limit_size),
                    ..quota
                },
            });
        }
        Ok(policies)
    }
}

/// A namespace's policies in Pulsar's `Policies` JSON (the fields this
/// broker has).
fn policies_json(p: &NamespacePolicies) -> serde_json::Value {
    serde_json::json!({
        "persistence": p.persistence.map(PersistenceJson::from),
        "retention_policies": p.retention,
        "message_ttl_in_seconds": p.message_ttl_seconds,
        "backlog_quota_map": backlog_quota_map(p),
        "max_producers_per_topic": p.max_producers_per_topic,
        "max_consumers_per_topic": p.max_consumers_per_topic,
        "max_consumers_per_subscription": p.max_consumers_per_subscription,
        "auth_policies": {"namespace_auth": &p.permissions},
        "bundles": p.bundle_layout().to_data(),
        "deleted": false,
    })
}

fn backlog_quota_map(p: &NamespacePolicies) -> BTreeMap<&'static str, BacklogQuota> {
    p.backlog_quota
        .map(|q| ("destination_storage", q))
        .into_iter()
        .collect()
}

/// 200 with the value, or 204 when the policy is not set (as Pulsar does).
fn json_or_no_content<T: Serialize>(value: Option<T>) -> Response {
    match value {
        Some(v) => Json(v).into_response(),
        None => StatusCode::NO_CONTENT.into_response(),
    }
}

// The stored record.

fn decode(key: &str, value: &[u8]) -> AdminResult<NamespacePolicies> {
    serde_json::from_slice(value)
        .map_err(|e| AdminError::Internal(format!("corrupt policies at {key}: {e}")))
}

fn encode(policies: &NamespacePolicies) -> AdminResult<Bytes> {
    serde_json::to_vec(policies)
        .map(Bytes::from)
        .map_err(|e| AdminError::Internal(format!("encoding policies: {e}")))
}

fn not_found(tenant: &str, namespace: &str) -> AdminError {
    AdminError::NotFound(format!("Namespace {tenant}/{namespace} does not exist"))
}

async fn load(
    store: &dyn MetadataStore,
    tenant: &str,
    namespace: &str,
) -> AdminResult<NamespacePolicies> {
    let key = keys::namespace(tenant, namespace);
    let kv = store
        .get(&key)
        .await?
        .ok_or_else(|| not_found(tenant, namespace))?;
    decode(&key, &kv.value)
}

/// Applies `change` to the stored policies by compare-and-set, re-reading
/// and re-applying when another writer got there first.
async fn update(
    store: &dyn MetadataStore,
    tenant: &str,
    namespace: &str,
    change: impl Fn(&mut NamespacePolicies),
) -> AdminResult<StatusCode> {
    update_policies(store, tenant, namespace, change)
        .await
        .map(|_| DONE)
}

/// [`update`], returning the policies as written.
async fn update_policies(
    store: &dyn MetadataStore,
    tenant: &str,
    namespace: &str,
    change: impl Fn(&mut NamespacePolicies),
) -> AdminResult<NamespacePolicies> {
    const ATTEMPTS: usize = 100;
    let key = keys::namespace(tenant, namespace);
    for _ in 0..ATTEMPTS {
        let kv = store
            .get(&key)
            .await?
            .ok_or_else(|| not_found(tenant, namespace))?;
        let mut policies = decode(&key, &kv.value)?;
        change(&mut policies);
        match store
            .put(&key, encode(&policies)?, Expect::Version(kv.version), None)
            .await
        {
            Ok(_) => {
                tracing::info!(%tenant, %namespace, ?policies, "namespace policies updated");
                return Ok(policies);
            }
            Err(MetadataError::Conflict { .. }) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(AdminError::Conflict(format!(
        "policies of {tenant}/{namespace} kept changing concurrently; retry"
    )))
}

/// The actions of a grant, in Pulsar's names; an unknown one is a 400.
fn parse_actions(body: &Bytes) -> AdminResult<BTreeSet<AuthAction>> {
    let names: Vec<String> = parse_body(body, "list of actions")?;
    names
        .iter()
        .map(|name| {
            AuthAction::parse(name).ok_or_else(|| {
                AdminError::BadRequest(format!(
                    "unknown action {name:?}: use produce, consume, functions, sources, sinks or packages"
                ))
            })
        })
        .collect()
}

// Namespaces.

async fn list(
    State(service): State<Arc<BrokerService>>,
    Path(tenant): Path<String>,
) -> AdminResult<Json<Vec<String>>> {
    let store = service.metadata();
    require_tenant(store.as_ref(), &tenant).await?;
    let prefix = keys::namespaces_prefix(&tenant);
    let mut namespaces: Vec<String> = store
        .list(&prefix)
        .await?
        .iter()
        .filter_map(|kv| keys::child_name(&prefix, &kv.key))
        .map(|ns| format!("{tenant}/{ns}"))
        .collect();
    namespaces.sort();
    Ok(Json(namespaces))
}

async fn read(
    State(service): State<Arc<BrokerService>>,
    Path((tenant, namespace)): NamespacePath,
) -> AdminResult<Json<serde_json::Value>> {
    let policies = load(service.metadata().as_ref(), &tenant, &namespace).await?;
    Ok(Json(policies_json(&policies)))
}

async fn create(
    State(service): State<Arc<BrokerService>>,
    Path((tenant, namespace)): NamespacePath,
    body: Bytes,
) -> AdminResult<StatusCode> {
    check_name("namespace", &namespace)?;
    let policies = parse_optional_body::<PoliciesJson>(&body, "Policies")?
        .unwrap_or_default()
        .validate()?;
    let store = service.metadata();
    let (tenant_info, _) = require_tenant(store.as_ref(), &tenant).await?;
    // Cluster check (admin ops): 403 unless the tenant allows this cluster.
    super::ops::check_local_cluster_allowed(&service, &tenant, &tenant_info)?;
    match store
        .put(
            &keys::namespace(&tenant, &namespace),
            encode(&policies)?,
            Expect::Absent,
            None,
        )
        .await
    {
        Ok(_) => {
            tracing::info!(%tenant, %namespace, "namespace created");
            Ok(DONE)
        }
        Err(MetadataError::Conflict { .. }) => Err(AdminError::Conflict(format!(
            "Namespace {tenant}/{namespace} already exists"
        ))),
        Err(e) => Err(e.into()),
    }
}

async fn delete(
    State(service): State<Arc<BrokerService>>,
    Path((tenant, namespace)): NamespacePath,
) -> AdminResult<StatusCode> {
    let store = service.metadata();
    load(store.as_ref(), &tenant, &namespace).await?;
    let has_topics = !store
        .list(&keys::topics_prefix(&tenant, &namespace))
        .await?
        .is_empty()
        || !store
            .list(&keys::partitioned_topics_prefix(&tenant, &namespace))
            .await?
            .is_empty();
    if has_topics {
        return Err(AdminError::Conflict(format!(
            "Cannot delete non empty namespace {tenant}/{namespace}"
        )));
    }
    store
        .delete(&keys::namespace(&tenant, &namespace), Expect::Any)
        .await?;
    tracing::info!(%tenant, %namespace, "namespace deleted");
    Ok(DONE)
}

// Policies.

async fn get_retention(
    State(service): State<Arc<BrokerService>>,
    Path((tenant, namespace)): NamespacePath,
) -> AdminResult<Response> {
    let policies = load(service.metadata().as_ref(), &tenant, &namespace).await?;
    Ok(json_or_no_content(policies.retention))
}

async fn set_retention(
    State(service): State<Arc<BrokerService>>,
    Path((tenant, namespace)): NamespacePath,
    body: Bytes,
) -> AdminResult<StatusCode> {
    let retention: RetentionPolicy = parse_body(&body, "RetentionPolicies")?;
    validate_retention(&retention)?;
    update(service.metadata().as_ref(), &tenant, &namespace, |p| {
        p.retention = Some(retention)
    })
    .await
}

async fn remove_retention(
    State(service): State<Arc<BrokerService>>,
    Path((tenant, namespace)): NamespacePath,
) -> AdminResult<StatusCode> {
    update(service.metadata().as_ref(), &tenant, &namespace, |p| {
        p.retention = None
    })
    .await
}

async fn get_ttl(
    State(service): State<Arc<BrokerService>>,
    Path((tenant, namespace)): NamespacePath,
) -> AdminResult<Response> {
    let policies = load(service.metadata().as_ref(), &tenant, &namespace).await?;
    Ok(json_or_no_content(policies.message_ttl_seconds))
}

async fn set_ttl(
    State(service): State<Arc<BrokerService>>,
    Path((tenant, namespace)): NamespacePath,
    body: Bytes,
) -> AdminResult<StatusCode> {
    let ttl = validate_ttl(parse_body(&body, "message TTL in seconds")?)?;
    update(service.metadata().as_ref(), &tenant, &namespace, |p| {
        p.message_ttl_seconds = Some(ttl)
    })
    .await
}

async fn remove_ttl(
    State(service): State<Arc<BrokerService>>,
    Path((tenant, namespace)): NamespacePath,
) -> AdminResult<StatusCode> {
    update(service.metadata().as_ref(), &tenant, &namespace, |p| {
        p.message_ttl_seconds = None
    })
    .await
}

async fn get_permissions(
    State(service): State<Arc<BrokerService>>,
    Path((tenant, namespace)): NamespacePath,
) -> AdminResult<Json<Permissions>> {
    let policies = load(service.metadata().as_ref(), &tenant, &namespace).await?;
    Ok(Json(policies.permissions))
}

/// Pulsar's grant: the role's actions become exactly those given.
async fn grant_permission(
    State(service): State<Arc<BrokerService>>,
    Path((tenant, namespace, role)): Path<(String, String, String)>,
    body: Bytes,
) -> AdminResult<StatusCode> {
    let actions = parse_actions(&body)?;
    if role.is_empty() {
        return Err(AdminError::BadRequest("empty role".into()));
    }
    update(service.metadata().as_ref(), &tenant, &namespace, |p| {
        p.permissions.insert(role.clone(), actions.clone());
    })
    .await
}

async fn revoke_permission(
    State(service): State<Arc<BrokerService>>,
    Path((tenant, namespace, role)): Path<(String, String, String)>,
) -> AdminResult<StatusCode> {
    update(service.metadata().as_ref(), &tenant, &namespace, |p| {
        p.permissions.remove(&role);
    })
    .await
}

async fn set_backlog_quota(
    State(service): State<Arc<BrokerService>>,
    Path((tenant, namespace)): NamespacePath,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> AdminResult<StatusCode> {
    let kind = quota_type(query.as_deref())?;
    let quota = parse_body::<BacklogQuotaJson>(&body, "BacklogQuota")?.validate()?;
    update(service.metadata().as_ref(), &tenant, &namespace, |p| {
        p.backlog_quota = Some(match kind {
            QuotaType::DestinationStorage => quota,
            QuotaType::MessageAge => BacklogQuota {
                limit_size: p.backlog_quota.map_or(-1, |q| q.limit_size),
                ..quota
            },
        })
    })
    .await
}

async fn remove_backlog_quota(
    State(service): State<Arc<BrokerService>>,
    Path((tenant, namespace)): NamespacePath,
    RawQuery(query): RawQuery,
) -> AdminResult<StatusCode> {
    let kind = quota_type(query.as_deref())?;
    update(service.metadata().as_ref(), &tenant, &namespace, |p| {
        p.backlog_quota = match (kind, p.backlog_quota) {
            (QuotaType::MessageAge, Some(q)) if q.limit_size >= 0 => Some(BacklogQuota {
                limit_time: -1,
                ..q
            }),
            _ => None,
        }
    })
    .await
}

async fn get_backlog_quotas(
    State(service): State<Arc<BrokerService>>,
    Path((tenant, namespace)): NamespacePath,
) -> AdminResult<Json<BTreeMap<&'static str, BacklogQuota>>> {
    let policies = load(service.metadata().as_ref(), &tenant, &namespace).await?;
    Ok(Json(backlog_quota_map(&policies)))
}

async fn get_persistence(
    State(service): State<Arc<BrokerService>>,
    Path((tenant, namespace)): NamespacePath,
) -> AdminResult<Response> {
    let policies = load(service.metadata().as_ref(), &tenant, &namespace).await?;
    Ok(json_or_no_content(
        policies.persistence.map(PersistenceJson::from),
    ))
}

async fn set_persistence(
    State(service): State<Arc<BrokerService>>,
    Path((tenant, namespace)): NamespacePath,
    body: Bytes,
) -> AdminResult<StatusCode> {
    let persistence = parse_body::<PersistenceJson>(&body, "PersistencePolicies")?.validate()?;
    update(service.metadata().as_ref(), &tenant, &namespace, |p| {
        p.persistence = Some(persistence)
    })
    .await
}

async fn remove_persistence(
    State(service): State<Arc<BrokerService>>,
    Path((tenant, namespace)): NamespacePath,
) -> AdminResult<StatusCode> {
    update(service.metadata().as_ref(), &tenant, &namespace, |p| {
        p.persistence = None
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::testing::broker;

    fn ns(tenant: &str, namespace: &str) -> NamespacePath {
        Path((tenant.to_string(), namespace.to_string()))
    }

    fn body(json: &'static str) -> Bytes {
        Bytes::from_static(json.as_bytes())
    }

    fn status<T: std::fmt::Debug>(result: AdminResult<T>) -> StatusCode {
        match result {
            Ok(_) => StatusCode::OK,
            Err(e) => e.status(),
        }
    }

    #[test]
    fn retention_rules_follow_pulsar() {
        let ok = |t, s| {
            validate_retention(&RetentionPolicy {
                retention_time_in_minutes: t,
                retention_size_in_mb: s,
            })
            .is_ok()
        };
        assert!(ok(0, 0));
        assert!(ok(-1, -1));
        assert!(ok(60, -1));
        assert!(ok(10, 100));
        assert!(!ok(0, 100));
        assert!(!ok(10, 0));
        assert!(!ok(-2, 10));
    }

    #[test]
    fn persistence_and_quota_bodies_are_checked() {
        let p = |e, w, a| PersistenceJson {
            bookkeeper_ensemble: e,
            bookkeeper_write_quorum: w,
            bookkeeper_ack_quorum: a,
            managed_ledger_max_mark_delete_rate: 0.0,
        };
        assert!(p(3, 2, 2).validate().is_ok());
        assert!(p(1, 2, 1).validate().is_err());
        assert!(p(2, 2, 0).validate().is_err());
        assert!(p(2, 1, 2).validate().is_err());
        let quota: BacklogQuotaJson =
            serde_json::from_str(r#"{"limit": 10, "policy": "consumer_backlog_eviction"}"#)
                .unwrap();
        assert_eq!(
            quota.validate().unwrap(),
            BacklogQuota {
                limit_size: 10,
                limit_time: -1,
                policy: BacklogQuotaPolicy::ConsumerBacklogEviction
            }
        );
        assert!(serde_json::from_str::<BacklogQuotaJson>(r#"{"policy": "drop_it"}"#).is_err());
        assert!(validate_ttl(-1).is_err());
        assert_eq!(validate_ttl(60).unwrap(), 60);
        assert_eq!(
            parse_quota_type(Some("message_age")).unwrap(),
            QuotaType::MessageAge
        );
        assert!(parse_quota_type(Some("storage")).is_err());
    }

    #[tokio::test]
    async fn policies_round_trip_and_bad_input_changes_nothing() {
        let broker = broker().await;
        let s = || State(broker.service.clone());
        let store = broker.service.metadata().clone();

        assert_eq!(
            status(create(s(), ns("acme", "orders"), Bytes::new()).await),
            StatusCode::CONFLICT
        );
        assert_eq!(
            status(create(s(), ns("nobody", "x"), Bytes::new()).await),
            StatusCode::NOT_FOUND
        );
        create(
            s(),
            ns("acme", "billing"),
            body(r#"{"message_ttl_in_seconds": 5, "retention_policies": {"retentionTimeInMinutes": -1, "retentionSizeInMB": 10}}"#),
        )
        .await
        .unwrap();
        let billing = load(store.as_ref(), "acme", "billing").await.unwrap();
        assert_eq!(billing.message_ttl_seconds, Some(5));
        let Json(listed) = list(s(), Path("acme".into())).await.unwrap();
        assert_eq!(listed, vec!["acme/billing", "acme/orders"]);

        set_retention(
            s(),
            ns("acme", "orders"),
            body(r#"{"retentionTimeInMinutes": 60, "retentionSizeInMB": 100}"#),
        )
        .await
        .unwrap();
        set_ttl(s(), ns("acme", "orders"), body("120"))
            .await
            .unwrap();
        set_backlog_quota(
            s(),
            ns("acme", "orders"),
            RawQuery(Some("backlogQuotaType=destination_storage".into())),
            body(r#"{"limitSize": 1048576, "limitTime": 3600, "policy": "producer_exception"}"#),
        )
        .await
        .unwrap();
        set_persistence(
            s(),
            ns("acme", "orders"),
            body(r#"{"bookkeeperEnsemble": 3, "bookkeeperWriteQuorum": 2, "bookkeeperAckQuorum": 2, "managedLedgerMaxMarkDeleteRate": 0}"#),
        )
        .await
        .unwrap();
        let expected = NamespacePolicies {
            persistence: Some(PersistencePolicy {
                ensemble_size: 3,
                write_quorum: 2,
                ack_quorum: 2,
            }),
            retention: Some(RetentionPolicy {
                retention_time_in_minutes: 60,
                retention_size_in_mb: 100,
            }),
            message_ttl_seconds: Some(120),
            backlog_quota: Some(BacklogQuota {
                limit_size: 1 << 20,
                limit_time: 3600,
                policy: BacklogQuotaPolicy::ProducerException,
            }),
            ..NamespacePolicies::default()
        };
        assert_eq!(
            load(store.as_ref(), "acme", "orders").await.unwrap(),
            expected
        );

        // Every bad request is a 400 and leaves the record as it was.
        let bad = [
            status(set_retention(s(), ns("acme", "orders"), body(r#"{"retentionTimeInMinutes": 0, "retentionSizeInMB": 5}"#)).await),
            status(set_retention(s(), ns("acme", "orders"), body("{not json")).await),
            status(set_ttl(s(), ns("acme", "orders"), body("-1")).await),
            status(set_ttl(s(), ns("acme", "orders"), body(r#""ten""#)).await),
            status(set_ttl(s(), ns("acme", "orders"), Bytes::new()).await),
            status(set_persistence(s(), ns("acme", "orders"), body(r#"{"bookkeeperEnsemble": 1, "bookkeeperWriteQuorum": 2, "bookkeeperAckQuorum": 1}"#)).await),
            status(set_backlog_quota(s(), ns("acme", "orders"), RawQuery(None), body(r#"{"limitSize": 5, "policy": "nope"}"#)).await),
            status(set_backlog_quota(s(), ns("acme", "orders"), RawQuery(Some("backlogQuotaType=bogus".into())), body(r#"{"limitSize": 5, "policy": "producer_request_hold"}"#)).await),
        ];
        assert!(bad.iter().all(|s| *s == StatusCode::BAD_REQUEST), "{bad:?}");
        assert_eq!(
            load(store.as_ref(), "acme", "orders").await.unwrap(),
            expected
        );
        assert_eq!(
            status(set_ttl(s(), ns("acme", "missing"), body("5")).await),
            StatusCode::NOT_FOUND
        );

        // The message-age quota changes only the time limit.
        set_backlog_quota(
            s(),
            ns("acme", "orders"),
            RawQuery(Some("backlogQuotaType=message_age".into())),
            body(r#"{"limitTime": 60, "policy": "producer_request_hold"}"#),
        )
        .await
        .unwrap();
        let Json(quotas) = get_backlog_quotas(s(), ns("acme", "orders")).await.unwrap();
        assert_eq!(
            serde_json::to_value(quotas).unwrap(),
            serde_json::json!({"destination_storage": {"limitSize": 1048576, "limitTime": 60, "policy": "producer_request_hold"}})
        );

        remove_retention(s(), ns("acme", "orders")).await.unwrap();
        remove_ttl(s(), ns("acme", "orders")).await.unwrap();
        remove_backlog_quota(s(), ns("acme", "orders"), RawQuery(None))
            .await
            .unwrap();
        let Json(json) = read(s(), ns("acme", "orders")).await.unwrap();
        assert_eq!(json["retention_policies"], serde_json::Value::Null);
        assert_eq!(json["message_ttl_in_seconds"], serde_json::Value::Null);
        assert_eq!(json["backlog_quota_map"], serde_json::json!({}));
        assert_eq!(json["persistence"]["bookkeeperEnsemble"], 3);
        let response = get_retention(s(), ns("acme", "orders")).await.unwrap();
        assert_eq!(response.status(), StatusCode::NO_CONTENT);
    }

    #[tokio::test]
    async fn a_namespace_with_topics_is_not_deleted() {
        let broker = broker().await;
        let s = || State(broker.service.clone());
        let store = broker.service.metadata().clone();
        let topic = keys::topic("acme", "orders", "t");
        store
            .put(&topic, Bytes::from_static(b"{}"), Expect::Absent, None)
            .await
            .unwrap();
        assert_eq!(
            status(delete(s(), ns("acme", "orders")).await),
            StatusCode::CONFLICT
        );
        store.delete(&topic, Expect::Any).await.unwrap();
        delete(s(), ns("acme", "orders")).await.unwrap();
        assert_eq!(
            status(delete(s(), ns("acme", "orders")).await),
            StatusCode::NOT_FOUND
        );
    }

    #[tokio::test]
    async fn permissions_are_granted_replaced_and_revoked() {
        let broker = broker().await;
        let s = || State(broker.service.clone());
        let role = |r: &str| Path(("acme".to_string(), "orders".to_string(), r.to_string()));
        let Json(none) = get_permissions(s(), ns("acme", "orders")).await.unwrap();
        assert!(none.is_empty());
        grant_permission(s(), role("app"), body(r#"["produce","consume"]"#))
            .await
            .unwrap();
        grant_permission(s(), role("reader"), body(r#"["consume"]"#))
            .await
            .unwrap();
        // A second grant replaces the role's actions, as in Pulsar.
        grant_permission(s(), role("app"), body(r#"["produce"]"#))
            .await
            .unwrap();
        let Json(granted) = get_permissions(s(), ns("acme", "orders")).await.unwrap();
        assert_eq!(
            serde_json::to_value(&granted).unwrap(),
            serde_json::json!({"app": ["produce"], "reader": ["consume"]})
        );
        // Bad actions are refused and change nothing.
        for bad in [r#"["admin"]"#, "produce", ""] {
            let result =
                grant_permission(s(), role("app"), Bytes::from_static(bad.as_bytes())).await;
            assert_eq!(status(result), StatusCode::BAD_REQUEST, "{bad}");
        }
        revoke_permission(s(), role("app")).await.unwrap();
        let Json(left) = get_permissions(s(), ns("acme", "orders")).await.unwrap();
        assert_eq!(left.keys().collect::<Vec<_>>(), ["reader"]);
        let missing = Path(("acme".to_string(), "nope".to_string(), "app".to_string()));
        let result = grant_permission(s(), missing, body(r#"["produce"]"#)).await;
        assert_eq!(status(result), StatusCode::NOT_FOUND);
    }
}
