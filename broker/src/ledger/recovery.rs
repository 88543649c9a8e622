//! Ledger recovery (BookKeeper's `LedgerRecoveryOp`), run by a new owner:
//!
//! 1. mark the ledger IN_RECOVERY by CAS (an old writer's ensemble change now
//!    fails);
//! 2. fence it on the last ensemble until, in every write quorum, at least
//!    `Qw - Qa + 1` bookies answered — then no ack quorum of the old writer
//!    can still complete;
//! 3. from the highest LAC they report, read forward entry by entry; an entry
//!    found anywhere is written back to its write set with the recovery flag;
//!    an entry that `Qw - Qa + 1` bookies of its write set lack cannot have
//!    been confirmed, so the ledger ends just before it;
//! 4. close with that last entry by CAS; if another recovery closed it first,
//!    its result stands (so concurrent recoveries converge).

use bytes::Bytes;
use futures::stream::FuturesUnordered;
use futures::StreamExt;
use magnetar_metadata::Version;
use magnetar_proto::bookie::AddEntry;

use super::bookie_client::BookieClientError;
use super::create::LedgerClient;
use super::error::LedgerError;
use super::metadata::{LedgerMetadata, LedgerMetadataError, LedgerState};
use super::placement;
use super::read::{read_from_write_set, ReadOutcome};
use super::{EntryId, LedgerId};

pub(super) async fn recover(
    client: &LedgerClient,
    id: LedgerId,
) -> Result<LedgerMetadata, LedgerError> {
    let (metadata, version) = match mark_in_recovery(client, id).await? {
        Marked::AlreadyClosed(metadata) => return Ok(metadata),
        Marked::InRecovery(metadata, version) => (metadata, version),
    };
    let lac = fence(client, id, &metadata).await?;
    let mut target = RecoveryTarget {
        metadata: metadata.clone(),
        version,
    };
    let (last_entry, recovered_bytes) =
        recover_entries(client, id, &metadata, lac, &mut target).await?;
    close(
        client,
        id,
        target.metadata,
        target.version,
        last_entry,
        recovered_bytes,
    )
    .await
}

/// The metadata recovered entries are written under. It starts as the
/// ledger's and gains an ensemble change when a bookie of a write set is
/// unreachable; reads keep using the metadata the old writer wrote with.
struct RecoveryTarget {
    metadata: LedgerMetadata,
    version: Version,
}

enum Marked {
    AlreadyClosed(LedgerMetadata),
    InRecovery(LedgerMetadata, Version),
}

async fn mark_in_recovery(client: &LedgerClient, id: LedgerId) -> Result<Marked, LedgerError> {
    loop {
        let (mut metadata, version) = client
            .store
            .read(id)
            .await
            .map_err(|e| LedgerError::from_metadata(id, e))?;
        match metadata.state {
            LedgerState::Closed => return Ok(Marked::AlreadyClosed(metadata)),
            LedgerState::InRecovery => return Ok(Marked::InRecovery(metadata, version)),
            LedgerState::Open => {
                metadata
                    .start_recovery()
                    .map_err(|e| LedgerError::from_metadata(id, e))?;
                match client.store.update(id, &metadata, version).await {
                    Ok(version) => return Ok(Marked::InRecovery(metadata, version)),
                    // The writer changed its ensemble meanwhile: look again.
                    Err(LedgerMetadataError::Conflict) => continue,
                    Err(e) => return Err(LedgerError::from_metadata(id, e)),
                }
            }
        }
    }
}

/// Fences the last ensemble; returns the highest LAC the answering bookies
/// hold once enough of every write quorum answered.
async fn fence(
    client: &LedgerClient,
    id: LedgerId,
    metadata: &LedgerMetadata,
) -> Result<EntryId, LedgerError> {
    let Some((_, ensemble)) = metadata.ensembles.last() else {
        return Ok(-1);
    };
    let e = metadata.ensemble_size;
    let qw = metadata.write_quorum;
    let needed = qw - metadata.ack_quorum + 1;
    let mut answers: FuturesUnordered<_> = ensemble
        .iter()
        .enumerate()
        .map(|(index, bookie)| {
            let handle = client.clients.get(bookie);
            let key = metadata.master_key.clone();
            async move { (index, handle.fence(id, key).await) }
        })
        .collect();
    let mut answered = vec![false; e];
    let mut lac = -1;
    let mut errors = Vec::new();
    while let Some((index, answer)) = answers.next().await {
        match answer {
            Ok(info) => {
                answered[index] = true;
                lac = lac.max(info.lac);
            }
            Err(err) => errors.push(format!("{}: {err}", ensemble[index])),
        }
        // Every write quorum starts at some index i and covers i..i+Qw.
        let enough =
            (0..e).all(|start| (0..qw).filter(|k| answered[(start + k) % e]).count() >= needed);
        if enough {
            tracing::info!(ledger = id, lac, "ledger fenced");
            return Ok(lac);
        }
    }
    Err(LedgerError::NotEnoughBookies(format!(
        "fencing ledger {id} reached too few bookies: {}",
        errors.join(", ")
    )))
}

/// Entries read (and then written back) concurrently during recovery.
const RECOVERY_WINDOW: i64 = 64;

/// Reads forward from `lac + 1`, writing back every entry found. Returns the
/// last recoverable entry and the bytes recovered past the LAC. Works in
/// windows: a window's reads run concurrently, then the entries before the
/// first missing one are written back concurrently.
async fn recover_entries(
    client: &LedgerClient,
    id: LedgerId,
    metadata: &LedgerMetadata,
    lac: EntryId,
    target: &mut RecoveryTarget,
) -> Result<(EntryId, u64), LedgerError> {
    let absent_quorum = metadata.write_quorum - metadata.ack_quorum + 1;
    let mut first = lac + 1;
    let mut bytes = 0u64;
    loop {
        let outcomes = futures::future::join_all(
            (first..first + RECOVERY_WINDOW)
                .map(|e| read_from_write_set(&client.clients, id, metadata, e)),
        )
        .await;
        let mut found = Vec::new();
        let mut end = None;
        for (entry, outcome) in (first..).zip(outcomes) {
            match outcome {
                ReadOutcome::Found(payload) => found.push((entry, payload)),
                ReadOutcome::Missing { absent, .. } | ReadOutcome::Unknown { absent, .. }
                    if absent >= absent_quorum =>
                {
                    end = Some(entry - 1);
                    break;
                }
                ReadOutcome::Missing {
                    absent,
                    unreachable,
                }
                | ReadOutcome::Unknown {
                    absent,
                    unreachable,
                } => {
                    return Err(LedgerError::NotEnoughBookies(format!(
                        "cannot tell whether entry {entry} of ledger {id} exists: {absent} bookies lack it, {unreachable} did not answer"
                    )));
                }
            }
        }
        let attempts = futures::future::join_all(found.iter().map(|(entry, payload)| {
            let bookies = target.metadata.write_set(*entry);
            try_write_back(client, id, &target.metadata, *entry, payload, bookies)
        }))
        .await;
        for ((entry, payload), attempt) in found.into_iter().zip(attempts) {
            bytes += payload.len() as u64;
            if !attempt?.is_empty() {
                // Some bookie of its write set is gone: replace it, in order.
                write_back(client, id, target, entry, payload).await?;
            }
        }
        match end {
            Some(last) => return Ok((last, bytes)),
            None => first += RECOVERY_WINDOW,
        }
    }
}

/// Sends a recovered entry to `bookies` with the recovery flag; returns the
/// bookies that could not take it for reasons a replacement fixes.
async fn try_write_back(
    client: &LedgerClient,
    id: LedgerId,
    metadata: &LedgerMetadata,
    entry: EntryId,
    payload: &Bytes,
    bookies: Vec<String>,
) -> Result<Vec<String>, LedgerError> {
    let mut adds: FuturesUnordered<_> = bookies
        .into_iter()
        .map(|bookie| {
            let add = client.clients.get(&bookie).add(AddEntry {
                ledger_id: id,
                entry_id: entry,
                lac: entry - 1,
                master_key: metadata.master_key.clone(),
                recovery: true,
                payload: payload.clone(),
            });
            async move { (bookie, add.await) }
        })
        .collect();
    let mut failed = Vec::new();
    while let Some((bookie, result)) = adds.next().await {
        match result {
            Ok(()) => {}
            Err(
                e @ (BookieClientError::Timeout
                | BookieClientError::Unavailable(_)
                | BookieClientError::ReadOnly
                | BookieClientError::Storage(_)),
            ) => {
                tracing::warn!(ledger = id, entry, %bookie, error = %e, "recovery write failed");
                failed.push(bookie);
            }
            Err(e) => return Err(LedgerError::from_bookie(&e)),
        }
    }
    Ok(failed)
}

/// Writes a recovered entry to its whole write set with the recovery flag.
/// An unreachable bookie is replaced (ensemble change from this entry on,
/// by CAS) and the entry written to its replacement, so every recovered entry
/// ends on a full write quorum of the final metadata.
async fn write_back(
    client: &LedgerClient,
    id: LedgerId,
    target: &mut RecoveryTarget,
    entry: EntryId,
    payload: Bytes,
) -> Result<(), LedgerError> {
    let mut pending = target.metadata.write_set(entry);
    let mut replaced = 0usize;
    while !pending.is_empty() {
        let failed = try_write_back(client, id, &target.metadata, entry, &payload, pending).await?;
        pending = Vec::new();
        for bookie in failed {
            replaced += 1;
            if replaced > target.metadata.ensemble_size * 2 {
                return Err(LedgerError::NotEnoughBookies(format!(
                    "no bookie took entry {entry} of ledger {id} during recovery"
                )));
            }
            pending.push(replace_in_recovery(client, id, target, entry, &bookie).await?);
        }
    }
    Ok(())
}

/// Ensemble change made by the recovering client (the ledger is
/// IN_RECOVERY, so only another recovery can conflict).
async fn replace_in_recovery(
    client: &LedgerClient,
    id: LedgerId,
    target: &mut RecoveryTarget,
    entry: EntryId,
    failed: &str,
) -> Result<String, LedgerError> {
    client.clients.forget(failed);
    let candidates = placement::available_bookies(client.store.store().as_ref())
        .await
        .map_err(|e| LedgerError::Metadata(e.to_string()))?;
    let replacement =
        placement::choose_replacement(&candidates, target.metadata.current_ensemble(), failed)?;
    let mut updated = target.metadata.clone();
    updated
        .replace_bookie(entry, failed, replacement.clone())
        .map_err(|e| LedgerError::from_metadata(id, e))?;
    target.version = client
        .store
        .update(id, &updated, target.version)
        .await
        .map_err(|e| LedgerError::from_metadata(id, e))?;
    target.metadata = updated;
    tracing::info!(ledger = id, failed, %replacement, entry, "ensemble changed during recovery");
    Ok(replacement)
}

async fn close(
    client: &LedgerClient,
    id: LedgerId,
    mut metadata: LedgerMetadata,
    version: Version,
    last_entry: EntryId,
    recovered_bytes: u64,
) -> Result<LedgerMetadata, LedgerError> {
    // The length of entries up to the old LAC is not known to a recovering
    // reader; only what it recovered is counted (exact after a clean close).
    let length = metadata.length + recovered_bytes;
    metadata
        .close(last_entry, length)
        .map_err(|e| LedgerError::from_metadata(id, e))?;
    match client.store.update(id, &metadata, version).await {
        Ok(_) => {
            tracing::info!(ledger = id, last_entry, "ledger recovered and closed");
            Ok(metadata)
        }
        Err(LedgerMetadataError::Conflict) => {
            // Another recovery closed it first: its answer stands.
            let (current, _) = client
                .store
                .read(id)
                .await
                .map_err(|e| LedgerError::from_metadata(id, e))?;
            if current.state == LedgerState::Closed {
                Ok(current)
            } else {
                Err(LedgerError::MetadataConflict(id))
            }
        }
        Err(e) => Err(LedgerError::from_metadata(id, e)),
    }
}
