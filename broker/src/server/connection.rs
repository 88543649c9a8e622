//! One client connection: reads frames, runs commands, writes replies.
//!
//! A writer task owns the socket's write half and drains one channel, which
//! this connection and the dispatchers of its consumers share; it writes many
//! frames per syscall. Publish receipts are sent in SEND order per connection
//! (a `FuturesOrdered`), and the socket is not read while too many SENDs are
//! in flight, or while a topic it published to is over its publish rate,
//! which pushes back on the producer through TCP.
//!
//! The outbound queue is bounded in bytes ([`OutboundQueue`]): while it is
//! over its bound the socket is not read either (a client flooding PINGs
//! without reading PONGs fills it and then waits on TCP) and dispatch to its
//! consumers stops. A client that reads nothing for the write timeout while
//! frames wait for it is disconnected.
//!
//! Bad input never outlives its connection: a malformed frame, a command
//! before CONNECT or an unknown command closes this connection only; a bad
//! checksum or an oversized message fails that one SEND.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::stream::FuturesOrdered;
use futures::{Future, SinkExt, StreamExt};
use pulsar::proto::base_command::Type;
use pulsar::proto::{BaseCommand, ServerError};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio_util::codec::{FramedRead, FramedWrite};

use crate::auth::TopicOperation;
use crate::protocol::{
    commands, outbound_queue, CorruptFrame, Decoded, Frame, Outbound, OutboundFrames,
    OutboundQueue, PulsarCodec,
};
use crate::storage::{Position, StorageError};
use crate::topic::{BrokerService, ServiceError, Subscription, Topic};

/// Highest protocol version this broker speaks (v19: transactions' client
/// connect; nothing past it is used).
pub(super) const MAX_PROTOCOL_VERSION: i32 = 19;

/// Why a connection is closed.
#[derive(Debug, thiserror::Error)]
pub(super) enum ConnectionError {
    #[error("{0:?} before CONNECT")]
    NotConnected(Type),
    #[error("unknown or unsupported command type {0}")]
    UnknownCommand(i32),
    #[error("{0:?} frame without its command body")]
    MissingBody(Type),
    #[error("SEND without a message")]
    SendWithoutPayload,
    #[error("{0}")]
    AuthenticationFailed(String),
}

/// What the ordered receipt queue yields: a send's outcome, or a close of
/// its producer that the broker decided, queued behind the receipts of the
/// sends before it.
pub(super) enum Receipt {
    /// Producer id, sequence id, highest sequence id, where it was stored.
    Send(u64, u64, u64, Result<Position, StorageError>),
    /// Tell the client the broker closed this producer (CLOSE_PRODUCER).
    Closed(u64),
}
type ReceiptFuture = Pin<Box<dyn Future<Output = Receipt> + Send>>;

/// A producer this connection created.
pub(super) struct ProducerState {
    pub topic: Arc<Topic>,
    /// Which creation of this producer id it is, so a close the topic
    /// asked for reaches only the producer it was meant for.
    pub generation: u64,
    /// A send failed in a way that makes the client resend everything it
    /// has pending: later sends are refused until the producer is created
    /// again, so none of them is stored ahead of those resends.
    pub failed: bool,
}

/// A consumer this connection created.
pub(super) struct ConsumerState {
    pub topic: Arc<Topic>,
    pub subscription: Arc<Subscription>,
}

/// Results of work done off the connection task.
pub(super) enum Event {
    ProducerReady {
        producer_id: u64,
        request_id: u64,
        producer_name: String,
        result: Result<Arc<Topic>, ServiceError>,
    },
    ConsumerReady {
        consumer_id: u64,
        request_id: u64,
        result: Result<(Arc<Topic>, Arc<Subscription>), ServiceError>,
    },
    /// The topic closes this producer (backlog quota, unload, deletion).
    CloseProducer { producer_id: u64, generation: u64 },
}

pub(super) struct Connection {
    pub id: u64,
    pub peer: SocketAddr,
    pub local: SocketAddr,
    /// Came in over TLS (`pulsar+ssl://`), so lookups answer with TLS URLs.
    pub tls: bool,
    pub service: Arc<BrokerService>,
    pub outbound: OutboundQueue,
    pub events: mpsc::UnboundedSender<Event>,
    pub producers: HashMap<u64, ProducerState>,
    pub consumers: HashMap<u64, ConsumerState>,
    pub receipts: FuturesOrdered<ReceiptFuture>,
    /// Producers created on this connection so far.
    pub producer_generations: u64,
    /// Set while a topic this connection published to is over its publish
    /// rate: the socket is not read until then (Pulsar's throttling, which
    /// slows only these producers, through TCP).
    pub paused_until: Option<tokio::time::Instant>,
    /// The role CONNECT's token proved; `None` while auth is off.
    pub role: Option<String>,
    pub credentials: Credentials,
    connected: bool,
}

/// How long the connection's token holds, and whether it was challenged.
#[derive(Debug, Default)]
pub(super) struct Credentials {
    /// Seconds since the epoch; `None`: never (or auth is off).
    pub expires_at: Option<u64>,
    /// CONNECT's feature flags said the client answers AUTH_CHALLENGE.
    pub supports_refresh: bool,
    /// An AUTH_CHALLENGE is out, unanswered.
    pub challenged: bool,
}

/// A client's socket, as accepted or after its TLS handshake.
pub(super) enum Transport {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

type ReadStream = Box<dyn AsyncRead + Send + Unpin>;
type WriteStream = Box<dyn AsyncWrite + Send + Unpin>;

impl Transport {
    fn tcp(&self) -> &TcpStream {
        match self {
            Transport::Plain(socket) => socket,
            Transport::Tls(stream) => stream.get_ref().0,
        }
    }

    /// Halves the reader and the writer task own.
    fn split(self) -> (ReadStream, WriteStream) {
        match self {
            Transport::Plain(socket) => {
                let (read, write) = socket.into_split();
                (Box::new(read), Box::new(write))
            }
            Transport::Tls(stream) => {
                let (read, write) = tokio::io::split(*stream);
                (Box::new(read), Box::new(write))
            }
        }
    }
}

pub(super) async fn serve(
    id: u64,
    transport: Transport,
    peer: SocketAddr,
    service: Arc<BrokerService>,
    mut shutdown: watch::Receiver<bool>,
) {
    let _ = transport.tcp().set_nodelay(true);
    let local = match transport.tcp().local_addr() {
        Ok(addr) => addr,
        Err(_) => return,
    };
    let tls = matches!(transport, Transport::Tls(_));
    let max_frame = service.config().max_message_size + 10 * 1024;
    let (read_half, write_half) = transport.split();
    let mut reader = FramedRead::new(read_half, PulsarCodec::new(max_frame));
    // Outbound frames carry stored entries, which may be a little larger
    // than what one SEND may carry.
    let writer = FramedWrite::new(write_half, PulsarCodec::new(max_frame + 64 * 1024));
    let (outbound, outbound_rx) =
        outbound_queue(service.config().max_outbound_bytes_per_connection);
    let drained = Arc::new(tokio::sync::Notify::new());
    outbound.wake_on_drain(&drained);
    let mut writer_task = tokio::spawn(write_loop(
        writer,
        outbound_rx,
        service.config().connection_write_timeout,
    ));
    let mut writer_done = false;
    let (events, mut events_rx) = mpsc::unbounded_channel();
    let max_pending = service.config().max_pending_sends_per_connection;
    let mut conn = Connection {
        id,
        peer,
        local,
        tls,
        service,
        outbound,
        events,
        producers: HashMap::new(),
        consumers: HashMap::new(),
        receipts: FuturesOrdered::new(),
        producer_generations: 0,
        paused_until: None,
        role: None,
        credentials: Credentials::default(),
        connected: false,
    };
    let refresh_check = conn
        .service
        .config()
        .auth
        .as_ref()
        .map(|auth| auth.refresh_check);
    let mut refresh = tokio::time::interval(refresh_check.unwrap_or(Duration::from_secs(3600)));
    refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tracing::debug!(connection = id, %peer, "connection accepted");
    conn.service.metrics().connections.inc();
    loop {
        tokio::select! {
            biased;
            Some(receipt) = conn.receipts.next(), if !conn.receipts.is_empty() => conn.on_receipt(receipt),
            Some(event) = events_rx.recv() => conn.on_event(event).await,
            _ = tokio::time::sleep_until(conn.paused_until.unwrap_or_else(tokio::time::Instant::now)), if conn.paused_until.is_some() => {
                conn.paused_until = None;
            }
            // Woken when the client has read enough of what waits for it.
            _ = drained.notified(), if conn.outbound.is_full() => {}
            _ = refresh.tick(), if refresh_check.is_some() && conn.connected => {
                if let Err(reason) = conn.check_credentials() {
                    tracing::warn!(connection = id, %peer, role = ?conn.role, %reason, "closing connection");
                    conn.send(commands::error(u64::MAX, ServerError::AuthenticationError, reason));
                    break;
                }
            }
            result = &mut writer_task => {
                writer_done = true;
                if let Ok(WriterExit::Stalled(waited)) = result {
                    conn.service.metrics().connections_stalled.inc();
                    tracing::warn!(connection = id, %peer, ?waited, queued = conn.outbound.queued(), "closing connection: the client has not read what was sent to it");
                }
                break;
            }
            frame = reader.next(), if conn.receipts.len() < max_pending && conn.paused_until.is_none() && !conn.outbound.is_full() => match frame {
                None => break,
                Some(Err(e)) => {
                    tracing::warn!(connection = id, %peer, error = %e, "closing connection: bad frame");
                    break;
                }
                Some(Ok(Decoded::Frame(frame))) => {
                    // A bug that a command reaches must cost this connection
                    // only, and still run its cleanup below.
                    match crate::isolate::caught(conn.handle(*frame)).await {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => {
                            tracing::warn!(connection = id, %peer, error = %e, "closing connection");
                            break;
                        }
                        Err(panic) => {
                            tracing::error!(connection = id, %peer, %panic, "closing connection: a command handler panicked");
                            break;
                        }
                    }
                }
                Some(Ok(Decoded::Corrupt(corrupt))) => conn.on_corrupt(*corrupt),
            },
            _ = shutdown.changed() => break,
        }
    }
    // Let receipts already earned go out before closing.
    while let Some(receipt) = conn.receipts.next().await {
        conn.on_receipt(receipt);
    }
    events_rx.close();
    while let Some(event) = events_rx.recv().await {
        conn.on_event(event).await;
    }
    conn.release_all().await;
    conn.service.metrics().connections.dec();
    drop(conn);
    if !writer_done {
        let _ = writer_task.await;
    }
    tracing::debug!(connection = id, %peer, "connection closed");
}

/// Bytes written per flush at most, so that the write timeout measures how
/// long the client takes to read this much, not the whole queue.
const MAX_WRITE_BATCH: usize = 256 * 1024;

/// Why the writer stopped.
enum WriterExit {
    /// Every sender is gone, or the socket failed.
    Done,
    /// The client read nothing of a batch for this long.
    Stalled(Duration),
}

async fn write_loop(
    mut sink: FramedWrite<WriteStream, PulsarCodec>,
    mut frames: OutboundFrames,
    write_timeout: Duration,
) -> WriterExit {
    while let Some((frame, mut batch)) = frames.recv().await {
        let write = async {
            sink.feed(frame).await?;
            while batch < MAX_WRITE_BATCH {
                let Some((frame, bytes)) = frames.try_recv() else {
                    break;
                };
                batch += bytes;
                sink.feed(frame).await?;
            }
            SinkExt::<Outbound>::flush(&mut sink).await
        };
        match tokio::time::timeout(write_timeout, write).await {
            Ok(Ok(())) => frames.written(batch),
            Ok(Err(_)) => return WriterExit::Done,
            Err(_) => return WriterExit::Stalled(write_timeout),
        }
    }
    let _ = SinkExt::<Outbound>::close(&mut sink).await;
    WriterExit::Done
}

/// Takes a command's body or closes the connection.
macro_rules! body {
    ($command:expr, $field:ident, $type:expr) => {
        $command
            .$field
            .take()
            .ok_or(ConnectionError::MissingBody($type))?
    };
}

impl Connection {
    pub fn send(&self, frame: Outbound) {
        let _ = self.outbound.send(frame);
    }

    async fn handle(&mut self, frame: Frame) -> Result<(), ConnectionError> {
        let Frame {
            mut command,
            payload,
        } = frame;
        let kind = Type::try_from(command.r#type)
            .map_err(|_| ConnectionError::UnknownCommand(command.r#type))?;
        if !self.connected && kind != Type::Connect {
            return Err(ConnectionError::NotConnected(kind));
        }
        match kind {
            Type::Connect => {
                let connect = body!(command, connect, kind);
                // A refused client is told why, then the connection closes
                // before anything else is read from it.
                match self.authenticate(&connect) {
                    Ok(token) => {
                        self.credentials = Credentials {
                            expires_at: token.as_ref().and_then(|t| t.expires_at),
                            supports_refresh: connect
                                .feature_flags
                                .as_ref()
                                .and_then(|f| f.supports_auth_refresh)
                                .unwrap_or(false),
                            challenged: false,
                        };
                        self.role = token.map(|t| t.role);
                    }
                    Err(reason) => {
                        self.send(commands::error(
                            u64::MAX,
                            ServerError::AuthenticationError,
                            reason.clone(),
                        ));
                        return Err(ConnectionError::AuthenticationFailed(reason));
                    }
                }
                let version = connect
                    .protocol_version
                    .unwrap_or(0)
                    .min(MAX_PROTOCOL_VERSION);
                self.connected = true;
                tracing::debug!(connection = self.id, client = %connect.client_version, version, role = ?self.role, "connected");
                self.send(commands::connected(
                    version,
                    self.service.config().max_message_size,
                ));
            }
            Type::Ping => self.send(commands::pong()),
            Type::AuthResponse => {
                let response = body!(command, auth_response, kind);
                if let Err(reason) = self.on_auth_response(response) {
                    self.send(commands::error(
                        u64::MAX,
                        ServerError::AuthenticationError,
                        reason.clone(),
                    ));
                    return Err(ConnectionError::AuthenticationFailed(reason));
                }
            }
            Type::Pong => {}
            Type::Lookup => {
                let lookup = body!(command, lookup_topic, kind);
                match self
                    .authorize_topic(&lookup.topic, TopicOperation::Lookup)
                    .await
                {
                    Ok(()) => self.lookup(lookup),
                    Err(r) => self.send(commands::lookup_failed(
                        lookup.request_id,
                        r.error,
                        r.message,
                    )),
                }
            }
            Type::PartitionedMetadata => {
                let request = body!(command, partition_metadata, kind);
                match self
                    .authorize_topic(&request.topic, TopicOperation::Lookup)
                    .await
                {
                    Ok(()) => self.partitioned_metadata(request).await,
                    Err(r) => self.send(commands::partitioned_metadata_failed(
                        request.request_id,
                        r.error,
                        r.message,
                    )),
                }
            }
            Type::GetTopicsOfNamespace => {
                let request = body!(command, get_topics_of_namespace, kind);
                match self
                    .authorize_namespace_name(&request.namespace, TopicOperation::Lookup)
                    .await
                {
                    Ok(()) => self.topics_of_namespace(request).await,
                    Err(r) => self.send(commands::error(request.request_id, r.error, r.message)),
                }
            }
            Type::Producer => {
                let producer = body!(command, producer, kind);
                match self
                    .authorize_topic(&producer.topic, TopicOperation::Produce)
                    .await
                {
                    Ok(()) => self.create_producer(producer),
                    Err(r) => self.send(commands::error(producer.request_id, r.error, r.message)),
                }
            }
            Type::Send => {
                let send = body!(command, send, kind);
                let payload = payload.ok_or(ConnectionError::SendWithoutPayload)?;
                self.publish(send, payload);
            }
            Type::CloseProducer => self.close_producer(body!(command, close_producer, kind)),
            Type::Subscribe => {
                let subscribe = body!(command, subscribe, kind);
                match self
                    .authorize_topic(&subscribe.topic, TopicOperation::Consume)
                    .await
                {
                    Ok(()) => self.subscribe(subscribe),
                    Err(r) => self.send(commands::error(subscribe.request_id, r.error, r.message)),
                }
            }
            Type::Flow => self.flow(body!(command, flow, kind)),
            Type::Ack => self.ack(body!(command, ack, kind)),
            Type::RedeliverUnacknowledgedMessages => {
                self.redeliver(body!(command, redeliver_unacknowledged_messages, kind))
            }
            Type::Seek => self.seek(body!(command, seek, kind)).await,
            Type::GetLastMessageId => {
                self.last_message_id(body!(command, get_last_message_id, kind))
                    .await
            }
            Type::Unsubscribe => self.unsubscribe(body!(command, unsubscribe, kind)).await,
            Type::CloseConsumer => {
                self.close_consumer(body!(command, close_consumer, kind))
                    .await
            }
            _ => return Err(ConnectionError::UnknownCommand(command.r#type)),
        }
        Ok(())
    }

    /// A SEND whose message section is damaged: fail that SEND only.
    fn on_corrupt(&mut self, corrupt: CorruptFrame) {
        let CorruptFrame { command, reason } = corrupt;
        tracing::warn!(connection = self.id, peer = %self.peer, %reason, "rejecting corrupt message");
        if let BaseCommand {
            send: Some(send), ..
        } = command
        {
            self.send(commands::send_error(
                send.producer_id,
                send.sequence_id,
                ServerError::ChecksumError,
                reason.to_string(),
            ));
        }
    }

    async fn on_event(&mut self, event: Event) {
        match event {
            Event::ProducerReady {
                producer_id,
                request_id,
                producer_name,
                result,
            } => match result {
                Ok(topic) => {
                    self.producer_generations += 1;
                    let generation = self.producer_generations;
                    let events = self.events.clone();
                    let closer = Box::new(move || {
                        let _ = events.send(Event::CloseProducer {
                            producer_id,
                            generation,
                        });
                    });
                    if let Err(e) = topic.add_producer((self.id, producer_id), closer) {
                        tracing::warn!(connection = self.id, topic = %topic.full_name(), error = %e, "producer refused");
                        self.send(commands::error(request_id, e.server_error(), e.to_string()));
                        return;
                    }
                    tracing::debug!(connection = self.id, topic = %topic.full_name(), producer = %producer_name, "producer ready");
                    if let Some(replaced) = self.producers.insert(
                        producer_id,
                        ProducerState {
                            topic: topic.clone(),
                            generation,
                            failed: false,
                        },
                    ) {
                        if !Arc::ptr_eq(&replaced.topic, &topic) {
                            replaced.topic.remove_producer((self.id, producer_id));
                        }
                    }
                    self.send(commands::producer_success(request_id, producer_name, -1));
                }
                Err(e) => {
                    tracing::warn!(connection = self.id, error = %e, "producer refused");
                    self.send(commands::error(request_id, e.server_error(), e.to_string()));
                }
            },
            Event::CloseProducer {
                producer_id,
                generation,
            } => self.close_producer_for_topic(producer_id, generation),
            Event::ConsumerReady {
                consumer_id,
                request_id,
                result,
            } => match result {
                Ok((topic, subscription)) => {
                    if self.outbound.is_closed() {
                        topic
                            .release_consumer(&subscription, (self.id, consumer_id))
                            .await;
                        return;
                    }
                    let replaced = self.consumers.insert(
                        consumer_id,
                        ConsumerState {
                            topic,
                            subscription: subscription.clone(),
                        },
                    );
                    // Two SUBSCRIBEs with one consumer id in flight at once:
                    // the earlier one's registration must not outlive it.
                    if let Some(replaced) = replaced {
                        if !Arc::ptr_eq(&replaced.subscription, &subscription) {
                            replaced
                                .topic
                                .release_consumer(&replaced.subscription, (self.id, consumer_id))
                                .await;
                        }
                    }
                    self.send(commands::success(request_id));
                }
                Err(e) => {
                    tracing::warn!(connection = self.id, error = %e, "subscribe refused");
                    self.send(commands::error(request_id, e.server_error(), e.to_string()));
                }
            },
        }
    }

    /// Closes a producer the topic let go of: later SENDs for it are
    /// refused without being stored, and CLOSE_PRODUCER goes out after the
    /// receipts of the sends already taken, so a send reported failed by the
    /// client's reconnection was never stored.
    fn close_producer_for_topic(&mut self, producer_id: u64, generation: u64) {
        if self
            .producers
            .get(&producer_id)
            .is_none_or(|p| p.generation != generation)
        {
            return;
        }
        self.producers.remove(&producer_id);
        self.receipts
            .push_back(Box::pin(std::future::ready(Receipt::Closed(producer_id))));
    }

    fn on_receipt(&mut self, receipt: Receipt) {
        let (producer_id, sequence_id, highest, result) = match receipt {
            Receipt::Send(producer_id, sequence_id, highest, result) => {
                (producer_id, sequence_id, highest, result)
            }
            Receipt::Closed(producer_id) => {
                self.send(commands::close_producer(producer_id));
                return;
            }
        };
        match result {
            Ok(position) => self.send(commands::send_receipt(
                producer_id,
                sequence_id,
                highest,
                position,
            )),
            Err(e) => {
                self.service.metrics().send_errors.inc();
                if let (StorageError::Fenced(_), Some(producer)) =
                    (&e, self.producers.get(&producer_id))
                {
                    let (service, topic) = (self.service.clone(), producer.topic.clone());
                    tokio::spawn(async move { service.unload_fenced(&topic).await });
                }
                // NotAllowedError fails just this send in the Java client, with
                // our message; other codes make clients reconnect and resend.
                let code = match e {
                    StorageError::NotEnoughReplicas { .. } => ServerError::NotAllowedError,
                    _ => ServerError::PersistenceError,
                };
                if code == ServerError::PersistenceError {
                    if let Some(producer) = self.producers.get_mut(&producer_id) {
                        producer.failed = true;
                    }
                }
                self.send(commands::send_error(
                    producer_id,
                    sequence_id,
                    code,
                    e.to_string(),
                ))
            }
        }
    }

    /// The connection is going away: its consumers' unacknowledged messages
    /// are redelivered to others.
    async fn release_all(&mut self) {
        for (consumer_id, consumer) in self.consumers.drain() {
            consumer
                .topic
                .release_consumer(&consumer.subscription, (self.id, consumer_id))
                .await;
        }
        for (producer_id, producer) in self.producers.drain() {
            producer.topic.remove_producer((self.id, producer_id));
        }
    }
}
