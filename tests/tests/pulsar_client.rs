//! The Rust `pulsar` crate (a client nobody here wrote) against a real
//! `magnetar standalone` process: produce and consume, subscriptions,
//! restarts, kill -9 mid-stream, and hostile input on the same port.

use std::collections::HashSet;
use std::time::Duration;

use bytes::{BufMut, BytesMut};
use futures::{SinkExt, StreamExt, TryStreamExt};
use magnetar_broker::protocol::{Decoded, Frame, PulsarCodec};
use magnetar_tests::StandaloneProcess;
use pulsar::consumer::{ConsumerOptions, InitialPosition};
use pulsar::producer::ProducerOptions;
use pulsar::proto::base_command::Type;
use pulsar::proto::{
    BaseCommand, CommandConnect, CommandProducer, CommandSend, MessageMetadata, ServerError,
};
use pulsar::{Consumer, Pulsar, SubType, TokioExecutor};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_util::codec::Framed;

const RECEIVE_TIMEOUT: Duration = Duration::from_secs(20);

async fn client(standalone: &StandaloneProcess) -> Pulsar<TokioExecutor> {
    Pulsar::builder(standalone.pulsar_url(), TokioExecutor)
        .build()
        .await
        .expect("client connects")
}

fn batching(max_messages: u32) -> ProducerOptions {
    ProducerOptions {
        batch_size: Some(max_messages),
        batch_timeout: Some(Duration::from_millis(5)),
        ..Default::default()
    }
}

async fn consumer(
    pulsar: &Pulsar<TokioExecutor>,
    topic: &str,
    subscription: &str,
    sub_type: SubType,
) -> Consumer<Vec<u8>, TokioExecutor> {
    pulsar
        .consumer()
        .with_topic(topic)
        .with_subscription(subscription)
        .with_subscription_type(sub_type)
        .with_options(ConsumerOptions::default().with_initial_position(InitialPosition::Earliest))
        .build()
        .await
        .expect("consumer subscribes")
}

/// Sends `messages` (pipelined) and returns them once every receipt is in.
async fn produce(pulsar: &Pulsar<TokioExecutor>, topic: &str, messages: &[String], batch: u32) {
    let mut producer = pulsar
        .producer()
        .with_topic(topic)
        .with_options(batching(batch))
        .build()
        .await
        .expect("producer created");
    // A bounded window: the crate refuses sends (SlowDown) past its queue.
    let mut receipts = std::collections::VecDeque::new();
    for m in messages {
        if receipts.len() >= 64 {
            let receipt: pulsar::producer::SendFuture = receipts.pop_front().unwrap();
            assert!(receipt.await.expect("receipt").message_id.is_some());
        }
        receipts.push_back(
            producer
                .send_non_blocking(m.as_bytes().to_vec())
                .await
                .expect("queued"),
        );
    }
    for r in receipts {
        let receipt = r.await.expect("receipt");
        assert!(receipt.message_id.is_some());
    }
    producer.close().await.expect("producer closes");
}

/// Receives `n` messages (acknowledging each if `ack`), in arrival order.
async fn receive(
    consumer: &mut Consumer<Vec<u8>, TokioExecutor>,
    n: usize,
    ack: bool,
) -> Vec<String> {
    let mut got = Vec::with_capacity(n);
    while got.len() < n {
        let msg = tokio::time::timeout(RECEIVE_TIMEOUT, consumer.try_next())
            .await
            .unwrap_or_else(|_| panic!("timed out after {} of {n} messages", got.len()))
            .expect("receive")
            .expect("stream open");
        got.push(String::from_utf8(msg.payload.data.clone()).expect("utf-8"));
        if ack {
            consumer.ack(&msg).await.expect("ack");
        }
    }
    got
}

/// Nothing more arrives within `wait`.
async fn assert_quiet(consumer: &mut Consumer<Vec<u8>, TokioExecutor>, wait: Duration) {
    if let Ok(Some(Ok(msg))) = tokio::time::timeout(wait, consumer.next()).await {
        panic!(
            "unexpected message {:?}",
            String::from_utf8_lossy(&msg.payload.data)
        );
    }
}

fn numbered(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}-{i:06}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batched_messages_arrive_in_order_on_an_exclusive_subscription() {
    let standalone = StandaloneProcess::start_standalone(&[]).await.unwrap();
    let pulsar = client(&standalone).await;
    let topic = "persistent://public/default/exclusive-order";
    let mut sub = consumer(&pulsar, topic, "s1", SubType::Exclusive).await;
    let messages = numbered("m", 3000);
    produce(&pulsar, topic, &messages, 100).await;
    assert_eq!(receive(&mut sub, 3000, true).await, messages);
    assert_quiet(&mut sub, Duration::from_millis(500)).await;

    // A second exclusive consumer is refused while the first is attached,
    // with the broker's ConsumerBusy. The crate retries ConsumerBusy until
    // its operation timeout, so this client does not retry: the refusal
    // itself must come back, and no answer at all is a failure.
    let no_retry = Pulsar::builder(standalone.pulsar_url(), TokioExecutor)
        .with_operation_retry_options(pulsar::OperationRetryOptions {
            max_retries: Some(0),
            ..Default::default()
        })
        .build()
        .await
        .expect("client connects");
    let second = tokio::time::timeout(
        Duration::from_secs(15),
        no_retry
            .consumer()
            .with_topic(topic)
            .with_subscription("s1")
            .with_subscription_type(SubType::Exclusive)
            .build::<Vec<u8>>(),
    )
    .await
    .expect("the broker must answer the second SUBSCRIBE, not time out");
    use pulsar::error::{ConnectionError, ConsumerError};
    match second {
        Err(pulsar::Error::Connection(ConnectionError::PulsarError(
            Some(ServerError::ConsumerBusy),
            _,
        )))
        | Err(pulsar::Error::Consumer(ConsumerError::Connection(ConnectionError::PulsarError(
            Some(ServerError::ConsumerBusy),
            _,
        )))) => {}
        Err(e) => panic!("second exclusive consumer refused with {e:?}, not ConsumerBusy"),
        Ok(_) => panic!("second exclusive consumer was accepted"),
    }
    // The first consumer keeps its subscription.
    produce(&pulsar, topic, &numbered("after", 3), 1).await;
    assert_eq!(receive(&mut sub, 3, true).await, numbered("after", 3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_consumers_split_the_stream_and_a_dropped_consumer_is_redelivered() {
    let standalone = StandaloneProcess::start_standalone(&[]).await.unwrap();
    let pulsar = client(&standalone).await;
    let topic = "persistent://public/default/shared-split";
    let mut a = consumer(&pulsar, topic, "shared", SubType::Shared).await;
    let mut b = consumer(&pulsar, topic, "shared", SubType::Shared).await;
    let messages = numbered("s", 400);
    produce(&pulsar, topic, &messages, 1).await;

    // `a` takes some without acknowledging, then goes away: what it held
    // must reach `b`.
    let held = receive(&mut a, 10, false).await;
    drop(a);
    let mut seen: HashSet<String> = HashSet::new();
    let deadline = tokio::time::Instant::now() + RECEIVE_TIMEOUT;
    while seen.len() < messages.len() {
        let msg = tokio::time::timeout_at(deadline, b.try_next())
            .await
            .unwrap_or_else(|_| panic!("b saw {} of {}", seen.len(), messages.len()))
            .expect("receive")
            .expect("open");
        b.ack(&msg).await.expect("ack");
        seen.insert(String::from_utf8(msg.payload.data.clone()).unwrap());
    }
    for m in &held {
        assert!(
            seen.contains(m),
            "{m} held by the dropped consumer was not redelivered"
        );
    }
    assert_eq!(seen, messages.iter().cloned().collect::<HashSet<_>>());
}

/// Waits until `subscription`'s backlog on `public/default/{topic}`, in
/// entries as the broker's stats count it, is `expected`.
async fn wait_for_backlog(
    standalone: &StandaloneProcess,
    topic: &str,
    subscription: &str,
    expected: u64,
) {
    let url = format!(
        "{}/admin/v2/persistent/public/default/{topic}/stats",
        standalone.broker_http_url()
    );
    let backlog = || async {
        let body = reqwest::get(&url).await.ok()?.text().await.ok()?;
        let stats: serde_json::Value = serde_json::from_str(&body).ok()?;
        stats["subscriptions"][subscription]["msgBacklog"].as_u64()
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let now = backlog().await;
        if now == Some(expected) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the backlog of {subscription} is {now:?}, not {expected}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_restart_keeps_messages_and_the_subscription_position() {
    let mut standalone = StandaloneProcess::start_standalone(&[]).await.unwrap();
    let topic = "persistent://public/default/restart-position";
    let messages = numbered("r", 1000);
    {
        let pulsar = client(&standalone).await;
        let mut sub = consumer(&pulsar, topic, "durable", SubType::Exclusive).await;
        // One message per entry, so the backlog counts messages.
        produce(&pulsar, topic, &messages, 1).await;
        assert_eq!(receive(&mut sub, 400, true).await, messages[..400]);
        // The crate sends acks in the background and may close before the
        // last ones are out (acks of a closed consumer are ignored): wait
        // until the broker has every one of them.
        wait_for_backlog(&standalone, "restart-position", "durable", 600).await;
        sub.close().await.expect("consumer closes");
    }
    standalone.terminate().expect("graceful stop");
    standalone.restart().await.unwrap();

    let pulsar = client(&standalone).await;
    let mut sub = consumer(&pulsar, topic, "durable", SubType::Exclusive).await;
    assert_eq!(receive(&mut sub, 600, true).await, messages[400..]);
    assert_quiet(&mut sub, Duration::from_millis(500)).await;
    // A new subscription from the earliest still sees everything.
    let mut fresh = consumer(&pulsar, topic, "fresh", SubType::Exclusive).await;
    assert_eq!(receive(&mut fresh, 1000, false).await, messages);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_mid_stream_loses_no_acknowledged_message() {
    let mut standalone = StandaloneProcess::start_standalone(&[]).await.unwrap();
    let topic = "persistent://public/default/kill9-stream";
    // Sends pending at the crash fail after 5 s (their operation timeout),
    // which settles every receipt soon after the kill.
    let pulsar = Pulsar::builder(standalone.pulsar_url(), TokioExecutor)
        .with_operation_retry_options(pulsar::OperationRetryOptions {
            operation_timeout: Duration::from_secs(5),
            ..Default::default()
        })
        .build()
        .await
        .expect("client connects");
    let mut producer = pulsar
        .producer()
        .with_topic(topic)
        .with_options(batching(20))
        .build()
        .await
        .unwrap();
    // Keep sending; the server dies under the producer.
    let (confirmed_tx, mut confirmed_rx) = tokio::sync::mpsc::unbounded_channel();
    let sender = tokio::spawn(async move {
        for i in 0..1_000_000u64 {
            let body = format!("k-{i:08}");
            let Ok(receipt) = producer.send_non_blocking(body.clone().into_bytes()).await else {
                break;
            };
            let tx = confirmed_tx.clone();
            tokio::spawn(async move {
                if receipt.await.is_ok() {
                    let _ = tx.send(body);
                }
            });
            if i % 200 == 0 {
                tokio::task::yield_now().await;
            }
        }
    });
    // Let a few thousand receipts arrive, then crash the process.
    let mut confirmed = Vec::new();
    while confirmed.len() < 3000 {
        let body = tokio::time::timeout(RECEIVE_TIMEOUT, confirmed_rx.recv())
            .await
            .expect("receipts keep coming")
            .expect("sender alive");
        confirmed.push(body);
    }
    standalone.kill9().unwrap();
    sender.abort();
    drop(pulsar);
    // Every receipt task ends (the aborted sender dropped the producer, so
    // what was still pending fails), closing the channel: then every
    // receipt that did arrive is counted.
    while let Some(body) = tokio::time::timeout(RECEIVE_TIMEOUT, confirmed_rx.recv())
        .await
        .expect("every receipt is settled once the producer is gone")
    {
        confirmed.push(body);
    }
    standalone.restart().await.unwrap();

    let pulsar = client(&standalone).await;
    let mut sub = consumer(&pulsar, topic, "after-crash", SubType::Exclusive).await;
    // Read everything stored: the confirmed messages and possibly some whose
    // receipt was lost in the crash.
    let mut stored = Vec::new();
    loop {
        match tokio::time::timeout(Duration::from_secs(3), sub.try_next()).await {
            Ok(Ok(Some(msg))) => stored.push(String::from_utf8(msg.payload.data.clone()).unwrap()),
            Ok(other) => panic!("consumer failed: {:?}", other.err()),
            Err(_) => break,
        }
    }
    // Stored messages are in send order, without duplicates.
    let mut sorted = stored.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted, stored, "stored messages out of order or duplicated");
    let stored_set: HashSet<&String> = stored.iter().collect();
    let lost: Vec<&String> = confirmed
        .iter()
        .filter(|c| !stored_set.contains(c))
        .collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged messages lost, e.g. {:?}",
        lost.len(),
        &lost[..lost.len().min(5)]
    );
}

async fn raw_connection(standalone: &StandaloneProcess) -> Framed<TcpStream, PulsarCodec> {
    let socket = TcpStream::connect(standalone.broker_addr()).await.unwrap();
    let mut framed = Framed::new(socket, PulsarCodec::default());
    framed
        .send(Frame::command(BaseCommand {
            r#type: Type::Connect as i32,
            connect: Some(CommandConnect {
                client_version: "raw-test".into(),
                protocol_version: Some(19),
                ..Default::default()
            }),
            ..Default::default()
        }))
        .await
        .unwrap();
    let connected = next_command(&mut framed).await;
    assert_eq!(connected.r#type, Type::Connected as i32);
    framed
}

fn ping() -> Frame {
    Frame::command(BaseCommand {
        r#type: Type::Ping as i32,
        ping: Some(Default::default()),
        ..Default::default()
    })
}

async fn next_command(framed: &mut Framed<TcpStream, PulsarCodec>) -> BaseCommand {
    match tokio::time::timeout(RECEIVE_TIMEOUT, framed.next()).await {
        Ok(Some(Ok(Decoded::Frame(frame)))) => frame.command,
        other => panic!("expected a frame, got {other:?}"),
    }
}

/// The connection is closed by the broker (EOF or reset) within a while.
async fn assert_closed(framed: &mut Framed<TcpStream, PulsarCodec>) {
    loop {
        match tokio::time::timeout(RECEIVE_TIMEOUT, framed.next()).await {
            Ok(None) | Ok(Some(Err(_))) => return,
            Ok(Some(Ok(_))) => continue,
            Err(_) => panic!("connection was not closed"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_input_hurts_only_its_own_connection() {
    let standalone = StandaloneProcess::start_standalone(&[]).await.unwrap();
    let topic = "persistent://public/default/hostile";
    let pulsar = client(&standalone).await;
    let mut sub = consumer(&pulsar, topic, "victim", SubType::Exclusive).await;

    // 1. Garbage bytes: a frame size far beyond the limit.
    let mut garbage = TcpStream::connect(standalone.broker_addr()).await.unwrap();
    garbage.write_all(&[0xff; 64]).await.unwrap();
    let mut framed = Framed::new(garbage, PulsarCodec::default());
    assert_closed(&mut framed).await;

    // 2. A command before CONNECT.
    let socket = TcpStream::connect(standalone.broker_addr()).await.unwrap();
    let mut framed = Framed::new(socket, PulsarCodec::default());
    framed.send(ping()).await.unwrap();
    assert_closed(&mut framed).await;

    // 3. An unknown command type after CONNECT.
    let mut framed = raw_connection(&standalone).await;
    framed
        .send(Frame::command(BaseCommand {
            r#type: 9999,
            ..Default::default()
        }))
        .await
        .unwrap();
    assert_closed(&mut framed).await;

    // 4. A producer on a name that does not parse gets ERROR InvalidTopicName.
    let mut framed = raw_connection(&standalone).await;
    framed
        .send(Frame::command(BaseCommand {
            r#type: Type::Producer as i32,
            producer: Some(CommandProducer {
                topic: "persistent://public/default/bad/name".into(),
                producer_id: 1,
                request_id: 1,
                ..Default::default()
            }),
            ..Default::default()
        }))
        .await
        .unwrap();
    let reply = next_command(&mut framed).await;
    let error = reply.error.expect("ERROR reply");
    assert_eq!(error.error, ServerError::InvalidTopicName as i32);

    // 5. A SEND with a wrong checksum gets SEND_ERROR ChecksumError; the
    //    connection stays usable and nothing is stored.
    framed
        .send(Frame::command(BaseCommand {
            r#type: Type::Producer as i32,
            producer: Some(CommandProducer {
                topic: topic.into(),
                producer_id: 2,
                request_id: 2,
                ..Default::default()
            }),
            ..Default::default()
        }))
        .await
        .unwrap();
    let ready = next_command(&mut framed).await;
    assert!(ready.producer_success.is_some(), "{ready:?}");
    let send = BaseCommand {
        r#type: Type::Send as i32,
        send: Some(CommandSend {
            producer_id: 2,
            sequence_id: 0,
            num_messages: Some(1),
            ..Default::default()
        }),
        ..Default::default()
    };
    let metadata = MessageMetadata {
        producer_name: "raw".into(),
        sequence_id: 0,
        publish_time: 1,
        ..Default::default()
    };
    let mut bytes = BytesMut::new();
    tokio_util::codec::Encoder::encode(
        &mut PulsarCodec::default(),
        Frame::with_payload(send, metadata, bytes::Bytes::from_static(b"corrupted")),
        &mut bytes,
    )
    .unwrap();
    // Flip one payload byte after the checksum was computed.
    let last = bytes.len() - 1;
    bytes[last] ^= 0x01;
    framed.get_mut().write_all(&bytes).await.unwrap();
    let reply = next_command(&mut framed).await;
    let send_error = reply.send_error.expect("SEND_ERROR");
    assert_eq!(send_error.error, ServerError::ChecksumError as i32);
    framed.send(ping()).await.unwrap();
    assert_eq!(next_command(&mut framed).await.r#type, Type::Pong as i32);

    // 6. A frame larger than the limit closes that connection.
    let mut big = BytesMut::new();
    big.put_u32(6 * 1024 * 1024);
    big.put_u32(8);
    framed.get_mut().write_all(&big).await.unwrap();
    assert_closed(&mut framed).await;

    // Meanwhile the well-behaved client still works, and the corrupted
    // message was never stored.
    let good = numbered("good", 5);
    produce(&pulsar, topic, &good, 1).await;
    assert_eq!(receive(&mut sub, 5, true).await, good);
    assert_quiet(&mut sub, Duration::from_millis(500)).await;
}
