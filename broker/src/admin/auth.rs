//! Authentication and authorization of admin requests when auth is on: every
//! `/admin/v2/...` request carries `Authorization: Bearer <token>` (else 401);
//! a tenant's namespaces and topics are administered by superusers and the
//! tenant's admin roles, tenants themselves by superusers (else 403).
//! `/metrics` and `/health` are outside the admin router and stay open.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use magnetar_metadata::keys;
use percent_encoding::percent_decode_str;

use super::{AdminError, AdminResult};
use crate::auth::{
    authorize_superuser, authorize_tenant_admin, authorize_topic, AuthConfig, TopicOperation,
};
use crate::topic::{BrokerService, NamespacePolicies, TenantInfo};

/// Who may make an admin request.
#[derive(Debug, PartialEq, Eq)]
enum AdminScope {
    Superuser,
    TenantAdmin(String),
    /// HTTP lookup: whoever may produce or consume on the namespace (as
    /// the binary LOOKUP).
    Lookup {
        tenant: String,
        namespace: String,
    },
}

/// The scope a request needs, from its method and path (Pulsar's rules:
/// listing, creating, changing and deleting tenants is for superusers).
/// Segments are percent-decoded first, as the handlers' `Path` extractors
/// decode them, so that the tenant checked is the tenant acted on.
fn required_scope(method: &Method, path: &str) -> AdminScope {
    let decoded: Vec<String> = path
        .split('/')
        .filter(|s| !s.is_empty())
        .map(|s| percent_decode_str(s).decode_utf8_lossy().into_owned())
        .collect();
    let segments: Vec<&str> = decoded.iter().map(String::as_str).collect();
    let last = segments.last().copied().unwrap_or_default();
    match segments.as_slice() {
        ["lookup", "v2", "topic", "persistent", tenant, namespace, ..] => AdminScope::Lookup {
            tenant: tenant.to_string(),
            namespace: namespace.to_string(),
        },
        ["admin", "v2", "tenants", tenant, ..] if method == Method::GET => {
            AdminScope::TenantAdmin(tenant.to_string())
        }
        // Moving bundles between brokers is an operator's act (Pulsar:
        // superuser only).
        ["admin", "v2", "namespaces", _, ..] if last == "unload" || last == "split" => {
            AdminScope::Superuser
        }
        // So is moving a partition's copies (it uses brokers' disks).
        ["admin", "v2", "persistent", _, ..] if last == "reassignment" && method != Method::GET => {
            AdminScope::Superuser
        }
        ["admin", "v2", "namespaces" | "persistent" | "non-persistent", tenant, ..] => {
            AdminScope::TenantAdmin(tenant.to_string())
        }
        _ => AdminScope::Superuser,
    }
}

/// The token of an `Authorization: Bearer` header.
fn bearer(request: &Request) -> AdminResult<&str> {
    let value = request
        .headers()
        .get(header::AUTHORIZATION)
        .ok_or_else(|| {
            AdminError::Unauthorized("authentication required: no bearer token".into())
        })?;
    let value = value
        .to_str()
        .map_err(|_| AdminError::Unauthorized("malformed Authorization header".into()))?;
    match value.split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => Ok(token.trim()),
        _ => Err(AdminError::Unauthorized(
            "Authorization header must be \"Bearer <token>\"".into(),
        )),
    }
}

/// Checks the request's token and scope. Takes its parts rather than the
/// request, whose body is not `Sync` and so may not be held across reads.
async fn check(
    service: &BrokerService,
    auth: &AuthConfig,
    token: &str,
    scope: AdminScope,
) -> AdminResult<()> {
    let role = auth
        .verifier
        .verify(token)
        .map_err(|e| AdminError::Unauthorized(format!("authentication failed: {e}")))?;
    let decision = match scope {
        AdminScope::Superuser => authorize_superuser(&role, &auth.superusers),
        AdminScope::TenantAdmin(tenant) => {
            let info = if auth.superusers.contains(&role) {
                None
            } else {
                load_tenant(service, &tenant).await?
            };
            authorize_tenant_admin(&role, &auth.superusers, &tenant, info.as_ref())
        }
        AdminScope::Lookup { tenant, namespace } => {
            let info = load_tenant(service, &tenant).await?;
            let permissions = match service
                .metadata()
                .get(&keys::namespace(&tenant, &namespace))
                .await?
            {
                Some(kv) => serde_json::from_slice::<NamespacePolicies>(&kv.value)
                    .map(|p| p.permissions)
                    .unwrap_or_default(),
                None => Default::default(),
            };
            authorize_topic(
                &role,
                &auth.superusers,
                info.as_ref(),
                &format!("{tenant}/{namespace}"),
                &permissions,
                TopicOperation::Lookup,
            )
        }
    };
    decision.map_err(|e| AdminError::Forbidden(e.to_string()))
}

async fn load_tenant(service: &BrokerService, tenant: &str) -> AdminResult<Option<TenantInfo>> {
    let key = keys::tenant(tenant);
    match service.metadata().get(&key).await? {
        None => Ok(None),
        Some(kv) => serde_json::from_slice(&kv.value)
            .map(Some)
            .map_err(|e| AdminError::Internal(format!("corrupt tenant record {key}: {e}"))),
    }
}

/// Middleware over the admin routes; passes everything when auth is off.
pub(super) async fn require_auth(
    State(service): State<Arc<BrokerService>>,
    request: Request,
    next: Next,
) -> Response {
    if let Some(auth) = &service.config().auth {
        let method = request.method().clone();
        let path = request.uri().path().to_string();
        let scope = required_scope(&method, &path);
        let checked = match bearer(&request).map(str::to_string) {
            Ok(token) => check(&service, auth, &token, scope).await,
            Err(e) => Err(e),
        };
        if let Err(e) = checked {
            tracing::warn!(%method, %path, reason = %e, "admin request refused");
            return e.into_response();
        }
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_follow_pulsar() {
        let tenant = |t: &str| AdminScope::TenantAdmin(t.into());
        let cases = [
            (Method::GET, "/admin/v2/tenants", AdminScope::Superuser),
            (Method::PUT, "/admin/v2/tenants/acme", AdminScope::Superuser),
            (
                Method::DELETE,
                "/admin/v2/tenants/acme",
                AdminScope::Superuser,
            ),
            (
                Method::POST,
                "/admin/v2/tenants/acme",
                AdminScope::Superuser,
            ),
            (Method::GET, "/admin/v2/tenants/acme", tenant("acme")),
            (
                Method::PUT,
                "/admin/v2/namespaces/acme/orders",
                tenant("acme"),
            ),
            (Method::GET, "/admin/v2/namespaces/acme", tenant("acme")),
            (
                Method::POST,
                "/admin/v2/namespaces/acme/orders/permissions/app",
                tenant("acme"),
            ),
            (
                Method::GET,
                "/admin/v2/persistent/acme/orders/t/stats",
                tenant("acme"),
            ),
            (Method::GET, "/admin/v2/brokers", AdminScope::Superuser),
            (
                Method::GET,
                "/lookup/v2/topic/persistent/acme/orders/t",
                AdminScope::Lookup {
                    tenant: "acme".into(),
                    namespace: "orders".into(),
                },
            ),
            (
                Method::PUT,
                "/admin/v2/namespaces/acme/orders/unload",
                AdminScope::Superuser,
            ),
            (
                Method::PUT,
                "/admin/v2/namespaces/acme/orders/0x00000000_0x40000000/split",
                AdminScope::Superuser,
            ),
            (
                Method::POST,
                "/admin/v2/persistent/acme/orders/t/reassignment",
                AdminScope::Superuser,
            ),
            (
                Method::DELETE,
                "/admin/v2/persistent/acme/orders/t/reassignment",
                AdminScope::Superuser,
            ),
            (
                Method::GET,
                "/admin/v2/persistent/acme/orders/t/reassignment",
                tenant("acme"),
            ),
            // Checked as the handlers decode the path: `%61cme` is acme,
            // and an encoded verb is still the verb.
            (
                Method::PUT,
                "/admin/v2/namespaces/%61cme/orders",
                tenant("acme"),
            ),
            (
                Method::PUT,
                "/admin/v2/namespaces/acme/orders/0x00000000_0x40000000/unlo%61d",
                AdminScope::Superuser,
            ),
            (
                Method::GET,
                "/lookup/v2/topic/persistent/%61cme/orders/t",
                AdminScope::Lookup {
                    tenant: "acme".into(),
                    namespace: "orders".into(),
                },
            ),
            (
                Method::GET,
                "/admin/v2/namespaces/acme%2Fx",
                tenant("acme/x"),
            ),
        ];
        for (method, path, scope) in cases {
            assert_eq!(required_scope(&method, path), scope, "{method} {path}");
        }
    }

    #[test]
    fn bearer_tokens() {
        let with = |value: &str| {
            Request::builder()
                .header(header::AUTHORIZATION, value)
                .body(axum::body::Body::empty())
                .unwrap()
        };
        assert_eq!(bearer(&with("Bearer abc")).unwrap(), "abc");
        assert_eq!(bearer(&with("bearer  abc ")).unwrap(), "abc");
        assert!(bearer(&with("Basic abc")).is_err());
        let none = Request::builder().body(axum::body::Body::empty()).unwrap();
        let err = bearer(&none).unwrap_err();
        assert_eq!(err.status(), axum::http::StatusCode::UNAUTHORIZED);
    }
}
