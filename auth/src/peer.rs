//! Who may call the storage tier. A bookie or a broker's replication server
//! trusts nobody by default once a [`PeerPolicy`] is configured: every RPC
//! must come from a peer that proves one of the policy's roles, either with
//! a TLS client certificate the server's trust roots verified (mutual TLS;
//! the role is the certificate's subject common name) or with a token
//! (`authorization: Bearer <jwt>` in the gRPC metadata). The check runs once
//! per call (once per stream for streaming adds), never per entry.

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
/// deployments and tests), `Authenticated` only peers proving one of the
/// listed roles.
#[derive(Clone, Debug)]
pub enum PeerPolicy {
    Open,
    Authenticated {
        /// Verifies tokens; `None`: tokens are not accepted.
        verifier: Option<Arc<TokenVerifier>>,
        /// Accept the subject common name of a client certificate that the
        /// TLS layer verified as the peer's role.
        certificates: bool,
        roles: BTreeSet<String>,
    },
}

impl PeerPolicy {
    /// Admits peers with a token of one of `roles`.
    pub fn tokens(verifier: Arc<TokenVerifier>, roles: impl IntoIterator<Item = String>) -> Self {
        PeerPolicy::authenticated(Some(verifier), false, roles)
    }

    /// Admits peers proving one of `roles` with a token (if `verifier` is
    /// given) or a verified client certificate (if `certificates`).
    pub fn authenticated(
        verifier: Option<Arc<TokenVerifier>>,
        certificates: bool,
        roles: impl IntoIterator<Item = String>,
    ) -> Self {
        PeerPolicy::Authenticated {
            verifier,
            certificates,
            roles: roles.into_iter().collect(),
        }
    }

    pub fn is_open(&self) -> bool {
        matches!(self, PeerPolicy::Open)
    }

    /// The caller's role, if the policy admits it; `None` under `Open`.
    /// `certificate_role`: the subject common name of the client
    /// certificate the peer presented, if the TLS layer verified one.
    pub fn admit(
        &self,
        authorization: Option<&str>,
        certificate_role: Option<String>,
    ) -> Result<Option<String>, PeerAuthError> {
        let PeerPolicy::Authenticated {
            verifier,
            certificates,
            roles,
        } = self
        else {
            return Ok(None);
        };
        let role = match (certificate_role.filter(|_| *certificates), verifier) {
            (Some(role), _) => role,
            (None, Some(verifier)) => {
                let token = authorization
                    .and_then(|value| value.strip_prefix(BEARER))
                    .ok_or(PeerAuthError::Unauthenticated(TokenError::Missing))?;
                verifier
                    .verify(token)
                    .map_err(PeerAuthError::Unauthenticated)?
            }
            (None, None) => {
                return Err(PeerAuthError::Unauthenticated(TokenError::Malformed(
                    "a client certificate naming the role is required".into(),
                )))
            }
        };
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

/// The subject common name of the first (the peer's own) certificate of a
/// chain the TLS layer verified.
fn certificate_role(request: &Request<()>) -> Option<String> {
    let chain = request.peer_certs()?;
    let (_, certificate) = x509_parser::parse_x509_certificate(chain.first()?.as_ref()).ok()?;
    let role = certificate
        .subject()
        .iter_common_name()
        .next()?
        .as_str()
        .ok()?
        .to_string();
    Some(role)
}

impl Interceptor for PeerGate {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        let header = request
            .metadata()
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        match self.policy.admit(header, certificate_role(&request)) {
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
        assert_eq!(PeerPolicy::Open.admit(None, None), Ok(None));
    }

    #[test]
    fn a_verified_certificate_proves_its_common_name_as_role() {
        let certificates = PeerPolicy::authenticated(None, true, ["broker".to_string()]);
        assert_eq!(
            certificates.admit(None, Some("broker".into())),
            Ok(Some("broker".into()))
        );
        assert!(matches!(
            certificates.admit(None, Some("app".into())),
            Err(PeerAuthError::NotAllowed { .. })
        ));
        assert!(matches!(
            certificates.admit(Some(&format!("{BEARER}{}", token("broker"))), None),
            Err(PeerAuthError::Unauthenticated(_))
        ));
        // A policy without certificates ignores one and wants a token.
        assert!(matches!(
            policy().admit(None, Some("broker".into())),
            Err(PeerAuthError::Unauthenticated(TokenError::Missing))
        ));
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
            policy().admit(Some(&token("broker")), None),
            Err(PeerAuthError::Unauthenticated(TokenError::Missing))
        );
    }

    #[test]
    fn unprintable_tokens_are_refused_before_sending() {
        assert!(PeerCredentials::token("a\nb").is_err());
        assert!(PeerCredentials::token("  ").is_err());
    }
}
