//! The broker's HTTP endpoints: Prometheus `/metrics`, `/health`, and the
//! admin REST API ([`crate::admin`]).

use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

use crate::metrics::BrokerMetrics;
use crate::topic::BrokerService;

pub fn router(metrics: BrokerMetrics, service: Arc<BrokerService>) -> Router {
    Router::new()
        .route("/metrics", get(metrics_handler))
        .route(
            "/health",
            get(|| async { axum::Json(serde_json::json!({"status": "ok"})) }),
        )
        .with_state(metrics)
        .merge(crate::admin::router(service))
}

/// Marks a request that came over HTTPS, so that a redirect sends the
/// client to another broker's HTTPS address rather than its plain one.
#[derive(Clone, Copy, Debug)]
pub struct ServedOverTls;

/// Serves `router` over TLS on `listener`, each connection in its own
/// task, HTTP/1.1 or HTTP/2 as the client speaks; runs until aborted.
pub async fn serve_https(
    listener: tokio::net::TcpListener,
    acceptor: crate::tls::TlsAcceptor,
    router: Router,
) {
    let router = router.layer(axum::Extension(ServedOverTls));
    loop {
        let (socket, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!(error = %e, "HTTPS accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let (acceptor, router) = (acceptor.clone(), router.clone());
        tokio::spawn(async move {
            let handshake = acceptor.accept(socket);
            let stream = match tokio::time::timeout(crate::tls::HANDSHAKE_TIMEOUT, handshake).await
            {
                Ok(Ok(stream)) => stream,
                Ok(Err(e)) => {
                    tracing::info!(%peer, error = %e, "HTTPS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::info!(%peer, "HTTPS handshake timed out");
                    return;
                }
            };
            let service = hyper_util::service::TowerToHyperService::new(router);
            let served =
                hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new())
                    .serve_connection_with_upgrades(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            if let Err(e) = served {
                tracing::debug!(%peer, error = %e, "HTTPS connection ended with an error");
            }
        });
    }
}

async fn metrics_handler(State(metrics): State<BrokerMetrics>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        metrics.render(),
    )
}
