"""Topic lifecycle policies with the official client: message TTL, backlog
quotas (producer_request_hold, producer_exception, consumer_backlog_eviction)
and retention. Policies are set through the admin REST API, as pulsar-admin
sets them; the broker applies them every second (--housekeeping-interval)
and rolls ledgers every 10 entries, so trimming has closed ledgers to work on.
"""

import json
import time
import urllib.error
import urllib.request
import uuid

import pulsar
import pytest

from support import (
    SendResults,
    assert_no_more,
    drain,
    index_of,
    payload,
    produce,
    receive_n,
)

# Client behaviour is the same over either storage architecture.
BOTH_ARCHITECTURES = True

ENTRIES_PER_LEDGER = 10
# Every wait below is for something the broker does at its next ticks; the
# deadline only turns a hang into a failure.
DEADLINE_S = 30


@pytest.fixture
def magnetar_args():
    return [
        "--housekeeping-interval", "1s",
        "--max-entries-per-ledger", str(ENTRIES_PER_LEDGER),
    ]


def admin(server, method, path, body=None):
    """One admin REST call; returns the decoded JSON answer, if any."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        server.http_url + path,
        data=data,
        method=method,
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            text = response.read()
    except urllib.error.HTTPError as e:
        raise AssertionError(f"{method} {path} -> {e.code}: {e.read()[:300]!r}") from e
    return json.loads(text) if text else None


def topic_path(topic):
    """persistent://t/ns/x -> /admin/v2/persistent/t/ns/x"""
    return "/admin/v2/persistent/" + topic[len("persistent://"):]


def namespace_path(topic):
    tenant, namespace = topic[len("persistent://"):].split("/")[:2]
    return f"/admin/v2/namespaces/{tenant}/{namespace}"


def ledgers(server, topic):
    """The topic's ledgers (decoupled) or segments (monolithic, which share
    the log's ledger id), oldest first, as (ledgerId, firstEntryId)."""
    stats = admin(server, "GET", topic_path(topic) + "/internalStats")
    return [(ledger["ledgerId"], ledger["firstEntryId"]) for ledger in stats["ledgers"]]


def backlog(server, topic, subscription):
    stats = admin(server, "GET", topic_path(topic) + "/stats")
    return stats["subscriptions"][subscription]["msgBacklog"]


def publishers(server, topic):
    return len(admin(server, "GET", topic_path(topic) + "/stats")["publishers"])


def wait_until(check, what, timeout_s=DEADLINE_S):
    """Polls `check` until it returns something truthy, which it returns."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout_s}s")
        time.sleep(0.1)


def set_backlog_quota(server, topic, limit_size, policy):
    admin(
        server,
        "POST",
        namespace_path(topic) + "/backlogQuota?backlogQuotaType=destination_storage",
        {"limitSize": limit_size, "limitTime": -1, "policy": policy},
    )


def fill_ledgers(server, client, topic, rounds, start=0):
    """Produces `rounds` ledgers' worth of messages, one ledger at a time
    (waiting for each rollover), so each closed ledger holds exactly
    ENTRIES_PER_LEDGER messages; numbers them from `start`."""
    before = len(ledgers(server, topic))
    for r in range(rounds):
        produce(
            client, topic, ENTRIES_PER_LEDGER,
            start=start + r * ENTRIES_PER_LEDGER, batching=False,
        )
        wait_until(
            lambda: len(ledgers(server, topic)) == before + r + 1,
            f"rollover after round {r}",
        )


def send_outcome(producer, i):
    """Sends payload(i) synchronously: None if stored, else the exception."""
    try:
        producer.send(payload(i))
        return None
    except pulsar.PulsarException as e:
        return e


def test_message_ttl_expires_unacknowledged_messages(magnetar, new_client, topic):
    client = new_client()
    # The subscription exists before the messages, so they are its backlog.
    client.subscribe(topic, "slow").close()
    produce(client, topic, 20, batching=False)
    assert backlog(magnetar, topic, "slow") == 20

    admin(magnetar, "POST", namespace_path(topic) + "/messageTTL", 1)
    wait_until(lambda: backlog(magnetar, topic, "slow") == 0, "backlog expired by the TTL")

    # Expired means acknowledged: the subscription's consumer gets none of them.
    consumer = client.subscribe(topic, "slow")
    assert_no_more(consumer, wait_ms=2000)
    # Newer messages still arrive, and only they.
    admin(magnetar, "DELETE", namespace_path(topic) + "/messageTTL")
    produce(client, topic, 5, start=20, batching=False)
    assert [index_of(m) for m in receive_n(consumer, 5, ack=True)] == list(range(20, 25))
    assert_no_more(consumer)


def test_backlog_quota_producer_exception_fails_sends_until_consumers_catch_up(
    magnetar, new_client, topic
):
    client = new_client()
    consumer = client.subscribe(topic, "sub")
    # About 40 entries of ~100 bytes: well past 2000 bytes.
    set_backlog_quota(magnetar, topic, 2000, "producer_exception")
    producer = client.create_producer(topic, batching_enabled=False, send_timeout_millis=30_000)
    stored, failed = [], []
    for i in range(40):
        outcome = send_outcome(producer, i)
        if outcome is not None:
            # The quota may already have been checked in the meantime.
            assert isinstance(outcome, pulsar.ProducerBlockedQuotaExceededException), repr(outcome)
            failed.append(i)
            break
        stored.append(i)

    # At the next check the producer is disconnected, its reconnection refused
    # with ProducerBlockedQuotaExceededException, and its sends fail.
    attempts = iter(range(1000, 2000))

    def a_send_fails():
        if failed:
            return True
        i = next(attempts)
        outcome = send_outcome(producer, i)
        if outcome is None:
            stored.append(i)
            return False
        assert isinstance(outcome, pulsar.ProducerBlockedQuotaExceededException), repr(outcome)
        failed.append(i)
        return True

    wait_until(a_send_fails, "a send refused by the backlog quota")
    with pytest.raises(pulsar.ProducerBlockedQuotaExceededException):
        client.create_producer(topic)

    # The consumer catches up: everything stored arrives, once, and no send
    # reported failed was stored (the broker sends CLOSE_PRODUCER only after
    # the receipts of the sends it had taken, and refuses later ones).
    got = drain(consumer)
    assert len(got) == len(set(got)), f"duplicates: {got}"
    assert set(got) == set(stored), (
        f"stored but reported failed: {sorted(set(got) - set(stored))}; "
        f"reported stored but lost: {sorted(set(stored) - set(got))}"
    )
    # Sends succeed again once the producer is let back in.
    wait_until(lambda: send_outcome(producer, 2000) is None, "a send accepted again")
    for i in range(2001, 2005):
        assert send_outcome(producer, i) is None
    assert [index_of(m) for m in receive_n(consumer, 5, ack=True)] == list(range(2000, 2005))


def test_backlog_quota_producer_request_hold_holds_sends_until_consumers_catch_up(
    magnetar, new_client, topic
):
    client = new_client()
    consumer = client.subscribe(topic, "sub")
    set_backlog_quota(magnetar, topic, 2000, "producer_request_hold")
    # No send timeout: held sends wait as long as the hold lasts.
    producer = client.create_producer(topic, batching_enabled=False, send_timeout_millis=0)
    # Asynchronous: the hold may start before the last of them is stored.
    first = SendResults()
    for i in range(40):
        producer.send_async(payload(i), first.callback(i))

    def blocked():
        try:
            client.create_producer(topic).close()
            return False
        except pulsar.ProducerBlockedQuotaExceededError:
            return True

    # New producers are refused, and the existing one was disconnected.
    wait_until(blocked, "a new producer refused by the backlog quota")
    wait_until(lambda: publishers(magnetar, topic) == 0, "the producer disconnected")

    held = SendResults()
    for i in range(40, 50):
        producer.send_async(payload(i), held.callback(i))
    # Two checks later the sends are still held: neither stored nor failed.
    time.sleep(2)
    assert held.snapshot() == {}, f"sends completed while held: {held.snapshot()}"
    assert publishers(magnetar, topic) == 0

    # The consumer catches up; the held sends go through, in order.
    received = receive_n(consumer, 50, ack=True, timeout_ms=60_000)
    assert [index_of(m) for m in received] == list(range(50))
    assert first.wait_for(40, 60) and held.wait_for(10, 60)
    assert first.ok() == list(range(40))
    assert held.ok() == list(range(40, 50))
    assert_no_more(consumer)


def test_backlog_quota_consumer_backlog_eviction_drops_the_oldest_backlog(
    magnetar, new_client, topic
):
    client = new_client()
    client.subscribe(topic, "sub").close()
    produce(client, topic, 30, batching=False)
    assert backlog(magnetar, topic, "sub") == 30
    # Sizes of rolled-over ledgers are recorded when they are sealed, in
    # the background: wait until all 30 entries' bytes are counted.
    def sized():
        stats = admin(magnetar, "GET", topic_path(topic) + "/internalStats")
        return stats["numberOfEntries"] == 30 and stats["totalSize"] >= 30 * len(payload(0))

    wait_until(sized, "the topic's size is known")
    stats = admin(magnetar, "GET", topic_path(topic) + "/internalStats")
    entry_bytes = stats["totalSize"] / stats["numberOfEntries"]
    # Room for about ten entries; eviction leaves 90% of that.
    set_backlog_quota(magnetar, topic, int(10 * entry_bytes), "consumer_backlog_eviction")

    wait_until(lambda: backlog(magnetar, topic, "sub") <= 10, "backlog evicted down to the quota")
    left = backlog(magnetar, topic, "sub")
    assert left > 0, "eviction keeps what fits in the quota"

    consumer = client.subscribe(topic, "sub")
    got = drain(consumer)
    # Only the newest messages are left, without a gap.
    assert got == list(range(30 - left, 30)), got


def test_backlog_quota_by_message_age_evicts_what_is_older(magnetar, new_client, topic):
    client = new_client()
    client.subscribe(topic, "sub").close()
    produce(client, topic, 20, batching=False)
    assert backlog(magnetar, topic, "sub") == 20
    admin(
        magnetar,
        "POST",
        namespace_path(topic) + "/backlogQuota?backlogQuotaType=message_age",
        {"limitTime": 1, "policy": "consumer_backlog_eviction"},
    )
    wait_until(lambda: backlog(magnetar, topic, "sub") == 0, "backlog older than 1s evicted")
    consumer = client.subscribe(topic, "sub")
    assert_no_more(consumer, wait_ms=2000)
    # The consumer keeps up with what comes next, so nothing more is evicted.
    produce(client, topic, 5, start=20, batching=False)
    assert [index_of(m) for m in receive_n(consumer, 5, ack=True)] == list(range(20, 25))


def test_retention_keeps_consumed_ledgers_only_where_set(magnetar, new_client, topic):
    client = new_client()
    # Same-named topic in a namespace that retains consumed data for an hour.
    admin(magnetar, "PUT", "/admin/v2/namespaces/public/retained")
    admin(
        magnetar,
        "POST",
        "/admin/v2/namespaces/public/retained/retention",
        {"retentionTimeInMinutes": 60, "retentionSizeInMB": -1},
    )
    retained = topic.replace("/public/default/", "/public/retained/")
    plain = topic

    consumers = {t: client.subscribe(t, "sub") for t in (retained, plain)}
    for t in (retained, plain):
        # Three closed ledgers of ten messages and an empty current one.
        fill_ledgers(magnetar, client, t, 3)
        assert len(ledgers(magnetar, t)) == 4
    retained_ledgers = ledgers(magnetar, retained)

    # Everything is consumed in `retained` first, then in `plain`.
    for t in (retained, plain):
        assert [index_of(m) for m in receive_n(consumers[t], 30, ack=True)] == list(range(30))
        wait_until(lambda: backlog(magnetar, t, "sub") == 0, f"{t} acknowledged")

    # Without retention, consumed ledgers go; the current one stays.
    wait_until(lambda: len(ledgers(magnetar, plain)) == 1, "consumed ledgers of the plain topic deleted")
    first_trim = ledgers(magnetar, plain)
    # A new subscription from the earliest finds nothing of what was deleted.
    late = client.subscribe(
        plain, "late", initial_position=pulsar.InitialPosition.Earliest
    )
    assert_no_more(late)
    late.unsubscribe()

    # Another full round on `plain` proves a later check ran after both
    # topics were consumed; `retained` kept all its ledgers through it.
    fill_ledgers(magnetar, client, plain, 3, start=30)
    assert [index_of(m) for m in receive_n(consumers[plain], 30, ack=True)] == list(range(30, 60))
    wait_until(
        lambda: (lambda ids: len(ids) == 1 and ids[0] > first_trim[0])(ledgers(magnetar, plain)),
        "the second round's ledgers deleted",
    )
    assert ledgers(magnetar, retained)[: len(retained_ledgers)] == retained_ledgers
    replay = client.subscribe(
        retained, "replay", initial_position=pulsar.InitialPosition.Earliest
    )
    assert [index_of(m) for m in receive_n(replay, 30)] == list(range(30))


def test_inactive_topics_are_deleted_as_the_namespace_says(magnetar, new_client):
    """Pulsar's inactiveTopicPolicies: a topic without producers, consumers
    and subscriptions for the set duration is deleted at a housekeeping
    tick; one with a subscription stays (delete_when_no_subscriptions), and
    in delete_when_subscriptions_caught_up mode a topic whose subscriptions
    have consumed everything goes too. Without deleteWhileInactive nothing
    goes."""
    namespaces = {}
    for mode in ("delete_when_no_subscriptions", "delete_when_subscriptions_caught_up", "off"):
        namespace = f"public/inactive-{uuid.uuid4().hex[:8]}"
        admin(magnetar, "PUT", f"/admin/v2/namespaces/{namespace}")
        policies = {
            "inactiveTopicDeleteMode": "delete_when_no_subscriptions" if mode == "off" else mode,
            "maxInactiveDurationSeconds": 2,
            "deleteWhileInactive": mode != "off",
        }
        admin(magnetar, "POST", f"/admin/v2/namespaces/{namespace}/inactiveTopicPolicies", policies)
        assert admin(magnetar, "GET", f"/admin/v2/namespaces/{namespace}/inactiveTopicPolicies") == policies
        namespaces[mode] = namespace
    client = new_client()

    def topics(namespace):
        return {t.rsplit("/", 1)[1] for t in admin(magnetar, "GET", f"/admin/v2/persistent/{namespace}")}

    no_subs = namespaces["delete_when_no_subscriptions"]
    producer = client.create_producer(f"persistent://{no_subs}/lonely")
    producer.send(b"x")
    subscribed = client.subscribe(f"persistent://{no_subs}/subscribed", "keep")
    subscribed.close()
    caught_up = namespaces["delete_when_subscriptions_caught_up"]
    consumer = client.subscribe(f"persistent://{caught_up}/drained", "s")
    drained = client.create_producer(f"persistent://{caught_up}/drained")
    drained.send(b"y")
    drained.close()
    consumer.acknowledge(consumer.receive(timeout_millis=10_000))
    consumer.close()
    backlogged = client.subscribe(f"persistent://{caught_up}/backlogged", "s")
    backlogged.close()
    backlogging = client.create_producer(f"persistent://{caught_up}/backlogged")
    backlogging.send(b"z")
    backlogging.close()
    kept = client.create_producer(f"persistent://{namespaces['off']}/kept")
    kept.send(b"k")
    kept.close()
    # While the producer is attached, the topic is in use.
    assert "lonely" in topics(no_subs)
    producer.close()

    wait_until(lambda: "lonely" not in topics(no_subs), "the unused topic to be deleted")
    wait_until(lambda: "drained" not in topics(caught_up), "the caught-up topic to be deleted")
    # Those with a subscription, a backlog, or in a namespace that keeps
    # them, were inactive just as long and stay.
    assert "subscribed" in topics(no_subs)
    assert "backlogged" in topics(caught_up)
    assert topics(namespaces["off"]) == {"kept"}
    # A deleted topic comes back empty on its next use.
    again = client.subscribe(
        f"persistent://{no_subs}/lonely", "new", initial_position=pulsar.InitialPosition.Earliest
    )
    client.create_producer(f"persistent://{no_subs}/lonely").send(b"fresh")
    assert again.receive(timeout_millis=10_000).data() == b"fresh"
