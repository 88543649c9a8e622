//! Token verification: a JWT (as `pulsar tokens create` or `magnetar tokens
//! create` makes it) signed with HS256 under a shared secret or RS256 under
//! a private key whose public half the broker holds. The token's role is its
//! `sub` claim; `exp`, when present, is honoured without leeway. Nothing here
//! looks at permissions (see [`super::authorize`]).

use std::collections::HashSet;

use base64::Engine;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

/// Why a token or a key was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("no authentication token was given")]
    Missing,
    #[error("token has expired")]
    Expired,
    #[error("token signature is invalid")]
    BadSignature,
    #[error("token has no subject (role)")]
    NoSubject,
    #[error("token is malformed: {0}")]
    Malformed(String),
    #[error("invalid token key: {0}")]
    InvalidKey(String),
}

#[derive(Deserialize)]
struct Claims {
    #[serde(default)]
    sub: Option<String>,
    /// Seconds since the epoch.
    #[serde(default)]
    exp: Option<u64>,
}

/// What a valid token proves, and until when.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedToken {
    pub role: String,
    /// When it expires (seconds since the epoch); `None`: never.
    pub expires_at: Option<u64>,
}

/// Checks tokens against the broker's one configured key.
#[derive(Clone)]
pub struct TokenVerifier {
    key: DecodingKey,
    validation: Validation,
}

impl std::fmt::Debug for TokenVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenVerifier")
            .field("algorithm", &self.validation.algorithms)
            .finish_non_exhaustive()
    }
}

impl TokenVerifier {
    /// HS256 under a shared secret (the raw key bytes).
    pub fn hs256(secret: &[u8]) -> Result<Self, TokenError> {
        if secret.is_empty() {
            return Err(TokenError::InvalidKey("the secret key is empty".into()));
        }
        Ok(Self::new(
            DecodingKey::from_secret(secret),
            Algorithm::HS256,
        ))
    }

    /// RS256 under the public half (PEM) of the signing key.
    pub fn rs256_pem(public_key_pem: &[u8]) -> Result<Self, TokenError> {
        let key = DecodingKey::from_rsa_pem(public_key_pem)
            .map_err(|e| TokenError::InvalidKey(format!("not an RSA public key in PEM: {e}")))?;
        Ok(Self::new(key, Algorithm::RS256))
    }

    fn new(key: DecodingKey, algorithm: Algorithm) -> Self {
        let mut validation = Validation::new(algorithm);
        // Pulsar's tokens need not expire; an `exp` that is present is checked.
        validation.required_spec_claims = HashSet::new();
        validation.validate_exp = true;
        validation.leeway = 0;
        TokenVerifier { key, validation }
    }

    /// The role the token was issued to.
    pub fn verify(&self, token: &str) -> Result<String, TokenError> {
        self.verify_token(token).map(|t| t.role)
    }

    /// The role and expiry of a valid token, so that a connection it opened
    /// can be challenged once it expires.
    pub fn verify_token(&self, token: &str) -> Result<VerifiedToken, TokenError> {
        let token = token.trim();
        if token.is_empty() {
            return Err(TokenError::Missing);
        }
        let data = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation).map_err(
            |e| match e.kind() {
                ErrorKind::ExpiredSignature => TokenError::Expired,
                ErrorKind::InvalidSignature | ErrorKind::InvalidAlgorithm => {
                    TokenError::BadSignature
                }
                _ => TokenError::Malformed(e.to_string()),
            },
        )?;
        match data.claims.sub {
            Some(role) if !role.is_empty() => Ok(VerifiedToken {
                role,
                expires_at: data.claims.exp,
            }),
            _ => Err(TokenError::NoSubject),
        }
    }
}

/// A secret key as stored in a file or given inline: base64 text (what
/// `magnetar tokens create-secret-key` writes) is decoded, anything else is
/// taken as the raw key bytes (what `pulsar tokens create-secret-key` writes).
pub fn decode_secret_key(stored: &[u8]) -> Vec<u8> {
    let text = stored.trim_ascii();
    match base64::engine::general_purpose::STANDARD.decode(text) {
        Ok(key) if !key.is_empty() => key,
        _ => stored.to_vec(),
    }
}

#[cfg(test)]
mod tests {
    use jsonwebtoken::{EncodingKey, Header};
    use serde_json::json;

    use super::*;

    const PRIVATE_PEM: &[u8] = include_bytes!("../../broker/tests/data/rs256-private.pem");
    const PUBLIC_PEM: &[u8] = include_bytes!("../../broker/tests/data/rs256-public.pem");

    fn now() -> u64 {
        jsonwebtoken::get_current_timestamp()
    }

    fn hs(secret: &[u8], claims: serde_json::Value) -> String {
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(secret),
        )
        .unwrap()
    }

    fn rs(claims: serde_json::Value) -> String {
        jsonwebtoken::encode(
            &Header::new(Algorithm::RS256),
            &claims,
            &EncodingKey::from_rsa_pem(PRIVATE_PEM).unwrap(),
        )
        .unwrap()
    }

    #[test]
    fn hs256_tokens() {
        let verifier = TokenVerifier::hs256(b"0123456789abcdef0123456789abcdef").unwrap();
        let secret = b"0123456789abcdef0123456789abcdef";
        assert_eq!(
            verifier.verify(&hs(secret, json!({"sub": "admin"}))),
            Ok("admin".into())
        );
        assert_eq!(
            verifier.verify(&hs(secret, json!({"sub": "app", "exp": now() + 3600}))),
            Ok("app".into())
        );
        assert_eq!(
            verifier.verify(&hs(secret, json!({"sub": "app", "exp": now() - 10}))),
            Err(TokenError::Expired)
        );
        assert_eq!(
            verifier.verify(&hs(b"another secret", json!({"sub": "admin"}))),
            Err(TokenError::BadSignature)
        );
        assert_eq!(
            verifier.verify(&hs(secret, json!({"exp": now() + 60}))),
            Err(TokenError::NoSubject)
        );
        assert_eq!(verifier.verify(""), Err(TokenError::Missing));
        assert!(matches!(
            verifier.verify("not.a.jwt"),
            Err(TokenError::Malformed(_))
        ));
        // An RS256 token is not accepted by an HS256 broker.
        assert!(verifier.verify(&rs(json!({"sub": "admin"}))).is_err());
        assert!(TokenVerifier::hs256(b"").is_err());
    }

    #[test]
    fn rs256_tokens() {
        let verifier = TokenVerifier::rs256_pem(PUBLIC_PEM).unwrap();
        assert_eq!(
            verifier.verify(&rs(json!({"sub": "admin"}))),
            Ok("admin".into())
        );
        assert_eq!(
            verifier.verify(&rs(json!({"sub": "admin", "exp": now() - 1}))),
            Err(TokenError::Expired)
        );
        // Signed with a shared secret instead of the private key.
        assert!(verifier
            .verify(&hs(b"0123456789abcdef", json!({"sub": "admin"})))
            .is_err());
        assert!(TokenVerifier::rs256_pem(b"not a key").is_err());
    }

    #[test]
    fn secret_keys_as_base64_or_raw() {
        assert_eq!(decode_secret_key(b"c2VjcmV0\n"), b"secret");
        let raw = [0u8, 255, 7, 9];
        assert_eq!(decode_secret_key(&raw), raw);
    }
}
