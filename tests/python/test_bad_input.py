"""Requests the broker must refuse without harm to anyone else: topics that
cannot exist, messages over the size limit."""

import time

import pulsar
import pytest

from support import assert_no_more, index_of, payload

# Client behaviour is the same over either storage architecture.
BOTH_ARCHITECTURES = True

# Names the client passes through to the broker (it validates only their
# shape), each naming a tenant or namespace that does not exist.
UNSERVABLE_TOPICS = [
    "persistent://a/b/c/d/e",  # five parts: a v1 name in tenant "a"
    "persistent://no-such-tenant/default/t",
    "persistent://public/no-such-namespace/t",
]


def round_trip(client, topic, i):
    """Produces and consumes message `i` on `topic`."""
    consumer = client.subscribe(topic, "check", initial_position=pulsar.InitialPosition.Earliest)
    client.create_producer(topic).send(payload(i))
    assert index_of(consumer.receive(10_000)) == i
    consumer.close()


@pytest.mark.parametrize("bad_topic", UNSERVABLE_TOPICS)
def test_unservable_topic_is_refused(new_client, topic, bad_topic):
    bystander = new_client()
    bystander_consumer = bystander.subscribe(
        topic, "bystander", initial_position=pulsar.InitialPosition.Earliest
    )
    bystander_producer = bystander.create_producer(topic)
    bystander_producer.send(payload(0))

    # The C++ client retries some refusals (InvalidTopicName among them)
    # until the operation timeout, so keep it short.
    client = new_client(operation_timeout_seconds=3)
    started = time.monotonic()
    with pytest.raises(pulsar.PulsarException) as producer_error:
        client.create_producer(bad_topic)
    with pytest.raises(pulsar.PulsarException):
        client.subscribe(bad_topic, "s")
    elapsed = time.monotonic() - started
    print(f"{bad_topic}: {type(producer_error.value).__name__} ({elapsed:.1f}s for both)")

    # The refused client's connection still serves valid topics...
    round_trip(client, topic + "-after", 1)
    # ...and the other client never noticed.
    bystander_producer.send(payload(2))
    assert [index_of(bystander_consumer.receive(10_000)) for _ in range(2)] == [0, 2]


def test_oversized_message_fails_and_producer_keeps_working(new_client, topic):
    client = new_client()
    consumer = client.subscribe(topic, "sub", initial_position=pulsar.InitialPosition.Earliest)
    producer = client.create_producer(topic, batching_enabled=False, chunking_enabled=False)
    producer.send(payload(0))
    # 6 MB is above the default 5 MiB maxMessageSize.
    with pytest.raises(pulsar.PulsarException):
        producer.send(b"x" * (6 * 1000 * 1000))
    producer.send(payload(1))
    assert [index_of(consumer.receive(10_000)) for _ in range(2)] == [0, 1]
    assert_no_more(consumer)
    # The server is still fine for a fresh client too.
    round_trip(new_client(), topic + "-after", 2)


def test_large_message_under_limit_round_trips(new_client, topic):
    """A 4 MiB message is within the 5 MiB limit: one frame far larger than
    any socket read."""
    client = new_client()
    consumer = client.subscribe(topic, "sub", initial_position=pulsar.InitialPosition.Earliest)
    producer = client.create_producer(topic, batching_enabled=False)
    body = bytes(range(256)) * (4 * 1024 * 4)  # 4 MiB, every byte value
    producer.send(body)
    producer.send(payload(1))
    msg = consumer.receive(20_000)
    assert len(msg.data()) == len(body)
    assert msg.data() == body
    assert index_of(consumer.receive(10_000)) == 1
