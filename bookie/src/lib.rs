//! Bookie storage node: stores ledger entries durably in RocksDB and serves
//! them over gRPC.
//!
//! A bookie knows ledgers and entries only; it never learns what a topic is.
//! Every add is acknowledged only after the round it was written in has been
//! fsynced; concurrent adds from all streams share one synced write per round
//! (group commit, see [`journal`]).

pub mod config;
mod disk;
mod error;
mod gc;
mod http;
pub mod journal;
mod ledger_state;
mod metrics;
mod registration;
mod server;
mod service;
pub mod store;

pub use config::BookieConfig;
pub use error::BookieError;
pub use error::StartError;
pub use server::{BookieNode, RunningBookie};
