//! Magnetar broker: the BookKeeper-style ledger client ([`ledger`]),
//! managed ledgers and cursors (topic storage), topics with their
//! subscriptions and dispatch ([`topic`]), and the Pulsar binary protocol
//! ([`protocol`] framing, [`server`] connections), and the admin REST API
//! ([`admin`], served by [`http`]); which broker serves which bundle
//! ([`ownership`]).

pub mod admin;
pub mod auth;
pub mod autorecovery;
pub mod clock;
pub mod cursor;
pub mod http;
mod isolate;
pub mod ledger;
pub mod load_manager;
pub mod local_log;
pub mod managed_ledger;
pub mod metrics;
pub mod ownership;
pub mod protocol;
pub mod server;
pub mod storage;
pub mod tls;
pub mod topic;
