"""kill -9 of the server in the middle of a consumer change, with the
official client: during a Failover switch-over and while a Key_Shared
subscription gains a consumer. After the restart no unacknowledged message
is lost, no acknowledged one comes back, and each key stays in order."""

import collections
import time

import pulsar

from support import drain, id_key, index_of, produce, receive_n, wait_mark_delete_persisted
from test_subscriptions import key_of, key_shared, produce_keyed

# Client behaviour is the same over either storage architecture.
BOTH_ARCHITECTURES = True


def test_kill9_during_failover_switch_over(magnetar, new_client, topic):
    client = new_client()
    # Batch-index acks: batch boundaries fall anywhere, and without them a
    # client acknowledges a batch only once every message of it is acked.
    active = client.subscribe(
        topic,
        "fo",
        consumer_type=pulsar.ConsumerType.Failover,
        consumer_name="a",
        initial_position=pulsar.InitialPosition.Earliest,
        batch_index_ack_enabled=True,
    )
    standby = client.subscribe(
        topic,
        "fo",
        consumer_type=pulsar.ConsumerType.Failover,
        consumer_name="b",
        initial_position=pulsar.InitialPosition.Earliest,
        batch_index_ack_enabled=True,
    )
    # A batch boundary at #1000, so the acknowledged messages are whole
    # entries and the stored mark-delete position says they are all stored.
    produce(client, topic, 2000, batching=True, flush_every=1000)
    got = receive_n(active, 1200)
    assert [index_of(m) for m in got] == list(range(1200))
    for msg in got[:1000]:
        active.acknowledge(msg)
    wait_mark_delete_persisted(magnetar.http_url, topic, "fo", id_key(got[999].message_id()))
    active.close()  # switch-over starts ...
    magnetar.kill9()  # ... and the server dies in the middle of it
    magnetar.start()
    # At least once: what was delivered but not acknowledged before the
    # crash may come twice; nothing acknowledged may come back.
    rest = [index_of(m) for m in receive_n(standby, 1000, timeout_ms=30_000)]
    rest += drain(standby, idle_ms=2000)
    assert min(rest) == 1000, f"acknowledged message #{min(rest)} came back after the crash"
    assert set(rest) == set(range(1000, 2000)), "unacknowledged messages were lost"
    assert_in_order_with_restarts(rest)


def assert_in_order_with_restarts(numbers):
    """Each run of deliveries is ascending; a redelivery restarts lower."""
    runs = [[numbers[0]]]
    for i in numbers[1:]:
        if i > runs[-1][-1]:
            runs[-1].append(i)
        else:
            runs.append([i])
    for run in runs:
        assert run == list(range(run[0], run[0] + len(run))), f"gap inside a run: {run[:10]}..."


def test_kill9_during_key_shared_consumer_change(magnetar, new_client, topic):
    client = new_client()
    # Batch-index acks, so the acknowledged half of a batch stays
    # acknowledged (without them a client acks a batch only when whole).
    first = key_shared(client, topic, "a", batch_index_ack_enabled=True)
    # Two rounds, so messages 0..599 fill whole entries before 600..1199.
    produce_keyed(client, topic, 600)
    produce_keyed(client, topic, 600, start=600)
    got = receive_n(first, 1200)
    acked = set()
    for msg in got:
        i = index_of(msg)
        if i < 600:
            first.acknowledge(msg)
            acked.add(i)
    # Once their last entry is the stored mark-delete position, every ack
    # is stored.
    last = max(id_key(m.message_id())[:2] for m in got if index_of(m) < 600)
    wait_mark_delete_persisted(magnetar.http_url, topic, "ks", last)
    second = key_shared(client, topic, "b", batch_index_ack_enabled=True)  # the change ...
    magnetar.kill9()  # ... interrupted by a crash
    magnetar.start()
    # Both clients reconnect on their own. Record one timeline of what
    # arrives where; a consumer acks as it receives, so a key can only move
    # to the other consumer after its earlier messages were acknowledged.
    timeline = []
    idle_since = time.monotonic()
    while time.monotonic() - idle_since < 5:
        for n, consumer in enumerate((first, second)):
            try:
                msg = consumer.receive(50)
            except pulsar.Timeout:
                continue
            timeline.append((n, index_of(msg)))
            consumer.acknowledge(msg)
            idle_since = time.monotonic()
    numbers = [i for _, i in timeline]
    assert not acked.intersection(numbers), "acknowledged messages came back after the crash"
    assert set(numbers) == set(range(600, 1200)), (
        f"unacknowledged messages lost: {len(set(range(600, 1200)) - set(numbers))} missing"
    )
    # A key's messages never overtake each other; a redelivery after the
    # crash may repeat a key's messages from an earlier point.
    per_key = collections.defaultdict(list)
    for _, i in timeline:
        per_key[key_of(i)].append(i)
    for key, seq in per_key.items():
        first_seen = []
        for i in seq:
            if i not in first_seen:
                first_seen.append(i)
        assert first_seen == sorted(first_seen), f"{key} out of order: {seq[:20]}"
