"""Helpers shared by the client-compatibility tests: numbered payloads that
name themselves, producing with callbacks, receiving with deadlines."""

import threading
import time

import pulsar

# Every blocking receive has a deadline, so a hang fails instead of blocking.
RECEIVE_TIMEOUT_MS = 10_000

# Batching as the suite's batched producers use it.
BATCHING = dict(
    batching_enabled=True,
    batching_max_messages=1000,
    batching_max_publish_delay_ms=10,
)


def close_quietly(client, timeout_s: float = 10):
    """Closes a client without letting a dead server hang or fail the test."""

    def close():
        try:
            client.close()
        except Exception:
            pass

    t = threading.Thread(target=close, daemon=True)
    t.start()
    t.join(timeout_s)


def payload(i: int) -> bytes:
    """Message `i`: its number repeated, so a misplaced or corrupted message
    is caught by content."""
    return (b"m%06d;" % i) * 8


def index_of(msg) -> int:
    """The number of a message made by `payload`, checking its whole body."""
    data = msg.data()
    i = int(data[1:7])
    assert data == payload(i), f"corrupted message body: {data[:80]!r}"
    return i


def id_key(message_id):
    """A MessageId as a comparable tuple (ledger, entry, partition, batch)."""
    return (
        message_id.ledger_id(),
        message_id.entry_id(),
        message_id.partition(),
        message_id.batch_index(),
    )


class SendResults:
    """Collects send_async callbacks by message number; thread safe."""

    def __init__(self):
        self.lock = threading.Lock()
        self.results = {}  # i -> (pulsar.Result, id_key or None)
        self.done = threading.Condition(self.lock)

    def callback(self, i: int):
        def on_sent(res, msg_id):
            # Runs on the client's I/O thread: must never raise.
            try:
                key = id_key(msg_id) if res == pulsar.Result.Ok else None
            except Exception:
                key = None
            with self.lock:
                self.results[i] = (res, key)
                self.done.notify_all()

        return on_sent

    def record_failure(self, i: int, res):
        with self.lock:
            self.results[i] = (res, None)
            self.done.notify_all()

    def wait_for(self, count: int, timeout_s: float) -> bool:
        """Waits until `count` callbacks have arrived."""
        deadline = time.monotonic() + timeout_s
        with self.lock:
            while len(self.results) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.done.wait(left)
            return True

    def ok(self):
        """Numbers of the messages the broker acknowledged, ascending."""
        with self.lock:
            return sorted(i for i, (res, _) in self.results.items() if res == pulsar.Result.Ok)

    def count_ok(self) -> int:
        with self.lock:
            return sum(1 for res, _ in self.results.values() if res == pulsar.Result.Ok)

    def snapshot(self):
        with self.lock:
            return dict(self.results)


def produce(client, topic, count, start=0, batching=True, flush_every=None, **options):
    """Sends payload(start)..payload(start+count-1) with send_async, flushes,
    asserts every callback reported Ok and returns their message ids as
    id_key tuples, in message order. `flush_every` forces a batch boundary
    every that many messages."""
    producer_options = dict(BATCHING) if batching else dict(batching_enabled=False)
    producer_options.update(block_if_queue_full=True, send_timeout_millis=30_000)
    producer_options.update(options)
    producer = client.create_producer(topic, **producer_options)
    sent = SendResults()
    for n in range(count):
        i = start + n
        producer.send_async(payload(i), sent.callback(i))
        if flush_every and (n + 1) % flush_every == 0:
            producer.flush()
    producer.flush()
    assert sent.wait_for(count, 60), f"only {len(sent.snapshot())} of {count} send callbacks arrived"
    results = sent.snapshot()
    failed = {i: res for i, (res, _) in results.items() if res != pulsar.Result.Ok}
    assert not failed, f"{len(failed)} sends failed, e.g. {sorted(failed.items())[:5]}"
    producer.close()
    return [results[start + n][1] for n in range(count)]


def receive_n(consumer, count, timeout_ms=RECEIVE_TIMEOUT_MS, ack=False):
    """Receives `count` messages, each within `timeout_ms`; fails with how
    many arrived if one does not."""
    messages = []
    for _ in range(count):
        try:
            msg = consumer.receive(timeout_ms)
        except pulsar.Timeout:
            last = index_of(messages[-1]) if messages else None
            raise AssertionError(
                f"received {len(messages)} of {count} messages, then nothing for "
                f"{timeout_ms} ms (last was #{last})"
            )
        if ack:
            consumer.acknowledge(msg)
        messages.append(msg)
    return messages


def assert_no_more(consumer, wait_ms=1000):
    """Asserts no further message arrives within `wait_ms`."""
    try:
        msg = consumer.receive(wait_ms)
    except pulsar.Timeout:
        return
    raise AssertionError(f"unexpected extra message #{index_of(msg)} ({msg.message_id()})")


def drain(consumer, idle_ms=3000, limit_s=60):
    """Receives until nothing arrives for `idle_ms`; returns the message
    numbers in delivery order."""
    deadline = time.monotonic() + limit_s
    seen = []
    while time.monotonic() < deadline:
        try:
            msg = consumer.receive(idle_ms)
        except pulsar.Timeout:
            return seen
        seen.append(index_of(msg))
        consumer.acknowledge(msg)
    raise AssertionError(f"still receiving after {limit_s}s ({len(seen)} messages)")


def wait_until(condition, timeout_s: float = 30, what: str = "the condition", poll_s: float = 0.02):
    """Polls `condition()` until it returns a true value (returned), failing
    after `timeout_s`. The wait a test uses instead of a fixed sleep."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting until {what}")
        time.sleep(poll_s)


def subscription_stats(http_url: str, topic: str, subscription: str):
    """The broker's admin stats of one subscription (its `msgBacklog`
    counts what the broker holds unacknowledged), or None."""
    import json
    import urllib.request

    path = topic.replace("persistent://", "persistent/", 1)
    with urllib.request.urlopen(f"{http_url}/admin/v2/{path}/stats", timeout=5) as r:
        stats = json.loads(r.read())
    return stats.get("subscriptions", {}).get(subscription)


def wait_backlog(http_url: str, topic: str, subscription: str, backlog: int, timeout_s: float = 10):
    """Waits until the broker has applied a subscription's acknowledgements
    (which the client sends asynchronously) so that `backlog` messages are
    left unacknowledged."""

    def reached():
        stats = subscription_stats(http_url, topic, subscription)
        return stats is not None and stats["msgBacklog"] == backlog

    wait_until(reached, timeout_s, f"{subscription} on {topic} has a backlog of {backlog}")


def mark_delete_position(
    http_url: str, topic: str, subscription: str, field: str = "markDeletePosition"
):
    """The broker's mark-delete position of a subscription (from
    internalStats) as (ledger, entry), or None. `field`
    "persistentMarkDeletePosition" gives the one of the state the broker
    last stored, where a crash would restart the subscription."""
    import json
    import urllib.request

    path = topic.replace("persistent://", "persistent/", 1)
    with urllib.request.urlopen(f"{http_url}/admin/v2/{path}/internalStats", timeout=5) as r:
        stats = json.loads(r.read())
    cursor = stats.get("cursors", {}).get(subscription)
    if cursor is None or field not in cursor:
        return None
    ledger, entry = cursor[field].split(":")
    return int(ledger), int(entry)


def wait_mark_delete(http_url: str, topic: str, subscription: str, position, timeout_s: float = 10):
    """Waits until the broker has applied acknowledgements (which the
    client sends asynchronously) up to `position` = (ledger, entry)."""
    wait_until(
        lambda: mark_delete_position(http_url, topic, subscription) == tuple(position[:2]),
        timeout_s,
        f"{subscription} on {topic} is acknowledged up to {position[:2]}",
    )


def wait_mark_delete_persisted(
    http_url: str, topic: str, subscription: str, position, timeout_s: float = 10
):
    """Waits until the broker has stored the cursor state with its
    mark-delete position at `position` = (ledger, entry)."""
    wait_until(
        lambda: mark_delete_position(
            http_url, topic, subscription, "persistentMarkDeletePosition"
        )
        == tuple(position[:2]),
        timeout_s,
        f"{subscription} on {topic} is persisted up to {position[:2]}",
    )


# The broker persists a changed cursor every 100 ms (FLUSH_INTERVAL in
# broker/src/topic/subscription.rs). That guarantee is about time, so a test
# of "acks older than a flush interval survive a crash" lets this much pass
# once the broker has the acks (see wait_backlog); it is the test's subject,
# not a wait for something observable.
CURSOR_FLUSH_MARGIN_S = 0.5
