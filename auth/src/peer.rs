//! Who may call the storage tier. A bookie or a broker's replication server
//! trusts nobody by default once a [`PeerPolicy`] is configured: every RPC
//! must carry a token (`authorization: Bearer <jwt>` in the gRPC metadata)
//! whose role is one of the policy's roles. The check runs once per call
//! (once per stream for streaming adds), never per entry.

use std::collections::BTreeSet;
use std::sync::Arc;

use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::{Request, Status};

use crate::token::{TokenError, TokenVerifier};

/// The role brokers' tokens carry unless told otherwise.
pub const DEFAULT_STORAGE_ROLE: &str = "broker";

const AUTHORIZATION: &str = "authorization";
const BEARER: &str = "Bearer ";

/// Why a peer was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PeerAuthError {
    #[error("the storage tier requires authentication: {0}")]
    Unauthenticated(TokenError),
    #[error("role {role:?} may not call the storage tier (allowed: {allowed})")]
    NotAllowed { role: String, allowed: String },
}

impl From<PeerAuthError> for Status {
    fn from(e: PeerAuthError) -> Status {
        match e {
            PeerAuthError::Unauthenticated(_) => Status::unauthenticated(e.to_string()),
            PeerAuthError::NotAllowed { .. } => Status::permission_denied(e.to_string()),
        }
    }
}

/// What a storage-tier server accepts: `Open` serves everyone (loopback
/// deployments and tests), `Tokens` only the listed roles.
#[derive(Clone, Debug)]
pub enum PeerPolicy {
    Open,
    Tokens {
        verifier: Arc<TokenVerifier>,
        roles: BTreeSet<String>,
    },
}

impl PeerPolicy {
    pub fn tokens(verifier: Arc<TokenVerifier>, roles: impl IntoIterator<Item = String>) -> Self {
        PeerPolicy::Tokens {
            verifier,
            roles: roles.into_iter().collect(),
        }
    }

    pub fn is_open(&self) -> bool {
        matches!(self, PeerPolicy::Open)
    }

    /// The caller's role, if the policy admits it; `None` under `Open`.
    pub fn admit(&self, authorization: Option<&str>) -> Result<Option<String>, PeerAuthError> {
        let PeerPolicy::Tokens { verifier, roles } = self else {
            return Ok(None);
        };
        let token = authorization
            .and_then(|value| value.strip_prefix(BEARER))
            .ok_or(PeerAuthError::Unauthenticated(TokenError::Missing))?;
        let role = verifier
            .verify(token)
            .map_err(PeerAuthError::Unauthenticated)?;
        if !roles.contains(&role) {
            let allowed = roles.iter().cloned().collect::<Vec<_>>().join(", ");
            return Err(PeerAuthError::NotAllowed { role, allowed });
        }
        Ok(Some(role))
    }
}

/// A server-side interceptor applying a [`PeerPolicy`] to every call.
#[derive(Clone, Debug)]
pub struct PeerGate {
    policy: Arc<PeerPolicy>,
}

impl PeerGate {
    pub fn new(policy: PeerPolicy) -> Self {
        PeerGate {
            policy: Arc::new(policy),
        }
    }
}

impl Interceptor for PeerGate {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        let header = request
            .metadata()
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        match self.policy.admit(header) {
            Ok(_) => Ok(request),
            Err(e) => {
                let peer = request.remote_addr();
                tracing::warn!(?peer, error = %e, "storage-tier call refused");
                Err(e.into())
            }
        }
    }
}

/// A client-side interceptor that presents this process's token, if it has one.
#[derive(Clone, Debug, Default)]
pub struct PeerCredentials {
    header: Option<MetadataValue<Ascii>>,
}

impl PeerCredentials {
    pub fn none() -> Self {
        PeerCredentials::default()
    }

    /// Fails when the token cannot travel in a header (not visible ASCII).
    pub fn token(token: &str) -> Result<Self, TokenError> {
        let token = token.trim();
        if token.is_empty() {
            return Err(TokenError::Missing);
        }
        let header = format!("{BEARER}{token}")
            .parse::<MetadataValue<Ascii>>()
            .map_err(|_| TokenError::Malformed("a token must be printable ASCII".into()))?;
        Ok(PeerCredentials {
            header: Some(header),
        })
    }
}

impl Interceptor for PeerCredentials {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(header) = &self.header {
            request.metadata_mut().insert(AUTHORIZATION, header.clone());
        }
        Ok(request)
    }
}

#[cfg(test)]
mod tests {
    use jsonwebtoken::{Algorithm, EncodingKey, Header};
    use serde_json::json;

    use super::*;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn token(sub: &str) -> String {
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &json!({ "sub": sub }),
            &EncodingKey::from_secret(SECRET),
        )
        .unwrap()
    }

    fn policy() -> PeerPolicy {
        PeerPolicy::tokens(
            Arc::new(TokenVerifier::hs256(SECRET).unwrap()),
            [DEFAULT_STORAGE_ROLE.to_string()],
        )
    }

    fn through_gate(credentials: PeerCredentials) -> Result<(), Status> {
        let mut credentials = credentials;
        let request = credentials.call(Request::new(()))?;
        PeerGate::new(policy()).call(request).map(|_| ())
    }

    #[test]
    fn open_policy_admits_anyone() {
        assert_eq!(PeerPolicy::Open.admit(None), Ok(None));
    }

    #[test]
    fn only_listed_roles_with_valid_tokens_pass() {
        let ok = through_gate(PeerCredentials::token(&token("broker")).unwrap());
        assert!(ok.is_ok(), "{ok:?}");
        let missing = through_gate(PeerCredentials::none()).unwrap_err();
        assert_eq!(missing.code(), tonic::Code::Unauthenticated);
        let client = through_gate(PeerCredentials::token(&token("app")).unwrap()).unwrap_err();
        assert_eq!(client.code(), tonic::Code::PermissionDenied);
        assert!(client.message().contains("\"app\""), "{}", client.message());
        let forged = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &json!({ "sub": "broker" }),
            &EncodingKey::from_secret(b"another secret"),
        )
        .unwrap();
        let forged = through_gate(PeerCredentials::token(&forged).unwrap()).unwrap_err();
        assert_eq!(forged.code(), tonic::Code::Unauthenticated);
    }

    #[test]
    fn a_header_without_the_bearer_scheme_is_unauthenticated() {
        assert_eq!(
            policy().admit(Some(&token("broker"))),
            Err(PeerAuthError::Unauthenticated(TokenError::Missing))
        );
    }

    #[test]
    fn unprintable_tokens_are_refused_before_sending() {
        assert!(PeerCredentials::token("a\nb").is_err());
        assert!(PeerCredentials::token("  ").is_err());
    }
}
