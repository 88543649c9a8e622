//! What the service must hold before the load starts: the tenant, the
//! namespace with the workload's policies, the partitioned topics, and the
//! filled topics that `move-bundle` faults with `sizeGB` move. Only admin
//! REST calls and, for the fills, a producer; no timing of the run.

use std::time::Instant;

use anyhow::{Context, Result};
use serde_json::json;

use super::faults::PreparedMove;
use super::load;
use super::workload::{FaultAction, Persistence, Workload};
use crate::admin::AdminClient;

/// Creates the tenant (if absent) and the namespace with its bundles and
/// persistence policy.
pub async fn create_namespace(
    admin: &AdminClient,
    tenant: &str,
    namespace: &str,
    bundles: u32,
    persistence: Option<Persistence>,
) -> Result<()> {
    let clusters: Vec<String> = admin
        .get("clusters")
        .await?
        .and_then(|v| serde_json::from_value(v).ok())
        .unwrap_or_default();
    admin
        .put_if_absent(
            &format!("tenants/{tenant}"),
            Some(&json!({"adminRoles": [], "allowedClusters": clusters})),
        )
        .await
        .context("creating the tenant")?;
    admin
        .put_if_absent(
            &format!("namespaces/{tenant}/{namespace}"),
            Some(&json!({"bundles": {"numBundles": bundles}})),
        )
        .await
        .context("creating the namespace")?;
    if let Some(p) = persistence {
        admin
            .post(
                &format!("namespaces/{tenant}/{namespace}/persistence"),
                &json!({
                    "bookkeeperEnsemble": p.ensemble_size,
                    "bookkeeperWriteQuorum": p.write_quorum,
                    "bookkeeperAckQuorum": p.ack_quorum,
                    "managedLedgerMaxMarkDeleteRate": 0,
                }),
            )
            .await
            .context("setting the namespace's persistence")?;
    }
    Ok(())
}

pub async fn create_topics(
    admin: &AdminClient,
    tenant: &str,
    namespace: &str,
    w: &Workload,
) -> Result<Vec<String>> {
    let mut topics = Vec::new();
    for i in 0..w.topics {
        let local = format!("topic-{i}");
        admin
            .put_if_absent(
                &format!("persistent/{tenant}/{namespace}/{local}/partitions"),
                Some(&json!(w.partitions_per_topic)),
            )
            .await
            .with_context(|| format!("creating {local}"))?;
        topics.push(format!("persistent://{tenant}/{namespace}/{local}"));
    }
    Ok(topics)
}

/// Fills a topic of its own for each `move-bundle` fault with `sizeGB`.
pub async fn prepare_moves(
    admin: &AdminClient,
    tenant: &str,
    namespace: &str,
    service_url: &str,
    w: &Workload,
    persistence: Option<Persistence>,
) -> Result<Vec<Option<PreparedMove>>> {
    let mut moves = Vec::new();
    for (i, fault) in w.magnetar.faults.iter().enumerate() {
        let Some(size) = fault
            .size_gb
            .filter(|_| fault.action == FaultAction::MoveBundle)
        else {
            moves.push(None);
            continue;
        };
        let ns = format!("{namespace}-move{i}");
        create_namespace(admin, tenant, &ns, 1, persistence).await?;
        let topic = "data".to_string();
        let subscription = "backlog".to_string();
        let full = format!("persistent://{tenant}/{ns}/{topic}");
        // A durable subscription keeps what the fill writes.
        load::subscribe(service_url, &full, &subscription)
            .await
            .context("creating the move topic's subscription")?;
        let bytes = (size * (1u64 << 30) as f64) as u64;
        eprintln!("bench: filling persistent://{tenant}/{ns}/{topic} with {size} GB for fault {i}");
        let started = Instant::now();
        let messages = load::fill(service_url, &full, bytes, 1024).await?;
        moves.push(Some(PreparedMove {
            namespace: ns,
            topic,
            subscription,
            bytes: messages * 1024,
            messages,
            fill_seconds: started.elapsed().as_secs_f64(),
        }));
    }
    Ok(moves)
}
