"""Namespace rate and client limits with the official client: publish rate
(the broker stops reading the producer's connection, so sends slow down but
none fails), subscription dispatch rate, max producers per topic, max
consumers per subscription, max subscriptions per topic and max topics per
namespace. Limits are set through the admin REST API, as
pulsar-admin sets them, and apply to topics already loaded.

Timing assertions are properties of the limiter, never of machine speed: at
a limit of R messages per second, N messages cannot all get through in less
than about N/R - 1 seconds (the first period's allowance goes at once), and
a producer or consumer without a limit is compared against the throttled
one only as a ratio.
"""

import json
import threading
import time
import urllib.error
import urllib.request
import uuid

import pulsar
import pytest

from support import index_of, payload, produce, receive_n

# Client behaviour is the same over either storage architecture.
BOTH_ARCHITECTURES = True

# Slack below the limiter's bound for the time between the start of the
# limiter's first period and the first send.
SLACK_S = 0.5


def admin_request(server, method, path, body=None):
    data = None if body is None else json.dumps(body).encode()
    return urllib.request.Request(
        server.http_url + path,
        data=data,
        method=method,
        headers={"Content-Type": "application/json"},
    )


def admin(server, method, path, body=None):
    """One admin REST call; returns the decoded JSON answer, if any."""
    request = admin_request(server, method, path, body)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            text = response.read()
    except urllib.error.HTTPError as e:
        raise AssertionError(f"{method} {path} -> {e.code}: {e.read()[:300]!r}") from e
    return json.loads(text) if text else None


def new_namespace(server, tenant="limits"):
    """A fresh namespace (its tenant created if needed); returns "t/ns"."""
    request = urllib.request.Request(
        f"{server.http_url}/admin/v2/tenants/{tenant}", data=b"", method="PUT"
    )
    try:
        urllib.request.urlopen(request, timeout=10).close()
    except urllib.error.HTTPError as e:
        assert e.code == 409, f"creating tenant {tenant}: {e.code}"
    namespace = f"{tenant}/ns-{uuid.uuid4().hex[:8]}"
    admin(server, "PUT", f"/admin/v2/namespaces/{namespace}")
    return namespace


def policy(namespace, name):
    return f"/admin/v2/namespaces/{namespace}/{name}"


def timed_produce(client, topic, count, start=0):
    """Sends `count` unbatched messages (one SEND each); asserts every one
    was stored and returns the seconds from the first send to the last
    receipt."""
    producer = client.create_producer(topic, batching_enabled=False)
    began = time.monotonic()
    produce_on(producer, count, start)
    elapsed = time.monotonic() - began
    producer.close()
    return elapsed


def produce_on(producer, count, start=0):
    results = {}
    done = threading.Event()
    lock = threading.Lock()

    def callback(i):
        def on_sent(res, _msg_id):
            with lock:
                results[i] = res
                if len(results) == count:
                    done.set()

        return on_sent

    for i in range(start, start + count):
        producer.send_async(payload(i), callback(i))
    producer.flush()
    assert done.wait(60), f"only {len(results)} of {count} send callbacks arrived"
    failed = {i: r for i, r in results.items() if r != pulsar.Result.Ok}
    assert not failed, f"{len(failed)} sends failed, e.g. {sorted(failed.items())[:5]}"


def test_publish_rate_throttles_its_namespace_only(magnetar, new_client):
    limited_ns = new_namespace(magnetar)
    free_ns = new_namespace(magnetar)
    rate = 100
    admin(
        magnetar,
        "POST",
        policy(limited_ns, "publishRate"),
        {"publishThrottlingRateInMsg": rate, "publishThrottlingRateInByte": -1},
    )
    assert admin(magnetar, "GET", policy(limited_ns, "publishRate")) == {
        "publishThrottlingRateInMsg": rate,
        "publishThrottlingRateInByte": -1,
    }
    limited = f"persistent://{limited_ns}/t"
    free = f"persistent://{free_ns}/t"
    count = 300
    # Subscribed first, so every message can be checked afterwards.
    checker = new_client().subscribe(limited, "check", initial_position=pulsar.InitialPosition.Earliest)

    # Separate clients: a client shares one connection per broker among its
    # producers, and a paused connection pauses all of them (as in Pulsar).
    elapsed = {}

    def run(name, client, topic):
        elapsed[name] = timed_produce(client, topic, count)

    threads = [
        threading.Thread(target=run, args=("limited", new_client(), limited)),
        threading.Thread(target=run, args=("free", new_client(), free)),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert set(elapsed) == {"limited", "free"}, f"a producer did not finish: {elapsed}"

    bound = count / rate - 1 - SLACK_S
    assert elapsed["limited"] >= bound, (
        f"{count} messages at {rate} msg/s took {elapsed['limited']:.2f}s, less than {bound:.2f}s"
    )
    assert elapsed["free"] < elapsed["limited"] / 2, (
        f"unlimited namespace took {elapsed['free']:.2f}s vs {elapsed['limited']:.2f}s throttled"
    )
    # Nothing was lost or reordered on the throttled topic.
    got = [index_of(m) for m in receive_n(checker, count, ack=True)]
    assert got == list(range(count))


def test_publish_rate_applies_to_a_loaded_topic_and_lifts(magnetar, new_client):
    namespace = new_namespace(magnetar)
    topic = f"persistent://{namespace}/t"
    producer = new_client().create_producer(topic, batching_enabled=False)
    count, rate = 150, 50

    began = time.monotonic()
    produce_on(producer, count)
    unlimited = time.monotonic() - began

    admin(
        magnetar,
        "POST",
        policy(namespace, "publishRate"),
        {"publishThrottlingRateInMsg": rate, "publishThrottlingRateInByte": -1},
    )
    began = time.monotonic()
    produce_on(producer, count, start=count)
    throttled = time.monotonic() - began
    bound = count / rate - 1 - SLACK_S
    assert throttled >= bound, f"{count} at {rate} msg/s took {throttled:.2f}s (< {bound:.2f}s)"
    assert unlimited < throttled / 2, f"before the limit {unlimited:.2f}s, with it {throttled:.2f}s"

    admin(magnetar, "DELETE", policy(namespace, "publishRate"))
    assert admin(magnetar, "GET", policy(namespace, "publishRate")) is None
    # Paused at most until the current period ends.
    time.sleep(1)
    began = time.monotonic()
    produce_on(producer, count, start=2 * count)
    lifted = time.monotonic() - began
    assert lifted < throttled / 2, f"after removing the limit {lifted:.2f}s, with it {throttled:.2f}s"
    producer.close()


def test_subscription_dispatch_rate_slows_a_consumer(magnetar, new_client):
    namespace = new_namespace(magnetar)
    topic = f"persistent://{namespace}/t"
    count, rate = 150, 50
    client = new_client()
    produce(client, topic, count, batching=False)

    def timed_receive(subscription):
        consumer = client.subscribe(
            topic, subscription, initial_position=pulsar.InitialPosition.Earliest
        )
        began = time.monotonic()
        got = [index_of(m) for m in receive_n(consumer, count, ack=True)]
        elapsed = time.monotonic() - began
        consumer.close()
        assert got == list(range(count))
        return elapsed

    unlimited = timed_receive("before")
    admin(
        magnetar,
        "POST",
        policy(namespace, "subscriptionDispatchRate"),
        {"dispatchThrottlingRateInMsg": rate, "dispatchThrottlingRateInByte": -1, "ratePeriodInSecond": 1},
    )
    assert admin(magnetar, "GET", policy(namespace, "subscriptionDispatchRate"))[
        "dispatchThrottlingRateInMsg"
    ] == rate
    throttled = timed_receive("after")
    bound = count / rate - 1 - SLACK_S
    assert throttled >= bound, f"{count} at {rate} msg/s took {throttled:.2f}s (< {bound:.2f}s)"
    assert unlimited < throttled / 2, f"without the limit {unlimited:.2f}s, with it {throttled:.2f}s"


def test_max_producers_per_topic(magnetar, new_client):
    namespace = new_namespace(magnetar)
    topic = f"persistent://{namespace}/t"
    admin(magnetar, "POST", policy(namespace, "maxProducersPerTopic"), 1)
    assert admin(magnetar, "GET", policy(namespace, "maxProducersPerTopic")) == 1
    client = new_client()
    first = client.create_producer(topic)
    with pytest.raises(pulsar.ProducerBusy):
        new_client().create_producer(topic)
    first.send(b"still works")
    # A freed place can be taken.
    first.close()
    second = new_client().create_producer(topic)
    second.send(b"second")
    second.close()


def test_max_consumers_per_subscription_applies_live(magnetar, new_client):
    namespace = new_namespace(magnetar)
    topic = f"persistent://{namespace}/t"
    client = new_client()
    first = client.subscribe(topic, "shared", consumer_type=pulsar.ConsumerType.Shared)
    # The topic is loaded; the limit applies to it from now on.
    admin(magnetar, "POST", policy(namespace, "maxConsumersPerSubscription"), 1)
    with pytest.raises(pulsar.ConsumerBusy):
        new_client().subscribe(topic, "shared", consumer_type=pulsar.ConsumerType.Shared)
    # Other subscriptions have their own places.
    other = new_client().subscribe(topic, "other", consumer_type=pulsar.ConsumerType.Shared)
    admin(magnetar, "DELETE", policy(namespace, "maxConsumersPerSubscription"))
    second = new_client().subscribe(topic, "shared", consumer_type=pulsar.ConsumerType.Shared)
    for consumer in (first, other, second):
        consumer.close()


def test_max_consumers_per_topic(magnetar, new_client):
    namespace = new_namespace(magnetar)
    topic = f"persistent://{namespace}/t"
    admin(magnetar, "POST", policy(namespace, "maxConsumersPerTopic"), 2)
    client = new_client()
    a = client.subscribe(topic, "a")
    b = client.subscribe(topic, "b")
    with pytest.raises(pulsar.ConsumerBusy):
        new_client().subscribe(topic, "c")
    a.close()
    c = new_client().subscribe(topic, "c")
    b.close()
    c.close()


def test_max_subscriptions_per_topic(magnetar, new_client):
    namespace = new_namespace(magnetar)
    topic = f"persistent://{namespace}/t"
    admin(magnetar, "POST", policy(namespace, "maxSubscriptionsPerTopic"), 2)
    assert admin(magnetar, "GET", policy(namespace, "maxSubscriptionsPerTopic")) == 2
    client = new_client()
    a = client.subscribe(topic, "a")
    b = client.subscribe(topic, "b")
    with pytest.raises(pulsar.NotAllowedError):
        new_client().subscribe(topic, "c")
    # A closed consumer leaves its durable subscription, which still counts;
    # an existing subscription may always be attached to again.
    a.close()
    with pytest.raises(pulsar.NotAllowedError):
        new_client().subscribe(topic, "c")
    a = new_client().subscribe(topic, "a")
    # Unsubscribing frees a place.
    b.unsubscribe()
    c = new_client().subscribe(topic, "c")
    for consumer in (a, c):
        consumer.close()


def test_max_topics_per_namespace_counts_partitions_and_refuses_creation(magnetar, new_client):
    namespace = new_namespace(magnetar)
    admin(magnetar, "POST", policy(namespace, "maxTopicsPerNamespace"), 3)
    client = new_client()
    # Auto-created on first use, as Pulsar does, while there is room.
    for local in ("t1", "t2"):
        client.create_producer(f"persistent://{namespace}/{local}").send(b"x")
    # Two partitions would make four topics.
    code = admin_status(
        magnetar, "PUT", f"/admin/v2/persistent/{namespace}/parted/partitions", 2
    )
    assert code == 412
    # The third fits; then neither a client nor the admin API makes a fourth.
    admin(magnetar, "PUT", f"/admin/v2/persistent/{namespace}/t3")
    with pytest.raises(pulsar.NotAllowedError):
        client.create_producer(f"persistent://{namespace}/t4").send(b"x")
    assert admin_status(magnetar, "PUT", f"/admin/v2/persistent/{namespace}/t4") == 412
    # A topic that exists is always served.
    consumer = client.subscribe(
        f"persistent://{namespace}/t1", "s", initial_position=pulsar.InitialPosition.Earliest
    )
    assert consumer.receive(timeout_millis=10_000).data() == b"x"
    topics = admin(magnetar, "GET", f"/admin/v2/persistent/{namespace}")
    assert sorted(t.rsplit("/", 1)[1] for t in topics) == ["t1", "t2", "t3"]
    admin(magnetar, "DELETE", policy(namespace, "maxTopicsPerNamespace"))
    client.create_producer(f"persistent://{namespace}/t4").send(b"x")


def admin_status(server, method, path, body=None):
    """The HTTP status of one admin REST call."""
    request = admin_request(server, method, path, body)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as e:
        return e.code
