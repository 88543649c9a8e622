"""Admin REST v2 (Pulsar's paths and JSON) against `magnetar standalone`,
driven with urllib, and the official client on what it creates: partitioned
topics (routing, growth), topic deletion (with and without clients),
namespace policies, tenants and namespaces."""

import json
import subprocess
import time
import urllib.error
import urllib.request
from collections import Counter

import pulsar

from support import assert_no_more, payload, produce, receive_n

# Client behaviour is the same over either storage architecture.
BOTH_ARCHITECTURES = True

# Eventual conditions (a bookie's metrics refresh every 5 s) get this long.
EVENTUALLY_S = 30


def rest(magnetar, method, path, body=None, raw=None):
    """One admin call: (status, parsed JSON answer or None when empty).
    `body` is sent as JSON; `raw` as given (bytes)."""
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    headers = {"Content-Type": "application/json"} if data is not None else {}
    request = urllib.request.Request(
        magnetar.http_url + path, data=data, method=method, headers=headers
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as r:
            status, text = r.status, r.read()
    except urllib.error.HTTPError as e:
        status, text = e.code, e.read()
    return status, (json.loads(text) if text.strip() else None)


def ok(magnetar, method, path, body=None):
    status, answer = rest(magnetar, method, path, body)
    assert 200 <= status < 300, f"{method} {path} -> {status} {answer}"
    return answer


def topic_path(topic):
    assert topic.startswith("persistent://")
    return "/admin/v2/persistent/" + topic[len("persistent://"):]


def bookie_ledgers(magnetar):
    """The standalone bookie's count of ledgers it holds data of."""
    url = f"http://127.0.0.1:{magnetar.bookie_http_port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as r:
        for line in r.read().decode().splitlines():
            if line.startswith("magnetar_bookie_ledgers "):
                return int(float(line.split()[1]))
    raise AssertionError("no magnetar_bookie_ledgers metric")


def local_logs(magnetar, log_ids):
    """How many of the local logs `log_ids` have a directory on the broker."""
    logs = magnetar.data_dir / "broker" / "logs"
    return sum(1 for i in log_ids if (logs / str(i)).is_dir())


def wait_for(what, condition):
    deadline = time.monotonic() + EVENTUALLY_S
    while not condition():
        assert time.monotonic() < deadline, f"never happened: {what}"
        time.sleep(0.2)


def test_partitioned_topic_routing_growth_and_stats(magnetar, new_client, topic):
    path = topic_path(topic)
    assert rest(magnetar, "PUT", path + "/partitions", 4)[0] == 204
    assert ok(magnetar, "GET", path + "/partitions") == {"partitions": 4}
    assert rest(magnetar, "PUT", path + "/partitions", 4)[0] == 409
    assert rest(magnetar, "PUT", path, None)[0] == 409, "a plain topic of the same name"
    listed = ok(magnetar, "GET", "/admin/v2/persistent/public/default/partitioned")
    assert listed == [topic]

    client = new_client()
    # PARTITIONED_METADATA answers 4.
    assert client.get_topic_partitions(topic) == [f"{topic}-partition-{i}" for i in range(4)]
    consumer = client.subscribe(topic, "all", initial_position=pulsar.InitialPosition.Earliest)

    # Round robin (no batching: each message to the next partition).
    producer = client.create_producer(
        topic, message_routing_mode=pulsar.PartitionsRoutingMode.RoundRobinDistribution
    )
    ids = [producer.send(payload(i)) for i in range(40)]
    per_partition = Counter(i.partition() for i in ids)
    assert sorted(per_partition) == [0, 1, 2, 3], per_partition
    assert max(per_partition.values()) - min(per_partition.values()) <= 1, per_partition

    # The same key always goes to the same partition.
    keyed = {}
    for n in range(30):
        key = f"key-{n % 6}"
        msg_id = producer.send(payload(40 + n), partition_key=key)
        keyed.setdefault(key, set()).add(msg_id.partition())
    assert all(len(p) == 1 for p in keyed.values()), keyed
    assert len({next(iter(p)) for p in keyed.values()}) > 1, f"every key on one partition: {keyed}"

    got = receive_n(consumer, 70, ack=True)
    # Each message says which partition it came from.
    by_partition = Counter(msg.topic_name() for msg in got)
    assert sorted(by_partition) == [f"{topic}-partition-{i}" for i in range(4)], by_partition
    for msg in got:
        assert msg.topic_name().endswith(f"-partition-{msg.message_id().partition()}"), (
            f"message id {msg.message_id()} does not name its partition {msg.topic_name()}"
        )
    assert sorted(msg.data() for msg in got) == sorted(payload(i) for i in range(70))
    assert_no_more(consumer, 500)

    # Growing is allowed, shrinking (or staying) is refused.
    for fewer in (3, 4):
        status, answer = rest(magnetar, "POST", path + "/partitions", fewer)
        assert status == 412, (status, answer)
        assert "partitions" in answer["reason"]
    assert rest(magnetar, "POST", path + "/partitions", 6)[0] == 204
    assert ok(magnetar, "GET", path + "/partitions") == {"partitions": 6}
    assert len(client.get_topic_partitions(topic)) == 6

    grown = client.create_producer(topic)
    new_ids = [grown.send(payload(100 + i)) for i in range(18)]
    assert {i.partition() for i in new_ids} == set(range(6))
    reader = client.subscribe(topic, "after-growth", initial_position=pulsar.InitialPosition.Earliest)
    everything = receive_n(reader, 88, ack=True)
    assert {m.topic_name() for m in everything} == {f"{topic}-partition-{i}" for i in range(6)}

    # Acknowledgements are grouped by the client: they arrive shortly.
    wait_for(
        "every acknowledgement reached the broker",
        lambda: ok(magnetar, "GET", path + "/partitioned-stats")["subscriptions"]["after-growth"]["msgBacklog"] == 0,
    )
    stats = ok(magnetar, "GET", path + "/partitioned-stats")
    assert stats["metadata"] == {"partitions": 6}
    assert stats["msgInCounter"] == 88
    assert len(stats["partitions"]) == 6
    assert set(stats["subscriptions"]) == {"all", "after-growth"}
    assert stats["subscriptions"]["after-growth"]["type"] == "Exclusive"
    assert len(stats["subscriptions"]["after-growth"]["consumers"]) == 6
    one = ok(magnetar, "GET", topic_path(f"{topic}-partition-4") + "/stats")
    assert one["msgInCounter"] == sum(1 for i in new_ids if i.partition() == 4)
    assert len(one["publishers"]) == 1
    names = ok(magnetar, "GET", path + "/subscriptions")
    assert names == ["after-growth", "all"]

    # Deleting with clients attached is refused as a whole, then forced.
    status, _ = rest(magnetar, "DELETE", path + "/partitions")
    assert status == 412
    assert len(ok(magnetar, "GET", "/admin/v2/persistent/public/default")) == 6
    consumer.close()
    reader.close()
    producer.close()
    grown.close()
    assert rest(magnetar, "DELETE", path + "/partitions")[0] == 204
    assert ok(magnetar, "GET", "/admin/v2/persistent/public/default") == []
    assert ok(magnetar, "GET", "/admin/v2/persistent/public/default/partitioned") == []
    assert ok(magnetar, "GET", path + "/partitions") == {"partitions": 0}


def test_delete_topic_removes_data_cursors_and_ledgers(magnetar, new_client, topic):
    path = topic_path(topic)
    client = new_client()
    produce(client, topic, 20, batching=False)
    consumer = client.subscribe(topic, "sub", initial_position=pulsar.InitialPosition.Earliest)
    for msg in receive_n(consumer, 5):
        consumer.acknowledge(msg)
    before = ok(magnetar, "GET", path + "/internalStats")
    assert before["numberOfEntries"] == 20
    old_ledgers = {l["ledgerId"] for l in before["ledgers"]}
    assert "sub" in before["cursors"]
    if magnetar.architecture == "decoupled":
        stored = lambda: bookie_ledgers(magnetar)  # noqa: E731
    else:
        stored = lambda: local_logs(magnetar, old_ledgers)  # noqa: E731
    wait_for("storage holds the topic's data", lambda: stored() >= 1)

    # A subscription with a consumer is not deleted without force; nor the topic.
    assert rest(magnetar, "DELETE", path + "/subscription/sub")[0] == 412
    status, answer = rest(magnetar, "DELETE", path)
    assert status == 412, (status, answer)
    assert "active" in answer["reason"]
    assert ok(magnetar, "GET", path + "/internalStats")["numberOfEntries"] == 20
    consumer.close()

    assert rest(magnetar, "DELETE", path)[0] == 204
    assert rest(magnetar, "GET", path + "/internalStats")[0] == 404
    assert rest(magnetar, "GET", path + "/subscriptions")[0] == 404
    assert rest(magnetar, "DELETE", path)[0] == 404
    assert topic not in ok(magnetar, "GET", "/admin/v2/persistent/public/default")
    # Its ledgers are deleted, and the bookie was told to drop their data
    # (monolithic: the broker removed its log directory).
    wait_for("storage dropped the deleted topic's data", lambda: stored() == 0)

    # The same name is a new, empty topic: no data, no cursor, new ledgers.
    fresh = client.subscribe(topic, "sub", initial_position=pulsar.InitialPosition.Earliest)
    assert_no_more(fresh, 1000)
    stats = ok(magnetar, "GET", path + "/internalStats")
    assert stats["numberOfEntries"] == 0
    assert stats["entriesAddedCounter"] == 0
    new_ledgers = [l["ledgerId"] for l in stats["ledgers"]]
    assert new_ledgers and not old_ledgers & set(new_ledgers)
    # A new cursor at the start of the new topic, not the old one's position.
    assert stats["cursors"]["sub"]["markDeletePosition"] == f"{new_ledgers[0]}:-1"
    assert stats["cursors"]["sub"]["individuallyDeletedMessages"] == "[]"
    assert ok(magnetar, "GET", path + "/stats")["subscriptions"]["sub"]["msgBacklog"] == 0

    # A subscription is deleted with force even while its consumer is attached.
    assert rest(magnetar, "DELETE", path + "/subscription/sub?force=true")[0] == 204
    assert rest(magnetar, "DELETE", path + "/subscription/none")[0] == 404


def test_forced_delete_disconnects_clients_which_recreate_the_topic(magnetar, new_client, topic):
    path = topic_path(topic)
    client = new_client()
    producer = client.create_producer(topic)
    consumer = client.subscribe(topic, "sub", initial_position=pulsar.InitialPosition.Earliest)
    for i in range(10):
        producer.send(payload(i))
    for msg in receive_n(consumer, 10):
        consumer.acknowledge(msg)
    before = ok(magnetar, "GET", path + "/internalStats")
    stats = ok(magnetar, "GET", path + "/stats")
    assert len(stats["publishers"]) == 1
    assert [c for c in stats["subscriptions"]["sub"]["consumers"]]

    status, answer = rest(magnetar, "DELETE", path)
    assert status == 412, (status, answer)
    assert rest(magnetar, "DELETE", path + "?force=true")[0] == 204

    # Both clients were closed by the broker and came back to a new topic:
    # the producer's next message is the only one it holds, and the
    # consumer (resubscribed) receives it.
    producer.send(payload(99))
    msg = consumer.receive(10_000)
    assert msg.data() == payload(99)
    consumer.acknowledge(msg)
    after = ok(magnetar, "GET", path + "/internalStats")
    assert after["numberOfEntries"] == 1
    assert after["entriesAddedCounter"] == 1
    old = {l["ledgerId"] for l in before["ledgers"]}
    assert not old & {l["ledgerId"] for l in after["ledgers"]}
    stats = ok(magnetar, "GET", path + "/stats")
    assert stats["msgInCounter"] == 1
    assert len(stats["publishers"]) == 1


def test_namespace_policies_round_trip_and_reject_bad_input(magnetar):
    ns = "/admin/v2/namespaces/public/default"
    for policy in ("/retention", "/messageTTL"):
        assert rest(magnetar, "GET", ns + policy)[0] == 204, f"{policy} is not set yet"
    assert ok(magnetar, "GET", ns + "/backlogQuotaMap") == {}
    # Standalone creates public/default on its one bookie.
    standalone = {
        "bookkeeperEnsemble": 1,
        "bookkeeperWriteQuorum": 1,
        "bookkeeperAckQuorum": 1,
        "managedLedgerMaxMarkDeleteRate": 0.0,
    }
    assert ok(magnetar, "GET", ns + "/persistence") == standalone

    retention = {"retentionTimeInMinutes": 60, "retentionSizeInMB": 1024}
    assert rest(magnetar, "POST", ns + "/retention", retention)[0] == 204
    assert ok(magnetar, "GET", ns + "/retention") == retention
    assert rest(magnetar, "POST", ns + "/messageTTL", 3600)[0] == 204
    assert ok(magnetar, "GET", ns + "/messageTTL") == 3600
    quota = {"limitSize": 10 << 20, "limitTime": 3600, "policy": "producer_request_hold"}
    assert rest(magnetar, "POST", ns + "/backlogQuota?backlogQuotaType=destination_storage", quota)[0] == 204
    assert ok(magnetar, "GET", ns + "/backlogQuotaMap") == {"destination_storage": quota}
    persistence = {
        "bookkeeperEnsemble": 3,
        "bookkeeperWriteQuorum": 2,
        "bookkeeperAckQuorum": 2,
        "managedLedgerMaxMarkDeleteRate": 0.0,
    }
    assert rest(magnetar, "POST", ns + "/persistence", persistence)[0] == 204
    assert ok(magnetar, "GET", ns + "/persistence") == persistence
    policies = ok(magnetar, "GET", ns)
    assert policies["retention_policies"] == retention
    assert policies["message_ttl_in_seconds"] == 3600
    assert policies["backlog_quota_map"] == {"destination_storage": quota}
    assert policies["persistence"] == persistence

    bad = [
        ("/retention", None, b'{"retentionTimeInMinutes": 0, "retentionSizeInMB": 10}'),
        ("/retention", None, b"{not json"),
        ("/retention", None, b'{"retentionTimeInMinutes": -5, "retentionSizeInMB": -1}'),
        ("/messageTTL", None, b"-1"),
        ("/messageTTL", None, b'"an hour"'),
        ("/messageTTL", None, b""),
        ("/backlogQuota", None, b'{"limitSize": 10, "policy": "drop_everything"}'),
        ("/backlogQuota?backlogQuotaType=nonsense", None, json.dumps(quota).encode()),
        ("/persistence", None, b'{"bookkeeperEnsemble": 1, "bookkeeperWriteQuorum": 2, "bookkeeperAckQuorum": 1}'),
        ("/persistence", None, b'{"bookkeeperEnsemble": 2, "bookkeeperWriteQuorum": 2, "bookkeeperAckQuorum": 0}'),
    ]
    for policy, _, raw in bad:
        status, answer = rest(magnetar, "POST", ns + policy, raw=raw)
        assert status == 400, (policy, raw, status, answer)
        assert answer["reason"], (policy, raw)
    assert ok(magnetar, "GET", ns) == policies, "a rejected request changed the policies"

    for policy in ("/retention", "/messageTTL", "/persistence"):
        assert rest(magnetar, "DELETE", ns + policy)[0] == 204
        assert rest(magnetar, "GET", ns + policy)[0] == 204
    assert rest(magnetar, "DELETE", ns + "/backlogQuota")[0] == 204
    assert ok(magnetar, "GET", ns + "/backlogQuotaMap") == {}
    assert rest(magnetar, "POST", "/admin/v2/namespaces/public/missing/messageTTL", 5)[0] == 404


def test_tenants_and_namespaces_lifecycle(magnetar, new_client):
    assert ok(magnetar, "GET", "/admin/v2/tenants") == ["public"]
    info = {"adminRoles": ["ops"], "allowedClusters": ["standalone"]}
    assert rest(magnetar, "PUT", "/admin/v2/tenants/acme", info)[0] == 204
    assert rest(magnetar, "PUT", "/admin/v2/tenants/acme", info)[0] == 409
    assert rest(magnetar, "PUT", "/admin/v2/tenants/bare")[0] == 204, "the body is optional"
    assert ok(magnetar, "GET", "/admin/v2/tenants") == ["acme", "bare", "public"]
    assert ok(magnetar, "GET", "/admin/v2/tenants/acme") == info
    assert rest(magnetar, "GET", "/admin/v2/tenants/nobody")[0] == 404

    assert rest(magnetar, "PUT", "/admin/v2/namespaces/nobody/ns")[0] == 404
    assert rest(magnetar, "PUT", "/admin/v2/namespaces/acme/orders")[0] == 204
    assert rest(magnetar, "PUT", "/admin/v2/namespaces/acme/orders")[0] == 409
    assert ok(magnetar, "GET", "/admin/v2/namespaces/acme") == ["acme/orders"]
    assert rest(magnetar, "DELETE", "/admin/v2/tenants/acme")[0] == 409

    # The new namespace serves topics; one with a topic cannot be deleted.
    topic = "persistent://acme/orders/in"
    client = new_client()
    produce(client, topic, 3, batching=False)
    assert ok(magnetar, "GET", "/admin/v2/persistent/acme/orders") == [topic]
    assert rest(magnetar, "DELETE", "/admin/v2/namespaces/acme/orders")[0] == 409
    assert rest(magnetar, "DELETE", topic_path(topic) + "?force=true")[0] == 204
    assert rest(magnetar, "DELETE", "/admin/v2/namespaces/acme/orders")[0] == 204
    assert ok(magnetar, "GET", "/admin/v2/namespaces/acme") == []
    assert rest(magnetar, "DELETE", "/admin/v2/tenants/acme")[0] == 204
    assert rest(magnetar, "DELETE", "/admin/v2/tenants/acme")[0] == 404
    assert ok(magnetar, "GET", "/admin/v2/tenants") == ["bare", "public"]


def test_magnetar_admin_cli(magnetar, topic):
    """`magnetar admin` prints JSON answers; a refusal is the broker's reason
    on stderr and exit status 1."""

    def admin(*args):
        return subprocess.run(
            [str(magnetar.binary), "admin", "--admin-url", magnetar.http_url, *args],
            capture_output=True,
            text=True,
            timeout=60,
        )

    done = admin("topics", "create-partitioned-topic", topic, "-p", "2")
    assert done.returncode == 0, done.stderr
    shown = admin("topics", "get-partitioned-topic-metadata", topic)
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout) == {"partitions": 2}
    refused = admin("topics", "update-partitioned-topic", topic, "-p", "1")
    assert refused.returncode == 1
    assert "412" in refused.stderr and "partitions" in refused.stderr, refused.stderr
    assert refused.stdout == ""

    retention = admin("namespaces", "set-retention", "public/default", "--time", "2h", "--size", "1G")
    assert retention.returncode == 0, retention.stderr
    shown = admin("namespaces", "get-retention", "public/default")
    assert json.loads(shown.stdout) == {"retentionTimeInMinutes": 120, "retentionSizeInMB": 1024}
    bad = admin("namespaces", "set-retention", "public/default", "--time", "0", "--size", "1G")
    assert bad.returncode == 1 and "400" in bad.stderr, bad.stderr
    assert json.loads(admin("tenants", "list").stdout) == ["public"]
    exists = admin("tenants", "create", "public")
    assert exists.returncode == 1 and "already exists" in exists.stderr, exists.stderr
    gone = admin("topics", "delete-partitioned-topic", topic)
    assert gone.returncode == 0, gone.stderr
    assert json.loads(admin("topics", "list", "public/default").stdout) == []


def test_http_lookup_names_the_serving_broker(magnetar, new_client, topic):
    local = topic[len("persistent://"):]
    answer = ok(magnetar, "GET", f"/lookup/v2/topic/persistent/{local}")
    assert answer["brokerUrl"] == magnetar.url
    assert answer["httpUrl"] == magnetar.http_url
    # A client given the looked-up URL works.
    client = new_client()
    produce(client, topic, 3, batching=False)
    assert rest(magnetar, "GET", "/lookup/v2/topic/persistent/public/default/bad%20name")[0] == 400
