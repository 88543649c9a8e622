//! Authentication of CONNECT and authorization of the commands that create
//! producers, consumers and lookups, when the broker has auth on. The role
//! is fixed at CONNECT; SEND, FLOW and ACK are never checked (they act on
//! producers and consumers already admitted). A connection whose token
//! expires is challenged for a fresh one and closed without it, as Pulsar's
//! broker does every `authenticationRefreshCheckSeconds`.

use pulsar::proto::{AuthData, CommandAuthResponse, CommandConnect, ServerError};

use super::connection::{Connection, MAX_PROTOCOL_VERSION};
use crate::auth::{authorize_topic, Permissions, TopicOperation, VerifiedToken, TOKEN_AUTH_METHOD};
use crate::clock::now_ms;
use crate::topic::{NamespacePolicies, TenantInfo, TopicName};
use magnetar_metadata::{keys, MetadataStore};

/// Why a command was refused, as the reply carries it.
pub(super) struct Refusal {
    pub error: ServerError,
    pub message: String,
}

impl Connection {
    /// The role CONNECT's token proves and until when, or why it proves
    /// none. `Ok(None)` when auth is off.
    pub(super) fn authenticate(
        &self,
        connect: &CommandConnect,
    ) -> Result<Option<VerifiedToken>, String> {
        if self.service.config().auth.is_none() {
            return Ok(None);
        }
        self.verify(
            connect.auth_method_name.as_deref(),
            connect.auth_data.as_deref(),
        )
        .map(Some)
    }

    fn verify(&self, method: Option<&str>, data: Option<&[u8]>) -> Result<VerifiedToken, String> {
        let Some(auth) = &self.service.config().auth else {
            return Err("authentication is off".into());
        };
        let method = method.unwrap_or_default();
        // Clients without authentication send no method, or "none".
        if matches!(method, "" | "none") {
            return Err("authentication failed: no token was given".into());
        }
        if method != TOKEN_AUTH_METHOD {
            return Err(format!(
                "unsupported authentication method {method:?}: this broker takes \"token\""
            ));
        }
        let token = std::str::from_utf8(data.unwrap_or_default())
            .map_err(|_| "authentication failed: the token is not UTF-8".to_string())?;
        auth.verifier
            .verify_token(token)
            .map_err(|e| format!("authentication failed: {e}"))
    }

    /// At each refresh check: challenges a connection whose token has
    /// expired, and gives up on one that left the last challenge
    /// unanswered. `Err`: close the connection, for that reason.
    pub(super) fn check_credentials(&mut self) -> Result<(), String> {
        let Some(expires_at) = self.credentials.expires_at else {
            return Ok(());
        };
        if self.credentials.challenged {
            return Err("the client did not answer AUTH_CHALLENGE with a valid token".into());
        }
        if now_ms() / 1000 < expires_at {
            return Ok(());
        }
        if !self.credentials.supports_refresh {
            return Err("the token expired and the client cannot refresh it".into());
        }
        self.credentials.challenged = true;
        tracing::debug!(connection = self.id, peer = %self.peer, "token expired: AUTH_CHALLENGE");
        self.send(crate::protocol::commands::auth_challenge(
            MAX_PROTOCOL_VERSION,
        ));
        Ok(())
    }

    /// AUTH_RESPONSE: a fresh token for the same role keeps the connection.
    pub(super) fn on_auth_response(&mut self, response: CommandAuthResponse) -> Result<(), String> {
        if self.service.config().auth.is_none() {
            return Ok(());
        }
        let AuthData {
            auth_method_name,
            auth_data,
        } = response.response.unwrap_or_default();
        let token = self.verify(auth_method_name.as_deref(), auth_data.as_deref())?;
        if self.role.as_deref() != Some(token.role.as_str()) {
            return Err(format!(
                "AUTH_RESPONSE proved role {:?}, not the connection's {:?}",
                token.role,
                self.role.as_deref().unwrap_or_default()
            ));
        }
        self.credentials.expires_at = token.expires_at;
        self.credentials.challenged = false;
        Ok(())
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
