//! The writer of one open ledger (BookKeeper's `PendingAddOp` + the ledger
//! handle's add path). A single task owns the writer's state, so no lock is
//! taken per entry: callers hand it payloads through a channel and get a
//! future per entry.
//!
//! Entry `e` goes to `ensemble[(e + i) % E]` for `i < Qw`; it is confirmed once
//! `Qa` of those bookies acknowledged it durably and every earlier entry is
//! confirmed. The LAC rides on every add. A bookie that fails is replaced by an
//! ensemble change (see [`super::ensemble_change`]) and the unconfirmed
//! entries it held are sent to its replacement.

use std::collections::VecDeque;
use std::future::Future;

use bytes::Bytes;
use futures::stream::FuturesUnordered;
use futures::StreamExt;
use magnetar_metadata::Version;
use magnetar_proto::bookie::AddEntry;
use tokio::sync::{mpsc, oneshot};

use super::bookie_client::{BookieClientError, BookieClients};
use super::error::LedgerError;
use super::metadata::{LedgerMetadata, LedgerMetadataStore};
use super::{EntryId, LedgerId};

type AddReply = oneshot::Sender<Result<EntryId, LedgerError>>;

enum Command {
    Append {
        payload: Bytes,
        reply: AddReply,
    },
    Close {
        reply: oneshot::Sender<Result<LedgerMetadata, LedgerError>>,
    },
}

/// Handle to an open ledger's writer task; cheap to clone. Entries are
/// ordered by the order of `append` calls.
#[derive(Clone)]
pub struct LedgerWriter {
    id: LedgerId,
    commands: mpsc::UnboundedSender<Command>,
}

impl LedgerWriter {
    pub(crate) fn start(
        id: LedgerId,
        metadata: LedgerMetadata,
        version: Version,
        clients: BookieClients,
        store: LedgerMetadataStore,
    ) -> LedgerWriter {
        let (commands, rx) = mpsc::unbounded_channel();
        let task = WriterTask {
            id,
            metadata,
            version,
            clients,
            store,
            next_entry_id: 0,
            lac: -1,
            length: 0,
            pending: VecDeque::new(),
            in_flight: FuturesUnordered::new(),
            failed: None,
            failed_bookies: Default::default(),
            unreplaced: Default::default(),
        };
        tokio::spawn(task.run(rx));
        LedgerWriter { id, commands }
    }

    pub fn id(&self) -> LedgerId {
        self.id
    }

    /// Queues `payload` as the next entry. Resolves to its entry id once it is
    /// confirmed (durable on an ack quorum, all earlier entries confirmed).
    pub fn append(&self, payload: Bytes) -> impl Future<Output = Result<EntryId, LedgerError>> {
        let (reply, rx) = oneshot::channel();
        let id = self.id;
        let queued = self
            .commands
            .send(Command::Append { payload, reply })
            .is_ok();
        async move {
            if !queued {
                return Err(LedgerError::WriterStopped(id));
            }
            rx.await.map_err(|_| LedgerError::WriterStopped(id))?
        }
    }

    /// Waits for every queued entry, then closes the ledger in metadata with
    /// the last confirmed entry. Returns the final metadata.
    pub async fn close(&self) -> Result<LedgerMetadata, LedgerError> {
        let (reply, rx) = oneshot::channel();
        self.commands
            .send(Command::Close { reply })
            .map_err(|_| LedgerError::WriterStopped(self.id))?;
        rx.await.map_err(|_| LedgerError::WriterStopped(self.id))?
    }
}

/// An entry sent but not yet confirmed.
struct PendingAdd {
    entry_id: EntryId,
    payload: Bytes,
    /// Bookies of its write set and whether each acknowledged it.
    write_set: Vec<(String, bool)>,
    reply: Option<AddReply>,
}

impl PendingAdd {
    fn acks(&self) -> usize {
        self.write_set.iter().filter(|(_, acked)| *acked).count()
    }
}

type AckFuture = std::pin::Pin<
    Box<dyn Future<Output = (EntryId, String, Result<(), BookieClientError>)> + Send>,
>;

pub(super) struct WriterTask {
    pub(super) id: LedgerId,
    pub(super) metadata: LedgerMetadata,
    pub(super) version: Version,
    pub(super) clients: BookieClients,
    pub(super) store: LedgerMetadataStore,
    next_entry_id: EntryId,
    lac: EntryId,
    length: u64,
    pending: VecDeque<PendingAdd>,
    in_flight: FuturesUnordered<AckFuture>,
    failed: Option<LedgerError>,
    /// Bookies that failed this writer; excluded from replacements.
    pub(super) failed_bookies: std::collections::HashSet<String>,
    /// Failed bookies still in the ensemble because no replacement existed
    /// (delayed ensemble change); nothing is sent to them.
    unreplaced: std::collections::HashSet<String>,
}

impl WriterTask {
    async fn run(mut self, mut commands: mpsc::UnboundedReceiver<Command>) {
        let mut closing: Option<oneshot::Sender<Result<LedgerMetadata, LedgerError>>> = None;
        let mut handles_alive = true;
        loop {
            let drained = self.pending.is_empty() || self.failed.is_some();
            if let Some(reply) = closing.take_if(|_| drained) {
                let result = match &self.failed {
                    Some(e) => Err(e.clone()),
                    None => self.close_in_metadata().await,
                };
                let _ = reply.send(result);
                // Anything queued after close is refused.
                commands.close();
                while let Ok(command) = commands.try_recv() {
                    match command {
                        Command::Append { reply, .. } => {
                            let _ = reply.send(Err(LedgerError::Closed(self.id)));
                        }
                        Command::Close { reply } => {
                            let _ = reply.send(Err(LedgerError::Closed(self.id)));
                        }
                    }
                }
                return;
            }
            if !handles_alive && drained {
                // Every handle is gone and nothing is owed to anyone.
                return;
            }
            tokio::select! {
                command = commands.recv(), if closing.is_none() && handles_alive => match command {
                    Some(Command::Append { payload, reply }) => self.start_add(payload, reply),
                    Some(Command::Close { reply }) => closing = Some(reply),
                    None => handles_alive = false,
                },
                Some((entry_id, bookie, result)) = self.in_flight.next(), if !self.in_flight.is_empty() => {
                    self.on_ack(entry_id, bookie, result).await;
                }
                // Unconfirmed entries with no add outstanding cannot progress.
                else => self.fail(LedgerError::Bookie("no add in flight for unconfirmed entries".into())),
            }
        }
    }

    fn start_add(&mut self, payload: Bytes, reply: AddReply) {
        if let Some(e) = &self.failed {
            let _ = reply.send(Err(e.clone()));
            return;
        }
        let entry_id = self.next_entry_id;
        self.next_entry_id += 1;
        let write_set: Vec<(String, bool)> = self
            .metadata
            .write_set(entry_id)
            .into_iter()
            .map(|b| (b, false))
            .collect();
        for (bookie, _) in &write_set {
            if !self.unreplaced.contains(bookie) {
                self.send_to(bookie.clone(), entry_id, payload.clone(), false);
            }
        }
        self.pending.push_back(PendingAdd {
            entry_id,
            payload,
            write_set,
            reply: Some(reply),
        });
    }

    pub(super) fn send_to(
        &mut self,
        bookie: String,
        entry_id: EntryId,
        payload: Bytes,
        recovery: bool,
    ) {
        let add = self.clients.get(&bookie).add(AddEntry {
            ledger_id: self.id,
            entry_id,
            lac: self.lac,
            master_key: self.metadata.master_key.clone(),
            recovery,
            payload,
        });
        self.in_flight
            .push(Box::pin(async move { (entry_id, bookie, add.await) }));
    }

    async fn on_ack(
        &mut self,
        entry_id: EntryId,
        bookie: String,
        result: Result<(), BookieClientError>,
    ) {
        if self.failed.is_some() {
            return;
        }
        let Some(index) = self.pending_index(entry_id) else {
            // Already confirmed, or failed with the whole ledger.
            return;
        };
        if result.is_err() && self.unreplaced.contains(&bookie) {
            // Already written off (delayed ensemble change).
            return;
        }
        let pending = &mut self.pending[index];
        let Some(slot) = pending.write_set.iter_mut().find(|(b, _)| *b == bookie) else {
            // A bookie replaced since this add was sent: its answer no longer counts.
            return;
        };
        match result {
            Ok(()) => {
                slot.1 = true;
                self.confirm_ready();
            }
            Err(BookieClientError::Fenced) => self.fail(LedgerError::Fenced(self.id)),
            Err(
                e @ (BookieClientError::BadMasterKey
                | BookieClientError::TooLarge
                | BookieClientError::InvalidRequest(_)),
            ) => {
                // The request itself is wrong: another bookie will say the same.
                self.fail(LedgerError::from_bookie(&e));
            }
            Err(e) => {
                tracing::warn!(ledger = self.id, %bookie, error = %e, "bookie failed; changing ensemble");
                if let Err(err) = self.replace_bookie(&bookie).await {
                    self.fail(err);
                }
            }
        }
    }

    fn pending_index(&self, entry_id: EntryId) -> Option<usize> {
        let first = self.pending.front()?.entry_id;
        let index = usize::try_from(entry_id - first).ok()?;
        (index < self.pending.len()).then_some(index)
    }

    /// Confirms entries from the head while each has an ack quorum.
    fn confirm_ready(&mut self) {
        let quorum = self.metadata.ack_quorum;
        while self.pending.front().is_some_and(|p| p.acks() >= quorum) {
            let Some(mut done) = self.pending.pop_front() else {
                break;
            };
            self.lac = done.entry_id;
            self.length += done.payload.len() as u64;
            if let Some(reply) = done.reply.take() {
                let _ = reply.send(Ok(done.entry_id));
            }
        }
    }

    /// Fails every unconfirmed entry and every later add with `error`.
    pub(super) fn fail(&mut self, error: LedgerError) {
        tracing::warn!(ledger = self.id, error = %error, "ledger writer failed");
        for mut p in self.pending.drain(..) {
            if let Some(reply) = p.reply.take() {
                let _ = reply.send(Err(error.clone()));
            }
        }
        self.in_flight = FuturesUnordered::new();
        self.failed = Some(error);
    }

    /// Replaces `failed` in the current ensemble from the first unconfirmed
    /// entry on, records it in metadata, and resends what it held.
    async fn replace_bookie(&mut self, failed: &str) -> Result<(), LedgerError> {
        let first_unconfirmed = self.lac + 1;
        self.clients.forget(failed);
        let replacement = match super::ensemble_change::change_ensemble(
            self,
            failed,
            first_unconfirmed,
        )
        .await
        {
            Ok(replacement) => replacement,
            Err(LedgerError::NotEnoughBookies(why)) if self.survives_without(failed) => {
                // Delayed ensemble change: with Qw > Qa every write set
                // still reaches an ack quorum without this bookie, so
                // keep writing to the others and change later.
                tracing::warn!(ledger = self.id, failed, %why, "no replacement bookie; writing on without it");
                self.unreplaced.insert(failed.to_string());
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        let mut resend = Vec::new();
        for p in self.pending.iter_mut() {
            for slot in p.write_set.iter_mut() {
                if slot.0 == failed {
                    *slot = (replacement.clone(), false);
                    resend.push((p.entry_id, p.payload.clone()));
                }
            }
        }
        for (entry_id, payload) in resend {
            self.send_to(replacement.clone(), entry_id, payload, false);
        }
        Ok(())
    }

    /// Whether every write quorum of the current ensemble keeps at least Qa
    /// live bookies once `failed` is written off too.
    fn survives_without(&self, failed: &str) -> bool {
        let ensemble = self.metadata.current_ensemble();
        let (e, qw, qa) = (
            ensemble.len(),
            self.metadata.write_quorum,
            self.metadata.ack_quorum,
        );
        let live = |b: &String| b != failed && !self.unreplaced.contains(b);
        (0..e).all(|start| (0..qw).filter(|k| live(&ensemble[(start + k) % e])).count() >= qa)
    }

    async fn close_in_metadata(&mut self) -> Result<LedgerMetadata, LedgerError> {
        let mut closed = self.metadata.clone();
        closed
            .close(self.lac, self.length)
            .map_err(|e| LedgerError::from_metadata(self.id, e))?;
        let version = self
            .store
            .update(self.id, &closed, self.version)
            .await
            .map_err(|e| LedgerError::from_metadata(self.id, e))?;
        self.metadata = closed.clone();
        self.version = version;
        Ok(closed)
    }
}
