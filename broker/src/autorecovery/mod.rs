//! Autorecovery, as BookKeeper's auditor does it: one broker, elected
//! through etcd, notices a bookie that has been gone longer than
//! `lost_bookie_delay` (or that an operator asked to drain), and copies the
//! entries it held in every closed ledger to other bookies until each entry
//! is on a full write quorum again.
//!
//! - Progress lives in metadata: each copied fragment is recorded in its
//!   ledger's metadata (the commit point, see [`crate::ledger::rereplication`])
//!   and the auditor's counters in a record per bookie
//!   ([`keys::bookie_recovery`]), outside any lease, so a new auditor
//!   resumes where a dead one stopped and keeps its clock.
//! - Open ledgers are their writers' to change: every broker rolls over the
//!   ledgers it writes that depend on a bookie under recovery, and the
//!   auditor copies them once they are closed.

mod record;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use magnetar_metadata::{keys, Expect, MetadataStore};

use crate::clock::now_ms;
use crate::ledger::metadata::LedgerMetadata;
use crate::ledger::rereplication::{self, Rereplicator, Throttle};
use crate::ledger::{placement, LedgerClient};
use crate::managed_ledger::LedgerLogStore;
use crate::ownership::Ownership;

pub use record::{BookieRecovery, RecoveryReason, RecoveryState};

/// How the auditor paces itself.
#[derive(Clone, Debug)]
pub struct AutorecoveryConfig {
    /// How long a bookie may be gone before its ledgers are copied
    /// (BookKeeper's lostBookieRecoveryDelay): a restart should not cost
    /// a re-replication.
    pub lost_bookie_delay: Duration,
    /// Bytes per second copied at most (0: unlimited).
    pub rate_bytes_per_second: u64,
    /// How often bookies are checked.
    pub interval: Duration,
    /// How long an open ledger may keep depending on a bookie under
    /// recovery before the auditor recovers (fences and closes) it: its
    /// writer rolls it over within one interval, so one still open after
    /// this has no live writer (its broker died and nobody reopened the
    /// topic). A writer still alive past it is fenced, as in BookKeeper.
    pub open_ledger_grace: Duration,
}

impl Default for AutorecoveryConfig {
    fn default() -> Self {
        AutorecoveryConfig {
            lost_bookie_delay: Duration::from_secs(60),
            rate_bytes_per_second: 64 << 20,
            interval: Duration::from_secs(5),
            open_ledger_grace: Duration::from_secs(30),
        }
    }
}

/// The records of every bookie under recovery, with their versions.
pub async fn read_records(
    store: &dyn MetadataStore,
) -> magnetar_metadata::Result<BTreeMap<String, (BookieRecovery, magnetar_metadata::Version)>> {
    let prefix = keys::bookie_recoveries_prefix();
    let mut out = BTreeMap::new();
    for kv in store.list(&prefix).await? {
        let Some(bookie) = keys::child_name(&prefix, &kv.key) else {
            continue;
        };
        match serde_json::from_slice::<BookieRecovery>(&kv.value) {
            Ok(record) => {
                out.insert(bookie, (record, kv.version));
            }
            Err(e) => tracing::warn!(key = %kv.key, error = %e, "skipping a recovery record"),
        }
    }
    Ok(out)
}

/// Runs on every broker of the decoupled architecture until the process
/// ends: rolls over its own ledgers on bookies under recovery, and, while
/// it holds the auditor's election key, audits.
pub async fn run(
    ownership: Arc<Ownership>,
    ledgers: Arc<LedgerLogStore>,
    config: AutorecoveryConfig,
) {
    let client = ledgers.client().clone();
    let rereplicator =
        Rereplicator::new(client.metadata().clone(), client.bookie_clients().clone());
    // Open ledgers on a bookie under recovery, and since when (this
    // auditor's own clock: a new auditor waits the grace afresh).
    let mut open_since: HashMap<u64, Instant> = HashMap::new();
    loop {
        tokio::time::sleep(config.interval).await;
        let store = ownership.store().clone();
        match read_records(store.as_ref()).await {
            Ok(records) => {
                let copying: HashSet<String> = records
                    .into_iter()
                    .filter(|(_, (r, _))| r.state == RecoveryState::Copying)
                    .map(|(bookie, _)| bookie)
                    .collect();
                if !copying.is_empty() {
                    ledgers.roll_over_ledgers_on(&copying).await;
                }
            }
            Err(e) => tracing::warn!(error = %e, "reading recovery records failed"),
        }
        if !campaign(&ownership).await {
            open_since.clear();
            continue;
        }
        let mut auditor = Auditor {
            ownership: &ownership,
            store: store.as_ref(),
            client: &client,
            rereplicator: &rereplicator,
            config: &config,
            open_since: &mut open_since,
        };
        if let Err(e) = auditor.audit().await {
            tracing::warn!(error = %e, "audit round failed");
        }
    }
}

/// Takes or keeps the auditor's election key (bound to this broker's
/// lease); true while this broker is the auditor.
async fn campaign(ownership: &Ownership) -> bool {
    let Some(lease) = ownership.lease() else {
        return false;
    };
    let store = ownership.store();
    let key = keys::auditor_leader();
    match store.get(&key).await {
        Ok(Some(kv)) => kv.lease == Some(lease),
        Ok(None) => {
            let value = ownership.identity().broker_id.clone().into_bytes();
            store
                .put(&key, value.into(), Expect::Absent, Some(lease))
                .await
                .is_ok()
        }
        Err(e) => {
            tracing::warn!(error = %e, "reading the auditor's election key failed");
            false
        }
    }
}

type AuditError = Box<dyn std::error::Error + Send + Sync>;

struct Auditor<'a> {
    ownership: &'a Ownership,
    store: &'a dyn MetadataStore,
    client: &'a LedgerClient,
    rereplicator: &'a Rereplicator,
    config: &'a AutorecoveryConfig,
    open_since: &'a mut HashMap<u64, Instant>,
}

/// Bookies by role in one round.
struct BookieView {
    available: HashSet<String>,
    known: HashSet<String>,
    draining: HashSet<String>,
}

impl Auditor<'_> {
    async fn names(&self, prefix: &str) -> Result<HashSet<String>, AuditError> {
        Ok(self
            .store
            .list(prefix)
            .await?
            .iter()
            .filter_map(|kv| keys::child_name(prefix, &kv.key))
            .collect())
    }

    async fn view(&self) -> Result<BookieView, AuditError> {
        Ok(BookieView {
            available: self.names(&keys::bookies_available_prefix()).await?,
            known: self.names(&keys::bookies_known_prefix()).await?,
            draining: self.names(&keys::bookies_decommission_prefix()).await?,
        })
    }

    /// Whether this broker still holds the election key: checked between
    /// fragments, so a deposed auditor stops within one fragment.
    async fn still_auditor(&self) -> bool {
        let Some(lease) = self.ownership.lease() else {
            return false;
        };
        matches!(self.store.get(&keys::auditor_leader()).await, Ok(Some(kv)) if kv.lease == Some(lease))
    }

    /// One round: brings the records up to date with the bookies, then
    /// copies what the records under recovery still hold.
    async fn audit(&mut self) -> Result<(), AuditError> {
        let view = self.view().await?;
        let mut records = read_records(self.store).await?;
        let now = now_ms();
        let delay_ms = self.config.lost_bookie_delay.as_millis() as u64;
        for bookie in view.known.union(&view.draining) {
            let lost = !view.available.contains(bookie);
            let draining = view.draining.contains(bookie);
            let next = record::next(
                records.get(bookie).map(|(r, _)| r),
                bookie,
                lost,
                draining,
                now,
                delay_ms,
            );
            match (next, records.get(bookie)) {
                (record::Change::Keep, _) => {}
                (record::Change::Write(record), current) => {
                    let expect = current.map_or(Expect::Absent, |(_, v)| Expect::Version(*v));
                    let version = self
                        .store
                        .put(
                            &keys::bookie_recovery(bookie),
                            record.to_bytes()?,
                            expect,
                            None,
                        )
                        .await?;
                    records.insert(bookie.clone(), (record, version));
                }
                (record::Change::Remove, Some((_, version))) => {
                    self.store
                        .delete(&keys::bookie_recovery(bookie), Expect::Version(*version))
                        .await?;
                    records.remove(bookie);
                }
                (record::Change::Remove, None) => {}
            }
        }
        let targets: HashSet<String> = records
            .iter()
            .filter(|(_, (r, _))| r.state == RecoveryState::Copying)
            .map(|(b, _)| b.clone())
            .collect();
        if targets.is_empty() {
            return Ok(());
        }
        let unreadable: HashSet<String> = view.known.difference(&view.available).cloned().collect();
        self.copy_all(&targets, &unreadable, &mut records).await
    }

    /// Copies every closed ledger fragment held by `targets`, then records
    /// how many ledgers still depend on each.
    async fn copy_all(
        &mut self,
        targets: &HashSet<String>,
        unreadable: &HashSet<String>,
        records: &mut BTreeMap<String, (BookieRecovery, magnetar_metadata::Version)>,
    ) -> Result<(), AuditError> {
        let mut throttle = Throttle::new(self.config.rate_bytes_per_second);
        // Per target: the ledgers still depending on it, and the open ones.
        let mut left: BTreeMap<String, (HashSet<u64>, u64)> = BTreeMap::new();
        let mut last_saved = Instant::now();
        let mut still_open = HashMap::new();
        for (id, md) in self.ledgers().await? {
            if !rereplication::references(&md, |b| targets.contains(b)) {
                continue;
            }
            if !md.is_closed() {
                let since = self
                    .open_since
                    .get(&id)
                    .copied()
                    .unwrap_or_else(Instant::now);
                still_open.insert(id, since);
                if since.elapsed() >= self.config.open_ledger_grace {
                    // Closed now, copied next round.
                    match self.client.recover(id).await {
                        Ok(_) => tracing::info!(
                            ledger = id,
                            "recovered an abandoned open ledger on a bookie under recovery"
                        ),
                        Err(e) => {
                            tracing::warn!(ledger = id, error = %e, "recovering an abandoned open ledger failed")
                        }
                    }
                }
                for target in targets
                    .iter()
                    .filter(|t| rereplication::references(&md, |b| b == *t))
                {
                    let counts = left.entry(target.clone()).or_default();
                    counts.0.insert(id);
                    counts.1 += 1;
                }
                continue;
            }
            for fragment in rereplication::fragments_on(&md, |b| targets.contains(b)) {
                if !self.still_auditor().await {
                    return Ok(());
                }
                let record = &mut records
                    .get_mut(&fragment.bookie)
                    .ok_or("record vanished")?
                    .0;
                match self
                    .copy(id, &md, &fragment, unreadable, &mut throttle)
                    .await
                {
                    Ok(outcome) => {
                        record.fragments_copied += u64::from(outcome.recorded);
                        record.entries_copied += outcome.entries;
                        record.bytes_copied += outcome.bytes;
                    }
                    Err(e) => {
                        tracing::warn!(ledger = id, bookie = %fragment.bookie, error = %e, "re-replicating a fragment failed");
                        record.last_error = Some(format!("ledger {id}: {e}"));
                        left.entry(fragment.bookie.clone())
                            .or_default()
                            .0
                            .insert(id);
                    }
                }
            }
            if last_saved.elapsed() >= Duration::from_secs(1) {
                self.save(records, None).await?;
                last_saved = Instant::now();
            }
        }
        *self.open_since = still_open;
        self.save(records, Some(&left)).await
    }

    async fn copy(
        &self,
        id: u64,
        md: &LedgerMetadata,
        fragment: &rereplication::Fragment,
        unreadable: &HashSet<String>,
        throttle: &mut Throttle,
    ) -> Result<rereplication::CopyOutcome, AuditError> {
        let candidates = placement::available_bookies(self.store).await?;
        let ensemble = &md.ensembles[fragment.index].1;
        let replacement = placement::choose_replacement(&candidates, ensemble, &fragment.bookie)?;
        let started = Instant::now();
        let outcome = self
            .rereplicator
            .copy_fragment(id, md, fragment, unreadable, &replacement, throttle)
            .await?;
        tracing::info!(
            ledger = id,
            from = %fragment.bookie,
            to = %replacement,
            entries = outcome.entries,
            bytes = outcome.bytes,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "fragment re-replicated"
        );
        Ok(outcome)
    }

    /// Every ledger's metadata, by id (undecodable ones skipped).
    async fn ledgers(&self) -> Result<Vec<(u64, LedgerMetadata)>, AuditError> {
        let mut out = Vec::new();
        for kv in self.store.list(&keys::ledgers_prefix()).await? {
            let Some(id) = keys::parse_ledger_key(&kv.key) else {
                continue;
            };
            match LedgerMetadata::from_bytes(&kv.value) {
                Ok(md) => out.push((id, md)),
                Err(e) => {
                    tracing::warn!(ledger = id, error = %e, "skipping undecodable ledger metadata")
                }
            }
        }
        out.sort_by_key(|(id, _)| *id);
        Ok(out)
    }

    /// Writes the records back; with `left` (the end of a round), their
    /// remaining ledgers, and `Done` for those with none.
    async fn save(
        &self,
        records: &mut BTreeMap<String, (BookieRecovery, magnetar_metadata::Version)>,
        left: Option<&BTreeMap<String, (HashSet<u64>, u64)>>,
    ) -> Result<(), AuditError> {
        for (bookie, (record, version)) in records.iter_mut() {
            if record.state != RecoveryState::Copying {
                continue;
            }
            if let Some(left) = left {
                let (ledgers, open) = left
                    .get(bookie)
                    .map_or((0, 0), |(ids, open)| (ids.len() as u64, *open));
                record.ledgers_left = ledgers;
                record.open_ledgers_left = open;
                if ledgers == 0 {
                    record.state = RecoveryState::Done;
                    record.last_error = None;
                    tracing::info!(%bookie, bytes = record.bytes_copied, "bookie re-replicated");
                }
            }
            record.updated_ms = now_ms();
            *version = self
                .store
                .put(
                    &keys::bookie_recovery(bookie),
                    record.to_bytes()?,
                    Expect::Version(*version),
                    None,
                )
                .await?;
        }
        Ok(())
    }
}
