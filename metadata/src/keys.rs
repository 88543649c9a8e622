//! Every key path the cluster uses, in one place, so no crate writes a key as
//! a string literal and two crates can never disagree on a layout.
//!
//! ```text
//! /clusters/{cluster}                                   cluster record
//! /architecture                                         decoupled | monolithic, fixed when the cluster is initialised
//! /bookies/available/{bookie}                           BookieRegistration, bound to the bookie's lease
//! /bookies/all/{bookie}                                 every bookie ever registered (survives restarts)
//! /bookies/decommission/{bookie}                        an operator's request to drain a bookie
//! /autorecovery/bookies/{bookie}                        the auditor's record of a lost or draining bookie
//! /brokers/available/{broker}                           broker registration, bound to the broker's lease
//! /brokers/load/{broker}                                the broker's load report, bound to its lease
//! /leaders/{role}                                       election keys (load manager, controller)
//! /tenants/{tenant}                                     tenant record
//! /namespaces/{tenant}/{namespace}                      namespace policies
//! /partitioned-topics/{tenant}/{namespace}/{topic}      partition count of a partitioned topic
//! /topics/{tenant}/{namespace}/{topic}                  a topic's log record (decoupled: its ledger list; monolithic: its partition state)
//! /topics/{tenant}/{namespace}/{topic}/{subscription}   a cursor's log record, where cursors keep their state in logs
//! /cursors/{tenant}/{namespace}/{topic}/{subscription}  a subscription's cursor
//! /ledgers/{ledger_id}                                  ledger metadata (ensembles, state, last entry)
//! /ownership/{tenant}/{namespace}/{bundle}              owner of a bundle, bound to the owner's lease
//! /assignments/{tenant}/{namespace}/{bundle}            where the load manager sends a bundle next
//! /bundle-requests/{tenant}/{namespace}/{bundle}        unload or split asked of the bundle's owner
//! /counters/ledger-id                                   last ledger id handed out
//! ```
//!
//! Name segments are escaped (`%` and `/` as `%25`, `%2F`), so a name holding
//! a `/` cannot reach into another path; prefixes end with `/` so listing
//! `tenant-a` never returns `tenant-ab`.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::{MetadataError, Result};

/// Escapes one path segment: `%` -> `%25`, `/` -> `%2F`.
pub fn escape_segment(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for c in name.chars() {
        match c {
            '%' => out.push_str("%25"),
            '/' => out.push_str("%2F"),
            c => out.push(c),
        }
    }
    out
}

/// Inverse of [`escape_segment`]; None for an escape it never produces.
pub fn unescape_segment(segment: &str) -> Option<String> {
    let mut out = String::with_capacity(segment.len());
    let mut rest = segment;
    while let Some(at) = rest.find('%') {
        out.push_str(&rest[..at]);
        let escape = rest.get(at..at + 3)?;
        out.push(match escape {
            "%25" => '%',
            "%2F" => '/',
            _ => return None,
        });
        rest = &rest[at + 3..];
    }
    out.push_str(rest);
    Some(out)
}

/// The last segment of `key` under `prefix` (a name listed from a prefix),
/// unescaped; None if `key` is not directly under `prefix`.
pub fn child_name(prefix: &str, key: &str) -> Option<String> {
    let rest = key.strip_prefix(prefix)?;
    if rest.is_empty() || rest.contains('/') {
        return None;
    }
    unescape_segment(rest)
}

fn path(parts: &[&str]) -> String {
    let mut out = String::new();
    for (i, part) in parts.iter().enumerate() {
        out.push('/');
        // The first part is always a fixed section name.
        if i == 0 {
            out.push_str(part);
        } else {
            out.push_str(&escape_segment(part));
        }
    }
    out
}

fn dir(parts: &[&str]) -> String {
    let mut out = path(parts);
    out.push('/');
    out
}

// Clusters.

pub fn cluster(name: &str) -> String {
    path(&["clusters", name])
}

/// The storage architecture of every broker sharing this metadata.
pub fn cluster_architecture() -> String {
    path(&["architecture"])
}

pub fn clusters_prefix() -> String {
    dir(&["clusters"])
}

// Bookies.

/// Where a live bookie announces itself, bound to its lease: the key
/// vanishes when the bookie dies. Value: [`BookieRegistration`].
pub fn bookie_available(bookie_id: &str) -> String {
    path(&["bookies", "available", bookie_id])
}

pub fn bookies_available_prefix() -> String {
    dir(&["bookies", "available"])
}

/// A bookie that ever joined, kept when it is down, so a lost bookie can be
/// told from one that never existed (re-replication needs that).
pub fn bookie_known(bookie_id: &str) -> String {
    path(&["bookies", "all", bookie_id])
}

pub fn bookies_known_prefix() -> String {
    dir(&["bookies", "all"])
}

/// Present while an operator wants a bookie drained: the auditor copies
/// its ledgers elsewhere and placement gives it no new ones.
pub fn bookie_decommission(bookie_id: &str) -> String {
    path(&["bookies", "decommission", bookie_id])
}

pub fn bookies_decommission_prefix() -> String {
    dir(&["bookies", "decommission"])
}

/// The auditor's record of a bookie it found lost or was asked to drain
/// (since when, and how far re-replication got), kept outside any lease so
/// that the next auditor resumes where this one stopped.
pub fn bookie_recovery(bookie_id: &str) -> String {
    path(&["autorecovery", "bookies", bookie_id])
}

pub fn bookie_recoveries_prefix() -> String {
    dir(&["autorecovery", "bookies"])
}

// Brokers and elections.

/// A live broker's registration, bound to its lease.
pub fn broker_available(broker_id: &str) -> String {
    path(&["brokers", "available", broker_id])
}

pub fn brokers_available_prefix() -> String {
    dir(&["brokers", "available"])
}

/// Election key of the load manager (the leader broker that assigns bundles).
pub fn load_manager_leader() -> String {
    path(&["leaders", "load-manager"])
}

/// Election key of the auditor (the broker that re-replicates the ledgers
/// of lost bookies).
pub fn auditor_leader() -> String {
    path(&["leaders", "auditor"])
}

/// Election key of the monolithic architecture's partition controller.
pub fn controller_leader() -> String {
    path(&["leaders", "controller"])
}

// Tenants, namespaces, topics.

pub fn tenant(tenant: &str) -> String {
    path(&["tenants", tenant])
}

pub fn tenants_prefix() -> String {
    dir(&["tenants"])
}

/// A namespace's policies.
pub fn namespace(tenant: &str, namespace: &str) -> String {
    path(&["namespaces", tenant, namespace])
}

pub fn namespaces_prefix(tenant: &str) -> String {
    dir(&["namespaces", tenant])
}

/// Partition count of a partitioned topic (its partitions are ordinary
/// topics named `{topic}-partition-{n}`).
pub fn partitioned_topic(tenant: &str, namespace: &str, topic: &str) -> String {
    path(&["partitioned-topics", tenant, namespace, topic])
}

pub fn partitioned_topics_prefix(tenant: &str, namespace: &str) -> String {
    dir(&["partitioned-topics", tenant, namespace])
}

/// A persistent topic's managed ledger (its ledger list), by local name.
pub fn topic(tenant: &str, namespace: &str, topic: &str) -> String {
    path(&["topics", tenant, namespace, topic])
}

/// The log record of a subscription's cursor log: below its topic's
/// record, so listing a namespace's topics by [`child_name`] skips it.
pub fn cursor_log(tenant: &str, namespace: &str, topic: &str, subscription: &str) -> String {
    path(&["topics", tenant, namespace, topic, subscription])
}

/// The cursor logs' records of one topic.
pub fn cursor_logs_prefix(tenant: &str, namespace: &str, topic: &str) -> String {
    dir(&["topics", tenant, namespace, topic])
}

pub fn topics_prefix(tenant: &str, namespace: &str) -> String {
    dir(&["topics", tenant, namespace])
}

/// Every topic record of every namespace.
pub fn all_topics_prefix() -> String {
    dir(&["topics"])
}

/// A subscription's cursor (mark-delete position and acknowledged ranges).
pub fn cursor(tenant: &str, namespace: &str, topic: &str, subscription: &str) -> String {
    path(&["cursors", tenant, namespace, topic, subscription])
}

pub fn cursors_prefix(tenant: &str, namespace: &str, topic: &str) -> String {
    dir(&["cursors", tenant, namespace, topic])
}

// Ledgers.

pub fn ledger(ledger_id: u64) -> String {
    format!("/ledgers/{ledger_id}")
}

pub fn ledgers_prefix() -> String {
    dir(&["ledgers"])
}

/// The ledger id of a key produced by [`ledger`].
pub fn parse_ledger_key(key: &str) -> Option<u64> {
    key.strip_prefix("/ledgers/")?.parse().ok()
}

/// Counter behind [`crate::LedgerIdAllocator`]: the last id handed out, as
/// decimal text.
pub fn ledger_id_counter() -> String {
    path(&["counters", "ledger-id"])
}

// Ownership.

/// Owner of a namespace bundle (a hash range such as
/// `0x00000000_0x40000000`), bound to the owning broker's lease.
pub fn bundle_owner(tenant: &str, namespace: &str, bundle: &str) -> String {
    path(&["ownership", tenant, namespace, bundle])
}

pub fn bundle_owners_prefix(tenant: &str, namespace: &str) -> String {
    dir(&["ownership", tenant, namespace])
}

pub fn ownership_prefix() -> String {
    dir(&["ownership"])
}

/// Where the load manager sends a shed or unloaded bundle next (its
/// assignment), bound to the leader's lease.
pub fn bundle_assignment(tenant: &str, namespace: &str, bundle: &str) -> String {
    path(&["assignments", tenant, namespace, bundle])
}

/// A request to a bundle's owner (unload, split), bound to the
/// requester's lease; the owner deletes it once done.
pub fn bundle_request(tenant: &str, namespace: &str, bundle: &str) -> String {
    path(&["bundle-requests", tenant, namespace, bundle])
}

pub fn bundle_requests_prefix() -> String {
    dir(&["bundle-requests"])
}

/// A broker's latest load report (JSON), bound to its lease.
pub fn broker_load(broker_id: &str) -> String {
    path(&["brokers", "load", broker_id])
}

pub fn brokers_load_prefix() -> String {
    dir(&["brokers", "load"])
}

/// What a bookie writes under [`bookie_available`] (JSON).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BookieRegistration {
    /// gRPC address clients connect to (`host:port`).
    pub address: String,
    #[serde(default)]
    pub rack: Option<String>,
    /// Out of disk space (or told so): serves reads, refuses new ledgers.
    #[serde(default)]
    pub read_only: bool,
    #[serde(default)]
    pub free_disk_bytes: u64,
    #[serde(default)]
    pub total_disk_bytes: u64,
    /// Where `/metrics` and `/health` are served, if anywhere.
    #[serde(default)]
    pub http_address: Option<String>,
}

impl BookieRegistration {
    pub fn to_bytes(&self) -> Result<Bytes> {
        serde_json::to_vec(self)
            .map(Bytes::from)
            .map_err(|e| MetadataError::Corrupt(format!("encoding bookie registration: {e}")))
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        serde_json::from_slice(bytes)
            .map_err(|e| MetadataError::Corrupt(format!("bookie registration: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout() {
        assert_eq!(bookie_available("b1:3181"), "/bookies/available/b1:3181");
        assert_eq!(bookies_available_prefix(), "/bookies/available/");
        assert_eq!(ledger(42), "/ledgers/42");
        assert_eq!(parse_ledger_key(&ledger(42)), Some(42));
        assert_eq!(parse_ledger_key("/ledgers/x"), None);
        assert_eq!(cursor("t", "ns", "topic", "sub"), "/cursors/t/ns/topic/sub");
        assert_eq!(ledger_id_counter(), "/counters/ledger-id");
        assert_eq!(
            bundle_owner("t", "ns", "0x00000000_0x40000000"),
            "/ownership/t/ns/0x00000000_0x40000000"
        );
        assert!(topic("t", "ns", "x").starts_with(&topics_prefix("t", "ns")));
    }

    #[test]
    fn names_cannot_escape_their_segment() {
        let key = cursor("t", "ns", "topic", "a/b%2F");
        assert_eq!(key, "/cursors/t/ns/topic/a%2Fb%252F");
        let prefix = cursors_prefix("t", "ns", "topic");
        assert_eq!(child_name(&prefix, &key).as_deref(), Some("a/b%2F"));
        assert_eq!(unescape_segment("%zz"), None);
        assert_eq!(child_name(&prefix, "/cursors/t/ns/topic/a/b"), None);
    }

    #[test]
    fn bookie_registration_round_trips() {
        let reg = BookieRegistration {
            address: "10.0.0.1:3181".into(),
            rack: Some("r1".into()),
            read_only: false,
            free_disk_bytes: 10,
            total_disk_bytes: 20,
            http_address: None,
        };
        let bytes = reg.to_bytes().unwrap();
        assert_eq!(BookieRegistration::from_bytes(&bytes).unwrap(), reg);
        assert!(BookieRegistration::from_bytes(b"{").is_err());
    }
}
