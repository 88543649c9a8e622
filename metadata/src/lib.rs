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
pub use etcd::{EtcdOptions, EtcdStore, EtcdTls};
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
    /// `etcd://[user[:password]@]host:port[,host:port...][/root-prefix]`;
    /// `etcds://` for TLS.
    Etcd {
        /// `host:port` of each member.
        endpoints: Vec<String>,
        /// `/root-prefix`, or empty.
        root_prefix: String,
        /// etcd's user (its auth enabled), and the password if the URL
        /// carries it.
        user: Option<(String, Option<String>)>,
        tls: bool,
    },
    /// `embedded://DIR`
    Embedded { dir: PathBuf },
}

impl std::str::FromStr for MetadataUrl {
    type Err = MetadataError;

    fn from_str(url: &str) -> Result<Self> {
        let invalid = |why: &str| {
            MetadataError::InvalidArgument(format!(
                "metadata URL {:?}: {why} (expected etcd://host:port[,host:port...][/root-prefix] or embedded://DIR)",
                redacted_url(url)
            ))
        };
        if let Some(dir) = url.strip_prefix("embedded://") {
            if dir.is_empty() {
                return Err(invalid("no directory"));
            }
            return Ok(MetadataUrl::Embedded { dir: dir.into() });
        }
        let (rest, tls) = match (url.strip_prefix("etcd://"), url.strip_prefix("etcds://")) {
            (Some(rest), _) => (rest, false),
            (None, Some(rest)) => (rest, true),
            (None, None) => return Err(invalid("unknown scheme")),
        };
        let (authority, root_prefix) = match rest.find('/') {
            Some(at) => (&rest[..at], rest[at..].trim_end_matches('/').to_owned()),
            None => (rest, String::new()),
        };
        let (user, hosts) = match authority.rsplit_once('@') {
            Some((userinfo, hosts)) => {
                let user = match userinfo.split_once(':') {
                    Some((name, password)) => (name.to_owned(), Some(password.to_owned())),
                    None => (userinfo.to_owned(), None),
                };
                if user.0.is_empty() {
                    return Err(invalid("empty user name"));
                }
                (Some(user), hosts)
            }
            None => (None, authority),
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
            user,
            tls,
        })
    }
}

/// `url` fit for logs and errors: an etcd password in it becomes `***`.
pub fn redacted_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((userinfo, hosts)) => {
            let user = userinfo.split_once(':').map_or(userinfo, |(name, _)| name);
            let hidden = if userinfo.contains(':') { ":***" } else { "" };
            format!("{scheme}://{user}{hidden}@{hosts}{path}")
        }
        None => url.to_string(),
    }
}

/// The password of an etcd user whose URL names none.
pub const ETCD_PASSWORD_ENV: &str = "MAGNETAR_ETCD_PASSWORD";
/// PEM file of the CA that signed etcd's certificates (`etcds://`).
pub const ETCD_CA_ENV: &str = "MAGNETAR_ETCD_CA_FILE";
/// PEM files of a client certificate and key, for an etcd that requires one.
pub const ETCD_CERT_ENV: &str = "MAGNETAR_ETCD_CERT_FILE";
pub const ETCD_KEY_ENV: &str = "MAGNETAR_ETCD_KEY_FILE";

/// Opens the store a `--metadata` URL names:
/// `etcd://host:port[,host:port...][/root-prefix]` or `embedded://DIR`.
pub async fn connect(url: &str) -> Result<Arc<dyn MetadataStore>> {
    match url.parse::<MetadataUrl>()? {
        MetadataUrl::Etcd {
            endpoints,
            root_prefix,
            user,
            tls,
        } => {
            let mut options = EtcdOptions::new(endpoints, root_prefix);
            if let Some((name, password)) = user {
                let password = match password {
                    Some(password) => password,
                    None => std::env::var(ETCD_PASSWORD_ENV).map_err(|_| {
                        MetadataError::InvalidArgument(format!(
                            "etcd user {name:?} has no password: put it in the URL or in {ETCD_PASSWORD_ENV}"
                        ))
                    })?,
                };
                options.user = Some((name, password));
            }
            if tls {
                options.tls = Some(EtcdTls::from_env()?);
            }
            Ok(Arc::new(EtcdStore::connect(options).await?))
        }
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
            user: None,
            tls: false,
        }
    }

    #[test]
    fn redacts_passwords() {
        assert_eq!(
            redacted_url("etcds://root:s3cret@a:1,b:2/m"),
            "etcds://root:***@a:1,b:2/m"
        );
        assert_eq!(redacted_url("etcd://root@a:1"), "etcd://root@a:1");
        assert_eq!(redacted_url("etcd://a:1/x"), "etcd://a:1/x");
        assert_eq!(redacted_url("embedded://./d"), "embedded://./d");
    }

    #[test]
    fn parses_users_and_tls() {
        let parse = |s: &str| s.parse::<MetadataUrl>().unwrap();
        assert_eq!(
            parse("etcds://root:s3cret@a:1,b/m"),
            MetadataUrl::Etcd {
                endpoints: vec!["a:1".into(), "b:2379".into()],
                root_prefix: "/m".into(),
                user: Some(("root".into(), Some("s3cret".into()))),
                tls: true,
            }
        );
        assert_eq!(
            parse("etcd://magnetar@a:1"),
            MetadataUrl::Etcd {
                endpoints: vec!["a:1".into()],
                root_prefix: String::new(),
                user: Some(("magnetar".into(), None)),
                tls: false,
            }
        );
        assert!("etcd://@a:1".parse::<MetadataUrl>().is_err());
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
