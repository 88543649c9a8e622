//! The authorization decision, as a pure function of the role, the broker's
//! superusers and the tenant's and namespace's stored records (Pulsar's
//! semantics): superusers may do everything; a tenant's admin roles may do
//! everything in that tenant; other roles may produce or consume where the
//! namespace grants them that action, and look topics up where they may do
//! either. It reads nothing and caches nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::topic::TenantInfo;

/// An action a namespace may grant a role (Pulsar's `AuthAction`). Only
/// `produce` and `consume` govern anything here; the rest are stored so
/// pulsar-admin's grants round-trip.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthAction {
    Produce,
    Consume,
    Functions,
    Sources,
    Sinks,
    Packages,
}

impl AuthAction {
    pub const ALL: [AuthAction; 6] = [
        AuthAction::Produce,
        AuthAction::Consume,
        AuthAction::Functions,
        AuthAction::Sources,
        AuthAction::Sinks,
        AuthAction::Packages,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AuthAction::Produce => "produce",
            AuthAction::Consume => "consume",
            AuthAction::Functions => "functions",
            AuthAction::Sources => "sources",
            AuthAction::Sinks => "sinks",
            AuthAction::Packages => "packages",
        }
    }

    pub fn parse(name: &str) -> Option<AuthAction> {
        Self::ALL.into_iter().find(|a| a.as_str() == name)
    }
}

/// Roles and the actions each may take in one namespace.
pub type Permissions = BTreeMap<String, BTreeSet<AuthAction>>;

/// What a client asks to do on a namespace's topics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TopicOperation {
    Produce,
    Consume,
    /// LOOKUP, PARTITIONED_METADATA, GET_TOPICS_OF_NAMESPACE: produce or consume.
    Lookup,
}

impl fmt::Display for TopicOperation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TopicOperation::Produce => "produce",
            TopicOperation::Consume => "consume",
            TopicOperation::Lookup => "look up topics",
        })
    }
}

/// A refusal, naming who was refused what and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthorizationError {
    #[error("role {role:?} is not allowed to {operation} on namespace {namespace}")]
    Topic {
        role: String,
        operation: TopicOperation,
        namespace: String,
    },
    #[error("role {role:?} is not an admin of tenant {tenant}")]
    NotTenantAdmin { role: String, tenant: String },
    #[error("role {role:?} is not a superuser")]
    NotSuperuser { role: String },
}

/// The broker's superuser roles.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Superusers(pub BTreeSet<String>);

impl Superusers {
    pub fn contains(&self, role: &str) -> bool {
        self.0.contains(role)
    }
}

/// May `role` take `operation` on the topics of `namespace` ("tenant/ns")?
/// `tenant` is `None` when the tenant does not exist.
pub fn authorize_topic(
    role: &str,
    superusers: &Superusers,
    tenant: Option<&TenantInfo>,
    namespace: &str,
    permissions: &Permissions,
    operation: TopicOperation,
) -> Result<(), AuthorizationError> {
    if is_tenant_admin(role, superusers, tenant) {
        return Ok(());
    }
    let granted = permissions.get(role);
    let has = |action| granted.is_some_and(|actions| actions.contains(&action));
    let allowed = match operation {
        TopicOperation::Produce => has(AuthAction::Produce),
        TopicOperation::Consume => has(AuthAction::Consume),
        TopicOperation::Lookup => has(AuthAction::Produce) || has(AuthAction::Consume),
    };
    if allowed {
        Ok(())
    } else {
        Err(AuthorizationError::Topic {
            role: role.into(),
            operation,
            namespace: namespace.into(),
        })
    }
}

/// May `role` administer `tenant_name` (its namespaces, topics, policies)?
pub fn authorize_tenant_admin(
    role: &str,
    superusers: &Superusers,
    tenant_name: &str,
    tenant: Option<&TenantInfo>,
) -> Result<(), AuthorizationError> {
    if is_tenant_admin(role, superusers, tenant) {
        Ok(())
    } else {
        Err(AuthorizationError::NotTenantAdmin {
            role: role.into(),
            tenant: tenant_name.into(),
        })
    }
}

/// May `role` do what only superusers may (create and delete tenants)?
pub fn authorize_superuser(role: &str, superusers: &Superusers) -> Result<(), AuthorizationError> {
    if superusers.contains(role) {
        Ok(())
    } else {
        Err(AuthorizationError::NotSuperuser { role: role.into() })
    }
}

fn is_tenant_admin(role: &str, superusers: &Superusers, tenant: Option<&TenantInfo>) -> bool {
    superusers.contains(role) || tenant.is_some_and(|t| t.admin_roles.iter().any(|r| r == role))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn supers() -> Superusers {
        Superusers(["root".to_string()].into())
    }

    fn tenant() -> TenantInfo {
        TenantInfo {
            admin_roles: vec!["acme-admin".into()],
            allowed_clusters: vec![],
        }
    }

    fn permissions() -> Permissions {
        let mut p = Permissions::new();
        p.insert("writer".into(), [AuthAction::Produce].into());
        p.insert("reader".into(), [AuthAction::Consume].into());
        p.insert(
            "both".into(),
            [AuthAction::Produce, AuthAction::Consume].into(),
        );
        p.insert("fn".into(), [AuthAction::Functions].into());
        p
    }

    #[test]
    fn topic_decision_table() {
        use TopicOperation::*;
        let t = tenant();
        let p = permissions();
        // (role, operation, allowed)
        let table = [
            ("root", Produce, true),
            ("root", Consume, true),
            ("root", Lookup, true),
            ("acme-admin", Produce, true),
            ("acme-admin", Consume, true),
            ("acme-admin", Lookup, true),
            ("writer", Produce, true),
            ("writer", Consume, false),
            ("writer", Lookup, true),
            ("reader", Produce, false),
            ("reader", Consume, true),
            ("reader", Lookup, true),
            ("both", Produce, true),
            ("both", Consume, true),
            ("fn", Produce, false),
            ("fn", Consume, false),
            ("fn", Lookup, false),
            ("stranger", Produce, false),
            ("stranger", Consume, false),
            ("stranger", Lookup, false),
        ];
        for (role, op, allowed) in table {
            let result = authorize_topic(role, &supers(), Some(&t), "acme/orders", &p, op);
            assert_eq!(result.is_ok(), allowed, "{role} {op}");
        }
    }

    #[test]
    fn refusals_name_role_and_namespace() {
        let err = authorize_topic(
            "reader",
            &supers(),
            Some(&tenant()),
            "acme/orders",
            &permissions(),
            TopicOperation::Produce,
        )
        .unwrap_err();
        let message = err.to_string();
        assert!(message.contains("\"reader\""), "{message}");
        assert!(message.contains("acme/orders"), "{message}");
    }

    #[test]
    fn missing_tenant_leaves_only_superusers_and_grants() {
        let p = permissions();
        let op = TopicOperation::Produce;
        assert!(authorize_topic("root", &supers(), None, "x/y", &p, op).is_ok());
        assert!(authorize_topic("acme-admin", &supers(), None, "x/y", &p, op).is_err());
        assert!(authorize_topic("writer", &supers(), None, "x/y", &p, op).is_ok());
    }

    #[test]
    fn admin_decisions() {
        let t = tenant();
        assert!(authorize_tenant_admin("root", &supers(), "acme", Some(&t)).is_ok());
        assert!(authorize_tenant_admin("acme-admin", &supers(), "acme", Some(&t)).is_ok());
        assert!(authorize_tenant_admin("writer", &supers(), "acme", Some(&t)).is_err());
        assert!(authorize_tenant_admin("acme-admin", &supers(), "other", None).is_err());
        assert!(authorize_superuser("root", &supers()).is_ok());
        assert!(authorize_superuser("acme-admin", &supers()).is_err());
    }

    #[test]
    fn actions_use_pulsar_names() {
        let json = serde_json::to_string(&[AuthAction::Produce, AuthAction::Consume]).unwrap();
        assert_eq!(json, r#"["produce","consume"]"#);
        for action in AuthAction::ALL {
            assert_eq!(AuthAction::parse(action.as_str()), Some(action));
        }
        assert_eq!(AuthAction::parse("admin"), None);
    }
}
