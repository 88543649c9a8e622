"""Delayed delivery (`deliver_after` / `deliver_at`) on a Shared
subscription: a delayed message is held back until its time while later
messages flow, and arrives after it; an Exclusive subscription ignores the
delay, as in Pulsar."""

import time
from datetime import timedelta

import pulsar

from support import index_of, payload

# Client behaviour is the same over either storage architecture.
BOTH_ARCHITECTURES = True

DELAY_S = 2.0


def test_shared_subscription_holds_delayed_messages_until_due(new_client, topic):
    client = new_client()
    shared = client.subscribe(
        topic, "shared", consumer_type=pulsar.ConsumerType.Shared
    )
    exclusive = client.subscribe(
        topic, "exclusive", consumer_type=pulsar.ConsumerType.Exclusive
    )
    producer = client.create_producer(topic, batching_enabled=False)
    sent_at = time.monotonic()
    producer.send(payload(0), deliver_after=timedelta(seconds=DELAY_S))
    producer.send(payload(1))

    first = shared.receive(10_000)
    assert index_of(first) == 1, "the delayed message overtook nothing: it came first"
    assert time.monotonic() - sent_at < DELAY_S
    shared.acknowledge(first)
    delayed = shared.receive(10_000)
    waited = time.monotonic() - sent_at
    assert index_of(delayed) == 0
    assert waited >= DELAY_S - 0.2, f"delayed message arrived after {waited:.2f}s"
    shared.acknowledge(delayed)

    # Exclusive: no delay, in order.
    got = [index_of(exclusive.receive(10_000)) for _ in range(2)]
    assert got == [0, 1]
