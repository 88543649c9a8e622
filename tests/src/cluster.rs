//! A cluster of brokers sharing one etcd and a set of bookies, and what its
//! tests read back from metadata (who owns which bundle).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use magnetar_metadata::{keys, MetadataStore};

use crate::{BookieProcess, Etcd};

pub struct Cluster {
    pub etcd: Etcd,
    pub metadata: Arc<dyn MetadataStore>,
    pub bookies: Vec<BookieProcess>,
    pub brokers: Vec<BookieProcess>,
    pub metadata_url: String,
}

impl Cluster {
    /// etcd, `bookies` bookies and `brokers` brokers; every broker gets
    /// `broker_args` (lease TTL, quorums, load manager settings).
    pub async fn start(bookies: usize, brokers: usize, broker_args: &[&str]) -> Result<Cluster> {
        let etcd = Etcd::start().await?;
        let url = etcd.metadata_url("cluster");
        let mut started_bookies = Vec::new();
        for _ in 0..bookies {
            started_bookies.push(BookieProcess::start(&url, &["--lease-ttl-ms", "2000"]).await?);
        }
        let mut cluster = Cluster {
            metadata: magnetar_metadata::connect(&url)
                .await
                .context("connecting to etcd")?,
            etcd,
            bookies: started_bookies,
            brokers: Vec::new(),
            metadata_url: url,
        };
        for _ in 0..brokers {
            cluster.add_broker(broker_args).await?;
        }
        Ok(cluster)
    }

    /// Starts one more broker; returns its index.
    pub async fn add_broker(&mut self, broker_args: &[&str]) -> Result<usize> {
        let broker = BookieProcess::start_broker(&self.metadata_url, broker_args).await?;
        self.brokers.push(broker);
        Ok(self.brokers.len() - 1)
    }

    /// Owner broker id of each owned bundle of `tenant/namespace`, by bundle
    /// name (`0x00000000_0x40000000`).
    pub async fn owners(&self, tenant: &str, namespace: &str) -> Result<BTreeMap<String, String>> {
        let prefix = keys::bundle_owners_prefix(tenant, namespace);
        let mut owners = BTreeMap::new();
        for kv in self.metadata.list(&prefix).await? {
            let owner: serde_json::Value = serde_json::from_slice(&kv.value)?;
            let bundle = keys::child_name(&prefix, &kv.key).context("ownership key")?;
            let id = owner["brokerId"].as_str().context("brokerId")?.to_string();
            owners.insert(bundle, id);
        }
        Ok(owners)
    }

    /// Index of the broker whose id (`host:port` of its Pulsar listener) is `id`.
    pub fn broker_index(&self, id: &str) -> Option<usize> {
        self.brokers.iter().position(|b| b.broker_addr() == id)
    }
}

/// The mark-delete position `(ledger, entry)` of the state a broker last
/// stored for a subscription's cursor (its admin internal stats'
/// `persistentMarkDeletePosition`), i.e. what a crash now would restart
/// from, not what it holds in memory; None if the broker has no such
/// cursor open. `http_url` is the broker's admin URL, `topic` is
/// `persistent://tenant/namespace/name`.
pub async fn persisted_mark_delete(
    http_url: &str,
    topic: &str,
    subscription: &str,
) -> Result<Option<(u64, i64)>> {
    let local = topic
        .strip_prefix("persistent://")
        .context("a persistent:// topic")?;
    let url = format!("{http_url}/admin/v2/persistent/{local}/internalStats");
    let response = reqwest::get(&url).await?;
    if !response.status().is_success() {
        return Ok(None);
    }
    let stats: serde_json::Value = serde_json::from_slice(&response.bytes().await?)?;
    let Some(position) = stats["cursors"][subscription]["persistentMarkDeletePosition"].as_str()
    else {
        return Ok(None);
    };
    let (ledger, entry) = position
        .split_once(':')
        .with_context(|| format!("not ledger:entry: {position}"))?;
    Ok(Some((ledger.parse()?, entry.parse()?)))
}

/// Waits until the state a broker stored for `subscription`'s cursor has
/// its mark-delete position at `(ledger, entry)`.
pub async fn wait_cursor_persisted(
    http_url: &str,
    topic: &str,
    subscription: &str,
    position: (u64, u64),
) -> Duration {
    let expected = (position.0, position.1 as i64);
    crate::wait_until(
        &format!("{subscription} on {topic} is persisted up to {expected:?}"),
        Duration::from_secs(20),
        || async {
            persisted_mark_delete(http_url, topic, subscription)
                .await
                .ok()
                .flatten()
                == Some(expected)
        },
    )
    .await
}
