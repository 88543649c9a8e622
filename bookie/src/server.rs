//! Wires a bookie together: entry store, journal thread, gRPC service, HTTP
//! endpoints, disk watch, metadata registration and ledger GC, and stops them
//! in order.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use magnetar_auth::PeerGate;
use magnetar_metadata::MetadataStore;
use magnetar_proto::bookie::bookie_server::BookieServer as BookieGrpcServer;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::BookieConfig;
use crate::disk;
use crate::error::StartError;
use crate::journal::Journal;
use crate::ledger_state::LedgerTable;
use crate::metrics::BookieMetrics;
use crate::registration;
use crate::service::BookieService;
use crate::store::{EntryStore, RocksEntryStore};

/// State the service, HTTP endpoints and registration all report.
pub struct SharedStatus {
    pub bookie_id: String,
    pub read_only: Arc<AtomicBool>,
    pub free_disk_bytes: Arc<AtomicU64>,
    pub total_disk_bytes: AtomicU64,
}

/// Entry point for running a bookie inside a process.
pub struct BookieNode;

/// A started bookie; dropping it without [`RunningBookie::shutdown`] leaves
/// its tasks running until the runtime ends.
pub struct RunningBookie {
    pub grpc_addr: SocketAddr,
    pub http_addr: Option<SocketAddr>,
    pub bookie_id: String,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    journal_thread: Option<std::thread::JoinHandle<()>>,
}

impl BookieNode {
    /// Opens the store, binds the listeners and starts serving. With a
    /// metadata store the bookie registers itself under a lease.
    pub async fn start(
        config: BookieConfig,
        metadata: Option<Arc<dyn MetadataStore>>,
    ) -> Result<RunningBookie, StartError> {
        // Before anything is opened or registered: a bookie whose
        // certificate or key is unusable does not start.
        let mut server = tonic::transport::Server::builder();
        if let Some(tls) = &config.tls {
            server = server
                .tls_config(tls.server_config())
                .map_err(|e| StartError::Tls(e.to_string()))?;
        }
        std::fs::create_dir_all(&config.data_dir)?;
        let store_path = config.data_dir.join("entries");
        let store =
            RocksEntryStore::open(&store_path, &config.rocks).map_err(|e| StartError::Store {
                path: store_path.display().to_string(),
                message: e.0,
            })?;
        let store = Arc::new(store);
        let states = store.load_ledger_states().map_err(|e| StartError::Store {
            path: store_path.display().to_string(),
            message: e.0,
        })?;
        let table = Arc::new(LedgerTable::new(states));
        let metrics = BookieMetrics::new()?;
        metrics.ledgers.set(table.len() as i64);

        let listener =
            TcpListener::bind(config.listen)
                .await
                .map_err(|source| StartError::Bind {
                    addr: config.listen,
                    source,
                })?;
        let grpc_addr = listener.local_addr()?;
        let bookie_id = config
            .advertise
            .clone()
            .unwrap_or_else(|| advertised_default(grpc_addr));

        let usage = disk::disk_usage(&config.data_dir)?;
        let read_only = Arc::new(AtomicBool::new(disk::next_read_only(
            false,
            usage.used_fraction(),
            config.disk_high_water,
            config.disk_low_water,
        )));
        let status = Arc::new(SharedStatus {
            bookie_id: bookie_id.clone(),
            read_only: read_only.clone(),
            free_disk_bytes: Arc::new(AtomicU64::new(usage.free_bytes)),
            total_disk_bytes: AtomicU64::new(usage.total_bytes),
        });

        let (journal, journal_thread) = Journal::start(
            store.clone(),
            table.clone(),
            read_only.clone(),
            config.journal.clone(),
            metrics.clone(),
        )?;
        let (shutdown, shutdown_rx) = watch::channel(false);
        let mut tasks = Vec::new();

        let http_addr = match config.http {
            Some(addr) => {
                let http_listener = TcpListener::bind(addr)
                    .await
                    .map_err(|source| StartError::Bind { addr, source })?;
                let bound = http_listener.local_addr()?;
                let app = crate::http::router(metrics.clone(), status.clone());
                let mut stop = shutdown_rx.clone();
                tasks.push(tokio::spawn(async move {
                    let served = axum::serve(http_listener, app)
                        .with_graceful_shutdown(async move {
                            crate::server::stopped(&mut stop).await;
                        })
                        .await;
                    if let Err(e) = served {
                        tracing::error!(error = %e, "bookie HTTP server failed");
                    }
                }));
                Some(bound)
            }
            None => None,
        };

        if let Some(metadata) = &metadata {
            if !config.gc_interval.is_zero() {
                let collector = crate::gc::GarbageCollector::new(
                    metadata.clone(),
                    table.clone(),
                    journal.clone(),
                    metrics.clone(),
                );
                tasks.push(tokio::spawn(
                    collector.run(config.gc_interval, shutdown_rx.clone()),
                ));
            }
        }

        // Registered before serving: once the bookie answers, writers can
        // also find it.
        if let Some(metadata) = metadata {
            let registration = registration::Registration::new(
                metadata,
                bookie_id.clone(),
                http_addr,
                config.rack.clone(),
                status.clone(),
            );
            registration.register_once(config.lease_ttl).await?;
            tasks.push(tokio::spawn(registration.run(
                config.lease_ttl,
                config.disk_check_interval,
                shutdown_rx.clone(),
            )));
        }
        let service = BookieService {
            store,
            journal,
            table: table.clone(),
            metrics: metrics.clone(),
            read_only: read_only.clone(),
            free_disk_bytes: status.free_disk_bytes.clone(),
            bookie_id: bookie_id.clone(),
            max_read_bytes: config.max_read_bytes,
            in_flight_bytes: Arc::new(tokio::sync::Semaphore::new(
                crate::service::MAX_BYTES_IN_FLIGHT,
            )),
        };
        let max_message = (config.journal.max_entry_bytes * 2 + (1 << 20)).max(64 << 20);
        let grpc = BookieGrpcServer::new(service)
            .max_decoding_message_size(max_message)
            .max_encoding_message_size(max_message);
        let grpc = tonic::service::interceptor::InterceptedService::new(
            grpc,
            PeerGate::new(config.peers.clone()),
        );
        // The builder's tcp_nodelay applies only to listeners tonic binds
        // itself; on our own listener Nagle would delay every small reply by
        // a delayed-ACK period (~40 ms).
        let incoming =
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
        let mut stop = shutdown_rx.clone();
        tasks.push(tokio::spawn(async move {
            let served = server
                .tcp_nodelay(true)
                .initial_stream_window_size(Some(8 << 20))
                .initial_connection_window_size(Some(32 << 20))
                .add_service(grpc)
                .serve_with_incoming_shutdown(incoming, async move {
                    crate::server::stopped(&mut stop).await;
                })
                .await;
            if let Err(e) = served {
                tracing::error!(error = %e, "bookie gRPC server failed");
            }
        }));

        tasks.push(tokio::spawn(disk_watch(
            config.clone(),
            status.clone(),
            metrics.clone(),
            table,
            shutdown_rx.clone(),
        )));
        tracing::info!(%grpc_addr, ?http_addr, %bookie_id, "bookie started");
        Ok(RunningBookie {
            grpc_addr,
            http_addr,
            bookie_id,
            shutdown,
            tasks,
            journal_thread: Some(journal_thread),
        })
    }
}

/// Resolves once shutdown is signalled (or its sender is gone). Drops the
/// watch guard before returning, so callers stay `Send`.
pub(crate) async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

fn advertised_default(bound: SocketAddr) -> String {
    if bound.ip().is_unspecified() {
        format!("127.0.0.1:{}", bound.port())
    } else {
        bound.to_string()
    }
}

async fn disk_watch(
    config: BookieConfig,
    status: Arc<SharedStatus>,
    metrics: BookieMetrics,
    table: Arc<LedgerTable>,
    mut stop: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(config.disk_check_interval);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = crate::server::stopped(&mut stop) => return,
        }
        metrics.ledgers.set(table.len() as i64);
        let usage = match disk::disk_usage(&config.data_dir) {
            Ok(u) => u,
            Err(e) => {
                tracing::warn!(error = %e, "disk usage check failed");
                continue;
            }
        };
        status
            .free_disk_bytes
            .store(usage.free_bytes, Ordering::Relaxed);
        status
            .total_disk_bytes
            .store(usage.total_bytes, Ordering::Relaxed);
        let was = status.read_only.load(Ordering::Relaxed);
        let now = disk::next_read_only(
            was,
            usage.used_fraction(),
            config.disk_high_water,
            config.disk_low_water,
        );
        if now != was {
            tracing::warn!(
                read_only = now,
                used = usage.used_fraction(),
                "bookie write mode changed"
            );
            status.read_only.store(now, Ordering::Relaxed);
        }
        metrics.read_only.set(i64::from(now));
    }
}

impl RunningBookie {
    /// Stops accepting requests, lets in-flight ones finish, deregisters and
    /// waits for the journal to drain.
    pub async fn shutdown(mut self) {
        let _ = self.shutdown.send(true);
        for task in self.tasks.drain(..) {
            let _ = task.await;
        }
        if let Some(thread) = self.journal_thread.take() {
            // The service (and with it the last journal handle) is dropped by
            // now, so the thread finishes its round and exits.
            let joined = tokio::task::spawn_blocking(move || thread.join());
            if tokio::time::timeout(std::time::Duration::from_secs(5), joined)
                .await
                .is_err()
            {
                tracing::warn!("journal thread still busy at shutdown; leaving it");
            }
        }
    }
}
