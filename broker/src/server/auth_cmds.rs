//! Authentication of CONNECT and authorization of the commands that create
//! producers, consumers and lookups, when the broker has auth on. The role
//! is fixed at CONNECT; SEND, FLOW and ACK are never checked (they act on
//! producers and consumers already admitted).

use pulsar::proto::{CommandConnect, ServerError};

use super::connection::Connection;
use crate::auth::{authorize_topic, Permissions, TopicOperation, TOKEN_AUTH_METHOD};
use crate::topic::{NamespacePolicies, TenantInfo, TopicName};
use magnetar_metadata::{keys, MetadataStore};

/// Why a command was refused, as the reply carries it.
pub(super) struct Refusal {
    pub error: ServerError,
    pub message: String,
}

impl Connection {
    /// The role CONNECT's token proves, or why it proves none. `Ok(None)`
    /// when auth is off.
    pub(super) fn authenticate(&self, connect: &CommandConnect) -> Result<Option<String>, String> {
        let Some(auth) = &self.service.config().auth else {
            return Ok(None);
        };
        let method = connect.auth_method_name.as_deref().unwrap_or_default();
        // Clients without authentication send no method, or "none".
        if matches!(method, "" | "none") {
            return Err("authentication failed: no token was given".into());
        }
        if method != TOKEN_AUTH_METHOD {
            return Err(format!(
                "unsupported authentication method {method:?}: this broker takes \"token\""
            ));
        }
        let data = connect.auth_data.as_deref().unwrap_or_default();
        let token = std::str::from_utf8(data)
            .map_err(|_| "authentication failed: the token is not UTF-8".to_string())?;
        auth.verifier
            .verify(token)
            .map(Some)
            .map_err(|e| format!("authentication failed: {e}"))
    }

    /// May this connection's role take `operation` on `topic`? Always yes
    /// with auth off. A topic name that does not parse passes here: the
    /// command itself refuses it.
    pub(super) async fn authorize_topic(
        &mut self,
        topic: &str,
        operation: TopicOperation,
    ) -> Result<(), Refusal> {
        if self.service.config().auth.is_none() {
            return Ok(());
        }
        match TopicName::parse(topic) {
            Ok(name) => {
                self.authorize_namespace(&name.tenant, &name.namespace, operation)
                    .await
            }
            Err(_) => Ok(()),
        }
    }

    /// As [`Self::authorize_topic`], for a namespace given as "tenant/ns".
    pub(super) async fn authorize_namespace_name(
        &mut self,
        namespace: &str,
        operation: TopicOperation,
    ) -> Result<(), Refusal> {
        if self.service.config().auth.is_none() {
            return Ok(());
        }
        match namespace.split_once('/') {
            Some((tenant, ns)) => self.authorize_namespace(tenant, ns, operation).await,
            None => Ok(()),
        }
    }

    async fn authorize_namespace(
        &mut self,
        tenant: &str,
        namespace: &str,
        operation: TopicOperation,
    ) -> Result<(), Refusal> {
        let service = self.service.clone();
        let Some(auth) = &service.config().auth else {
            return Ok(());
        };
        // CONNECT refuses every connection without a role when auth is on.
        let role = self.role.clone().unwrap_or_default();
        let (id, peer) = (self.id, self.peer);
        let full = format!("{tenant}/{namespace}");
        let refused = |error, message: String| {
            tracing::warn!(connection = id, %peer, %role, namespace = %full, %message, "command refused");
            Refusal { error, message }
        };
        let (tenant_info, permissions) = if auth.superusers.contains(&role) {
            (None, Permissions::new())
        } else {
            access_records(service.metadata().as_ref(), tenant, namespace)
                .await
                .map_err(|e| refused(ServerError::MetadataError, e))?
        };
        authorize_topic(
            &role,
            &auth.superusers,
            tenant_info.as_ref(),
            &full,
            &permissions,
            operation,
        )
        .map_err(|e| refused(ServerError::AuthorizationError, e.to_string()))
    }
}

/// The tenant's record and the namespace's grants; either may be absent.
async fn access_records(
    store: &dyn MetadataStore,
    tenant: &str,
    namespace: &str,
) -> Result<(Option<TenantInfo>, Permissions), String> {
    let tenant_key = keys::tenant(tenant);
    let tenant_info = match store.get(&tenant_key).await.map_err(|e| e.to_string())? {
        Some(kv) => Some(
            serde_json::from_slice::<TenantInfo>(&kv.value)
                .map_err(|e| format!("corrupt tenant record {tenant_key}: {e}"))?,
        ),
        None => None,
    };
    let ns_key = keys::namespace(tenant, namespace);
    let permissions = match store.get(&ns_key).await.map_err(|e| e.to_string())? {
        Some(kv) => {
            serde_json::from_slice::<NamespacePolicies>(&kv.value)
                .map_err(|e| format!("corrupt policies of {ns_key}: {e}"))?
                .permissions
        }
        None => Permissions::new(),
    };
    Ok((tenant_info, permissions))
}
