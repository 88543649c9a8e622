//! The broker's HTTP endpoints for operators: Prometheus `/metrics` and
//! `/health`. (Admin REST joins it with the cluster issue.)

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

use crate::metrics::BrokerMetrics;

pub fn router(metrics: BrokerMetrics) -> Router {
    Router::new()
        .route("/metrics", get(metrics_handler))
        .route(
            "/health",
            get(|| async { axum::Json(serde_json::json!({"status": "ok"})) }),
        )
        .with_state(metrics)
}

async fn metrics_handler(State(metrics): State<BrokerMetrics>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        metrics.render(),
    )
}
