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

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::tls::{TlsAcceptor, HANDSHAKE_TIMEOUT};
use connection::Transport;

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
        Self::start_with_tls(listener, None, service)
    }

    /// Starts serving on `listener`, and `pulsar+ssl://` on `tls`'s
    /// listener; both share the connection limits.
    pub fn start_with_tls(
        listener: TcpListener,
        tls: Option<(TcpListener, TlsAcceptor)>,
        service: Arc<BrokerService>,
    ) -> std::io::Result<Self> {
        let local_addr = listener.local_addr()?;
        if let Some((tls_listener, _)) = &tls {
            tracing::info!(addr = %tls_listener.local_addr()?, "Pulsar protocol over TLS listening");
        }
        let (shutdown, shutdown_rx) = watch::channel(false);
        let accept_task = tokio::spawn(accept_loop(listener, tls, service.clone(), shutdown_rx));
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

/// The next connection on the TLS listener, if there is one.
async fn accept_tls(
    tls: &Option<(TcpListener, TlsAcceptor)>,
) -> std::io::Result<(TcpStream, SocketAddr, TlsAcceptor)> {
    match tls {
        Some((listener, acceptor)) => {
            let (socket, peer) = listener.accept().await?;
            Ok((socket, peer, acceptor.clone()))
        }
        None => std::future::pending().await,
    }
}

/// The handshake, bounded: a peer that connects and stalls costs a task
/// for [`HANDSHAKE_TIMEOUT`] at most.
async fn handshake(
    socket: TcpStream,
    peer: SocketAddr,
    acceptor: TlsAcceptor,
) -> Option<Transport> {
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(socket)).await {
        Ok(Ok(stream)) => Some(Transport::Tls(Box::new(stream))),
        Ok(Err(e)) => {
            tracing::info!(%peer, error = %e, "TLS handshake failed");
            None
        }
        Err(_) => {
            tracing::info!(%peer, "TLS handshake timed out");
            None
        }
    }
}

async fn accept_loop(
    listener: TcpListener,
    tls: Option<(TcpListener, TlsAcceptor)>,
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
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted.map(|(socket, peer)| (socket, peer, None)),
            accepted = accept_tls(&tls) => {
                accepted.map(|(socket, peer, acceptor)| (socket, peer, Some(acceptor)))
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            _ = shutdown.changed() => break,
        };
        match accepted {
            Ok((socket, peer, acceptor)) => {
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
                    let transport = match acceptor {
                        None => Transport::Plain(socket),
                        Some(acceptor) => match handshake(socket, peer, acceptor).await {
                            Some(transport) => transport,
                            None => return,
                        },
                    };
                    connection::serve(id, transport, peer, service, shutdown).await;
                    drop(slot);
                });
            }
            Err(e) => {
                // Out of file descriptors and the like: back off, keep serving.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
        }
    }
    while connections.join_next().await.is_some() {}
}
