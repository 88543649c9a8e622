//! Re-replication: the entries a lost (or decommissioned) bookie held in a
//! closed ledger are copied to another bookie, which then takes its place
//! in the ledger's metadata, as BookKeeper's replication worker does.
//!
//! Only closed ledgers are touched: an open ledger's metadata belongs to
//! its writer, which treats any other change as a fence. What to copy and
//! when is the auditor's decision ([`crate::autorecovery`]); this module
//! plans and copies one fragment at a time, and a metadata compare-and-set
//! at the end of each fragment is its only commit point, so a copy cut off
//! half way is simply done again.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use bytes::Bytes;
use magnetar_proto::bookie::AddEntry;
use thiserror::Error;
use tokio::time::Instant;

use super::bookie_client::{BookieClientError, BookieClients};
use super::metadata::{LedgerMetadata, LedgerMetadataError, LedgerMetadataStore, LedgerState};
use super::{EntryId, LedgerId};

/// Entries copied per round trip: read from the survivors, then written to
/// the replacement as one pipelined burst.
const CHUNK_ENTRIES: usize = 256;

/// One bookie's part of one ensemble of a ledger: the entries it stores
/// between two ensemble changes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fragment {
    /// Position of the ensemble in the ledger's `ensembles`.
    pub index: usize,
    /// The ensemble's first entry.
    pub first_entry: EntryId,
    /// Its last entry (inclusive); below `first_entry` when it holds none.
    pub last_entry: EntryId,
    /// The bookie whose copies are to be replaced.
    pub bookie: String,
}

impl Fragment {
    /// The entries of the fragment that its bookie stores: those whose
    /// write set (`(entry + i) % E` for `i < Qw`) includes its slot.
    pub fn entries(&self, md: &LedgerMetadata) -> Vec<EntryId> {
        let ensemble = &md.ensembles[self.index].1;
        let Some(slot) = ensemble.iter().position(|b| *b == self.bookie) else {
            return Vec::new();
        };
        let e = md.ensemble_size.max(1) as i64;
        let qw = md.write_quorum as i64;
        (self.first_entry..=self.last_entry)
            .filter(|entry| (slot as i64 - entry).rem_euclid(e) < qw)
            .collect()
    }
}

/// The fragments of a closed ledger held by a bookie `is_target` selects;
/// none for a ledger that is not closed.
pub fn fragments_on(md: &LedgerMetadata, is_target: impl Fn(&str) -> bool) -> Vec<Fragment> {
    if md.state != LedgerState::Closed {
        return Vec::new();
    }
    let mut out = Vec::new();
    for (index, (first, ensemble)) in md.ensembles.iter().enumerate() {
        let last = match md.ensembles.get(index + 1) {
            Some((next, _)) => next - 1,
            None => md.last_entry_id,
        };
        for bookie in ensemble.iter().filter(|b| is_target(b)) {
            out.push(Fragment {
                index,
                first_entry: *first,
                last_entry: last,
                bookie: bookie.clone(),
            });
        }
    }
    out
}

/// Whether any ensemble of `md` (open or closed) names a bookie `is_target`
/// selects: the ledger still depends on it.
pub fn references(md: &LedgerMetadata, is_target: impl Fn(&str) -> bool) -> bool {
    md.ensembles
        .iter()
        .any(|(_, ensemble)| ensemble.iter().any(|b| is_target(b)))
}

/// Why a fragment could not be re-replicated.
#[derive(Debug, Error)]
pub enum RereplicationError {
    /// Open, or reopened in recovery: its writer owns the metadata.
    #[error("ledger {0} is not closed")]
    NotClosed(LedgerId),
    /// No bookie of the entry's write set could serve it: the copies that
    /// confirmed it are all gone.
    #[error("entry {entry} of ledger {ledger} has no readable copy left")]
    NoCopyLeft { ledger: LedgerId, entry: EntryId },
    #[error("writing ledger {ledger} to {bookie}: {error}")]
    Write {
        ledger: LedgerId,
        bookie: String,
        error: BookieClientError,
    },
    #[error(transparent)]
    Metadata(#[from] LedgerMetadataError),
}

/// Paces copies to a byte rate over the whole run (0: unlimited), so a
/// re-replication does not starve producers of bookie bandwidth.
#[derive(Debug)]
pub struct Throttle {
    bytes_per_second: u64,
    started: Instant,
    bytes: u64,
}

impl Throttle {
    pub fn new(bytes_per_second: u64) -> Self {
        Throttle {
            bytes_per_second,
            started: Instant::now(),
            bytes: 0,
        }
    }

    /// Counts `bytes` and waits until the rate allows them.
    pub async fn consume(&mut self, bytes: u64) {
        if let Some(due) = self.count(bytes) {
            tokio::time::sleep_until(self.started + due).await;
        }
    }

    /// Counts `bytes`; how long after the start the bytes so far are due
    /// (`None`: unlimited).
    fn count(&mut self, bytes: u64) -> Option<Duration> {
        self.bytes = self.bytes.saturating_add(bytes);
        (self.bytes_per_second > 0)
            .then(|| Duration::from_secs_f64(self.bytes as f64 / self.bytes_per_second as f64))
    }
}

/// What one fragment's copy did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CopyOutcome {
    pub entries: u64,
    pub bytes: u64,
    /// False when someone else had already replaced the bookie (nothing
    /// was recorded by this copy).
    pub recorded: bool,
}

/// Copies fragments between bookies and records them in ledger metadata.
#[derive(Clone)]
pub struct Rereplicator {
    store: LedgerMetadataStore,
    clients: BookieClients,
}

impl Rereplicator {
    pub fn new(store: LedgerMetadataStore, clients: BookieClients) -> Self {
        Rereplicator { store, clients }
    }

    /// Copies the entries of `fragment` to `replacement`, reading each from
    /// a bookie of its write set not in `unreadable` (a bookie being drained
    /// is still readable, a lost one is not), then replaces the fragment's bookie by `replacement`
    /// in the ledger's metadata (compare-and-set).
    pub async fn copy_fragment(
        &self,
        ledger: LedgerId,
        md: &LedgerMetadata,
        fragment: &Fragment,
        unreadable: &HashSet<String>,
        replacement: &str,
        throttle: &mut Throttle,
    ) -> Result<CopyOutcome, RereplicationError> {
        if md.state != LedgerState::Closed {
            return Err(RereplicationError::NotClosed(ledger));
        }
        let mut outcome = CopyOutcome::default();
        let entries = fragment.entries(md);
        for chunk in entries.chunks(CHUNK_ENTRIES) {
            let payloads = self.read_chunk(ledger, md, unreadable, chunk).await?;
            let bytes: u64 = payloads.values().map(|p| p.len() as u64).sum();
            self.write_chunk(ledger, md, replacement, payloads).await?;
            outcome.entries += chunk.len() as u64;
            outcome.bytes += bytes;
            throttle.consume(bytes).await;
        }
        outcome.recorded = self.record(ledger, fragment, replacement).await?;
        Ok(outcome)
    }

    /// The payloads of `chunk`, each read from the first bookie of its
    /// write set that has it: contiguous runs of one source go in one read.
    async fn read_chunk(
        &self,
        ledger: LedgerId,
        md: &LedgerMetadata,
        unreadable: &HashSet<String>,
        chunk: &[EntryId],
    ) -> Result<BTreeMap<EntryId, Bytes>, RereplicationError> {
        let sources = |entry: EntryId| -> Vec<String> {
            md.write_set(entry)
                .into_iter()
                .filter(|b| !unreadable.contains(b))
                .collect()
        };
        // First choice of source per entry, as runs of consecutive entries.
        let mut runs: Vec<(String, EntryId, EntryId)> = Vec::new();
        for &entry in chunk {
            let Some(source) = sources(entry).into_iter().next() else {
                return Err(RereplicationError::NoCopyLeft { ledger, entry });
            };
            match runs.last_mut() {
                Some((s, _, last)) if *s == source && *last + 1 == entry => *last = entry,
                _ => runs.push((source, entry, entry)),
            }
        }
        let mut payloads = BTreeMap::new();
        for (source, first, last) in runs {
            let mut next = first;
            let handle = self.clients.get(&source);
            while next <= last {
                match handle.read_entries(ledger, next, last, 0).await {
                    Ok(read) if !read.is_empty() => {
                        next = read.last().map_or(next, |(id, _)| id + 1);
                        payloads.extend(read);
                    }
                    // Missing or failing there: this entry from another copy.
                    _ => {
                        let payload = self.read_elsewhere(ledger, next, &sources(next)).await?;
                        payloads.insert(next, payload);
                        next += 1;
                    }
                }
            }
        }
        Ok(payloads)
    }

    async fn read_elsewhere(
        &self,
        ledger: LedgerId,
        entry: EntryId,
        sources: &[String],
    ) -> Result<Bytes, RereplicationError> {
        for source in sources {
            if let Ok(payload) = self.clients.get(source).read_entry(ledger, entry).await {
                return Ok(payload);
            }
        }
        Err(RereplicationError::NoCopyLeft { ledger, entry })
    }

    /// Writes `payloads` to `bookie` as recovery adds (they pass a fence),
    /// pipelined on its add stream; done once all are durable there.
    async fn write_chunk(
        &self,
        ledger: LedgerId,
        md: &LedgerMetadata,
        bookie: &str,
        payloads: BTreeMap<EntryId, Bytes>,
    ) -> Result<(), RereplicationError> {
        let handle = self.clients.get(bookie);
        let adds: Vec<_> = payloads
            .into_iter()
            .map(|(entry_id, payload)| {
                handle.add(AddEntry {
                    ledger_id: ledger,
                    entry_id,
                    lac: md.last_entry_id,
                    master_key: md.master_key.clone(),
                    recovery: true,
                    payload,
                })
            })
            .collect();
        for result in futures::future::join_all(adds).await {
            result.map_err(|error| RereplicationError::Write {
                ledger,
                bookie: bookie.to_string(),
                error,
            })?;
        }
        Ok(())
    }

    /// Puts `replacement` in the fragment's bookie's place; false if the
    /// bookie was no longer there (someone else re-replicated it).
    async fn record(
        &self,
        ledger: LedgerId,
        fragment: &Fragment,
        replacement: &str,
    ) -> Result<bool, RereplicationError> {
        let mut recorded = false;
        self.store
            .update_with(ledger, |current| {
                recorded = false;
                if current.state != LedgerState::Closed {
                    return Err(LedgerMetadataError::Invalid(format!(
                        "ledger {ledger} is no longer closed"
                    )));
                }
                let unchanged =
                    current
                        .ensembles
                        .get(fragment.index)
                        .is_some_and(|(first, ensemble)| {
                            *first == fragment.first_entry && ensemble.contains(&fragment.bookie)
                        });
                if !unchanged {
                    return Ok(None);
                }
                let mut next = current.clone();
                next.replace_in_ensemble(
                    fragment.index,
                    &fragment.bookie,
                    replacement.to_string(),
                )?;
                recorded = true;
                Ok(Some(next))
            })
            .await?;
        Ok(recorded)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn closed(
        e: usize,
        qw: usize,
        ensembles: &[(EntryId, &[&str])],
        last: EntryId,
    ) -> LedgerMetadata {
        let mut md = LedgerMetadata::new(
            qw,
            qw,
            ensembles[0].1.iter().map(|s| s.to_string()).collect(),
            Bytes::from_static(b"k"),
            Default::default(),
        )
        .unwrap();
        assert_eq!(md.ensemble_size, e);
        for (first, ensemble) in &ensembles[1..] {
            md.change_ensemble(*first, ensemble.iter().map(|s| s.to_string()).collect())
                .unwrap();
        }
        md.close(last, 0).unwrap();
        md
    }

    #[test]
    fn a_fragment_holds_the_entries_whose_write_set_covers_its_slot() {
        let md = closed(3, 2, &[(0, &["a", "b", "c"])], 5);
        let fragments = fragments_on(&md, |b| b == "b");
        assert_eq!(fragments.len(), 1);
        // Write sets: 0 {a,b} 1 {b,c} 2 {c,a} 3 {a,b} 4 {b,c} 5 {c,a}.
        assert_eq!(fragments[0].entries(&md), vec![0, 1, 3, 4]);
        for entry in fragments[0].entries(&md) {
            assert!(md.write_set(entry).contains(&"b".to_string()));
        }
    }

    #[test]
    fn fragments_end_where_the_next_ensemble_starts() {
        let md = closed(2, 2, &[(0, &["a", "b"]), (10, &["a", "c"])], 14);
        let on_a = fragments_on(&md, |b| b == "a");
        assert_eq!(
            on_a.iter()
                .map(|f| (f.index, f.first_entry, f.last_entry))
                .collect::<Vec<_>>(),
            vec![(0, 0, 9), (1, 10, 14)]
        );
        let on_b = fragments_on(&md, |b| b == "b");
        assert_eq!(on_b.len(), 1);
        assert_eq!(on_b[0].entries(&md), (0..=9).collect::<Vec<_>>());
    }

    #[test]
    fn an_open_ledger_has_no_fragments_to_copy_but_still_references_its_bookies() {
        let md = LedgerMetadata::new(
            2,
            2,
            vec!["a".into(), "b".into()],
            Bytes::from_static(b"k"),
            Default::default(),
        )
        .unwrap();
        assert!(fragments_on(&md, |b| b == "a").is_empty());
        assert!(references(&md, |b| b == "a"));
        assert!(!references(&md, |b| b == "z"));
    }

    #[test]
    fn an_empty_closed_ledger_has_empty_fragments() {
        let md = closed(2, 2, &[(0, &["a", "b"])], -1);
        let fragments = fragments_on(&md, |b| b == "a");
        assert_eq!(fragments.len(), 1);
        assert!(fragments[0].entries(&md).is_empty());
    }

    #[test]
    fn replacing_in_an_ensemble_needs_a_closed_ledger_and_distinct_bookies() {
        let mut md = closed(2, 2, &[(0, &["a", "b"]), (4, &["a", "c"])], 9);
        md.replace_in_ensemble(0, "b", "d".into()).unwrap();
        assert_eq!(md.ensembles[0].1, vec!["a".to_string(), "d".to_string()]);
        assert_eq!(md.ensembles[1].1, vec!["a".to_string(), "c".to_string()]);
        // "a" is already in the ensemble: refused, nothing changed.
        assert!(md.replace_in_ensemble(1, "c", "a".into()).is_err());
        assert_eq!(md.ensembles[1].1, vec!["a".to_string(), "c".to_string()]);
        let mut open = LedgerMetadata::new(
            2,
            2,
            vec!["a".into(), "b".into()],
            Bytes::from_static(b"k"),
            Default::default(),
        )
        .unwrap();
        assert!(open.replace_in_ensemble(0, "a", "x".into()).is_err());
    }

    #[test]
    fn the_throttle_paces_bytes_to_its_rate() {
        let mut throttle = Throttle::new(1000);
        assert_eq!(throttle.count(500), Some(Duration::from_millis(500)));
        assert_eq!(throttle.count(1500), Some(Duration::from_secs(2)));
        assert_eq!(Throttle::new(0).count(u64::MAX), None);
    }
}
