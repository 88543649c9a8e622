//! `/admin/v2/bookies`: the live bookies (their registrations under
//! `keys::bookies_available_prefix`) and their racks, in Pulsar's JSON;
//! and Magnetar's own decommission and re-replication status paths.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, put};
use axum::{Json, Router};
use bytes::Bytes;
use magnetar_metadata::keys::{self, BookieRegistration};
use magnetar_metadata::Expect;
use serde::Serialize;

use crate::admin::{AdminError, AdminResult};
use crate::autorecovery::{self, BookieRecovery};
use crate::topic::BrokerService;

/// BookKeeper's rack for bookies that name none.
const DEFAULT_RACK: &str = "/default-rack";

pub(super) fn routes() -> Router<Arc<BrokerService>> {
    Router::new()
        .route("/admin/v2/bookies/all", get(all))
        .route("/admin/v2/bookies/racks-info", get(racks_info))
        .route("/admin/v2/bookies/recovery", get(recovery))
        .route(
            "/admin/v2/bookies/{bookie}/decommission",
            put(decommission).delete(cancel_decommission),
        )
}

/// The auditor's record of every bookie lost or being drained.
async fn recovery(
    State(service): State<Arc<BrokerService>>,
) -> AdminResult<Json<Vec<BookieRecovery>>> {
    let records = autorecovery::read_records(service.metadata().as_ref()).await?;
    Ok(Json(
        records.into_values().map(|(record, _)| record).collect(),
    ))
}

/// Asks the auditor to copy everything `bookie` holds to other bookies
/// (placement gives it nothing new meanwhile); it may be stopped once its
/// recovery record says `done`.
async fn decommission(
    State(service): State<Arc<BrokerService>>,
    Path(bookie): Path<String>,
) -> AdminResult<StatusCode> {
    let store = service.metadata();
    if store.get(&keys::bookie_known(&bookie)).await?.is_none() {
        return Err(AdminError::NotFound(format!(
            "no bookie {bookie} ever registered"
        )));
    }
    store
        .put(
            &keys::bookie_decommission(&bookie),
            Bytes::new(),
            Expect::Any,
            None,
        )
        .await?;
    tracing::info!(%bookie, "bookie decommission requested");
    Ok(StatusCode::NO_CONTENT)
}

/// Withdraws a decommission request: a live bookie takes new ledgers again
/// (what was already copied stays where it went).
async fn cancel_decommission(
    State(service): State<Arc<BrokerService>>,
    Path(bookie): Path<String>,
) -> AdminResult<StatusCode> {
    if service
        .metadata()
        .delete(&keys::bookie_decommission(&bookie), Expect::Any)
        .await?
    {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(AdminError::NotFound(format!(
            "bookie {bookie} is not being decommissioned"
        )))
    }
}

/// Pulsar's `BookiesClusterInfo`.
#[derive(Debug, Serialize)]
struct BookiesClusterInfo {
    bookies: Vec<RawBookieInfo>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct RawBookieInfo {
    bookie_id: String,
}

/// Pulsar's `BookieInfo` (one bookie's place in `racks-info`).
#[derive(Debug, PartialEq, Eq, Serialize)]
struct BookieInfo {
    rack: String,
    hostname: String,
}

async fn registrations(service: &BrokerService) -> AdminResult<Vec<BookieRegistration>> {
    let mut bookies: Vec<BookieRegistration> = service
        .metadata()
        .list(&keys::bookies_available_prefix())
        .await?
        .iter()
        .filter_map(|kv| match BookieRegistration::from_bytes(&kv.value) {
            Ok(registration) => Some(registration),
            Err(e) => {
                tracing::warn!(key = %kv.key, error = %e, "skipping bookie registration");
                None
            }
        })
        .collect();
    bookies.sort_by(|a, b| a.address.cmp(&b.address));
    Ok(bookies)
}

async fn all(State(service): State<Arc<BrokerService>>) -> AdminResult<Json<BookiesClusterInfo>> {
    let bookies = registrations(&service)
        .await?
        .into_iter()
        .map(|b| RawBookieInfo {
            bookie_id: b.address,
        })
        .collect();
    Ok(Json(BookiesClusterInfo { bookies }))
}

/// rack -> bookie -> its rack and host.
fn by_rack(bookies: &[BookieRegistration]) -> BTreeMap<String, BTreeMap<String, BookieInfo>> {
    let mut racks: BTreeMap<String, BTreeMap<String, BookieInfo>> = BTreeMap::new();
    for bookie in bookies {
        let rack = bookie
            .rack
            .clone()
            .filter(|r| !r.is_empty())
            .unwrap_or_else(|| DEFAULT_RACK.to_string());
        let hostname = bookie
            .address
            .rsplit_once(':')
            .map_or(bookie.address.as_str(), |(host, _)| host)
            .to_string();
        racks
            .entry(rack.clone())
            .or_default()
            .insert(bookie.address.clone(), BookieInfo { rack, hostname });
    }
    racks
}

async fn racks_info(
    State(service): State<Arc<BrokerService>>,
) -> AdminResult<Json<BTreeMap<String, BTreeMap<String, BookieInfo>>>> {
    Ok(Json(by_rack(&registrations(&service).await?)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bookies_group_by_rack() {
        let bookie = |address: &str, rack: Option<&str>| BookieRegistration {
            address: address.into(),
            rack: rack.map(str::to_string),
            read_only: false,
            free_disk_bytes: 0,
            total_disk_bytes: 0,
            http_address: None,
        };
        let racks = by_rack(&[
            bookie("10.0.0.1:3181", Some("r1")),
            bookie("10.0.0.2:3181", None),
            bookie("10.0.0.3:3181", Some("r1")),
        ]);
        assert_eq!(
            serde_json::to_value(&racks).unwrap(),
            serde_json::json!({
                "/default-rack": {"10.0.0.2:3181": {"rack": "/default-rack", "hostname": "10.0.0.2"}},
                "r1": {
                    "10.0.0.1:3181": {"rack": "r1", "hostname": "10.0.0.1"},
                    "10.0.0.3:3181": {"rack": "r1", "hostname": "10.0.0.3"},
                },
            })
        );
    }
}
