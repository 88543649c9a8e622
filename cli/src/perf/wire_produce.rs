//! `magnetar perf produce --wire`: publishes pre-built batches straight over
//! the Pulsar protocol (Magnetar's own codec, one connection per producer,
//! several batches in flight), so the figure is the broker's and not a
//! client library's. Each batch is a real Pulsar batch (MessageMetadata with
//! `num_messages_in_batch`, SingleMessageMetadata per message, CRC32C), the
//! same bytes a client would send; only the per-message client work (copies,
//! callbacks, allocation) is skipped.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use bytes::{BufMut, Bytes, BytesMut};
use futures::{SinkExt, StreamExt};
use magnetar_broker::protocol::{Decoded, Frame, PulsarCodec};
use prost013::Message as _;
use pulsar::proto::base_command::Type;
use pulsar::proto::{
    BaseCommand, CommandConnect, CommandProducer, CommandSend, MessageMetadata,
    SingleMessageMetadata,
};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio_util::codec::Framed;

use super::report::Load;

/// A connection to the broker: plain TCP, or TLS over it.
trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

type Connection = Framed<Box<dyn Io>, PulsarCodec>;

/// Where the broker is, as a `pulsar://` or `pulsar+ssl://` URL names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WireAddress {
    /// `host:port`.
    pub address: String,
    pub tls: bool,
}

/// What one wire producer sends.
#[derive(Clone)]
pub struct WireProducer {
    pub address: String,
    /// TLS to the broker (`pulsar+ssl://`), verified against the CAs given.
    pub tls: Option<tokio_rustls::TlsConnector>,
    pub topic: String,
    pub message_size: usize,
    pub messages_per_batch: u32,
    /// Batches awaiting their receipt.
    pub window: usize,
    /// Batches per second for this producer; 0 = unlimited.
    pub batches_per_second: f64,
    /// Batches carry keys `key-0..key-{keys-1}` in turn; 0 = no key.
    pub keys: u32,
}

/// `pulsar://host:port` or `pulsar+ssl://host:port`.
pub fn address_of(url: &str) -> Result<WireAddress> {
    let (rest, tls) = match url.strip_prefix("pulsar+ssl://") {
        Some(rest) => (rest, true),
        None => (url.strip_prefix("pulsar://").unwrap_or(""), false),
    };
    let address = rest.trim_end_matches('/').to_string();
    if address.is_empty() {
        bail!("--wire needs a pulsar:// or pulsar+ssl:// host:port URL, got {url}");
    }
    Ok(WireAddress { address, tls })
}

/// TLS to brokers whose certificates chain to the CAs in `trust` (PEM).
pub fn tls_connector(trust: &std::path::Path) -> Result<tokio_rustls::TlsConnector> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_file_iter(trust)
        .with_context(|| format!("reading {}", trust.display()))?
    {
        roots
            .add(cert.with_context(|| format!("reading {}", trust.display()))?)
            .with_context(|| format!("a CA certificate in {}", trust.display()))?;
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

/// A batch of `count` messages of `size` bytes in Pulsar's batch format.
fn batch_payload(size: usize, count: u32) -> Bytes {
    let single = SingleMessageMetadata {
        payload_size: size as i32,
        ..Default::default()
    };
    let mut buf = BytesMut::with_capacity(count as usize * (size + 16));
    for i in 0..count {
        buf.put_u32(single.encoded_len() as u32);
        single.encode(&mut buf).expect("BytesMut grows");
        buf.extend((0..size).map(|b| (b as u32 ^ i) as u8));
    }
    buf.freeze()
}

fn command(r#type: Type, fill: impl FnOnce(&mut BaseCommand)) -> Frame {
    let mut c = BaseCommand {
        r#type: r#type as i32,
        ..Default::default()
    };
    fill(&mut c);
    Frame::command(c)
}

async fn next_command(framed: &mut Connection) -> Result<BaseCommand> {
    match framed.next().await {
        Some(Ok(Decoded::Frame(frame))) => Ok(frame.command),
        Some(Ok(Decoded::Corrupt(c))) => bail!("corrupt frame from broker: {}", c.reason),
        Some(Err(e)) => bail!("reading from broker: {e}"),
        None => bail!("broker closed the connection"),
    }
}

/// Connects, says CONNECT and creates the producer.
async fn open(spec: &WireProducer, id: usize) -> Result<Connection> {
    let socket = TcpStream::connect(&spec.address)
        .await
        .with_context(|| format!("connecting to {}", spec.address))?;
    socket.set_nodelay(true)?;
    let io: Box<dyn Io> = match &spec.tls {
        None => Box::new(socket),
        Some(connector) => {
            let host = spec
                .address
                .rsplit_once(':')
                .map_or(&*spec.address, |(h, _)| h);
            let name = rustls::pki_types::ServerName::try_from(host.to_string())
                .with_context(|| format!("{host} as a TLS server name"))?;
            Box::new(
                connector
                    .connect(name, socket)
                    .await
                    .with_context(|| format!("TLS handshake with {}", spec.address))?,
            )
        }
    };
    let mut framed = Framed::new(io, PulsarCodec::new(64 << 20));
    framed
        .send(command(Type::Connect, |c| {
            c.connect = Some(CommandConnect {
                client_version: "magnetar-perf-wire".into(),
                protocol_version: Some(19),
                ..Default::default()
            })
        }))
        .await?;
    let connected = next_command(&mut framed).await?;
    if connected.connected.is_none() {
        bail!("expected CONNECTED, got {connected:?}");
    }
    framed
        .send(command(Type::Producer, |c| {
            c.producer = Some(CommandProducer {
                topic: spec.topic.clone(),
                producer_id: 1,
                request_id: 1,
                producer_name: Some(format!("perf-wire-{id}-{}", std::process::id())),
                ..Default::default()
            })
        }))
        .await?;
    let reply = next_command(&mut framed).await?;
    if reply.producer_success.is_none() {
        bail!("producer refused: {reply:?}");
    }
    Ok(framed)
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Runs one producer until `load` says stop, then waits for its receipts.
pub async fn produce(spec: WireProducer, id: usize, load: Arc<Load>) -> Result<()> {
    let framed = open(&spec, id).await?;
    let (mut sink, mut stream) = framed.split();
    let payload = batch_payload(spec.message_size, spec.messages_per_batch);
    let batch_messages = spec.messages_per_batch as u64;
    let batch_bytes = batch_messages * spec.message_size as u64;
    let window = Arc::new(Semaphore::new(spec.window.max(1)));
    let in_flight: Arc<Mutex<VecDeque<(u64, Instant)>>> = Arc::default();
    let recorder = load.recorder();

    let receiver = {
        let (window, in_flight, load) = (window.clone(), in_flight.clone(), load.clone());
        tokio::spawn(async move {
            while let Some(frame) = stream.next().await {
                let Ok(Decoded::Frame(frame)) = frame else {
                    break;
                };
                let command = frame.command;
                let (sequence_id, ok) = match (&command.send_receipt, &command.send_error) {
                    (Some(r), _) => (r.sequence_id, true),
                    (_, Some(e)) => {
                        if load.failed.fetch_add(batch_messages, Ordering::Relaxed) == 0 {
                            eprintln!("first failed send: {}", e.message);
                        }
                        (e.sequence_id, false)
                    }
                    _ => continue,
                };
                let sent = in_flight.lock().ok().and_then(|mut q| q.pop_front());
                match sent {
                    Some((expected, at)) if expected == sequence_id => {
                        if ok {
                            let micros = at.elapsed().as_micros() as u64;
                            load.completed_many(batch_messages, batch_bytes, micros, &recorder);
                        }
                    }
                    _ => {
                        eprintln!("receipt for sequence {sequence_id} out of order");
                        break;
                    }
                }
                window.add_permits(1);
            }
        })
    };

    let stop = load.stop_signal();
    let started = Instant::now();
    let mut sequence_id = 0u64;
    while !*stop.borrow() {
        if spec.batches_per_second > 0.0 {
            let due = started
                + std::time::Duration::from_secs_f64(sequence_id as f64 / spec.batches_per_second);
            tokio::time::sleep_until(due.into()).await;
        }
        window.acquire().await?.forget();
        let metadata = MessageMetadata {
            producer_name: format!("perf-wire-{id}"),
            sequence_id,
            publish_time: now_ms(),
            num_messages_in_batch: Some(spec.messages_per_batch as i32),
            partition_key: (spec.keys > 0)
                .then(|| format!("key-{}", (sequence_id + id as u64) % spec.keys as u64)),
            ..Default::default()
        };
        let send = BaseCommand {
            r#type: Type::Send as i32,
            send: Some(CommandSend {
                producer_id: 1,
                sequence_id,
                num_messages: Some(spec.messages_per_batch as i32),
                ..Default::default()
            }),
            ..Default::default()
        };
        if let Ok(mut q) = in_flight.lock() {
            q.push_back((sequence_id, Instant::now()));
        }
        sink.send(Frame::with_payload(send, metadata, payload.clone()))
            .await
            .context("sending a batch")?;
        sequence_id += 1;
    }
    // Wait (a while) for what is still in flight, then hang up.
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(30),
        window.acquire_many(spec.window.max(1) as u32),
    )
    .await;
    receiver.abort();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_payload_has_one_framed_message_per_slot() {
        let batch = batch_payload(10, 3);
        let single_len = SingleMessageMetadata {
            payload_size: 10,
            ..Default::default()
        }
        .encoded_len();
        assert_eq!(batch.len(), 3 * (4 + single_len + 10));
        let declared = u32::from_be_bytes([batch[0], batch[1], batch[2], batch[3]]) as usize;
        assert_eq!(declared, single_len);
    }

    #[test]
    fn addresses_come_from_pulsar_urls() {
        assert_eq!(
            address_of("pulsar+ssl://127.0.0.1:6651").unwrap(),
            WireAddress {
                address: "127.0.0.1:6651".into(),
                tls: true
            }
        );
        assert_eq!(
            address_of("pulsar://127.0.0.1:6650").unwrap().address,
            "127.0.0.1:6650"
        );
        assert!(address_of("http://x:1").is_err());
        assert!(address_of("pulsar://").is_err());
    }
}
