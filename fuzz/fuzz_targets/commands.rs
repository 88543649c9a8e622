//! Sequences of well-framed commands with hostile field values (ids, counts,
//! lengths, permits, positions, ack sets, hash ranges) against a real broker
//! in this process, serving on a loopback port over local logs. Every
//! sequence must leave the broker answering PING, on that connection or, if
//! the broker closed it, on a new one. A panic anywhere in the broker, even
//! one a connection task catches, aborts the run (libFuzzer's panic hook).
#![no_main]

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use arbitrary::{Result, Unstructured};
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use libfuzzer_sys::fuzz_target;
use magnetar_broker::local_log::{LocalLogConfig, LocalLogStore};
use magnetar_broker::metrics::BrokerMetrics;
use magnetar_broker::protocol::proto::base_command::Type;
use magnetar_broker::protocol::proto::{
    BaseCommand, CommandAck, CommandCloseConsumer, CommandCloseProducer, CommandConnect,
    CommandFlow, CommandGetLastMessageId, CommandLookupTopic, CommandPartitionedTopicMetadata,
    CommandProducer, CommandRedeliverUnacknowledgedMessages, CommandSeek, CommandSend,
    CommandSubscribe, CommandUnsubscribe, IntRange, KeySharedMeta, MessageIdData, MessageMetadata,
};
use magnetar_broker::protocol::{Decoded, Frame, PulsarCodec};
use magnetar_broker::server::BrokerServer;
use magnetar_broker::topic::{
    create_namespace_if_absent, BrokerConfig, BrokerService, NamespacePolicies, PersistencePolicy,
    TenantInfo,
};
use magnetar_metadata::{EmbeddedStore, MetadataStore};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::codec::Framed;

/// Long enough for any sequence on a slow machine; a broker that has not
/// answered PING by then is hung.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(20);
const MAX_COMMANDS: usize = 24;

struct Harness {
    runtime: tokio::runtime::Runtime,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

fn harness() -> &'static Harness {
    static HARNESS: OnceLock<Harness> = OnceLock::new();
    HARNESS.get_or_init(|| {
        // libFuzzer's C main does not ignore SIGPIPE as a Rust main does: a
        // write to a connection the broker closed must be an error here,
        // not the end of the process.
        // SAFETY: setting a signal's disposition to SIG_IGN before any
        // thread of ours writes to a socket.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_IGN);
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let dir = tempfile::tempdir().expect("temp dir");
        let addr = runtime.block_on(async {
            let store: Arc<dyn MetadataStore> = Arc::new(
                EmbeddedStore::open(dir.path().join("metadata"))
                    .await
                    .expect("embedded metadata"),
            );
            let config = BrokerConfig::default();
            create_namespace_if_absent(
                store.as_ref(),
                "public",
                "default",
                &TenantInfo {
                    admin_roles: Vec::new(),
                    allowed_clusters: vec![config.cluster_name.clone()],
                },
                &NamespacePolicies {
                    persistence: Some(PersistencePolicy {
                        ensemble_size: 1,
                        write_quorum: 1,
                        ack_quorum: 1,
                    }),
                    ..NamespacePolicies::default()
                },
            )
            .await
            .expect("namespace");
            let logs = Arc::new(LocalLogStore::new(
                store.clone(),
                dir.path().join("broker"),
                "fuzz-broker".to_string(),
                LocalLogConfig::default(),
                false,
            ));
            let metrics = BrokerMetrics::new().expect("metrics");
            let service = BrokerService::new(config, store, logs, metrics);
            let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            let server = BrokerServer::start(listener, service).expect("serve");
            let addr = server.local_addr;
            // Serves for the life of the fuzzing process.
            std::mem::forget(server);
            addr
        });
        Harness {
            runtime,
            addr,
            _dir: dir,
        }
    })
}

fn frame(kind: Type, fill: impl FnOnce(&mut BaseCommand)) -> Frame {
    let mut command = BaseCommand {
        r#type: kind as i32,
        ..Default::default()
    };
    fill(&mut command);
    Frame::command(command)
}

/// Values that sit on the edges the broker must check, or any value.
fn edgy_u64(u: &mut Unstructured) -> Result<u64> {
    Ok(match u.int_in_range(0..=7)? {
        0 => 0,
        1 => 1,
        2 => u64::MAX,
        3 => i64::MAX as u64,
        4 => i64::MAX as u64 + 1,
        5 => u.int_in_range(0..=64)?,
        _ => u.arbitrary()?,
    })
}

fn edgy_i32(u: &mut Unstructured) -> Result<i32> {
    Ok(match u.int_in_range(0..=6)? {
        0 => 0,
        1 => -1,
        2 => i32::MAX,
        3 => i32::MIN,
        4 => u.int_in_range(1..=1000)?,
        _ => u.arbitrary()?,
    })
}

fn topic(u: &mut Unstructured) -> Result<String> {
    Ok(match u.int_in_range(0..=5)? {
        0..=3 => format!(
            "persistent://public/default/fuzz-{}",
            u.int_in_range(0..=3)?
        ),
        4 => "persistent://public/default/fuzz-p-partition-1".to_string(),
        _ => u.arbitrary::<String>()?.chars().take(64).collect(),
    })
}

fn small_id(u: &mut Unstructured) -> Result<u64> {
    Ok(if u.ratio(7, 8)? {
        u.int_in_range(0..=3)?
    } else {
        edgy_u64(u)?
    })
}

fn message_id(u: &mut Unstructured) -> Result<MessageIdData> {
    let words = u.int_in_range(0..=80)?;
    let mut ack_set = Vec::with_capacity(words);
    for _ in 0..words {
        ack_set.push(u.arbitrary()?);
    }
    Ok(MessageIdData {
        ledger_id: edgy_u64(u)?,
        entry_id: edgy_u64(u)?,
        partition: if u.arbitrary()? { Some(edgy_i32(u)?) } else { None },
        batch_index: if u.arbitrary()? { Some(edgy_i32(u)?) } else { None },
        ack_set,
        batch_size: if u.arbitrary()? { Some(edgy_i32(u)?) } else { None },
        ..Default::default()
    })
}

fn command(u: &mut Unstructured) -> Result<Frame> {
    Ok(match u.int_in_range(0..=14)? {
        0 => {
            let (topic, producer_id, request_id) = (topic(u)?, small_id(u)?, u.arbitrary()?);
            frame(Type::Producer, |c| {
                c.producer = Some(CommandProducer {
                    topic,
                    producer_id,
                    request_id,
                    ..Default::default()
                })
            })
        }
        1 => {
            let count = |u: &mut Unstructured| -> Result<Option<i32>> {
                Ok(if u.arbitrary()? { Some(edgy_i32(u)?) } else { None })
            };
            let send = CommandSend {
                producer_id: small_id(u)?,
                sequence_id: u.arbitrary()?,
                num_messages: count(u)?,
                highest_sequence_id: if u.arbitrary()? { Some(u.arbitrary()?) } else { None },
                ..Default::default()
            };
            let metadata = MessageMetadata {
                producer_name: "fuzz".into(),
                sequence_id: send.sequence_id,
                publish_time: u.arbitrary()?,
                num_messages_in_batch: count(u)?,
                deliver_at_time: if u.arbitrary()? { Some(u.arbitrary()?) } else { None },
                partition_key: if u.arbitrary()? { Some(u.arbitrary()?) } else { None },
                compression: if u.arbitrary()? { Some(edgy_i32(u)?) } else { None },
                uncompressed_size: if u.arbitrary()? { Some(u.arbitrary()?) } else { None },
                ..Default::default()
            };
            let len = u.int_in_range(0..=512)?;
            let payload = Bytes::copy_from_slice(u.bytes(len.min(u.len()))?);
            let command = BaseCommand {
                r#type: Type::Send as i32,
                send: Some(send),
                ..Default::default()
            };
            Frame::with_payload(command, metadata, payload)
        }
        2 => {
            let ranges = if u.arbitrary()? {
                let n = u.int_in_range(0..=40)?;
                let mut ranges = Vec::with_capacity(n);
                for _ in 0..n {
                    ranges.push(IntRange {
                        start: edgy_i32(u)?.rem_euclid(70_000),
                        end: edgy_i32(u)?.rem_euclid(70_000),
                    });
                }
                Some(KeySharedMeta {
                    key_shared_mode: u.int_in_range(-1..=2)?,
                    hash_ranges: ranges,
                    allow_out_of_order_delivery: if u.arbitrary()? { Some(u.arbitrary()?) } else { None },
                })
            } else {
                None
            };
            let subscribe = CommandSubscribe {
                topic: topic(u)?,
                subscription: format!("s{}", u.int_in_range(0..=5)?),
                sub_type: u.int_in_range(-1..=4)?,
                consumer_id: small_id(u)?,
                request_id: u.arbitrary()?,
                durable: if u.arbitrary()? { Some(u.arbitrary()?) } else { None },
                start_message_id: if u.arbitrary()? { Some(message_id(u)?) } else { None },
                initial_position: if u.arbitrary()? { Some(u.int_in_range(-1..=2)?) } else { None },
                priority_level: if u.arbitrary()? { Some(edgy_i32(u)?) } else { None },
                key_shared_meta: ranges,
                ..Default::default()
            };
            frame(Type::Subscribe, |c| c.subscribe = Some(subscribe))
        }
        3 => {
            let flow = CommandFlow {
                consumer_id: small_id(u)?,
                message_permits: if u.arbitrary()? { u32::MAX } else { u.arbitrary()? },
            };
            frame(Type::Flow, |c| c.flow = Some(flow))
        }
        4 => {
            let n = u.int_in_range(0..=6)?;
            let mut ids = Vec::with_capacity(n);
            for _ in 0..n {
                ids.push(message_id(u)?);
            }
            let ack = CommandAck {
                consumer_id: small_id(u)?,
                ack_type: u.int_in_range(-1..=2)?,
                message_id: ids,
                request_id: if u.arbitrary()? { Some(u.arbitrary()?) } else { None },
                ..Default::default()
            };
            frame(Type::Ack, |c| c.ack = Some(ack))
        }
        5 => {
            let n = u.int_in_range(0..=4)?;
            let mut ids = Vec::with_capacity(n);
            for _ in 0..n {
                ids.push(message_id(u)?);
            }
            let redeliver = CommandRedeliverUnacknowledgedMessages {
                consumer_id: small_id(u)?,
                message_ids: ids,
                ..Default::default()
            };
            frame(Type::RedeliverUnacknowledgedMessages, |c| {
                c.redeliver_unacknowledged_messages = Some(redeliver)
            })
        }
        6 => {
            let seek = CommandSeek {
                consumer_id: small_id(u)?,
                request_id: u.arbitrary()?,
                message_id: if u.arbitrary()? { Some(message_id(u)?) } else { None },
                message_publish_time: if u.arbitrary()? { Some(edgy_u64(u)?) } else { None },
            };
            frame(Type::Seek, |c| c.seek = Some(seek))
        }
        7 => {
            let request = CommandGetLastMessageId {
                consumer_id: small_id(u)?,
                request_id: u.arbitrary()?,
            };
            frame(Type::GetLastMessageId, |c| c.get_last_message_id = Some(request))
        }
        8 => {
            let request = CommandUnsubscribe {
                consumer_id: small_id(u)?,
                request_id: u.arbitrary()?,
                ..Default::default()
            };
            frame(Type::Unsubscribe, |c| c.unsubscribe = Some(request))
        }
        9 => {
            let request = CommandCloseProducer {
                producer_id: small_id(u)?,
                request_id: u.arbitrary()?,
                ..Default::default()
            };
            frame(Type::CloseProducer, |c| c.close_producer = Some(request))
        }
        10 => {
            let request = CommandCloseConsumer {
                consumer_id: small_id(u)?,
                request_id: u.arbitrary()?,
                ..Default::default()
            };
            frame(Type::CloseConsumer, |c| c.close_consumer = Some(request))
        }
        11 => {
            let request = CommandLookupTopic {
                topic: topic(u)?,
                request_id: u.arbitrary()?,
                authoritative: Some(u.arbitrary()?),
                ..Default::default()
            };
            frame(Type::Lookup, |c| c.lookup_topic = Some(request))
        }
        12 => {
            let request = CommandPartitionedTopicMetadata {
                topic: topic(u)?,
                request_id: u.arbitrary()?,
                ..Default::default()
            };
            frame(Type::PartitionedMetadata, |c| {
                c.partition_metadata = Some(request)
            })
        }
        13 => frame(Type::Ping, |c| c.ping = Some(Default::default())),
        _ => {
            // A command type with no body, or one the broker does not serve.
            let kind = u.int_in_range(0..=60)?;
            Frame::command(BaseCommand {
                r#type: kind,
                ..Default::default()
            })
        }
    })
}

fn connect() -> Frame {
    frame(Type::Connect, |c| {
        c.connect = Some(CommandConnect {
            client_version: "fuzz".into(),
            protocol_version: Some(19),
            ..Default::default()
        })
    })
}

fn ping() -> Frame {
    frame(Type::Ping, |c| c.ping = Some(Default::default()))
}

/// Sends CONNECT then `frames` then PING, and reads until PONG (true) or
/// until the broker closes the connection (false).
async fn run(addr: SocketAddr, frames: Vec<Frame>) -> bool {
    let socket = TcpStream::connect(addr).await.expect("broker accepts");
    let mut framed = Framed::new(socket, PulsarCodec::default());
    if framed.send(connect()).await.is_err() {
        return false;
    }
    // PONGs to wait for: one per PING in the sequence, then ours.
    let mut pongs = 1 + frames
        .iter()
        .filter(|f| f.command.r#type == Type::Ping as i32)
        .count();
    for frame in frames {
        if framed.feed(frame).await.is_err() {
            return false;
        }
    }
    if framed.send(ping()).await.is_err() {
        return false;
    }
    let answered = tokio::time::timeout(ANSWER_TIMEOUT, async {
        while let Some(next) = framed.next().await {
            match next {
                Ok(Decoded::Frame(frame)) if frame.command.r#type == Type::Pong as i32 => {
                    pongs -= 1;
                    if pongs == 0 {
                        return true;
                    }
                }
                Ok(_) => {}
                Err(_) => return false,
            }
        }
        false
    })
    .await;
    answered.expect("the broker answers or closes the connection")
}

fuzz_target!(|data: &[u8]| {
    let harness = harness();
    let mut u = Unstructured::new(data);
    let mut frames = Vec::new();
    while frames.len() < MAX_COMMANDS && !u.is_empty() {
        match command(&mut u) {
            Ok(frame) => frames.push(frame),
            Err(_) => break,
        }
    }
    if std::env::var_os("FUZZ_PRINT").is_some() {
        for frame in &frames {
            eprintln!("{:?}", frame.command);
        }
    }
    harness.runtime.block_on(async {
        if !run(harness.addr, frames).await {
            // The broker closed a connection it found bad: others must
            // still be served.
            assert!(
                run(harness.addr, Vec::new()).await,
                "the broker stopped serving after a closed connection"
            );
        }
    });
});
