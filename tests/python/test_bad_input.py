"""Requests the broker must refuse without harm to anyone else: topics that
cannot exist, messages over the size limit."""

import time

import pulsar
import pytest

import raw_pulsar
from raw_pulsar import RawConnection
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

# The broker's default maxMessageSize (5 MiB), advertised in CONNECTED.
MAX_MESSAGE_SIZE = 5 * 1024 * 1024


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


def test_client_refuses_a_message_over_the_advertised_limit(new_client, topic):
    """The broker advertises its limit in CONNECTED, so the official client
    fails an oversized send itself (the broker's own check is tested over a
    raw socket below); its producer keeps working."""
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


def test_broker_refuses_an_oversized_send_and_keeps_serving(magnetar, new_client, topic):
    """A SEND whose message is over the broker's 5 MiB limit (in a frame the
    decoder still accepts), sent from a raw socket so that no client check
    stands in the way: the broker answers that SEND with SEND_ERROR, stores
    nothing of it, and keeps serving the same connection and others."""
    client = new_client()
    consumer = client.subscribe(topic, "sub", initial_position=pulsar.InitialPosition.Earliest)

    raw = RawConnection("127.0.0.1", magnetar.broker_port)
    other = RawConnection("127.0.0.1", magnetar.broker_port)
    try:
        connected = raw.connect()
        assert connected.get(3) == MAX_MESSAGE_SIZE, f"advertised limit: {connected}"
        other.connect()
        name = raw.create_producer(topic, producer_id=1)
        other_name = other.create_producer(topic, producer_id=7)

        raw.send_message(1, name, 0, payload(0))
        receipt = raw.read_reply()
        assert (receipt.kind, receipt.get(2)) == (raw_pulsar.SEND_RECEIPT, 0), receipt

        raw.send_message(1, name, 1, b"x" * (MAX_MESSAGE_SIZE + 1024))
        refused = raw.read_reply()
        assert refused.kind == raw_pulsar.SEND_ERROR, f"oversized SEND answered {refused}"
        assert refused.get(1) == 1 and refused.get(2) == 1, refused
        assert refused.get(3) == raw_pulsar.NOT_ALLOWED_ERROR, refused
        print(f"oversized SEND refused: {refused.get(4, b'').decode()}")

        # The same connection and producer keep working...
        raw.send_message(1, name, 2, payload(1))
        receipt = raw.read_reply()
        assert (receipt.kind, receipt.get(2)) == (raw_pulsar.SEND_RECEIPT, 2), receipt
        # ...and so does another connection.
        other.send_message(7, other_name, 0, payload(2))
        receipt = other.read_reply()
        assert (receipt.kind, receipt.get(2)) == (raw_pulsar.SEND_RECEIPT, 0), receipt
    finally:
        raw.close()
        other.close()

    # Nothing of the refused message is stored.
    assert [index_of(consumer.receive(10_000)) for _ in range(3)] == [0, 1, 2]
    assert_no_more(consumer)
    round_trip(new_client(), topic + "-after", 3)


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
