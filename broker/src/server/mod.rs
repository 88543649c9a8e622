//! The Pulsar protocol listener: accepts connections, runs one
//! [`connection`] task per socket, and shuts down gracefully (stop
//! accepting, close every connection, then persist cursors and seal ledgers).

mod auth_cmds;
mod connection;
mod connection_limits;
mod consumer_cmds;
mod lookup_cmds;
mod producer_cmds;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::topic::BrokerService;

/// Connections past `--max-connections` or `--max-connections-per-ip` are
/// closed as they are accepted, as Pulsar's `brokerMaxConnections` and
/// `brokerMaxConnectionsPerIp` do.
pub struct BrokerServer {
    pub local_addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    accept_task: tokio::task::JoinHandle<()>,
    service: Arc<BrokerService>,
}

impl BrokerServer {
    /// Starts serving on `listener`.
    pub fn start(listener: TcpListener, service: Arc<BrokerService>) -> std::io::Result<Self> {
        let local_addr = listener.local_addr()?;
        let (shutdown, shutdown_rx) = watch::channel(false);
        let accept_task = tokio::spawn(accept_loop(listener, service.clone(), shutdown_rx));
        tracing::info!(%local_addr, "Pulsar protocol listening");
        Ok(BrokerServer {
            local_addr,
            shutdown,
            accept_task,
            service,
        })
    }

    pub fn service(&self) -> &Arc<BrokerService> {
        &self.service
    }

    /// Closes every connection, then persists cursors and seals ledgers.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        let _ = self.accept_task.await;
        self.service.shutdown().await;
    }
}

async fn accept_loop(
    listener: TcpListener,
    service: Arc<BrokerService>,
    mut shutdown: watch::Receiver<bool>,
) {
    let next_id = AtomicU64::new(1);
    let mut connections = JoinSet::new();
    let slots = connection_limits::ConnectionSlots::new(
        service.config().max_connections,
        service.config().max_connections_per_ip,
    );
    let mut backoff = Duration::from_millis(10);
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((socket, peer)) => {
                    backoff = Duration::from_millis(10);
                    let slot = match slots.take(peer.ip()) {
                        Ok(slot) => slot,
                        Err(refusal) => {
                            tracing::warn!(%peer, %refusal, "connection refused");
                            service.metrics().connections_refused.inc();
                            drop(socket);
                            continue;
                        }
                    };
                    let id = next_id.fetch_add(1, Ordering::Relaxed);
                    let service = service.clone();
                    let shutdown = shutdown.clone();
                    connections.spawn(async move {
                        connection::serve(id, socket, peer, service, shutdown).await;
                        drop(slot);
                    });
                }
                Err(e) => {
                    // Out of file descriptors and the like: back off, keep serving.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            _ = shutdown.changed() => break,
        }
    }
    while connections.join_next().await.is_some() {}
}
