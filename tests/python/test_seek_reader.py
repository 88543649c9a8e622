"""Positioning: consumer seek by message id and by publish time,
GET_LAST_MESSAGE_ID, and the Reader API."""

import time

import pulsar
import pytest

from support import (
    SendResults,
    assert_no_more,
    id_key,
    index_of,
    payload,
    produce,
    receive_n,
)

# Client behaviour is the same over either storage architecture.
BOTH_ARCHITECTURES = True

COUNT = 100


def produce_spaced(client, topic, count=COUNT):
    """Sends `count` unbatched messages 20 ms apart, so every message has its
    own entry and publish time; returns their ids and publish times."""
    producer = client.create_producer(topic, batching_enabled=False)
    ids = []
    for i in range(count):
        if i:
            time.sleep(0.02)  # the subject: distinct publish times
        ids.append(producer.send(payload(i)))
    producer.close()
    return ids


def next_index(consumer_or_reader):
    if isinstance(consumer_or_reader, pulsar.Reader):
        return index_of(consumer_or_reader.read_next(10_000))
    return index_of(consumer_or_reader.receive(10_000))


def test_consumer_seek_by_message_id_and_timestamp(new_client, topic):
    client = new_client()
    consumer = client.subscribe(
        topic,
        "seek",
        consumer_type=pulsar.ConsumerType.Exclusive,
        initial_position=pulsar.InitialPosition.Earliest,
    )
    sent_ids = produce_spaced(client, topic)
    messages = receive_n(consumer, COUNT, ack=True)
    assert [index_of(m) for m in messages] == list(range(COUNT))
    ids = [m.message_id() for m in messages]
    assert [id_key(i) for i in ids] == [id_key(i) for i in sent_ids]
    timestamps = [m.publish_timestamp() for m in messages]
    assert timestamps == sorted(timestamps)
    assert_no_more(consumer, 500)

    # GET_LAST_MESSAGE_ID
    assert id_key(consumer.get_last_message_id())[:2] == id_key(ids[-1])[:2]

    consumer.seek(pulsar.MessageId.earliest)
    assert next_index(consumer) == 0

    # The broker resets to the entry itself; this client (its default
    # start_message_id_inclusive=False) then skips that one message.
    consumer.seek(ids[50])
    assert [next_index(consumer) for _ in range(2)] == [51, 52]

    # By publish time: the first message published at or after it. (The
    # client forgets the previous seek's message id only if the broker
    # closes the consumer before it answers the seek, as Pulsar does.)
    consumer.seek(timestamps[42])
    assert [next_index(consumer) for _ in range(2)] == [42, 43], (
        "after a seek by message id, a seek by publish time did not rewind "
        "(is CLOSE_CONSUMER sent before the SEEK success?)"
    )


def test_consumer_seek_inclusive_redelivers_the_message_itself(new_client, topic):
    client = new_client()
    consumer = client.subscribe(
        topic,
        "seek-inclusive",
        consumer_type=pulsar.ConsumerType.Exclusive,
        initial_position=pulsar.InitialPosition.Earliest,
        start_message_id_inclusive=True,
    )
    produce_spaced(client, topic, 60)
    ids = [m.message_id() for m in receive_n(consumer, 60, ack=True)]
    consumer.seek(ids[50])
    assert [next_index(consumer) for _ in range(2)] == [50, 51]


def test_reader_reads_everything(new_client, topic):
    client = new_client()
    ids = produce(client, topic, 1000, batching=True)

    reader = client.create_reader(topic, pulsar.MessageId.earliest)
    messages = [reader.read_next(10_000) for _ in range(1000)]
    assert [index_of(m) for m in messages] == list(range(1000))
    assert [id_key(m.message_id()) for m in messages] == ids
    assert not reader.has_message_available()  # GET_LAST_MESSAGE_ID
    with pytest.raises(pulsar.Timeout):
        reader.read_next(500)

    latest = client.create_reader(topic, pulsar.MessageId.latest)
    with pytest.raises(pulsar.Timeout):
        latest.read_next(300)
    producer = client.create_producer(topic)
    producer.send(payload(1000))
    assert reader.has_message_available()
    assert next_index(reader) == 1000
    assert next_index(latest) == 1000

    # From the middle of a batch: the client drops the batch's earlier
    # messages, the broker must deliver the entry that holds it.
    k = next((k for k in range(500, 990) if id_key(messages[k].message_id())[3] > 0), None)
    assert k is not None, "no batched message between 500 and 990"
    from_middle = client.create_reader(topic, messages[k].message_id())
    assert [next_index(from_middle) for _ in range(3)] == [k + 1, k + 2, k + 3]

    # Seek by publish time rewinds a reader to the first message.
    reader.seek(messages[0].publish_timestamp())
    assert next_index(reader) == 0


def test_get_last_message_id_names_the_last_message_sent(new_client, topic):
    """GET_LAST_MESSAGE_ID on an empty topic names no entry; after each send
    it names exactly the message sent last (its entry, and in a batch the
    index of the batch's last message)."""
    client = new_client()
    consumer = client.subscribe(topic, "last", initial_position=pulsar.InitialPosition.Earliest)
    reader = client.create_reader(topic, pulsar.MessageId.earliest)
    empty = id_key(consumer.get_last_message_id())
    assert empty[1] == -1, f"an empty topic has no last entry, got {empty}"
    assert not reader.has_message_available()
    assert_no_more(consumer, 300)

    producer = client.create_producer(topic, batching_enabled=False)
    for i in range(3):
        sent = id_key(producer.send(payload(i)))
        last = id_key(consumer.get_last_message_id())
        assert last[:2] == sent[:2], f"after sending #{i} at {sent}, last message id is {last}"
        assert last[3] in (-1, 0), last  # an unbatched entry: no batch index
    assert reader.has_message_available()

    # A batch of 5 is one entry; the last message is its index 4.
    batched = client.create_producer(
        topic, batching_enabled=True, batching_max_messages=5, batching_max_publish_delay_ms=1000
    )
    sent = SendResults()
    for i in range(3, 8):
        batched.send_async(payload(i), sent.callback(i))
    batched.flush()
    assert sent.wait_for(5, 30) and sent.count_ok() == 5
    ids = sent.snapshot()
    assert len({ids[i][1][:2] for i in range(3, 8)}) == 1, f"not one entry: {ids}"
    last = id_key(consumer.get_last_message_id())
    assert last[:2] == ids[7][1][:2] and last[3] == 4, (
        f"last message id {last}, expected entry {ids[7][1][:2]} batch index 4"
    )
    assert [index_of(m) for m in receive_n(consumer, 8)] == list(range(8))
