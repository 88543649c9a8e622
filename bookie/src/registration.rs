//! Keeps this bookie listed among the available bookies: a key bound to a
//! lease, refreshed while the process lives and gone once it dies, so writers
//! never pick a dead bookie for a new ensemble.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use magnetar_metadata::keys::{self, BookieRegistration};
use magnetar_metadata::{Expect, LeaseId, MetadataError, MetadataStore};
use tokio::sync::{watch, Mutex};

use crate::server::SharedStatus;

pub struct Registration {
    store: Arc<dyn MetadataStore>,
    bookie_id: String,
    http_addr: Option<SocketAddr>,
    rack: Option<String>,
    status: Arc<SharedStatus>,
    lease: Mutex<Option<LeaseId>>,
}

impl Registration {
    pub fn new(
        store: Arc<dyn MetadataStore>,
        bookie_id: String,
        http_addr: Option<SocketAddr>,
        rack: Option<String>,
        status: Arc<SharedStatus>,
    ) -> Self {
        Registration {
            store,
            bookie_id,
            http_addr,
            rack,
            status,
            lease: Mutex::new(None),
        }
    }

    fn value(&self) -> Result<Bytes, MetadataError> {
        let registration = BookieRegistration {
            address: self.bookie_id.clone(),
            rack: self.rack.clone(),
            read_only: self.status.read_only.load(Ordering::Relaxed),
            free_disk_bytes: self.status.free_disk_bytes.load(Ordering::Relaxed),
            total_disk_bytes: self.status.total_disk_bytes.load(Ordering::Relaxed),
            http_address: self.http_addr.map(|a| a.to_string()),
        };
        serde_json::to_vec(&registration)
            .map(Bytes::from)
            .map_err(|e| MetadataError::InvalidArgument(e.to_string()))
    }

    /// Grants a fresh lease and writes the registration under it. A stale
    /// registration of an earlier incarnation is overwritten (and so rebound
    /// to the new lease).
    pub async fn register_once(&self, ttl: Duration) -> Result<(), MetadataError> {
        let lease = self.store.grant_lease(ttl).await?;
        // Outside the lease: the auditor tells a lost bookie by this key.
        self.store
            .put(
                &keys::bookie_known(&self.bookie_id),
                self.value()?,
                Expect::Any,
                None,
            )
            .await?;
        let key = keys::bookie_available(&self.bookie_id);
        self.store
            .put(&key, self.value()?, Expect::Any, Some(lease))
            .await?;
        *self.lease.lock().await = Some(lease);
        tracing::info!(bookie = %self.bookie_id, lease, "bookie registered");
        Ok(())
    }

    async fn refresh(&self, ttl: Duration) -> Result<(), MetadataError> {
        let lease = *self.lease.lock().await;
        match lease {
            Some(lease) => match self.store.keep_alive(lease).await {
                Ok(()) => {
                    let key = keys::bookie_available(&self.bookie_id);
                    self.store
                        .put(&key, self.value()?, Expect::Any, Some(lease))
                        .await
                        .map(|_| ())
                }
                Err(MetadataError::LeaseNotFound(_)) => {
                    tracing::warn!(bookie = %self.bookie_id, "registration lease lost; registering again");
                    self.register_once(ttl).await
                }
                Err(e) => Err(e),
            },
            None => self.register_once(ttl).await,
        }
    }

    /// Refreshes the lease (every third of its TTL) and the registration
    /// until shutdown, then revokes the lease so the bookie leaves at once.
    pub async fn run(
        self,
        ttl: Duration,
        status_interval: Duration,
        mut stop: watch::Receiver<bool>,
    ) {
        let period = (ttl / 3)
            .min(status_interval)
            .max(Duration::from_millis(100));
        let mut tick = tokio::time::interval(period);
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    if let Err(e) = self.refresh(ttl).await {
                        tracing::warn!(error = %e, "bookie registration refresh failed");
                    }
                }
                _ = crate::server::stopped(&mut stop) => break,
            }
        }
        if let Some(lease) = self.lease.lock().await.take() {
            if let Err(e) = self.store.revoke_lease(lease).await {
                tracing::warn!(error = %e, "revoking the registration lease failed");
            }
        }
    }
}
