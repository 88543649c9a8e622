//! Magnetar broker. Today: the BookKeeper-style ledger client ([`ledger`]).
//! Managed ledgers, cursors and the Pulsar protocol build on it.

pub mod ledger;
