//! The monolithic brokers alive now, as replica holders: read from the
//! brokers' lease-bound registrations, so a dead or stalled broker drops
//! out when its lease ends.

use std::sync::Arc;

use magnetar_metadata::{keys, MetadataStore};

use crate::ownership::BrokerIdentity;
use crate::storage::StorageError;

/// One live broker that holds replicas.
#[derive(Clone, Debug)]
pub struct Peer {
    /// Its id in partition records.
    pub replica_id: String,
    /// Its replication service.
    pub url: String,
    /// Its id on the Pulsar side (lookups answer with it).
    pub broker_id: String,
    pub rack: Option<String>,
}

pub struct Peers {
    store: Arc<dyn MetadataStore>,
}

impl Peers {
    pub fn new(store: Arc<dyn MetadataStore>) -> Self {
        Peers { store }
    }

    /// Every registered broker with a replication endpoint.
    pub async fn live(&self) -> Result<Vec<Peer>, StorageError> {
        let registered = self.store.list(&keys::brokers_available_prefix()).await?;
        Ok(registered
            .iter()
            .filter_map(|kv| serde_json::from_slice::<BrokerIdentity>(&kv.value).ok())
            .filter_map(|b| {
                b.replica.map(|r| Peer {
                    replica_id: r.id,
                    url: r.url,
                    broker_id: b.broker_id,
                    rack: r.rack,
                })
            })
            .collect())
    }
}
