//! Operator endpoints beside tenants, namespaces and topics: cursor
//! operations on subscriptions (reset, skip, clear, expire, create), the
//! cluster records, the live brokers and bookies as metadata lists them,
//! and the OpenAPI document of the whole admin API, which lives in
//! `broker/src/admin/openapi.json` and is served at
//! `GET /admin/v2/openapi.json`.
//!
//! Like the rest of the admin API these handlers read and write metadata or
//! call the [`BrokerService`]; they never talk to bookies.

mod bookies;
mod brokers;
mod clusters;
mod cursors;
mod openapi;

use std::sync::Arc;

use axum::Router;

pub(super) use clusters::{check_clusters_exist, check_local_cluster_allowed};

use crate::topic::BrokerService;

/// The routes of this module: all behind the admin auth check except the
/// OpenAPI document. Also registers the broker's cluster in metadata.
pub(super) fn routes(service: Arc<BrokerService>) -> Router<Arc<BrokerService>> {
    clusters::spawn_registration(&service);
    Router::new()
        .merge(
            cursors::routes().route_layer(axum::middleware::from_fn_with_state(
                service.clone(),
                super::redirect::to_owner,
            )),
        )
        .merge(clusters::routes())
        .merge(brokers::routes())
        .merge(bookies::routes())
        .route_layer(axum::middleware::from_fn_with_state(
            service,
            super::auth::require_auth,
        ))
        .merge(openapi::routes())
}

/// `host:port` of an `http://host:port/` URL (as brokers advertise it).
fn host_port(url: &str) -> &str {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .or_else(|| url.strip_prefix("pulsar://"))
        .unwrap_or(url);
    rest.trim_end_matches('/')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_ports_of_urls() {
        assert_eq!(host_port("http://127.0.0.1:8080"), "127.0.0.1:8080");
        assert_eq!(host_port("https://b1:8443/"), "b1:8443");
        assert_eq!(host_port("b1:8080"), "b1:8080");
    }
}
