"""Subscription types and acknowledgement semantics with the official client:
Key_Shared (stable key ownership, auto-split, sticky ranges, per-key order
across consumer changes), Failover (one active consumer, switch-over),
Shared (a slow consumer does not stall the others), negative acks, ack
timeout, dead-letter topics, cumulative acks and unsubscribe."""

import collections
import time

import pulsar

from support import (
    RECEIVE_TIMEOUT_MS,
    SendResults,
    assert_no_more,
    drain,
    index_of,
    payload,
    produce,
    receive_n,
    wait_backlog,
)

# Client behaviour is the same over either storage architecture.
BOTH_ARCHITECTURES = True

KEYS = 12


def key_of(i: int) -> str:
    return f"key-{i % KEYS}"


def produce_keyed(client, topic, count, start=0):
    """Sends payload(i) with key key_of(i), batched by key as Key_Shared
    producers should be; returns once every send is acknowledged."""
    producer = client.create_producer(
        topic,
        batching_enabled=True,
        batching_type=pulsar.BatchingType.KeyBased,
        batching_max_publish_delay_ms=5,
        block_if_queue_full=True,
    )
    sent = SendResults()
    for i in range(start, start + count):
        producer.send_async(payload(i), sent.callback(i), partition_key=key_of(i))
    producer.flush()
    assert sent.wait_for(count, 60)
    assert sent.count_ok() == count, "some keyed sends failed"
    producer.close()


def receive_all(consumers, expected, idle_ms=3000, ack=True):
    """Receives from every consumer (round robin) until `expected` messages
    arrived or nothing comes for `idle_ms`; returns per-consumer message
    numbers in arrival order."""
    got = [[] for _ in consumers]
    total = 0
    idle_since = time.monotonic()
    while total < expected and time.monotonic() - idle_since < idle_ms / 1000:
        progressed = False
        for n, consumer in enumerate(consumers):
            try:
                msg = consumer.receive(50)
            except pulsar.Timeout:
                continue
            got[n].append(index_of(msg))
            if ack:
                consumer.acknowledge(msg)
            total += 1
            progressed = True
        if progressed:
            idle_since = time.monotonic()
    return got


def assert_key_ownership_and_order(got):
    owner = {}
    for n, numbers in enumerate(got):
        per_key = collections.defaultdict(list)
        for i in numbers:
            key = key_of(i)
            assert owner.setdefault(key, n) == n, f"{key} went to consumers {owner[key]} and {n}"
            per_key[key].append(i)
        for key, seq in per_key.items():
            assert seq == sorted(seq), f"{key} out of order on consumer {n}: {seq[:20]}"


def key_shared(client, topic, name, sub="ks", **options):
    return client.subscribe(
        topic,
        sub,
        consumer_type=pulsar.ConsumerType.KeyShared,
        consumer_name=name,
        initial_position=pulsar.InitialPosition.Earliest,
        **options,
    )


def test_key_shared_same_key_same_consumer(magnetar, new_client, topic):
    client = new_client()
    consumers = [key_shared(client, topic, f"c{n}") for n in range(3)]
    produce_keyed(client, topic, 3000)
    got = receive_all(consumers, 3000)
    assert sorted(i for numbers in got for i in numbers) == list(range(3000))
    assert_key_ownership_and_order(got)
    assert sum(1 for numbers in got if numbers) >= 2, "keys were not spread over consumers"


def test_key_shared_new_consumer_waits_for_earlier_messages_of_its_keys(
    magnetar, new_client, topic
):
    """Consumer A holds unacknowledged messages of every key; B joins and
    takes over half of the hash range. B must get nothing of a key before A
    acknowledged that key's earlier messages; afterwards B gets its keys in
    order."""
    client = new_client()
    a = key_shared(client, topic, "a")
    produce_keyed(client, topic, 120)
    held = receive_n(a, 120)  # not acknowledged yet
    b = key_shared(client, topic, "b")
    produce_keyed(client, topic, 240, start=120)
    # B may receive nothing while A holds every key's earlier messages.
    try:
        early = b.receive(1500)
        raise AssertionError(f"B got #{index_of(early)} before A acknowledged its key")
    except pulsar.Timeout:
        pass
    for msg in held:
        a.acknowledge(msg)
    got = receive_all([a, b], 240)
    assert sorted(i for numbers in got for i in numbers) == list(range(120, 360))
    assert got[1], "B never got a share of the keys after the split"
    assert_key_ownership_and_order(got)


def test_key_shared_consumer_leaving_hands_keys_over_in_order(magnetar, new_client, topic):
    client = new_client()
    a = key_shared(client, topic, "a")
    b = key_shared(client, topic, "b")
    produce_keyed(client, topic, 600)
    got = receive_all([a, b], 600, ack=False)
    assert got[0] and got[1], "both consumers should own keys"
    # A acknowledges nothing and leaves: B gets A's keys from the start.
    a.close()
    handed = receive_all([b], len(got[0]))[0]
    assert sorted(handed) == sorted(got[0])
    per_key = collections.defaultdict(list)
    for i in handed:
        per_key[key_of(i)].append(i)
    for key, seq in per_key.items():
        assert seq == sorted(seq), f"{key} out of order after the hand-over"


def test_key_shared_sticky_ranges(magnetar, new_client, topic):
    client = new_client()
    low = key_shared(
        client,
        topic,
        "low",
        key_shared_policy=pulsar.ConsumerKeySharedPolicy(
            key_shared_mode=pulsar.KeySharedMode.Sticky, sticky_ranges=[(0, 32767)]
        ),
    )
    high = key_shared(
        client,
        topic,
        "high",
        key_shared_policy=pulsar.ConsumerKeySharedPolicy(
            key_shared_mode=pulsar.KeySharedMode.Sticky, sticky_ranges=[(32768, 65535)]
        ),
    )
    try:
        key_shared(
            client,
            topic,
            "overlap",
            key_shared_policy=pulsar.ConsumerKeySharedPolicy(
                key_shared_mode=pulsar.KeySharedMode.Sticky, sticky_ranges=[(100, 200)]
            ),
        )
        raise AssertionError("a consumer with an overlapping range was accepted")
    except pulsar.PulsarException:
        pass
    produce_keyed(client, topic, 1200)
    got = receive_all([low, high], 1200)
    assert sorted(i for numbers in got for i in numbers) == list(range(1200))
    assert_key_ownership_and_order(got)


def failover(client, topic, name, **options):
    return client.subscribe(
        topic,
        "fo",
        consumer_type=pulsar.ConsumerType.Failover,
        consumer_name=name,
        initial_position=pulsar.InitialPosition.Earliest,
        **options,
    )


def test_failover_one_active_then_switch_over(magnetar, new_client, topic):
    client = new_client()
    second = failover(client, topic, "consumer-b")
    first = failover(client, topic, "consumer-a")
    produce(client, topic, 200, batching=False)
    # consumer-a sorts first: it alone receives.
    got = receive_n(first, 100)
    assert [index_of(m) for m in got] == list(range(100))
    assert_no_more(second, 500)
    for msg in got[:50]:
        first.acknowledge(msg)
    # The client sends acks asynchronously: wait until the broker has them.
    wait_backlog(magnetar.http_url, topic, "fo", 150)
    first.close()
    # consumer-b takes over from the first unacknowledged message, nothing
    # acknowledged comes back.
    rest = [index_of(m) for m in receive_n(second, 150)]
    assert rest == list(range(50, 200))
    assert_no_more(second, 500)


def test_shared_slow_consumer_does_not_stall_others(magnetar, new_client, topic):
    """A Shared consumer that never receives is given only what its permits
    allow (receiver queue 1); everything else goes to the fast consumer
    without waiting for it. What the slow one holds is neither lost nor
    withheld: it receives it, and what it leaves unacknowledged goes to the
    fast one when it leaves."""
    count = 2000
    client = new_client()
    slow = client.subscribe(
        topic,
        "shared",
        consumer_type=pulsar.ConsumerType.Shared,
        receiver_queue_size=1,
        initial_position=pulsar.InitialPosition.Earliest,
    )
    fast = client.subscribe(
        topic,
        "shared",
        consumer_type=pulsar.ConsumerType.Shared,
        initial_position=pulsar.InitialPosition.Earliest,
    )
    produce(client, topic, count, batching=False)
    got = [index_of(m) for m in receive_n(fast, count - 2, ack=True)]
    got += drain(fast, idle_ms=1000)
    assert len(got) == len(set(got)), "the fast consumer got duplicates"
    held = sorted(set(range(count)) - set(got))
    assert 1 <= len(held) <= 2, (
        f"the slow consumer (receiver queue 1) should hold 1 or 2 messages, holds {held}"
    )
    # It was given its share and gets it when it finally receives...
    first = index_of(slow.receive(RECEIVE_TIMEOUT_MS))
    assert first == held[0], f"the slow consumer received #{first}, it held {held}"
    # ...and leaving without acknowledging hands all it held to the fast one.
    slow.close()
    again = [index_of(m) for m in receive_n(fast, len(held), ack=True)]
    assert sorted(again) == held, f"after the slow consumer left: {again}, it held {held}"
    assert_no_more(fast, 500)


def test_negative_ack_redelivers_after_delay(magnetar, new_client, topic):
    client = new_client()
    consumer = client.subscribe(
        topic,
        "nack",
        consumer_type=pulsar.ConsumerType.Shared,
        negative_ack_redelivery_delay_ms=500,
        initial_position=pulsar.InitialPosition.Earliest,
    )
    produce(client, topic, 3, batching=False)
    first = receive_n(consumer, 3)
    assert [m.redelivery_count() for m in first] == [0, 0, 0]
    consumer.acknowledge(first[0])
    consumer.acknowledge(first[2])
    consumer.negative_acknowledge(first[1])
    again = receive_n(consumer, 1)[0]
    assert index_of(again) == 1
    assert again.redelivery_count() == 1
    consumer.acknowledge(again)
    assert_no_more(consumer, 1500)


def test_ack_timeout_redelivers(magnetar, new_client, topic):
    client = new_client()
    consumer = client.subscribe(
        topic,
        "timeout",
        consumer_type=pulsar.ConsumerType.Shared,
        unacked_messages_timeout_ms=10_000,  # the client's minimum
        initial_position=pulsar.InitialPosition.Earliest,
    )
    produce(client, topic, 2, batching=False)
    first = receive_n(consumer, 2)
    consumer.acknowledge(first[0])
    again = receive_n(consumer, 1, timeout_ms=30_000)[0]
    assert index_of(again) == 1
    assert again.redelivery_count() >= 1
    consumer.acknowledge(again)


def test_dead_letter_topic_after_max_redeliveries(magnetar, new_client, topic):
    client = new_client()
    dlq = topic + "-DLQ"
    dlq_consumer = client.subscribe(
        dlq, "dlq-reader", initial_position=pulsar.InitialPosition.Earliest
    )
    consumer = client.subscribe(
        topic,
        "dlq",
        consumer_type=pulsar.ConsumerType.Shared,
        negative_ack_redelivery_delay_ms=200,
        dead_letter_policy=pulsar.ConsumerDeadLetterPolicy(
            max_redeliver_count=2, dead_letter_topic=dlq
        ),
        initial_position=pulsar.InitialPosition.Earliest,
    )
    produce(client, topic, 1, batching=False)
    counts = []
    for _ in range(3):
        msg = receive_n(consumer, 1)[0]
        counts.append(msg.redelivery_count())
        consumer.negative_acknowledge(msg)
    assert counts == [0, 1, 2]
    dead = receive_n(dlq_consumer, 1, timeout_ms=15_000)[0]
    assert index_of(dead) == 0
    assert_no_more(consumer, 1500)


def test_cumulative_ack_is_kept(magnetar, new_client, topic):
    client = new_client()
    consumer = client.subscribe(
        topic, "cumulative", initial_position=pulsar.InitialPosition.Earliest
    )
    produce(client, topic, 100, batching=False)
    got = receive_n(consumer, 100)
    consumer.acknowledge_cumulative(got[59])
    wait_backlog(magnetar.http_url, topic, "cumulative", 40)
    consumer.close()
    consumer = client.subscribe(topic, "cumulative")
    assert [index_of(m) for m in receive_n(consumer, 40)] == list(range(60, 100))
    assert_no_more(consumer, 500)


def test_unsubscribe_deletes_the_cursor(magnetar, new_client, topic):
    client = new_client()
    consumer = client.subscribe(
        topic, "gone", initial_position=pulsar.InitialPosition.Earliest
    )
    produce(client, topic, 10, batching=False)
    receive_n(consumer, 10)  # delivered, never acknowledged
    consumer.unsubscribe()
    # A new subscription of that name starts where asked, not at the old cursor.
    consumer = client.subscribe(topic, "gone", initial_position=pulsar.InitialPosition.Latest)
    assert_no_more(consumer, 1000)
    produce(client, topic, 1, start=10, batching=False)
    assert index_of(receive_n(consumer, 1)[0]) == 10
