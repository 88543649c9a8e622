//! The load manager: every broker reports its load to metadata each
//! interval; one broker, elected through an etcd key bound to its lease,
//! sheds bundles from overloaded brokers to idle ones. Bundles move by
//! unloading them on their owner and writing their ownership key for the
//! target: no data is copied (the ledgers stay on the bookies).
//!
//! In the monolithic architecture a move copies the bundle's partitions to
//! the target first (`moves`), so shedding is off there by default.
//!
//! Unloading and splitting a bundle are done by its owner. Any broker may
//! ask: it writes a request key (`keys::bundle_request`) that the owner
//! watches, and waits for the owner to delete it.

mod drain;
mod moves;
mod report;
mod requests;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use magnetar_metadata::{keys, Expect};

pub use drain::{drain, DrainReport};
pub use moves::move_bundle;
pub use requests::{split, unload, unload_namespace, BundleOpError, SplitOutcome, UnloadOutcome};

use crate::ownership::{balancer, BundleRef, ClusterView, LoadReport, Ownership};
use crate::topic::BrokerService;

/// Default interval between load reports (and shedding rounds).
pub const DEFAULT_LOAD_REPORT_INTERVAL: Duration = Duration::from_secs(5);

#[derive(Clone, Debug)]
pub struct LoadManagerConfig {
    pub report_interval: Duration,
    /// Whether the leader moves bundles by itself (assignment of unowned
    /// bundles happens either way).
    pub shedding: bool,
}

impl Default for LoadManagerConfig {
    fn default() -> Self {
        LoadManagerConfig {
            report_interval: DEFAULT_LOAD_REPORT_INTERVAL,
            shedding: true,
        }
    }
}

/// One broker's part of the load manager: its reporter, its campaign for
/// leadership, the leader's shedding, and the owner side of bundle requests.
pub struct LoadManager {
    config: LoadManagerConfig,
    latest: Mutex<Option<LoadReport>>,
    leading: std::sync::atomic::AtomicBool,
}

impl LoadManager {
    /// Starts the background tasks; they end when the service is dropped.
    pub fn start(
        service: &Arc<BrokerService>,
        ownership: Arc<Ownership>,
        config: LoadManagerConfig,
    ) -> Arc<LoadManager> {
        let manager = Arc::new(LoadManager {
            config,
            latest: Mutex::new(None),
            leading: std::sync::atomic::AtomicBool::new(false),
        });
        tokio::spawn(report_and_balance_loop(
            Arc::downgrade(service),
            ownership.clone(),
            Arc::downgrade(&manager),
        ));
        tokio::spawn(requests::serve_requests(Arc::downgrade(service), ownership));
        manager
    }

    /// This broker's latest load report.
    pub fn latest_report(&self) -> Option<LoadReport> {
        self.latest
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Whether this broker is the elected load manager now.
    pub fn is_leader(&self) -> bool {
        self.leading.load(std::sync::atomic::Ordering::Acquire)
    }
}

/// What the leader remembers between rounds so bundles do not bounce.
struct ShedState {
    /// When each bundle last moved.
    moved: HashMap<String, Instant>,
    last_move: Option<Instant>,
}

async fn report_and_balance_loop(
    service: Weak<BrokerService>,
    ownership: Arc<Ownership>,
    manager: Weak<LoadManager>,
) {
    let mut sampler = report::Sampler::new();
    let mut shed = ShedState {
        moved: HashMap::new(),
        last_move: None,
    };
    loop {
        let (Some(service), Some(manager)) = (service.upgrade(), manager.upgrade()) else {
            return;
        };
        let interval = manager.config.report_interval;
        let report = sampler.sample(&service, &ownership).await;
        if let Err(e) = publish_report(&ownership, &report).await {
            tracing::warn!(error = %e, "writing the load report failed");
        }
        *manager.latest.lock().unwrap_or_else(|p| p.into_inner()) = Some(report);
        let leading = campaign(&ownership).await;
        if leading != manager.is_leader() {
            tracing::info!(broker = %ownership.identity().broker_id, leading, "load manager leadership changed");
        }
        manager
            .leading
            .store(leading, std::sync::atomic::Ordering::Release);
        if leading && manager.config.shedding {
            if let Err(e) = shed_once(&service, &ownership, interval, &mut shed).await {
                tracing::warn!(error = %e, "load shedding round failed");
            }
        }
        drop(service);
        drop(manager);
        tokio::time::sleep(interval).await;
    }
}

async fn publish_report(
    ownership: &Ownership,
    report: &LoadReport,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let Some(lease) = ownership.lease() else {
        return Ok(());
    };
    let value = serde_json::to_vec(report)?;
    ownership
        .store()
        .put(
            &keys::broker_load(&ownership.identity().broker_id),
            value.into(),
            Expect::Any,
            Some(lease),
        )
        .await?;
    Ok(())
}

/// Takes or keeps the leader key (bound to this broker's lease); true if
/// this broker leads.
async fn campaign(ownership: &Ownership) -> bool {
    let Some(lease) = ownership.lease() else {
        return false;
    };
    let store = ownership.store();
    let key = keys::load_manager_leader();
    match store.get(&key).await {
        Ok(Some(kv)) => kv.lease == Some(lease),
        Ok(None) => {
            let Ok(value) = serde_json::to_vec(ownership.identity()) else {
                return false;
            };
            store
                .put(&key, value.into(), Expect::Absent, Some(lease))
                .await
                .is_ok()
        }
        Err(e) => {
            tracing::warn!(error = %e, "reading the load manager's election key failed");
            false
        }
    }
}

/// One shedding round of the leader: at most one bundle moves, and none
/// while the reports may not show the previous move yet.
async fn shed_once(
    service: &Arc<BrokerService>,
    ownership: &Ownership,
    interval: Duration,
    state: &mut ShedState,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    if state
        .last_move
        .is_some_and(|at| at.elapsed() < interval * 2)
    {
        return Ok(());
    }
    let grace = (interval * 6).max(Duration::from_secs(30));
    state.moved.retain(|_, at| at.elapsed() < grace);
    let view = ClusterView::read(ownership.store().as_ref()).await?;
    let loads = view.broker_loads();
    let Some(decision) = balancer::shed(&loads, ownership.balancer_config(), |bundle| {
        !state.moved.contains_key(bundle)
    }) else {
        return Ok(());
    };
    let Some(bundle) = BundleRef::parse(&decision.bundle) else {
        return Ok(());
    };
    let Some(target) = view
        .brokers
        .iter()
        .find(|b| b.broker_id == decision.to)
        .cloned()
    else {
        return Ok(());
    };
    tracing::info!(bundle = %decision.bundle, from = %decision.from, to = %decision.to, "shedding bundle");
    state.moved.insert(decision.bundle.clone(), Instant::now());
    state.last_move = Some(Instant::now());
    move_bundle(service, ownership, &bundle, &target, None).await?;
    Ok(())
}
