//! Reads (BookKeeper's `PendingReadOp`): an entry comes from one bookie of its
//! write set; if that bookie errs or is slow, the next one is asked too
//! (speculative read) and the first good answer wins. A range is read in
//! runs from one bookie when every bookie holds every entry (E = Qw), which
//! is what catch-up reads need. A reader of an open ledger never returns an
//! entry past the last add confirmed.

use std::time::Duration;

use bytes::Bytes;
use futures::stream::FuturesUnordered;
use futures::StreamExt;

use super::bookie_client::{BookieClientError, BookieClients};
use super::error::LedgerError;
use super::metadata::{LedgerMetadata, LedgerState};
use super::{EntryId, LedgerId};

/// After this long without an answer, the next bookie of the write set is
/// asked as well.
const SPECULATIVE_READ_DELAY: Duration = Duration::from_millis(200);
/// Entries fetched concurrently by a range read.
const READ_CONCURRENCY: usize = 64;

/// Cheap to clone (metadata and shared connections), so concurrent reads of
/// one ledger each work on their own copy.
#[derive(Clone)]
pub struct LedgerReader {
    id: LedgerId,
    metadata: LedgerMetadata,
    clients: BookieClients,
    /// Highest entry known safe to read.
    last_readable: EntryId,
}

impl LedgerReader {
    pub(super) fn new(id: LedgerId, metadata: LedgerMetadata, clients: BookieClients) -> Self {
        let last_readable = match metadata.state {
            LedgerState::Closed => metadata.last_entry_id,
            _ => -1,
        };
        LedgerReader {
            id,
            metadata,
            clients,
            last_readable,
        }
    }

    pub fn metadata(&self) -> &LedgerMetadata {
        &self.metadata
    }

    /// The last entry this reader may return: the closed ledger's last entry,
    /// or for an open ledger the highest LAC its bookies report.
    pub async fn last_add_confirmed(&mut self) -> Result<EntryId, LedgerError> {
        if self.metadata.state == LedgerState::Closed {
            return Ok(self.metadata.last_entry_id);
        }
        let Some((_, ensemble)) = self.metadata.ensembles.last() else {
            return Ok(-1);
        };
        let mut answers: FuturesUnordered<_> = ensemble
            .iter()
            .map(|b| {
                let handle = self.clients.get(b);
                let id = self.id;
                async move { handle.read_lac(id, None, Duration::ZERO).await }
            })
            .collect();
        while let Some(answer) = answers.next().await {
            if let Ok(info) = answer {
                self.last_readable = self.last_readable.max(info.lac);
            }
        }
        Ok(self.last_readable)
    }

    /// Lets this reader go up to `entry_id`: the ledger's own writer (in this
    /// process) saw it confirmed before the bookies' piggybacked LAC says so.
    pub fn raise_last_confirmed(&mut self, entry_id: EntryId) {
        self.last_readable = self.last_readable.max(entry_id);
    }

    /// Reads entry `entry_id`, which must not be past the LAC.
    pub async fn read(&mut self, entry_id: EntryId) -> Result<Bytes, LedgerError> {
        if entry_id > self.last_readable {
            self.last_add_confirmed().await?;
        }
        if entry_id < 0 || entry_id > self.last_readable {
            return Err(LedgerError::BeyondLastConfirmed {
                ledger: self.id,
                entry: entry_id,
                lac: self.last_readable,
            });
        }
        read_entry(&self.clients, self.id, &self.metadata, entry_id).await
    }

    /// Reads `[first, last]` in order (all must be at or below the LAC).
    pub async fn read_range(
        &mut self,
        first: EntryId,
        last: EntryId,
    ) -> Result<Vec<(EntryId, Bytes)>, LedgerError> {
        if last > self.last_readable {
            self.last_add_confirmed().await?;
        }
        if first < 0 || last > self.last_readable {
            return Err(LedgerError::BeyondLastConfirmed {
                ledger: self.id,
                entry: last,
                lac: self.last_readable,
            });
        }
        let mut entries = Vec::with_capacity((last - first + 1) as usize);
        let mut next = first;
        if self.metadata.write_quorum == self.metadata.ensemble_size {
            // Every bookie of an ensemble stores all of its entries: one
            // request per run (per ensemble, per bookie reply size) instead
            // of one per entry.
            while next <= last {
                let run_end = self
                    .metadata
                    .next_ensemble_change(next)
                    .map_or(last, |change| (change - 1).min(last));
                let Some(mut run) = self.read_run(next, run_end).await else {
                    break;
                };
                next += run.len() as EntryId;
                entries.append(&mut run);
            }
        }
        if next <= last {
            let (clients, id, metadata) = (&self.clients, self.id, &self.metadata);
            let rest: Vec<(EntryId, Bytes)> = futures::stream::iter(next..=last)
                .map(|e| async move { read_entry(clients, id, metadata, e).await.map(|b| (e, b)) })
                .buffered(READ_CONCURRENCY)
                .collect::<Vec<_>>()
                .await
                .into_iter()
                .collect::<Result<_, _>>()?;
            entries.extend(rest);
        }
        Ok(entries)
    }

    /// A prefix of `[first, last]` (all in one ensemble) from one bookie of
    /// it, trying each in turn; `None` if none answered with any entry (the
    /// caller then reads entry by entry, with speculative reads).
    async fn read_run(&self, first: EntryId, last: EntryId) -> Option<Vec<(EntryId, Bytes)>> {
        let ensemble = self.metadata.ensemble_for(first);
        // Spread runs over the ensemble's bookies.
        let start = first.rem_euclid(ensemble.len().max(1) as EntryId) as usize;
        for i in 0..ensemble.len() {
            let bookie = &ensemble[(start + i) % ensemble.len()];
            match self
                .clients
                .get(bookie)
                .read_entries(self.id, first, last, 0)
                .await
            {
                Ok(run) if !run.is_empty() => return Some(run),
                Ok(_) => {}
                Err(e) => {
                    tracing::debug!(ledger = self.id, bookie = %bookie, first, last, error = %e, "range read failed; trying the next bookie")
                }
            }
        }
        None
    }
}

/// Reads one entry from its write set, speculatively failing over.
pub(super) async fn read_entry(
    clients: &BookieClients,
    ledger: LedgerId,
    metadata: &LedgerMetadata,
    entry_id: EntryId,
) -> Result<Bytes, LedgerError> {
    match read_from_write_set(clients, ledger, metadata, entry_id).await {
        ReadOutcome::Found(payload) => Ok(payload),
        ReadOutcome::Missing { .. } | ReadOutcome::Unknown { .. } => {
            Err(LedgerError::EntryUnavailable(ledger, entry_id))
        }
    }
}

/// What the write set of an entry said about it.
pub(super) enum ReadOutcome {
    Found(Bytes),
    /// Bookies that definitely do not have it, and how many could not answer.
    Missing {
        absent: usize,
        unreachable: usize,
    },
    Unknown {
        absent: usize,
        unreachable: usize,
    },
}

pub(super) async fn read_from_write_set(
    clients: &BookieClients,
    ledger: LedgerId,
    metadata: &LedgerMetadata,
    entry_id: EntryId,
) -> ReadOutcome {
    let write_set = metadata.write_set(entry_id);
    let ask = |index: usize| {
        let handle = clients.get(&write_set[index]);
        async move { handle.read_entry(ledger, entry_id).await }
    };
    let mut next = 0usize;
    let mut asked: FuturesUnordered<_> = FuturesUnordered::new();
    let mut absent = 0usize;
    let mut unreachable = 0usize;
    loop {
        if next < write_set.len() && asked.is_empty() {
            asked.push(ask(next));
            next += 1;
        }
        tokio::select! {
            Some(answer) = asked.next() => match answer {
                Ok(payload) => return ReadOutcome::Found(payload),
                Err(BookieClientError::NoSuchEntry | BookieClientError::NoSuchLedger) => absent += 1,
                Err(_) => unreachable += 1,
            },
            _ = tokio::time::sleep(SPECULATIVE_READ_DELAY), if next < write_set.len() => {
                asked.push(ask(next));
                next += 1;
            }
            else => {}
        }
        if asked.is_empty() && next >= write_set.len() {
            return if unreachable == 0 {
                ReadOutcome::Missing {
                    absent,
                    unreachable,
                }
            } else {
                ReadOutcome::Unknown {
                    absent,
                    unreachable,
                }
            };
        }
    }
}
