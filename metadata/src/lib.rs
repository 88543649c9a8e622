//! Cluster metadata: the [`MetadataStore`] trait, its etcd and embedded
//! backends, the typed key layout, the ledger-id allocator and the lease
//! keeper.
//!
//! This crate knows keys, versions and leases; it never knows how entries are
//! stored (no RocksDB here) nor what a topic means beyond its key.

#[cfg(feature = "conformance")]
pub mod conformance;
mod embedded;
mod error;
mod etcd;
pub mod keys;
mod lease;
mod ledger_id;
mod store;

use std::path::PathBuf;
use std::sync::Arc;

pub use embedded::{EmbeddedOptions, EmbeddedStore, LOCK_FILE, SNAPSHOT_FILE, WAL_FILE};
pub use error::{MetadataError, Result};
pub use etcd::{EtcdOptions, EtcdStore};
pub use lease::LeaseKeeper;
pub use ledger_id::LedgerIdAllocator;
pub use store::{
    Compare, Expect, KeyValue, LeaseId, MetadataStore, Op, Revision, Txn, TxnOutcome, Version,
    WatchEvent, WatchEventKind, WatchStream,
};

/// etcd's client port, used when an endpoint names none.
const ETCD_DEFAULT_PORT: u16 = 2379;

/// A parsed `--metadata` URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MetadataUrl {
    /// `etcd://host:port[,host:port...][/root-prefix]`
    Etcd {
        /// `host:port` of each member.
        endpoints: Vec<String>,
        /// `/root-prefix`, or empty.
        root_prefix: String,
    },
    /// `embedded://DIR`
    Embedded { dir: PathBuf },
}

impl std::str::FromStr for MetadataUrl {
    type Err = MetadataError;

    fn from_str(url: &str) -> Result<Self> {
        let invalid = |why: &str| {
            MetadataError::InvalidArgument(format!(
                "metadata URL {url:?}: {why} (expected etcd://host:port[,host:port...][/root-prefix] or embedded://DIR)"
            ))
        };
        if let Some(dir) = url.strip_prefix("embedded://") {
            if dir.is_empty() {
                return Err(invalid("no directory"));
            }
            return Ok(MetadataUrl::Embedded { dir: dir.into() });
        }
        let Some(rest) = url.strip_prefix("etcd://") else {
            return Err(invalid("unknown scheme"));
        };
        let (hosts, root_prefix) = match rest.find('/') {
            Some(at) => (&rest[..at], rest[at..].trim_end_matches('/').to_owned()),
            None => (rest, String::new()),
        };
        let mut endpoints = Vec::new();
        for host in hosts.split(',') {
            let host = host.trim();
            if host.is_empty() {
                return Err(invalid("empty endpoint"));
            }
            let has_port = match host.strip_prefix('[') {
                Some(v6) => v6.contains("]:"),
                None => host.contains(':'),
            };
            if has_port {
                let port = host.rsplit(':').next().unwrap_or_default();
                if port.parse::<u16>().is_err() {
                    return Err(invalid(&format!("bad port in {host:?}")));
                }
                endpoints.push(host.to_owned());
            } else {
                endpoints.push(format!("{host}:{ETCD_DEFAULT_PORT}"));
            }
        }
        Ok(MetadataUrl::Etcd {
            endpoints,
            root_prefix,
        })
    }
}

/// Opens the store a `--metadata` URL names:
/// `etcd://host:port[,host:port...][/root-prefix]` or `embedded://DIR`.
pub async fn connect(url: &str) -> Result<Arc<dyn MetadataStore>> {
    match url.parse::<MetadataUrl>()? {
        MetadataUrl::Etcd {
            endpoints,
            root_prefix,
        } => Ok(Arc::new(
            EtcdStore::connect(EtcdOptions::new(endpoints, root_prefix)).await?,
        )),
        MetadataUrl::Embedded { dir } => Ok(Arc::new(EmbeddedStore::open(dir).await?)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn etcd(endpoints: &[&str], root: &str) -> MetadataUrl {
        MetadataUrl::Etcd {
            endpoints: endpoints.iter().map(|e| e.to_string()).collect(),
            root_prefix: root.into(),
        }
    }

    #[test]
    fn parses_metadata_urls() {
        let parse = |s: &str| s.parse::<MetadataUrl>();
        assert_eq!(
            parse("etcd://127.0.0.1:2379").unwrap(),
            etcd(&["127.0.0.1:2379"], "")
        );
        assert_eq!(
            parse("etcd://a:1,b:2/magnetar/c1/").unwrap(),
            etcd(&["a:1", "b:2"], "/magnetar/c1")
        );
        assert_eq!(parse("etcd://etcd").unwrap(), etcd(&["etcd:2379"], ""));
        assert_eq!(
            parse("etcd://[::1]:2380").unwrap(),
            etcd(&["[::1]:2380"], "")
        );
        assert_eq!(parse("etcd://[::1]").unwrap(), etcd(&["[::1]:2379"], ""));
        assert_eq!(
            parse("embedded://./data").unwrap(),
            MetadataUrl::Embedded {
                dir: "./data".into()
            }
        );
        assert_eq!(
            parse("embedded:///var/lib/m").unwrap(),
            MetadataUrl::Embedded {
                dir: "/var/lib/m".into()
            }
        );
        for bad in [
            "",
            "zk://a:1",
            "etcd://",
            "etcd:///root",
            "etcd://a:1,,b:2",
            "etcd://a:port",
            "embedded://",
        ] {
            assert!(
                matches!(parse(bad), Err(MetadataError::InvalidArgument(_))),
                "{bad:?} should be rejected"
            );
        }
    }
}
