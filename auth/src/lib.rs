//! Authentication shared by every Magnetar process: tokens (JWTs, as Pulsar
//! makes them) and the peer checks that guard the storage tier's RPCs.
//!
//! The broker turns a client's token into a role with [`token`]; bookies and
//! brokers' replication servers let only configured roles call them with
//! [`peer`], over mutual TLS ([`tls`]) or with tokens.

pub mod peer;
pub mod tls;
pub mod token;

pub use peer::{PeerAuthError, PeerCredentials, PeerGate, PeerPolicy, DEFAULT_STORAGE_ROLE};
pub use tls::{PeerTls, PeerTlsError};
pub use token::{decode_secret_key, TokenError, TokenVerifier, VerifiedToken};
