"""What survives a restart of `magnetar standalone`: subscription cursors
after SIGTERM and after kill -9, and acknowledged messages and at-least-once
delivery after a crash with sends and acknowledgements in flight."""

import threading
import time

import pulsar

from support import (
    BATCHING,
    CURSOR_FLUSH_MARGIN_S,
    SendResults,
    close_quietly,
    id_key,
    assert_no_more,
    drain,
    index_of,
    payload,
    produce,
    receive_n,
    wait_mark_delete_persisted,
    wait_until,
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
    return consumer, id_key(messages[HALF - 1].message_id())


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
    consumer, _ = consume_and_ack_first_half(client, topic, "graceful")
    consumer.close()  # sends any acks the client still groups
    client.close()

    magnetar.restart(graceful=True)

    assert_redelivered_exactly_second_half(new_client(), topic, "graceful")


def test_acks_survive_kill9_after_flush_interval(magnetar, new_client, topic):
    client = new_client()
    _, last_acked = consume_and_ack_first_half(client, topic, "crash")
    # The client sends grouped acks every 100 ms and the broker stores
    # cursors every 100 ms: wait until it has stored them all.
    wait_mark_delete_persisted(magnetar.http_url, topic, "crash", last_acked)
    magnetar.kill9()  # the consumer is still connected: no close, no flush
    close_quietly(client)
    magnetar.start()

    assert_redelivered_exactly_second_half(new_client(), topic, "crash")


def test_kill9_with_sends_and_acks_in_flight(magnetar, new_client, topic):
    """kill -9 while a producer has sends in flight and a consumer is
    receiving and acknowledging, restart while both are still connected:
    every send the broker acknowledged is stored, in the order of its
    receipts (sends whose callback failed may or may not be); and the
    subscription resumes at least once: what comes again is the stored
    stream from some point no later than the first message the consumer had
    not acknowledged, in order, with nothing skipped."""
    client = new_client(operation_timeout_seconds=10)
    producer = client.create_producer(
        topic,
        block_if_queue_full=False,
        max_pending_messages=10_000,
        send_timeout_millis=30_000,
        **BATCHING,
    )
    consumer = client.subscribe(
        topic,
        "live",
        consumer_type=pulsar.ConsumerType.Exclusive,
        initial_position=pulsar.InitialPosition.Earliest,
        batch_index_ack_enabled=True,
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

    # The consumer receives and acknowledges every message as it comes
    # until told to stop (at the crash).
    received = []
    acked_at = []
    stop = threading.Event()

    def consume():
        while not stop.is_set():
            try:
                msg = consumer.receive(100)
            except pulsar.Timeout:
                continue
            except pulsar.PulsarException:
                return
            if stop.is_set():
                return  # received after the crash began: neither kept nor acked
            received.append(index_of(msg))
            consumer.acknowledge(msg)
            acked_at.append(time.monotonic())

    consumer_thread = threading.Thread(target=consume, daemon=True)
    consumer_thread.start()

    # Phase 1: a stream the broker acknowledges part of, consumed as it goes.
    for i in range(0, 2000):
        send(i)
    wait_until(lambda: sent.count_ok() >= 500, 30, "the broker acknowledged 500 sends")
    wait_until(lambda: len(received) >= 300, 30, "the consumer acknowledged 300 messages")
    # Phase 2: more in flight, then the crash right behind them, with the
    # consumer still acknowledging.
    for i in range(2000, 4000):
        send(i)
    killed_at = time.monotonic()
    magnetar.kill9()
    stop.set()
    consumer_thread.join(10)
    assert not consumer_thread.is_alive(), "the consumer thread did not stop"
    acked_before_crash = sent.count_ok()
    consumer_acked = list(received)

    # Phase 3: the server comes back on the same port; the producer
    # reconnects and resends what it still holds, then sends more.
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
    receipts = sent.snapshot()
    acked = sent.ok()
    assert any(i >= 4000 for i in acked), (
        "no send after the restart was acknowledged: the producer did not recover"
    )
    close_quietly(client)

    reader_client = new_client()
    verify = reader_client.subscribe(
        topic, "verify", initial_position=pulsar.InitialPosition.Earliest
    )
    stored = drain(verify)
    first_position = {}
    for position, i in enumerate(stored):
        first_position.setdefault(i, position)
    lost = [i for i in acked if i not in first_position]
    assert not lost, (
        f"{len(lost)} of {len(acked)} acknowledged sends are missing "
        f"({acked_before_crash} were acknowledged before the crash), e.g. {lost[:10]}"
    )
    # Per-partition order is the order of receipts: by message id.
    by_receipt = sorted(acked, key=lambda i: receipts[i][1])
    order = [first_position[i] for i in by_receipt]
    out_of_order = [by_receipt[k] for k in range(1, len(order)) if order[k] < order[k - 1]]
    assert not out_of_order, f"acknowledged sends stored out of order, e.g. {out_of_order[:10]}"
    assert by_receipt == acked, "receipts came in a different order than the sends"

    # The consumer saw the stored stream from its start, in order.
    k = len(consumer_acked)
    assert consumer_acked == stored[:k], "the consumer did not receive the stored stream in order"
    # After the crash the subscription starts again at some p <= k (acks of
    # the last flush interval may be lost, at least once) and delivers
    # stored[p:], skipping nothing.
    resumed = reader_client.subscribe(topic, "live", consumer_type=pulsar.ConsumerType.Exclusive)
    again = drain(resumed)
    assert again, "nothing was redelivered to the subscription after the crash"
    p = len(stored) - len(again)
    assert 0 <= p <= k and again == stored[p:], (
        f"after the crash the subscription got {len(again)} messages starting with "
        f"{again[:5]}; expected the stored stream from a point at or before #{k} "
        f"(the first message never acknowledged), e.g. {stored[k:k + 5]}"
    )
    # Acks older than a flush interval (and the client's 100 ms grouping)
    # at the crash were persisted: they are not replayed.
    settled = sum(1 for t in acked_at[:k] if t < killed_at - CURSOR_FLUSH_MARGIN_S)
    assert p >= settled, (
        f"{settled} acks were over {CURSOR_FLUSH_MARGIN_S}s old at the crash, "
        f"yet the subscription resumed at #{p}"
    )
    print(
        f"acknowledged sends: {len(acked)} ({acked_before_crash} before the crash); "
        f"consumer acks: {k}, of which {k - p} were replayed after the crash"
    )
