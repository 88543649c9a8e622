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

async fn metrics_handler(State(metrics): State<BrokerMetrics>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        metrics.render(),
    )
}
