//! The broker's HTTP endpoints: Prometheus `/metrics`, `/health`, and the
//! admin REST API ([`crate::admin`]).

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

use crate::metrics::BrokerMetrics;
use crate::topic::BrokerService;

pub fn router(metrics: BrokerMetrics, service: Arc<BrokerService>) -> Router {
    Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/health", get(health_handler))
        .with_state((metrics, service.clone()))
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

async fn metrics_handler(
    State((metrics, service)): State<(BrokerMetrics, Arc<BrokerService>)>,
) -> impl IntoResponse {
    observe_topics(&metrics, &service).await;
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        metrics.render(),
    )
}

/// Ready to serve (a readiness probe): 503 until the broker has registered
/// (so before it serves the Pulsar port) and while it holds no lease (its
/// bundles are gone; it re-registers by itself).
async fn health_handler(
    State((_, service)): State<(BrokerMetrics, Arc<BrokerService>)>,
) -> impl IntoResponse {
    let registered = service.identity().is_some();
    let leased = service.ownership().is_none_or(|o| o.lease().is_some());
    let (status, state) = match (registered, leased) {
        (true, true) => (StatusCode::OK, "ok"),
        (false, _) => (StatusCode::SERVICE_UNAVAILABLE, "starting"),
        (true, false) => (StatusCode::SERVICE_UNAVAILABLE, "no lease"),
    };
    (status, axum::Json(serde_json::json!({ "status": state })))
}

/// Sets the gauges that describe the open topics, once per scrape.
async fn observe_topics(metrics: &BrokerMetrics, service: &BrokerService) {
    let topics = service.open_topics().await;
    let (mut producers, mut consumers, mut subscriptions, mut cursors) = (0, 0, 0, 0);
    let (mut backlog, mut ledgers, mut size) = (0u64, 0u64, 0u64);
    for topic in &topics {
        producers += topic.producer_count() as i64;
        let stats = topic.log().stats();
        ledgers += stats.segments.len() as u64;
        size += stats.size;
        for sub in topic.open_subscriptions().await {
            subscriptions += 1;
            cursors += i64::from(sub.is_durable());
            consumers += sub.consumers().len() as i64;
            backlog += sub.backlog_entries();
        }
    }
    let clamp = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    metrics.topics.set(topics.len() as i64);
    metrics.producers.set(producers);
    metrics.consumers.set(consumers);
    metrics.subscriptions.set(subscriptions);
    metrics.cursors.set(cursors);
    metrics.backlog_entries.set(clamp(backlog));
    metrics.ledgers.set(clamp(ledgers));
    metrics.storage_size_bytes.set(clamp(size));
}
