//! Wire definitions shared by brokers and bookies (gRPC, via tonic/prost).
//!
//! Owns only generated types and small helpers on them; no behaviour.

/// Bookie service, version 1.
pub mod bookie {
    tonic::include_proto!("magnetar.bookie.v1");
}

/// Replication between monolithic brokers, version 1.
pub mod replication {
    tonic::include_proto!("magnetar.replication.v1");
}
