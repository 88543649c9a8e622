//! The gRPC face of the bookie: turns requests into journal submissions and
//! store reads. Every refusal is an in-band [`ErrorCode`] for that caller only;
//! gRPC statuses are left for transport-level failures.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use magnetar_proto::bookie::bookie_server::Bookie;
use magnetar_proto::bookie::{
    AddBatch, AddBatchResult, AddResult, DeleteLedgerRequest, DeleteLedgerResponse, Entry,
    ErrorCode, FenceRequest, FenceResponse, HealthRequest, HealthResponse, ReadEntriesRequest,
    ReadEntriesResponse, ReadEntryRequest, ReadEntryResponse, ReadLacRequest, ReadLacResponse,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::error::BookieError;
use crate::journal::Journal;
use crate::ledger_state::LedgerTable;
use crate::metrics::BookieMetrics;
use crate::store::EntryStore;

/// Add batches of one stream that may await their fsync at once; past this the
/// stream is not read further and HTTP/2 flow control pushes back on the writer.
const MAX_BATCHES_IN_FLIGHT_PER_STREAM: usize = 256;
const MAX_LONG_POLL: Duration = Duration::from_secs(60);
/// Payload bytes of all streams awaiting the journal at once; bounds memory
/// whatever writers send.
pub const MAX_BYTES_IN_FLIGHT: usize = 256 << 20;

pub struct BookieService<S> {
    pub(crate) store: Arc<S>,
    pub(crate) journal: Journal,
    pub(crate) table: Arc<LedgerTable>,
    pub(crate) metrics: BookieMetrics,
    pub(crate) read_only: Arc<AtomicBool>,
    pub(crate) free_disk_bytes: Arc<std::sync::atomic::AtomicU64>,
    pub(crate) bookie_id: String,
    pub(crate) max_read_bytes: usize,
    pub(crate) in_flight_bytes: Arc<tokio::sync::Semaphore>,
}

fn error_fields(e: &BookieError) -> (i32, String) {
    (e.code() as i32, e.to_string())
}

fn internal(e: tokio::task::JoinError) -> BookieError {
    BookieError::Storage(format!("read task failed: {e}"))
}

impl<S: EntryStore> BookieService<S> {
    fn known_ledger(&self, ledger_id: u64) -> Result<crate::store::LedgerStateRecord, BookieError> {
        if ledger_id == 0 {
            return Err(BookieError::InvalidRequest(
                "ledger id 0 is reserved".into(),
            ));
        }
        self.table
            .get(ledger_id)
            .ok_or(BookieError::NoSuchLedger(ledger_id))
    }

    async fn read_entry_inner(
        &self,
        req: ReadEntryRequest,
    ) -> Result<ReadEntryResponse, BookieError> {
        let state = self.known_ledger(req.ledger_id)?;
        if req.entry_id < 0 {
            return Err(BookieError::InvalidRequest(format!(
                "negative entry id {}",
                req.entry_id
            )));
        }
        let store = self.store.clone();
        let (ledger, entry) = (req.ledger_id, req.entry_id);
        let payload = tokio::task::spawn_blocking(move || store.get_entry(ledger, entry))
            .await
            .map_err(internal)?
            .map_err(|e| BookieError::Storage(e.0))?
            .ok_or(BookieError::NoSuchEntry(ledger, entry))?;
        Ok(ReadEntryResponse {
            code: ErrorCode::Ok as i32,
            message: String::new(),
            payload,
            lac: state.lac,
        })
    }

    async fn read_entries_inner(
        &self,
        req: ReadEntriesRequest,
    ) -> Result<ReadEntriesResponse, BookieError> {
        let state = self.known_ledger(req.ledger_id)?;
        if req.first_entry_id < 0 || req.last_entry_id < req.first_entry_id {
            return Err(BookieError::InvalidRequest(format!(
                "bad range [{}, {}]",
                req.first_entry_id, req.last_entry_id
            )));
        }
        let max_bytes = match req.max_bytes {
            0 => self.max_read_bytes,
            n => (n as usize).min(self.max_read_bytes),
        };
        let store = self.store.clone();
        let entries = tokio::task::spawn_blocking(move || {
            store.read_range(
                req.ledger_id,
                req.first_entry_id,
                req.last_entry_id,
                max_bytes,
            )
        })
        .await
        .map_err(internal)?
        .map_err(|e| BookieError::Storage(e.0))?;
        if entries.is_empty() {
            return Err(BookieError::NoSuchEntry(req.ledger_id, req.first_entry_id));
        }
        Ok(ReadEntriesResponse {
            code: ErrorCode::Ok as i32,
            message: String::new(),
            entries: entries
                .into_iter()
                .map(|(entry_id, payload)| Entry { entry_id, payload })
                .collect(),
            lac: state.lac,
        })
    }

    async fn read_lac_inner(&self, req: ReadLacRequest) -> Result<ReadLacResponse, BookieError> {
        let mut state = self.known_ledger(req.ledger_id)?;
        if let Some(wait_past) = req.wait_past {
            let timeout = Duration::from_millis(req.timeout_ms.into()).min(MAX_LONG_POLL);
            let deadline = tokio::time::Instant::now() + timeout;
            let mut rounds = self.table.subscribe_rounds();
            while state.lac <= wait_past && !state.fenced {
                match tokio::time::timeout_at(deadline, rounds.changed()).await {
                    Ok(Ok(())) => state = self.known_ledger(req.ledger_id)?,
                    // Timed out, or the bookie is shutting down: answer as is.
                    _ => break,
                }
            }
        }
        Ok(ReadLacResponse {
            code: ErrorCode::Ok as i32,
            message: String::new(),
            lac: state.lac,
            last_entry_id: state.last_entry_id,
            fenced: state.fenced,
        })
    }
}

#[tonic::async_trait]
impl<S: EntryStore> Bookie for BookieService<S> {
    type AddEntriesStream = ReceiverStream<Result<AddBatchResult, Status>>;

    async fn add_entries(
        &self,
        request: Request<Streaming<AddBatch>>,
    ) -> Result<Response<Self::AddEntriesStream>, Status> {
        let mut inbound = request.into_inner();
        let (pending_tx, mut pending_rx) = mpsc::channel(MAX_BATCHES_IN_FLIGHT_PER_STREAM);
        let (out_tx, out_rx) = mpsc::channel(MAX_BATCHES_IN_FLIGHT_PER_STREAM);
        let journal = self.journal.clone();
        let in_flight_bytes = self.in_flight_bytes.clone();

        // Reader: submit each batch as it arrives; the bounded channel keeps at
        // most MAX_BATCHES_IN_FLIGHT_PER_STREAM waiting for their round.
        let error_tx = out_tx.clone();
        tokio::spawn(async move {
            loop {
                match inbound.message().await {
                    Ok(Some(batch)) => {
                        let count = batch.entries.len();
                        let bytes: usize = batch.entries.iter().map(|e| e.payload.len()).sum();
                        let permits = bytes.clamp(1, MAX_BYTES_IN_FLIGHT) as u32;
                        let Ok(permit) = in_flight_bytes.clone().acquire_many_owned(permits).await
                        else {
                            break;
                        };
                        let done = journal.add(batch.entries);
                        if pending_tx
                            .send((batch.batch_id, count, done, permit))
                            .await
                            .is_err()
                        {
                            break;
                        }
                    }
                    Ok(None) => break,
                    Err(status) => {
                        tracing::debug!(%status, "add stream ended with error");
                        let _ = error_tx.send(Err(status)).await;
                        break;
                    }
                }
            }
        });
        // Responder: answer in submission order once each round is durable.
        tokio::spawn(async move {
            while let Some((batch_id, count, done, permit)) = pending_rx.recv().await {
                let results = done.await.unwrap_or_else(|_| {
                    let e = BookieError::Storage("bookie shutting down".into());
                    let (code, message) = error_fields(&e);
                    vec![AddResult { code, message }; count]
                });
                drop(permit);
                if out_tx
                    .send(Ok(AddBatchResult { batch_id, results }))
                    .await
                    .is_err()
                {
                    break;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(out_rx)))
    }

    async fn read_entry(
        &self,
        request: Request<ReadEntryRequest>,
    ) -> Result<Response<ReadEntryResponse>, Status> {
        self.metrics.reads.with_label_values(&["entry"]).inc();
        let resp = self
            .read_entry_inner(request.into_inner())
            .await
            .unwrap_or_else(|e| {
                let (code, message) = error_fields(&e);
                ReadEntryResponse {
                    code,
                    message,
                    ..Default::default()
                }
            });
        Ok(Response::new(resp))
    }

    async fn read_entries(
        &self,
        request: Request<ReadEntriesRequest>,
    ) -> Result<Response<ReadEntriesResponse>, Status> {
        self.metrics.reads.with_label_values(&["range"]).inc();
        let resp = self
            .read_entries_inner(request.into_inner())
            .await
            .unwrap_or_else(|e| {
                let (code, message) = error_fields(&e);
                ReadEntriesResponse {
                    code,
                    message,
                    ..Default::default()
                }
            });
        Ok(Response::new(resp))
    }

    async fn read_lac(
        &self,
        request: Request<ReadLacRequest>,
    ) -> Result<Response<ReadLacResponse>, Status> {
        self.metrics.reads.with_label_values(&["lac"]).inc();
        let resp = self
            .read_lac_inner(request.into_inner())
            .await
            .unwrap_or_else(|e| {
                let (code, message) = error_fields(&e);
                ReadLacResponse {
                    code,
                    message,
                    lac: -1,
                    last_entry_id: -1,
                    fenced: false,
                }
            });
        Ok(Response::new(resp))
    }

    async fn fence(
        &self,
        request: Request<FenceRequest>,
    ) -> Result<Response<FenceResponse>, Status> {
        let req = request.into_inner();
        let resp = match self.journal.fence(req.ledger_id, req.master_key).await {
            Ok(outcome) => {
                tracing::info!(ledger = req.ledger_id, lac = outcome.lac, "ledger fenced");
                FenceResponse {
                    code: ErrorCode::Ok as i32,
                    message: String::new(),
                    lac: outcome.lac,
                    last_entry_id: outcome.last_entry_id,
                }
            }
            Err(e) => {
                let (code, message) = error_fields(&e);
                FenceResponse {
                    code,
                    message,
                    lac: -1,
                    last_entry_id: -1,
                }
            }
        };
        Ok(Response::new(resp))
    }

    async fn delete_ledger(
        &self,
        request: Request<DeleteLedgerRequest>,
    ) -> Result<Response<DeleteLedgerResponse>, Status> {
        let DeleteLedgerRequest {
            ledger_id,
            master_key,
        } = request.into_inner();
        let held = self.table.get(ledger_id);
        let result = if ledger_id == 0 {
            Err(BookieError::InvalidRequest(
                "ledger id 0 is reserved".into(),
            ))
        } else if held.is_some_and(|state| state.master_key != master_key) {
            // The key is set by the ledger's first add or fence and never
            // changes, so checking it outside the journal thread is safe.
            Err(BookieError::BadMasterKey(ledger_id))
        } else {
            self.journal.delete(ledger_id).await
        };
        let (code, message) = match result {
            Ok(()) => (ErrorCode::Ok as i32, String::new()),
            Err(e) => error_fields(&e),
        };
        Ok(Response::new(DeleteLedgerResponse { code, message }))
    }

    async fn health(&self, _: Request<HealthRequest>) -> Result<Response<HealthResponse>, Status> {
        Ok(Response::new(HealthResponse {
            writable: !self.read_only.load(Ordering::Relaxed),
            bookie_id: self.bookie_id.clone(),
            free_disk_bytes: self.free_disk_bytes.load(Ordering::Relaxed),
        }))
    }
}
