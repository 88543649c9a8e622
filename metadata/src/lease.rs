//! Keeps one lease alive for a process (a bookie's or broker's session) and
//! says when it is lost, so the holder stops acting on what the lease
//! guarded (registrations, bundle ownership).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::{LeaseId, MetadataError, MetadataStore, Result};

/// A granted lease refreshed every TTL/3 by a background task.
///
/// The lease counts as lost when the store says it no longer exists, or when
/// no refresh succeeded for a whole TTL: by then the store may have expired
/// it, and a holder that cannot tell must assume it did.
pub struct LeaseKeeper {
    store: Arc<dyn MetadataStore>,
    id: LeaseId,
    lost: watch::Receiver<bool>,
    task: JoinHandle<()>,
}

impl LeaseKeeper {
    /// Grants a lease of `ttl` and starts refreshing it.
    pub async fn start(store: Arc<dyn MetadataStore>, ttl: Duration) -> Result<Self> {
        let id = store.grant_lease(ttl).await?;
        let (lost_tx, lost) = watch::channel(false);
        let task = tokio::spawn(refresh(Arc::clone(&store), id, ttl, lost_tx));
        Ok(Self {
            store,
            id,
            lost,
            task,
        })
    }

    pub fn id(&self) -> LeaseId {
        self.id
    }

    /// Flips to `true` once, when the lease is lost; it never comes back.
    pub fn lost(&self) -> watch::Receiver<bool> {
        self.lost.clone()
    }

    pub fn is_lost(&self) -> bool {
        *self.lost.borrow()
    }

    /// Stops refreshing and revokes the lease, deleting its keys at once
    /// (clean shutdown). A lease already gone is not an error.
    pub async fn revoke(self) -> Result<()> {
        self.task.abort();
        match self.store.revoke_lease(self.id).await {
            Ok(()) | Err(MetadataError::LeaseNotFound(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

impl Drop for LeaseKeeper {
    /// Without a revoke the lease simply expires after its TTL.
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn refresh(
    store: Arc<dyn MetadataStore>,
    id: LeaseId,
    ttl: Duration,
    lost: watch::Sender<bool>,
) {
    let period = (ttl / 3).max(Duration::from_millis(1));
    let mut last_success = Instant::now();
    let mut ticks = tokio::time::interval_at(Instant::now() + period, period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        match store.keep_alive(id).await {
            Ok(()) => last_success = Instant::now(),
            Err(MetadataError::LeaseNotFound(_)) => {
                tracing::warn!(lease = id, "lease expired or was revoked");
                break;
            }
            Err(e) => {
                tracing::warn!(lease = id, error = %e, "lease refresh failed");
                if last_success.elapsed() >= ttl {
                    tracing::warn!(lease = id, "no lease refresh for a whole TTL; lease lost");
                    break;
                }
            }
        }
    }
    let _ = lost.send(true);
}
