//! Hostile clients against a real `magnetar standalone`: a client that
//! floods without reading, a consumer that asks for everything and never
//! reads, and one that lies about ids, counts and lengths. Each may cost
//! the broker a bounded amount and its own connection; every other client
//! goes on being served and nothing stored is touched.

mod raw;

use std::time::Duration;

use bytes::Bytes;
use futures::TryStreamExt;
use magnetar_tests::StandaloneProcess;
use pulsar::consumer::{ConsumerOptions, InitialPosition};
use pulsar::proto::base_command::Type;
use pulsar::proto::command_ack::AckType;
use pulsar::proto::command_subscribe::{InitialPosition as WireInitial, SubType as WireSubType};
use pulsar::proto::{
    CommandAck, CommandFlow, CommandProducer, CommandSend, CommandSubscribe, IntRange,
    KeySharedMeta, KeySharedMode, MessageIdData, MessageMetadata, ServerError,
};
use pulsar::{Pulsar, SubType, TokioExecutor};
use tokio::io::AsyncWriteExt;

const MIB: u64 = 1024 * 1024;

async fn client(standalone: &StandaloneProcess) -> Pulsar<TokioExecutor> {
    Pulsar::builder(standalone.pulsar_url(), TokioExecutor)
        .build()
        .await
        .expect("client connects")
}

/// Sends `payloads` through the `pulsar` crate and waits for every receipt.
async fn produce(pulsar: &Pulsar<TokioExecutor>, topic: &str, payloads: Vec<Vec<u8>>) {
    let mut producer = pulsar
        .producer()
        .with_topic(topic)
        .build()
        .await
        .expect("producer created");
    let mut receipts = std::collections::VecDeque::new();
    for payload in payloads {
        if receipts.len() >= 32 {
            let receipt: pulsar::producer::SendFuture = receipts.pop_front().unwrap();
            receipt.await.expect("receipt");
        }
        receipts.push_back(producer.send_non_blocking(payload).await.expect("queued"));
    }
    for receipt in receipts {
        receipt.await.expect("receipt");
    }
}

/// The other clients are still served: a message goes in and comes out.
async fn assert_serves(standalone: &StandaloneProcess, topic: &str) {
    let pulsar = client(standalone).await;
    let mut consumer: pulsar::Consumer<Vec<u8>, TokioExecutor> = pulsar
        .consumer()
        .with_topic(topic)
        .with_subscription("bystander")
        .with_options(ConsumerOptions::default().with_initial_position(InitialPosition::Earliest))
        .build()
        .await
        .expect("bystander subscribes");
    produce(&pulsar, topic, vec![b"still served".to_vec()]).await;
    // The topic may hold earlier messages; this one comes last.
    loop {
        let message = tokio::time::timeout(raw::REPLY_TIMEOUT, consumer.try_next())
            .await
            .expect("bystander receives in time")
            .expect("receive")
            .expect("stream open");
        if message.payload.data == b"still served" {
            return;
        }
    }
}

async fn subscription_stats(
    standalone: &StandaloneProcess,
    topic: &str,
    subscription: &str,
) -> serde_json::Value {
    let url = format!(
        "{}/admin/v2/persistent/public/default/{topic}/stats",
        standalone.broker_http_url()
    );
    let body = reqwest::get(url)
        .await
        .expect("stats request")
        .text()
        .await
        .expect("stats body");
    let stats: serde_json::Value = serde_json::from_str(&body).expect("stats JSON");
    stats["subscriptions"][subscription].clone()
}

fn subscribe(
    topic: &str,
    subscription: &str,
    consumer_id: u64,
    sub_type: WireSubType,
) -> CommandSubscribe {
    CommandSubscribe {
        topic: format!("persistent://public/default/{topic}"),
        subscription: subscription.into(),
        sub_type: sub_type as i32,
        consumer_id,
        request_id: consumer_id,
        initial_position: Some(WireInitial::Earliest as i32),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_flooding_pings_without_reading_is_held_to_its_bound_then_disconnected() {
    let standalone = StandaloneProcess::start_standalone(&[
        "--max-outbound-bytes-per-connection",
        "1048576",
        "--connection-write-timeout",
        "2s",
    ])
    .await
    .unwrap();
    let before = standalone.rss_bytes().unwrap();
    let flooder = raw::connect(&standalone.broker_addr()).await;
    let mut chunk = bytes::BytesMut::new();
    while chunk.len() < 64 * 1024 {
        chunk.extend_from_slice(&raw::encode(raw::ping()));
    }
    let chunk = chunk.freeze();
    // Each PONG the broker queues costs it a few KiB: without a bound on
    // its queue, this flood grows it by gigabytes.
    let mut socket = flooder.into_inner();
    let mut writer = tokio::spawn(async move {
        let mut written = 0u64;
        loop {
            if let Err(e) = socket.write_all(&chunk).await {
                return (written, e);
            }
            written += chunk.len() as u64;
        }
    });
    let mut sample = tokio::time::interval(Duration::from_millis(100));
    let mut peak = before;
    let (written, error) = loop {
        tokio::select! {
            result = &mut writer => break result.unwrap(),
            _ = sample.tick() => {
                peak = peak.max(standalone.rss_bytes().unwrap());
                assert!(
                    peak < before + 128 * MIB,
                    "broker grew from {before} to {peak} bytes under a PING flood"
                );
            }
        }
    };
    eprintln!(
        "flooder wrote {written} bytes before the broker cut it off ({error}); broker RSS {before} -> peak {peak}"
    );
    assert!(written > MIB, "the flood got going ({written} bytes)");
    let log = std::fs::read_to_string(standalone.log_path()).unwrap();
    assert!(
        log.contains("the client has not read what was sent to it"),
        "the broker says why it closed the connection"
    );
    assert_serves(&standalone, "after-ping-flood").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_asking_for_everything_and_never_reading_holds_a_bounded_share_then_gets_all_in_order(
) {
    const MESSAGE: usize = 64 * 1024;
    const MESSAGES: usize = 1536; // 96 MiB
    let standalone = StandaloneProcess::start_standalone(&[
        "--max-outbound-bytes-per-connection",
        "4194304",
        "--connection-write-timeout",
        "10m",
    ])
    .await
    .unwrap();
    let topic = "never-reads";
    let mut greedy = raw::connect(&standalone.broker_addr()).await;
    use futures::SinkExt;
    greedy
        .send(raw::command(Type::Subscribe, |c| {
            c.subscribe = Some(subscribe(topic, "greedy", 1, WireSubType::Exclusive))
        }))
        .await
        .unwrap();
    let reply = raw::next_command(&mut greedy).await;
    assert_eq!(reply.r#type, Type::Success as i32, "{reply:?}");
    greedy
        .send(raw::command(Type::Flow, |c| {
            c.flow = Some(CommandFlow {
                consumer_id: 1,
                message_permits: u32::MAX,
            })
        }))
        .await
        .unwrap();

    // Another client produces 96 MiB while the greedy consumer reads nothing.
    let pulsar = client(&standalone).await;
    let payloads: Vec<Vec<u8>> = (0..MESSAGES)
        .map(|i| {
            let mut p = vec![(i % 251) as u8; MESSAGE];
            p[..8].copy_from_slice(&(i as u64).to_be_bytes());
            p
        })
        .collect();
    produce(&pulsar, topic, payloads).await;

    // What went to the greedy consumer is its connection's bound plus what
    // the kernel's socket buffers hold, not the 96 MiB it asked for.
    let mut last = u64::MAX;
    loop {
        let stats = subscription_stats(&standalone, topic, "greedy").await;
        let out = stats["bytesOutCounter"].as_u64().expect("bytesOutCounter");
        assert!(
            out <= 48 * MIB,
            "{out} bytes dispatched to a consumer that read nothing"
        );
        if out == last {
            break;
        }
        last = out;
        // Dispatch is settled once two samples half a second apart agree.
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    eprintln!(
        "dispatched to the consumer that never read: {last} bytes of {}",
        MESSAGES * MESSAGE
    );
    assert!(last > 0, "the consumer got a first share");

    // Once it reads, the rest follows, in order, none missing.
    for i in 0..MESSAGES {
        let frame = raw::next_frame(&mut greedy).await;
        assert_eq!(
            frame.command.r#type,
            Type::Message as i32,
            "{:?}",
            frame.command
        );
        let payload = frame.payload.expect("MESSAGE carries a payload").payload;
        assert_eq!(payload.len(), MESSAGE);
        assert_eq!(
            &payload[..8],
            &(i as u64).to_be_bytes(),
            "message {i} in order"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ids_counts_and_lengths_that_lie_get_errors_and_touch_nothing() {
    use futures::SinkExt;
    // One entry per ledger, so the first message's ledger is closed when the
    // acks naming impossible entries of it arrive.
    let standalone = StandaloneProcess::start_standalone(&["--max-entries-per-ledger", "1"])
        .await
        .unwrap();
    let topic = "liars";
    let full_topic = format!("persistent://public/default/{topic}");
    let mut liar = raw::connect(&standalone.broker_addr()).await;
    liar.send(raw::command(Type::Producer, |c| {
        c.producer = Some(CommandProducer {
            topic: full_topic.clone(),
            producer_id: 1,
            request_id: 1,
            ..Default::default()
        })
    }))
    .await
    .unwrap();
    let ready = raw::next_command(&mut liar).await;
    assert!(ready.producer_success.is_some(), "{ready:?}");

    // A batch claiming 2^31-1 messages in 16 bytes: refused, that SEND only.
    let metadata = |sequence_id: u64, count: Option<i32>| MessageMetadata {
        producer_name: "liar".into(),
        sequence_id,
        publish_time: 1,
        num_messages_in_batch: count,
        ..Default::default()
    };
    let send = |sequence_id: u64, count: Option<i32>| CommandSend {
        producer_id: 1,
        sequence_id,
        num_messages: count,
        ..Default::default()
    };
    liar.send(raw::send(
        send(0, Some(i32::MAX)),
        metadata(0, Some(i32::MAX)),
        Bytes::from_static(&[0; 16]),
    ))
    .await
    .unwrap();
    let reply = raw::next_command(&mut liar).await;
    let error = reply.send_error.expect("SEND_ERROR for the lie");
    assert_eq!(
        (error.sequence_id, error.error),
        (0, ServerError::NotAllowedError as i32)
    );
    for sequence_id in 1..=2 {
        let payload = Bytes::from(format!("true-{sequence_id}"));
        liar.send(raw::send(
            send(sequence_id, None),
            metadata(sequence_id, None),
            payload,
        ))
        .await
        .unwrap();
        let receipt = raw::next_command(&mut liar).await;
        let receipt = receipt.send_receipt.expect("receipt for an honest SEND");
        assert_eq!(receipt.sequence_id, sequence_id);
    }

    // A consumer that receives the first message, then acknowledges entries
    // that do not exist (2^63-1 of its closed ledger, u64::MAX, a ledger
    // never made), an ack set of 400,000 words and a batch index of 2^31-1.
    liar.send(raw::command(Type::Subscribe, |c| {
        c.subscribe = Some(subscribe(topic, "victim", 2, WireSubType::Exclusive))
    }))
    .await
    .unwrap();
    let reply = raw::next_command(&mut liar).await;
    assert_eq!(reply.r#type, Type::Success as i32, "{reply:?}");
    liar.send(raw::command(Type::Flow, |c| {
        c.flow = Some(CommandFlow {
            consumer_id: 2,
            message_permits: 1,
        })
    }))
    .await
    .unwrap();
    let delivered = raw::next_frame(&mut liar).await;
    let first = delivered.command.message.expect("MESSAGE").message_id;
    let id = |ledger_id: u64, entry_id: u64| MessageIdData {
        ledger_id,
        entry_id,
        ..Default::default()
    };
    let lies = [
        (AckType::Cumulative, id(first.ledger_id, i64::MAX as u64)),
        (AckType::Individual, id(first.ledger_id, i64::MAX as u64)),
        (AckType::Individual, id(first.ledger_id, u64::MAX)),
        (AckType::Cumulative, id(first.ledger_id + 1_000_000, 0)),
        (
            AckType::Individual,
            MessageIdData {
                ack_set: vec![-1; 400_000],
                ..first.clone()
            },
        ),
        (
            AckType::Individual,
            MessageIdData {
                batch_index: Some(i32::MAX),
                ..first.clone()
            },
        ),
    ];
    for (request_id, (ack_type, message_id)) in lies.into_iter().enumerate() {
        liar.send(raw::command(Type::Ack, |c| {
            c.ack = Some(CommandAck {
                consumer_id: 2,
                ack_type: ack_type as i32,
                message_id: vec![message_id],
                request_id: Some(100 + request_id as u64),
                ..Default::default()
            })
        }))
        .await
        .unwrap();
        let reply = raw::next_command(&mut liar).await;
        assert_eq!(reply.r#type, Type::AckResponse as i32, "{reply:?}");
    }
    liar.send(raw::ping()).await.unwrap();
    assert_eq!(raw::next_command(&mut liar).await.r#type, Type::Pong as i32);
    drop(liar);

    // The subscription was released with the connection, and nothing the
    // lies said was applied: an honest consumer gets both messages.
    let pulsar = client(&standalone).await;
    let mut honest: pulsar::Consumer<Vec<u8>, TokioExecutor> = pulsar
        .consumer()
        .with_topic(&full_topic)
        .with_subscription("victim")
        .with_subscription_type(SubType::Exclusive)
        .build()
        .await
        .expect("the exclusive subscription is free again");
    for expected in ["true-1", "true-2"] {
        let message = tokio::time::timeout(raw::REPLY_TIMEOUT, honest.try_next())
            .await
            .expect("redelivered in time")
            .expect("receive")
            .expect("stream open");
        assert_eq!(message.payload.data, expected.as_bytes());
        honest.ack(&message).await.unwrap();
    }
    assert_serves(&standalone, topic).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sticky_key_shared_ranges_are_checked_at_the_edge() {
    use futures::SinkExt;
    let standalone = StandaloneProcess::start_standalone(&[]).await.unwrap();
    let topic = "sticky";
    let sticky = |consumer_id: u64, ranges: Vec<(i32, i32)>| {
        raw::command(Type::Subscribe, move |c| {
            c.subscribe = Some(CommandSubscribe {
                key_shared_meta: Some(KeySharedMeta {
                    key_shared_mode: KeySharedMode::Sticky as i32,
                    hash_ranges: ranges
                        .into_iter()
                        .map(|(start, end)| IntRange { start, end })
                        .collect(),
                    ..Default::default()
                }),
                ..subscribe(topic, "keys", consumer_id, WireSubType::KeyShared)
            })
        })
    };
    let mut conn = raw::connect(&standalone.broker_addr()).await;
    // More ranges than there are hashes.
    conn.send(sticky(
        1,
        (0..65_537).map(|h| (h % 65_536, h % 65_536)).collect(),
    ))
    .await
    .unwrap();
    let reply = raw::next_command(&mut conn).await;
    assert!(reply.error.is_some(), "too many ranges refused: {reply:?}");
    // Every hash its own range: accepted.
    conn.send(sticky(2, (0..65_536).rev().map(|h| (h, h)).collect()))
        .await
        .unwrap();
    let reply = raw::next_command(&mut conn).await;
    assert_eq!(reply.r#type, Type::Success as i32, "{reply:?}");
    // Anything more overlaps it.
    conn.send(sticky(3, vec![(70, 80)])).await.unwrap();
    let reply = raw::next_command(&mut conn).await;
    let error = reply.error.expect("overlap refused");
    assert_eq!(error.error, ServerError::ConsumerAssignError as i32);
    assert_serves(&standalone, topic).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_id_subscribed_twice_at_once_leaves_nothing_attached_behind() {
    use futures::SinkExt;
    let standalone = StandaloneProcess::start_standalone(&[]).await.unwrap();
    // Each round sends two SUBSCRIBEs with one consumer id without waiting,
    // so both are in flight together; the first subscription must be free
    // again once the connection is gone. (Found by the command fuzzer.)
    for round in 0..10 {
        let mut conn = raw::connect(&standalone.broker_addr()).await;
        let first = format!("twice-a-{round}");
        let second = format!("twice-b-{round}");
        conn.feed(raw::command(Type::Subscribe, |c| {
            c.subscribe = Some(subscribe(&first, "x", 7, WireSubType::Exclusive))
        }))
        .await
        .unwrap();
        conn.send(raw::command(Type::Subscribe, |c| {
            c.subscribe = Some(CommandSubscribe {
                request_id: 8,
                ..subscribe(&second, "x", 7, WireSubType::Exclusive)
            })
        }))
        .await
        .unwrap();
        for _ in 0..2 {
            let reply = raw::next_command(&mut conn).await;
            assert_eq!(reply.r#type, Type::Success as i32, "{reply:?}");
        }
        drop(conn);
        let pulsar = client(&standalone).await;
        for topic in [&first, &second] {
            let consumer: pulsar::Consumer<Vec<u8>, TokioExecutor> = pulsar
                .consumer()
                .with_topic(format!("persistent://public/default/{topic}"))
                .with_subscription("x")
                .with_subscription_type(SubType::Exclusive)
                .build()
                .await
                .unwrap_or_else(|e| panic!("round {round}: {topic}/x still held: {e}"));
            drop(consumer);
        }
    }
}
