//! HTTP endpoints for operators: Prometheus `/metrics` and `/health`.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

use crate::metrics::BookieMetrics;
use crate::server::SharedStatus;

#[derive(Clone)]
struct HttpState {
    metrics: BookieMetrics,
    status: Arc<SharedStatus>,
}

pub fn router(metrics: BookieMetrics, status: Arc<SharedStatus>) -> Router {
    Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/health", get(health_handler))
        .with_state(HttpState { metrics, status })
}

async fn metrics_handler(State(state): State<HttpState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
}

async fn health_handler(State(state): State<HttpState>) -> impl IntoResponse {
    let read_only = state.status.read_only.load(Ordering::Relaxed);
    let body = serde_json::json!({
        "status": "ok",
        "bookie_id": state.status.bookie_id,
        "writable": !read_only,
        "free_disk_bytes": state.status.free_disk_bytes.load(Ordering::Relaxed),
    });
    (StatusCode::OK, axum::Json(body))
}
