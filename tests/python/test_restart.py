"""What survives a restart of `magnetar standalone`: subscription cursors
after SIGTERM and after kill -9, and acknowledged messages after a crash in
the middle of a produce stream."""

import time

import pulsar

from support import (
    BATCHING,
    SendResults,
    close_quietly,
    assert_no_more,
    drain,
    index_of,
    payload,
    produce,
    receive_n,
)

# Client behaviour is the same over either storage architecture.
BOTH_ARCHITECTURES = True

N = 10_000
HALF = N // 2


def consume_and_ack_first_half(client, topic, subscription):
    """Produces N messages (a batch boundary at HALF, so acking the first
    half acknowledges whole entries), receives all N in order on an
    Exclusive subscription and acknowledges only the first HALF."""
    consumer = client.subscribe(
        topic,
        subscription,
        consumer_type=pulsar.ConsumerType.Exclusive,
        initial_position=pulsar.InitialPosition.Earliest,
    )
    produce(client, topic, N, batching=True, flush_every=HALF)
    messages = receive_n(consumer, N)
    assert [index_of(m) for m in messages] == list(range(N))
    for msg in messages[:HALF]:
        consumer.acknowledge(msg)
    return consumer


def assert_redelivered_exactly_second_half(client, topic, subscription):
    consumer = client.subscribe(
        topic, subscription, consumer_type=pulsar.ConsumerType.Exclusive
    )
    first = index_of(receive_n(consumer, 1)[0])
    assert first >= HALF, (
        f"acknowledged message #{first} was delivered again; the cursor lost "
        f"acks of messages {first}..{HALF - 1}"
    )
    assert first == HALF, f"unacknowledged messages {HALF}..{first - 1} were lost"
    rest = [index_of(m) for m in receive_n(consumer, N - HALF - 1)]
    assert rest == list(range(HALF + 1, N)), "redelivery is not messages 5001..9999 in order"
    assert_no_more(consumer)


def test_acks_survive_graceful_restart(magnetar, new_client, topic):
    client = new_client()
    consumer = consume_and_ack_first_half(client, topic, "graceful")
    consumer.close()  # sends any acks the client still groups
    client.close()

    magnetar.restart(graceful=True)

    assert_redelivered_exactly_second_half(new_client(), topic, "graceful")


def test_acks_survive_kill9_after_flush_interval(magnetar, new_client, topic):
    client = new_client()
    consume_and_ack_first_half(client, topic, "crash")
    # The client sends grouped acks every 100 ms and the broker persists
    # cursors about every 100 ms: after a second every ack is durable.
    time.sleep(1.0)
    magnetar.kill9()  # the consumer is still connected: no close, no flush
    close_quietly(client)
    magnetar.start()

    assert_redelivered_exactly_second_half(new_client(), topic, "crash")


def test_acknowledged_sends_survive_kill9_mid_stream(magnetar, new_client, topic):
    """kill -9 while a producer has sends in flight, restart while it is
    still connected: every send the broker acknowledged is stored, in order;
    sends whose callback failed may or may not be."""
    client = new_client(operation_timeout_seconds=10)
    producer = client.create_producer(
        topic,
        block_if_queue_full=False,
        max_pending_messages=10_000,
        send_timeout_millis=30_000,
        **BATCHING,
    )
    sent = SendResults()
    n_sent = 0

    def send(i):
        nonlocal n_sent
        n_sent += 1
        try:
            producer.send_async(payload(i), sent.callback(i))
        except pulsar.PulsarException as e:
            sent.record_failure(i, e)

    # Phase 1: a stream the broker acknowledges part of.
    for i in range(0, 2000):
        send(i)
    deadline = time.monotonic() + 30
    while sent.count_ok() < 500 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert sent.count_ok() >= 500, "the broker acknowledged too few sends before the crash"
    # Phase 2: more in flight, then the crash right behind them.
    for i in range(2000, 4000):
        send(i)
    magnetar.kill9()
    acked_before_crash = sent.count_ok()

    # Phase 3: the server comes back on the same port; the producer
    # reconnects and resends what it still holds, then sends more.
    time.sleep(0.5)
    magnetar.start()
    for i in range(4000, 6000):
        send(i)
    try:
        producer.flush()
    except pulsar.PulsarException:
        pass  # failed sends show in their callbacks
    assert sent.wait_for(n_sent, 60), (
        f"{n_sent - len(sent.snapshot())} send callbacks never arrived"
    )
    acked = sent.ok()
    assert any(i >= 4000 for i in acked), (
        "no send after the restart was acknowledged: the producer did not recover"
    )
    close_quietly(client)

    reader_client = new_client()
    consumer = reader_client.subscribe(
        topic, "verify", initial_position=pulsar.InitialPosition.Earliest
    )
    stored = drain(consumer)
    first_position = {}
    for position, i in enumerate(stored):
        first_position.setdefault(i, position)
    lost = [i for i in acked if i not in first_position]
    assert not lost, (
        f"{len(lost)} of {len(acked)} acknowledged sends are missing "
        f"({acked_before_crash} were acknowledged before the crash), e.g. {lost[:10]}"
    )
    order = [first_position[i] for i in acked]
    out_of_order = [acked[k] for k in range(1, len(acked)) if order[k] < order[k - 1]]
    assert not out_of_order, f"acknowledged sends stored out of order, e.g. {out_of_order[:10]}"
