//! Ensemble change: a failed bookie is replaced from the first unconfirmed
//! entry on, recorded in metadata by compare-and-set. A CAS conflict means
//! someone else (a recovery) touched the ledger: the writer must stop, and the
//! ledger's state (IN_RECOVERY) tells it so.

use super::append::WriterTask;
use super::error::LedgerError;
use super::metadata::LedgerState;
use super::placement;
use super::EntryId;

/// Returns the replacement bookie once the new ensemble is in metadata.
pub(super) async fn change_ensemble(
    writer: &mut WriterTask,
    failed: &str,
    first_entry: EntryId,
) -> Result<String, LedgerError> {
    let mut candidates = placement::available_bookies(writer.store.store().as_ref())
        .await
        .map_err(|e| LedgerError::Metadata(e.to_string()))?;
    // A bookie that failed this writer may still be registered until its
    // lease expires: never pick it again.
    writer.failed_bookies.insert(failed.to_string());
    candidates.retain(|c| !writer.failed_bookies.contains(&c.address));
    let current = writer.metadata.current_ensemble().to_vec();
    let replacement = placement::choose_replacement(&candidates, &current, failed)?;
    let mut updated = writer.metadata.clone();
    updated
        .replace_bookie(first_entry, failed, replacement.clone())
        .map_err(|e| LedgerError::from_metadata(writer.id, e))?;
    match writer
        .store
        .update(writer.id, &updated, writer.version)
        .await
    {
        Ok(version) => {
            tracing::info!(ledger = writer.id, failed, %replacement, first_entry, "ensemble changed");
            writer.metadata = updated;
            writer.version = version;
            Ok(replacement)
        }
        Err(e) => {
            let conflict = LedgerError::from_metadata(writer.id, e);
            // Tell a fenced writer so, rather than a bare conflict.
            if let Ok((current, _)) = writer.store.read(writer.id).await {
                if current.state != LedgerState::Open {
                    return Err(LedgerError::Fenced(writer.id));
                }
            }
            Err(conflict)
        }
    }
}
