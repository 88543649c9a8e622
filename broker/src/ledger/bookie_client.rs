//! The broker's side of the bookie wire: one HTTP/2 connection per bookie,
//! carrying the reads, fences and deletes of every ledger plus exactly one
//! bidirectional add stream onto which the adds of all ledgers are batched.
//!
//! One add stream per connection keeps batches large: adds are queued per
//! bookie, a driver task drains the queue into `AddBatch`es (one gRPC message
//! and one journal submission each) and matches each `AddBatchResult` (they
//! come back in submission order) to the waiting callers.
//!
//! This module owns connections, batching, time-outs and the mapping of wire
//! codes to [`BookieClientError`]. It must never retry an add or decide what a
//! failure means for a ledger: an add that timed out may or may not be stored,
//! and only the ledger writer can tell what to do next.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use magnetar_auth::PeerCredentials;
use magnetar_proto::bookie::bookie_client::BookieClient;
use magnetar_proto::bookie::{
    AddBatch, AddBatchResult, AddEntry, DeleteLedgerRequest, ErrorCode, FenceRequest,
    ReadEntriesRequest, ReadEntryRequest, ReadLacRequest,
};
use thiserror::Error;
use tokio::sync::{mpsc, oneshot, Notify};
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};
use tonic::Streaming;

use super::{EntryId, LedgerId};

/// Batches handed to the transport but not yet written to the wire; beyond
/// this the driver stops draining and HTTP/2 flow control pushes back.
const WIRE_QUEUE_BATCHES: usize = 64;
/// Bytes an entry adds to a batch besides its payload and key (ids, LAC,
/// framing); only used to size batches.
const ENTRY_OVERHEAD_BYTES: usize = 32;
/// HTTP/2 pings on idle connections, so a peer that vanished without a TCP
/// reset is noticed before the next request has to time out.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
/// How long past its deadline an add stream waits for any answer before it
/// is declared failed (see `receive_results`).
const DEADLINE_GRACE: Duration = Duration::from_secs(1);
/// Flow-control windows measured with `magnetar perf bookie`.
const STREAM_WINDOW_BYTES: u32 = 8 << 20;
const CONNECTION_WINDOW_BYTES: u32 = 32 << 20;

/// Why a bookie request failed. One variant per refusal code of the wire, so a
/// writer can tell "fenced" (stop) from "this bookie is gone" (replace it),
/// plus the two ways the bookie may never have answered.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum BookieClientError {
    #[error("ledger is fenced on the bookie")]
    Fenced,
    #[error("bookie has no such ledger")]
    NoSuchLedger,
    #[error("bookie has no such entry")]
    NoSuchEntry,
    #[error("master key does not match the ledger's")]
    BadMasterKey,
    #[error("entry is larger than the bookie accepts")]
    TooLarge,
    #[error("bookie is read-only")]
    ReadOnly,
    #[error("bookie refused the request: {0}")]
    InvalidRequest(String),
    #[error("bookie storage failure: {0}")]
    Storage(String),
    /// No answer in time; an add may or may not have been stored.
    #[error("bookie did not answer in time")]
    Timeout,
    /// The connection or stream failed, or the bookie broke the protocol.
    #[error("bookie unavailable: {0}")]
    Unavailable(String),
}

use BookieClientError as E;

impl BookieClientError {
    /// The outcome a wire `(code, message)` pair stands for.
    fn check(code: i32, message: &str) -> Result<(), Self> {
        match ErrorCode::try_from(code) {
            Ok(ErrorCode::Ok) => Ok(()),
            Ok(ErrorCode::NoSuchLedger) => Err(E::NoSuchLedger),
            Ok(ErrorCode::NoSuchEntry) => Err(E::NoSuchEntry),
            Ok(ErrorCode::Fenced) => Err(E::Fenced),
            Ok(ErrorCode::BadMasterKey) => Err(E::BadMasterKey),
            Ok(ErrorCode::TooLarge) => Err(E::TooLarge),
            Ok(ErrorCode::ReadOnly) => Err(E::ReadOnly),
            Ok(ErrorCode::InvalidRequest) => Err(E::InvalidRequest(message.to_string())),
            Ok(ErrorCode::Storage) => Err(E::Storage(message.to_string())),
            // A code from a newer bookie: treat that bookie as unusable rather
            // than guess what the refusal means for the ledger.
            Err(_) => Err(E::Unavailable(format!(
                "unknown error code {code}: {message}"
            ))),
        }
    }

    /// gRPC statuses only ever mean transport trouble here; refusals are in-band.
    fn from_status(status: &tonic::Status) -> Self {
        match status.code() {
            tonic::Code::DeadlineExceeded => E::Timeout,
            // Useless to this broker as a dead bookie is; the message says
            // which credentials to fix.
            tonic::Code::Unauthenticated | tonic::Code::PermissionDenied => {
                E::Unavailable(format!(
                    "bookie refused this broker's credentials: {}",
                    status.message()
                ))
            }
            code => E::Unavailable(format!("{code:?}: {}", status.message())),
        }
    }
}

/// Time-outs and size limits of every bookie connection.
#[derive(Clone, Debug)]
pub struct BookieClientConfig {
    /// One TCP connect attempt.
    pub connect_timeout: Duration,
    /// Reads, fences, LAC reads and deletes (a long-poll gets its own wait on top).
    pub request_timeout: Duration,
    /// From an add batch leaving the queue to its result. When it passes, every
    /// pending add of the connection fails and the connection is replaced.
    pub add_timeout: Duration,
    /// Target size of one `AddBatch`; an entry larger than this travels alone.
    pub max_batch_bytes: usize,
    /// gRPC encode/decode limit; must exceed the largest entry plus framing.
    pub max_message_bytes: usize,
    /// The token this broker presents to bookies that require one.
    pub credentials: PeerCredentials,
    /// TLS to every bookie (its certificate verified, this broker's own
    /// presented for mutual TLS); `None`: plain TCP.
    pub tls: Option<ClientTlsConfig>,
}

impl Default for BookieClientConfig {
    fn default() -> Self {
        BookieClientConfig {
            connect_timeout: Duration::from_secs(3),
            request_timeout: Duration::from_secs(5),
            add_timeout: Duration::from_secs(5),
            max_batch_bytes: 4 << 20,
            max_message_bytes: 64 << 20,
            credentials: PeerCredentials::none(),
            tls: None,
        }
    }
}

/// What a bookie knows about a ledger's tail.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LacInfo {
    /// Highest LAC a writer piggybacked to this bookie (-1: none).
    pub lac: EntryId,
    /// Highest entry stored here (-1: none).
    pub last_entry_id: EntryId,
    pub fenced: bool,
}

/// A bookie's answer to a fence: where the ledger stood when it was fenced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FenceInfo {
    pub lac: EntryId,
    pub last_entry_id: EntryId,
}

/// Connections to bookies, keyed by bookie id (`host:port`, also its gRPC
/// address). Cheap to clone; all clones share the connections.
#[derive(Clone)]
pub struct BookieClients {
    inner: Arc<Pool>,
}

struct Pool {
    config: Arc<BookieClientConfig>,
    handles: Mutex<HashMap<String, BookieHandle>>,
}

impl BookieClients {
    pub fn new(config: BookieClientConfig) -> Self {
        BookieClients {
            inner: Arc::new(Pool {
                config: Arc::new(config),
                handles: Mutex::default(),
            }),
        }
    }

    pub fn config(&self) -> &BookieClientConfig {
        &self.inner.config
    }

    /// The handle of `bookie_id`. Nothing connects until the first request; a
    /// failed connection is retried by the next request, never remembered.
    pub fn get(&self, bookie_id: &str) -> BookieHandle {
        let mut handles = lock(&self.inner.handles);
        if let Some(handle) = handles.get(bookie_id) {
            return handle.clone();
        }
        let handle = BookieHandle {
            inner: Arc::new(HandleInner {
                bookie_id: bookie_id.to_string(),
                config: self.inner.config.clone(),
                slot: Mutex::default(),
            }),
        };
        handles.insert(bookie_id.to_string(), handle.clone());
        handle
    }

    /// Drops the pool's connection to `bookie_id` (e.g. a bookie that left the
    /// cluster). Adds already queued still get their answers; a handle cloned
    /// earlier reconnects if used again.
    pub fn forget(&self, bookie_id: &str) {
        let removed = lock(&self.inner.handles).remove(bookie_id);
        if let Some(handle) = removed {
            lock(&handle.inner.slot).current = None;
        }
    }
}

impl fmt::Debug for BookieClients {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let handles = lock(&self.inner.handles);
        f.debug_struct("BookieClients")
            .field("bookies", &handles.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// Requests to one bookie. Clones share its connection and add stream.
#[derive(Clone)]
pub struct BookieHandle {
    inner: Arc<HandleInner>,
}

impl fmt::Debug for BookieHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("BookieHandle")
            .field(&self.inner.bookie_id)
            .finish()
    }
}

struct HandleInner {
    bookie_id: String,
    config: Arc<BookieClientConfig>,
    slot: Mutex<ConnectionSlot>,
}

#[derive(Default)]
struct ConnectionSlot {
    next_generation: u64,
    current: Option<Connection>,
}

/// One HTTP/2 connection (tonic reconnects it lazily) and, once the first add
/// came, the queue of its add stream's driver.
struct Connection {
    /// Lets a failed driver clear its own connection and never a newer one.
    generation: u64,
    channel: Channel,
    adds: Option<mpsc::UnboundedSender<QueuedAdd>>,
}

/// A bookie stub that presents this broker's credentials on every call.
type Rpc = BookieClient<InterceptedService<Channel, PeerCredentials>>;

type AddReply = oneshot::Sender<Result<(), BookieClientError>>;

struct QueuedAdd {
    entry: AddEntry,
    size: usize,
    reply: AddReply,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Nothing panics while holding these locks; a poisoned one is still sound.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl BookieHandle {
    pub fn bookie_id(&self) -> &str {
        &self.inner.bookie_id
    }

    /// Queues `entry` on this bookie's add stream at once, so the order of
    /// calls is the order on the wire, and returns a future of its result:
    /// the bookie's answer, [`BookieClientError::Timeout`] after `add_timeout`,
    /// or [`BookieClientError::Unavailable`] if the stream broke. Either
    /// failure fails every add pending on the connection and replaces it.
    pub fn add(
        &self,
        entry: AddEntry,
    ) -> impl Future<Output = Result<(), BookieClientError>> + Send + 'static {
        let queued = self.inner.enqueue(entry);
        async move {
            match queued {
                Ok(done) => done
                    .await
                    .unwrap_or_else(|_| Err(E::Unavailable("add stream dropped the entry".into()))),
                Err(e) => Err(e),
            }
        }
    }

    pub async fn read_entry(
        &self,
        ledger_id: LedgerId,
        entry_id: EntryId,
    ) -> Result<Bytes, BookieClientError> {
        let request = ReadEntryRequest {
            ledger_id,
            entry_id,
        };
        let response = self
            .inner
            .call(self.inner.config.request_timeout, |mut client| async move {
                client.read_entry(request).await
            })
            .await?;
        E::check(response.code, &response.message)?;
        Ok(response.payload)
    }

    /// Entries `first..=last` in order. The bookie stops early at a missing
    /// entry or at `max_bytes` (0: its own cap), so the result may be shorter;
    /// it is [`BookieClientError::NoSuchEntry`] when `first` itself is missing.
    pub async fn read_entries(
        &self,
        ledger_id: LedgerId,
        first: EntryId,
        last: EntryId,
        max_bytes: u64,
    ) -> Result<Vec<(EntryId, Bytes)>, BookieClientError> {
        let request = ReadEntriesRequest {
            ledger_id,
            first_entry_id: first,
            last_entry_id: last,
            max_bytes,
        };
        let response = self
            .inner
            .call(self.inner.config.request_timeout, |mut client| async move {
                client.read_entries(request).await
            })
            .await?;
        E::check(response.code, &response.message)?;
        // Callers index by position; hold the bookie to a contiguous prefix.
        let contiguous = response.entries.iter().enumerate().all(|(i, entry)| {
            let expected = i64::try_from(i).ok().and_then(|i| first.checked_add(i));
            expected == Some(entry.entry_id) && entry.entry_id <= last
        });
        if !contiguous {
            return Err(E::Unavailable(format!(
                "bookie answered a read of [{first}, {last}] of ledger {ledger_id} out of range"
            )));
        }
        Ok(response
            .entries
            .into_iter()
            .map(|entry| (entry.entry_id, entry.payload))
            .collect())
    }

    /// The bookie's view of the ledger's tail. With `wait_past`, long-polls
    /// until its LAC passes that entry, the ledger is fenced, or `timeout`
    /// passes (then it answers with what it has).
    pub async fn read_lac(
        &self,
        ledger_id: LedgerId,
        wait_past: Option<EntryId>,
        timeout: Duration,
    ) -> Result<LacInfo, BookieClientError> {
        let request = ReadLacRequest {
            ledger_id,
            wait_past,
            timeout_ms: u32::try_from(timeout.as_millis()).unwrap_or(u32::MAX),
        };
        let bound = match wait_past {
            Some(_) => timeout.saturating_add(self.inner.config.request_timeout),
            None => self.inner.config.request_timeout,
        };
        let response = self
            .inner
            .call(
                bound,
                |mut client| async move { client.read_lac(request).await },
            )
            .await?;
        E::check(response.code, &response.message)?;
        Ok(LacInfo {
            lac: response.lac,
            last_entry_id: response.last_entry_id,
            fenced: response.fenced,
        })
    }

    /// Durably fences the ledger on this bookie (also one it never saw), so
    /// every later add without the recovery flag is refused.
    pub async fn fence(
        &self,
        ledger_id: LedgerId,
        master_key: Bytes,
    ) -> Result<FenceInfo, BookieClientError> {
        let request = FenceRequest {
            ledger_id,
            master_key,
        };
        let response = self
            .inner
            .call(self.inner.config.request_timeout, |mut client| async move {
                client.fence(request).await
            })
            .await?;
        E::check(response.code, &response.message)?;
        Ok(FenceInfo {
            lac: response.lac,
            last_entry_id: response.last_entry_id,
        })
    }

    pub async fn delete_ledger(
        &self,
        ledger_id: LedgerId,
        master_key: Bytes,
    ) -> Result<(), BookieClientError> {
        let request = DeleteLedgerRequest {
            ledger_id,
            master_key,
        };
        let response = self
            .inner
            .call(self.inner.config.request_timeout, |mut client| async move {
                client.delete_ledger(request).await
            })
            .await?;
        E::check(response.code, &response.message)
    }
}

impl HandleInner {
    /// A new lazily connecting channel; nothing touches the network yet.
    fn connect(&self, slot: &mut ConnectionSlot) -> Result<Connection, BookieClientError> {
        // The channel spawns its worker on the current runtime.
        tokio::runtime::Handle::try_current()
            .map_err(|_| E::Unavailable("bookie client used outside a tokio runtime".into()))?;
        let scheme = if self.config.tls.is_some() {
            "https"
        } else {
            "http"
        };
        let mut endpoint = Endpoint::from_shared(format!("{scheme}://{}", self.bookie_id))
            .map_err(|e| E::Unavailable(format!("bad bookie address {}: {e}", self.bookie_id)))?;
        if let Some(tls) = &self.config.tls {
            endpoint = endpoint
                .tls_config(tls.clone())
                .map_err(|e| E::Unavailable(format!("TLS to bookie {}: {e}", self.bookie_id)))?;
        }
        let endpoint = endpoint
            .connect_timeout(self.config.connect_timeout)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
            .keep_alive_timeout(self.config.request_timeout)
            .keep_alive_while_idle(true)
            .initial_stream_window_size(STREAM_WINDOW_BYTES)
            .initial_connection_window_size(CONNECTION_WINDOW_BYTES);
        slot.next_generation += 1;
        Ok(Connection {
            generation: slot.next_generation,
            channel: endpoint.connect_lazy(),
            adds: None,
        })
    }

    fn client(&self) -> Result<Rpc, BookieClientError> {
        let mut slot = lock(&self.slot);
        let channel = match &slot.current {
            Some(connection) => connection.channel.clone(),
            None => {
                let connection = self.connect(&mut slot)?;
                let channel = connection.channel.clone();
                slot.current = Some(connection);
                channel
            }
        };
        Ok(stub(channel, &self.config))
    }

    /// One unary RPC bounded by `bound`.
    async fn call<T, F>(
        &self,
        bound: Duration,
        rpc: impl FnOnce(Rpc) -> F,
    ) -> Result<T, BookieClientError>
    where
        F: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let client = self.client()?;
        match tokio::time::timeout(bound, rpc(client)).await {
            Ok(Ok(response)) => Ok(response.into_inner()),
            Ok(Err(status)) => Err(E::from_status(&status)),
            Err(_) => Err(E::Timeout),
        }
    }

    /// Puts `entry` on the current add stream, starting one (and a connection)
    /// if there is none or the current one has failed.
    fn enqueue(
        self: &Arc<Self>,
        entry: AddEntry,
    ) -> Result<oneshot::Receiver<Result<(), BookieClientError>>, BookieClientError> {
        let size = entry.payload.len() + entry.master_key.len() + ENTRY_OVERHEAD_BYTES;
        if size > self.config.max_message_bytes {
            // It could never be encoded; sending it would break the stream for all.
            return Err(E::TooLarge);
        }
        let (reply, done) = oneshot::channel();
        let mut add = QueuedAdd { entry, size, reply };
        let mut slot = lock(&self.slot);
        if let Some(adds) = slot.current.as_ref().and_then(|c| c.adds.as_ref()) {
            match adds.send(add) {
                Ok(()) => return Ok(done),
                // Its driver failed and closed the queue: replace the connection
                // too, it may be the wedged part.
                Err(mpsc::error::SendError(back)) => {
                    add = back;
                    slot.current = None;
                }
            }
        }
        // add() is not async, so nothing guarantees a runtime to spawn on.
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| E::Unavailable("bookie client used outside a tokio runtime".into()))?;
        let mut connection = match slot.current.take() {
            Some(connection) => connection,
            None => self.connect(&mut slot)?,
        };
        let (adds, queue) = mpsc::unbounded_channel();
        if adds.send(add).is_err() {
            return Err(E::Unavailable("add queue closed".into()));
        }
        runtime.spawn(drive_add_stream(
            Arc::downgrade(self),
            connection.generation,
            connection.channel.clone(),
            self.config.clone(),
            queue,
        ));
        connection.adds = Some(adds);
        slot.current = Some(connection);
        Ok(done)
    }

    /// Forgets the connection of `generation` if it is still the current one,
    /// so the next request connects afresh.
    fn reset(&self, generation: u64) {
        let mut slot = lock(&self.slot);
        if slot.current.as_ref().map(|c| c.generation) == Some(generation) {
            slot.current = None;
        }
    }
}

/// A batch on the wire, waiting for its result.
struct SentBatch {
    batch_id: u64,
    deadline: Instant,
    waiters: Vec<AddReply>,
}

/// Batches sent and not yet answered, oldest first (the bookie answers in
/// submission order), shared by the sending and the receiving half.
#[derive(Default)]
struct InFlight {
    batches: Mutex<VecDeque<SentBatch>>,
    /// Tells the receiving half that a deadline appeared after an idle spell.
    armed: Notify,
}

impl InFlight {
    fn push(&self, batch: SentBatch) {
        let mut batches = lock(&self.batches);
        let was_idle = batches.is_empty();
        batches.push_back(batch);
        drop(batches);
        if was_idle {
            self.armed.notify_one();
        }
    }

    fn oldest_deadline(&self) -> Option<Instant> {
        lock(&self.batches).front().map(|b| b.deadline)
    }

    fn is_empty(&self) -> bool {
        lock(&self.batches).is_empty()
    }

    /// Hands a batch result to its waiters; anything but the answer to the
    /// oldest batch, entry for entry, breaks the protocol.
    fn complete(&self, result: AddBatchResult) -> Result<(), BookieClientError> {
        let batch = {
            let mut batches = lock(&self.batches);
            match batches.pop_front() {
                Some(batch)
                    if batch.batch_id == result.batch_id
                        && batch.waiters.len() == result.results.len() =>
                {
                    batch
                }
                Some(batch) => {
                    let expected = (batch.batch_id, batch.waiters.len());
                    batches.push_front(batch);
                    return Err(E::Unavailable(format!(
                        "bookie answered batch {} with {} results, expected batch {} with {}",
                        result.batch_id,
                        result.results.len(),
                        expected.0,
                        expected.1
                    )));
                }
                None => {
                    return Err(E::Unavailable(format!(
                        "bookie answered batch {} that was never sent",
                        result.batch_id
                    )))
                }
            }
        };
        for (waiter, entry) in batch.waiters.into_iter().zip(result.results) {
            // A caller that dropped its future no longer wants the answer.
            let _ = waiter.send(E::check(entry.code, &entry.message));
        }
        Ok(())
    }

    fn take_all(&self) -> VecDeque<SentBatch> {
        std::mem::take(&mut *lock(&self.batches))
    }
}

/// Runs one add stream until it fails or its queue closes (the connection was
/// forgotten). On failure, fails every add queued or in flight with the error
/// and clears the connection so the next request reconnects.
async fn drive_add_stream(
    owner: Weak<HandleInner>,
    generation: u64,
    channel: Channel,
    config: Arc<BookieClientConfig>,
    mut queue: mpsc::UnboundedReceiver<QueuedAdd>,
) {
    let in_flight = InFlight::default();
    let mut carry = None;
    let outcome = run_add_stream(&in_flight, &mut queue, &mut carry, channel, &config).await;
    let Err(error) = outcome else {
        return;
    };
    // Refuse new adds first: an add() racing with us then starts a new stream.
    queue.close();
    if let Some(owner) = owner.upgrade() {
        tracing::warn!(bookie = %owner.bookie_id, %error, "add stream failed; failing its pending adds");
        owner.reset(generation);
    }
    for batch in in_flight.take_all() {
        for waiter in batch.waiters {
            let _ = waiter.send(Err(error.clone()));
        }
    }
    if let Some(add) = carry {
        let _ = add.reply.send(Err(error.clone()));
    }
    while let Ok(add) = queue.try_recv() {
        let _ = add.reply.send(Err(error.clone()));
    }
}

fn stub(channel: Channel, config: &BookieClientConfig) -> Rpc {
    BookieClient::with_interceptor(channel, config.credentials.clone())
        .max_decoding_message_size(config.max_message_bytes)
        .max_encoding_message_size(config.max_message_bytes)
}

/// Opens the stream, then sends and receives concurrently. `Ok` only when the
/// queue closed and every batch was answered.
async fn run_add_stream(
    in_flight: &InFlight,
    queue: &mut mpsc::UnboundedReceiver<QueuedAdd>,
    carry: &mut Option<QueuedAdd>,
    channel: Channel,
    config: &BookieClientConfig,
) -> Result<(), BookieClientError> {
    let mut client = stub(channel, config);
    let (batches, wire) = mpsc::channel(WIRE_QUEUE_BATCHES);
    // Queued adds wait for this, so it gets the adds' time-out.
    let opened = tokio::time::timeout(
        config.add_timeout,
        client.add_entries(ReceiverStream::new(wire)),
    )
    .await;
    let results = match opened {
        Ok(Ok(response)) => response.into_inner(),
        Ok(Err(status)) => return Err(E::from_status(&status)),
        Err(_) => return Err(E::Timeout),
    };
    let send = send_batches(in_flight, queue, carry, batches, config);
    let receive = receive_results(in_flight, results);
    tokio::pin!(send, receive);
    let mut sending = true;
    loop {
        tokio::select! {
            sent = &mut send, if sending => {
                sent?;
                // Queue closed; dropping the sender ends the request stream
                // and the bookie ends its answers after the last batch.
                sending = false;
            }
            received = &mut receive => {
                received?;
                if sending {
                    return Err(E::Unavailable("bookie ended the add stream".into()));
                }
                return Ok(());
            }
        }
    }
}

/// Drains everything queued (up to `max_batch_bytes`) into one batch per
/// wake-up, so a burst of adds costs one message and one fsync round.
async fn send_batches(
    in_flight: &InFlight,
    queue: &mut mpsc::UnboundedReceiver<QueuedAdd>,
    carry: &mut Option<QueuedAdd>,
    batches: mpsc::Sender<AddBatch>,
    config: &BookieClientConfig,
) -> Result<(), BookieClientError> {
    // A batch must also fit one gRPC message, whatever the configuration says.
    let limit = config.max_batch_bytes.min(config.max_message_bytes);
    let mut next_batch_id = 0u64;
    loop {
        let first = match carry.take() {
            Some(add) => add,
            None => match queue.recv().await {
                Some(add) => add,
                None => return Ok(()),
            },
        };
        let mut bytes = first.size;
        let mut entries = vec![first.entry];
        let mut waiters = vec![first.reply];
        while bytes < limit {
            match queue.try_recv() {
                Ok(add) if bytes + add.size > limit => {
                    *carry = Some(add);
                    break;
                }
                Ok(add) => {
                    bytes += add.size;
                    entries.push(add.entry);
                    waiters.push(add.reply);
                }
                Err(_) => break,
            }
        }
        let batch_id = next_batch_id;
        next_batch_id += 1;
        // Registered before the send, so a batch stuck behind flow control
        // still times out.
        in_flight.push(SentBatch {
            batch_id,
            deadline: Instant::now() + config.add_timeout,
            waiters,
        });
        if batches.send(AddBatch { batch_id, entries }).await.is_err() {
            return Err(E::Unavailable("add stream closed by the transport".into()));
        }
    }
}

/// Matches results to batches and enforces the oldest batch's deadline.
async fn receive_results(
    in_flight: &InFlight,
    mut results: Streaming<AddBatchResult>,
) -> Result<(), BookieClientError> {
    loop {
        let next = match in_flight.oldest_deadline() {
            Some(deadline) => tokio::select! {
                next = results.next() => next,
                () = tokio::time::sleep_until(deadline) => {
                    // A process that was paused (SIGSTOP, a VM freeze) wakes
                    // with every timer expired and the answers unread, and a
                    // bookie in the same process has not run either: only a
                    // bookie that stays silent a while longer has failed.
                    match tokio::time::timeout(DEADLINE_GRACE, results.next()).await {
                        Ok(next) => next,
                        Err(_) => return Err(E::Timeout),
                    }
                }
            },
            None => tokio::select! {
                next = results.next() => next,
                () = in_flight.armed.notified() => continue,
            },
        };
        match next {
            Some(Ok(result)) => in_flight.complete(result)?,
            Some(Err(status)) => return Err(E::from_status(&status)),
            None if in_flight.is_empty() => return Ok(()),
            None => {
                return Err(E::Unavailable(
                    "bookie ended the add stream with adds pending".into(),
                ))
            }
        }
    }
}
