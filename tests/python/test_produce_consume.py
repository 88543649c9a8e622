"""Producing and consuming through the official Python client: batched
send_async, Exclusive and Shared subscriptions."""

import threading
import time

import pulsar
import pytest

from support import (
    assert_no_more,
    id_key,
    index_of,
    payload,
    produce,
    receive_n,
)

# Client behaviour is the same over either storage architecture.
BOTH_ARCHITECTURES = True

N = 10_000


def test_single_message_round_trip(new_client, topic):
    client = new_client()
    consumer = client.subscribe(
        topic, "smoke", initial_position=pulsar.InitialPosition.Earliest
    )
    producer = client.create_producer(topic)
    sent_id = producer.send(b"hello magnetar", properties={"k": "v"})
    msg = consumer.receive(10_000)
    assert msg.data() == b"hello magnetar"
    assert msg.properties() == {"k": "v"}
    assert msg.topic_name() == topic
    assert id_key(msg.message_id()) == id_key(sent_id)
    assert msg.publish_timestamp() > 0
    consumer.acknowledge(msg)
    assert_no_more(consumer, 500)


def test_batched_send_async_then_exclusive_consume(new_client, topic):
    client = new_client()
    # Subscribed before producing: the subscription starts at the beginning.
    consumer = client.subscribe(
        topic,
        "exclusive",
        consumer_type=pulsar.ConsumerType.Exclusive,
        initial_position=pulsar.InitialPosition.Earliest,
    )
    ids = produce(client, topic, N, batching=True)
    assert len(set(ids)) == N, "send callbacks returned duplicate message ids"
    entries = {(ledger, entry) for ledger, entry, _, _ in ids}
    assert len(entries) < N, "batching was on, yet every message is its own entry"
    assert any(batch > 0 for _, _, _, batch in ids), "no batch indexes in message ids"

    messages = receive_n(consumer, N)
    for i, msg in enumerate(messages):
        assert index_of(msg) == i, f"message {i} arrived as #{index_of(msg)}"
        assert id_key(msg.message_id()) == ids[i], (
            f"message {i}: consumer id {id_key(msg.message_id())} != producer id {ids[i]}"
        )
    consumer.acknowledge_cumulative(messages[-1])
    assert_no_more(consumer)


def test_shared_subscription_two_consumers(new_client, topic):
    client = new_client()
    consumers = [
        client.subscribe(
            topic,
            "shared",
            consumer_type=pulsar.ConsumerType.Shared,
            initial_position=pulsar.InitialPosition.Earliest,
            consumer_name=f"c{k}",
        )
        for k in range(2)
    ]
    received = [[] for _ in consumers]
    total = [0]
    lock = threading.Lock()
    stop = threading.Event()
    errors = []

    def consume(k):
        consumer = consumers[k]
        try:
            while not stop.is_set():
                try:
                    msg = consumer.receive(200)
                except pulsar.Timeout:
                    continue
                received[k].append(index_of(msg))
                consumer.acknowledge(msg)
                with lock:
                    total[0] += 1
        except Exception as e:  # reported below, not lost in the thread
            errors.append(e)

    threads = [threading.Thread(target=consume, args=(k,), daemon=True) for k in range(2)]
    for t in threads:
        t.start()
    try:
        produce(client, topic, N, batching=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not errors:
            with lock:
                if total[0] >= N:
                    break
            time.sleep(0.05)
        # Anything beyond N would be a duplicate: give it a moment to show.
        time.sleep(0.5)
    finally:
        stop.set()
        for t in threads:
            t.join(5)
    assert not errors, f"consumer thread failed: {errors[0]!r}"

    everything = sorted(received[0] + received[1])
    missing = sorted(set(range(N)) - set(everything))
    assert not missing, f"{len(missing)} messages never delivered, e.g. {missing[:10]}"
    assert everything == list(range(N)), (
        f"{len(everything) - N} duplicate deliveries across the shared consumers"
    )
    for k, got in enumerate(received):
        assert got, f"consumer c{k} got nothing: the subscription did not share"
        assert got == sorted(got), f"consumer c{k} got messages out of order"

    # Every ack reached the broker: a new consumer on the subscription
    # finds nothing left.
    for consumer in consumers:
        consumer.close()
    again = client.subscribe(topic, "shared", consumer_type=pulsar.ConsumerType.Shared)
    assert_no_more(again, 2000)


def test_exclusive_subscription_rejects_second_consumer(new_client, topic):
    client = new_client()
    first = client.subscribe(topic, "only-one", consumer_type=pulsar.ConsumerType.Exclusive)
    with pytest.raises(pulsar.ConsumerBusy):
        new_client().subscribe(topic, "only-one", consumer_type=pulsar.ConsumerType.Exclusive)
    # The first consumer is unaffected.
    producer = client.create_producer(topic)
    producer.send(payload(7))
    assert index_of(first.receive(10_000)) == 7
