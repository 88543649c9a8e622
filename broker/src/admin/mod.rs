//! Admin REST v2, following Pulsar's paths and JSON: tenants, namespaces and
//! their policies, persistent topics (partitioned or not), subscriptions and
//! stats. One file per resource group; every handler validates its input
//! before it changes anything.
//!
//! Handlers read and write metadata (tenant, namespace and partition-count
//! records) or call the [`BrokerService`]; they never talk to bookies.

mod auth;
mod bundles;
mod error;
mod forward;
mod lookup;
mod namespaces;
mod ops;
mod redirect;
mod replicas;
mod stats;
mod tenants;
mod topics;

use std::sync::Arc;

use axum::http::StatusCode;
use axum::Router;
use bytes::Bytes;
use serde::de::DeserializeOwned;

pub use error::AdminError;

use crate::topic::BrokerService;

/// Every admin route, for the broker's HTTP server.
pub fn router(service: Arc<BrokerService>) -> Router {
    Router::new()
        .merge(tenants::routes())
        .merge(namespaces::routes())
        .merge(bundles::routes())
        .merge(topics::routes().merge(replicas::routes()).route_layer(
            axum::middleware::from_fn_with_state(service.clone(), redirect::to_owner),
        ))
        .merge(lookup::routes())
        .route_layer(axum::middleware::from_fn_with_state(
            service.clone(),
            auth::require_auth,
        ))
        .merge(ops::routes(service.clone()))
        .with_state(service)
}

type AdminResult<T> = Result<T, AdminError>;

/// Pulsar answers a successful change with 204 and no body.
const DONE: StatusCode = StatusCode::NO_CONTENT;

/// Parses a JSON body, or says in a 400 what is wrong with it.
fn parse_body<T: DeserializeOwned>(body: &Bytes, what: &str) -> AdminResult<T> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(AdminError::BadRequest(format!(
            "missing {what} in the body"
        )));
    }
    serde_json::from_slice(body).map_err(|e| AdminError::BadRequest(format!("invalid {what}: {e}")))
}

/// Like [`parse_body`], but an empty body is `None` (optional bodies).
fn parse_optional_body<T: DeserializeOwned>(body: &Bytes, what: &str) -> AdminResult<Option<T>> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    parse_body(body, what).map(Some)
}

/// The value of `name` in a query string (`a=1&force=true`), undecoded:
/// the parameters taken here are plain words.
fn query_param<'q>(query: Option<&'q str>, name: &str) -> Option<&'q str> {
    query?
        .split('&')
        .filter_map(|pair| pair.split_once('=').or(Some((pair, ""))))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value)
}

/// A boolean query flag (`force=true`); absent is false.
fn query_flag(query: Option<&str>, name: &str) -> AdminResult<bool> {
    match query_param(query, name) {
        None | Some("false") => Ok(false),
        Some("true") | Some("") => Ok(true),
        Some(other) => Err(AdminError::BadRequest(format!(
            "query parameter {name} must be true or false, not {other:?}"
        ))),
    }
}

/// Checks a tenant or namespace name (Pulsar's allowed characters).
fn check_name(kind: &str, name: &str) -> AdminResult<()> {
    if crate::topic::valid_segment(name) {
        Ok(())
    } else {
        Err(AdminError::BadRequest(format!(
            "invalid {kind} name {name:?}: use [A-Za-z0-9-_=:.%]"
        )))
    }
}

/// A broker service over an embedded metadata store and no bookies: enough
/// for every admin call that does not write entries.
#[cfg(test)]
pub(crate) mod testing {
    use std::sync::Arc;

    use magnetar_metadata::{EmbeddedStore, MetadataStore};

    use crate::ledger::bookie_client::{BookieClientConfig, BookieClients};
    use crate::ledger::LedgerClient;
    use crate::managed_ledger::{LedgerLogStore, ManagedLedgerConfig};
    use crate::metrics::BrokerMetrics;
    use crate::topic::{
        create_namespace_if_absent, BrokerConfig, BrokerService, NamespacePolicies, TenantInfo,
    };

    pub(crate) struct TestBroker {
        pub service: Arc<BrokerService>,
        _dir: tempfile::TempDir,
    }

    /// With tenant `acme` and namespace `acme/orders`.
    pub(crate) async fn broker() -> TestBroker {
        let dir = tempfile::tempdir().expect("temp dir");
        let store: Arc<dyn MetadataStore> = Arc::new(
            EmbeddedStore::open(dir.path())
                .await
                .expect("embedded store"),
        );
        create_namespace_if_absent(
            store.as_ref(),
            "acme",
            "orders",
            &TenantInfo::default(),
            &NamespacePolicies::default(),
        )
        .await
        .expect("namespace");
        let ledgers = LedgerClient::new(
            store.clone(),
            BookieClients::new(BookieClientConfig::default()),
        );
        let logs = Arc::new(LedgerLogStore::new(
            store.clone(),
            ledgers,
            ManagedLedgerConfig::default(),
        ));
        let metrics = BrokerMetrics::new().expect("metrics");
        TestBroker {
            service: BrokerService::new(BrokerConfig::default(), store, logs, metrics),
            _dir: dir,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_flags() {
        assert!(!query_flag(None, "force").unwrap());
        assert!(query_flag(Some("force=true"), "force").unwrap());
        assert!(query_flag(Some("a=b&force"), "force").unwrap());
        assert!(!query_flag(Some("force=false&x=1"), "force").unwrap());
        assert!(!query_flag(Some("forced=true"), "force").unwrap());
        assert!(query_flag(Some("force=yes"), "force").is_err());
        assert_eq!(
            query_param(Some("backlogQuotaType=message_age"), "backlogQuotaType"),
            Some("message_age")
        );
    }

    #[test]
    fn bodies() {
        let n: i64 = parse_body(&Bytes::from_static(b" 4\n"), "partition count").unwrap();
        assert_eq!(n, 4);
        let err = parse_body::<i64>(&Bytes::new(), "partition count").unwrap_err();
        assert_eq!(err.status(), StatusCode::BAD_REQUEST);
        assert!(parse_body::<i64>(&Bytes::from_static(b"four"), "x").is_err());
        assert_eq!(
            parse_optional_body::<i64>(&Bytes::from_static(b"  "), "x").unwrap(),
            None
        );
    }

    #[test]
    fn names() {
        assert!(check_name("tenant", "acme-1").is_ok());
        assert!(check_name("tenant", "a b").is_err());
        assert!(check_name("tenant", "").is_err());
    }
}
