//! Token authentication and namespace authorization, with Pulsar's
//! semantics. Off unless the broker is configured with an [`AuthConfig`].
//!
//! [`token`] turns a token into a role; [`authorize`] decides what a role
//! may do from stored tenant and namespace records. Both are pure: the
//! protocol connection and the admin HTTP layer read the records and ask.
//! Checks happen per command that creates a producer, consumer or lookup,
//! never per message.

pub mod authorize;
pub use magnetar_auth::token;

use std::sync::Arc;

pub use authorize::{
    authorize_superuser, authorize_tenant_admin, authorize_topic, AuthAction, AuthorizationError,
    Permissions, Superusers, TopicOperation,
};
pub use token::{decode_secret_key, TokenError, TokenVerifier, VerifiedToken};

/// The broker's authentication settings; its presence turns auth on.
#[derive(Clone, Debug)]
pub struct AuthConfig {
    pub verifier: Arc<TokenVerifier>,
    pub superusers: Superusers,
    /// How often connections' tokens are checked for expiry (Pulsar's
    /// `authenticationRefreshCheckSeconds`, 60 s by default).
    pub refresh_check: std::time::Duration,
}

/// Pulsar's default `authenticationRefreshCheckSeconds`.
pub const DEFAULT_AUTH_REFRESH_CHECK: std::time::Duration = std::time::Duration::from_secs(60);

/// The token Pulsar clients send as CONNECT's `auth_method_name`.
pub const TOKEN_AUTH_METHOD: &str = "token";
