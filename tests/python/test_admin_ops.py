"""Admin REST v2 operations against `magnetar standalone`, with the official
client on the data they change: subscription cursor operations (reset by
time and by message id with a connected consumer, skip, clear backlog,
expire, create), clusters, brokers, bookies, the OpenAPI document, and the
`magnetar admin` verbs that wrap them."""

import json
import subprocess
import time
import urllib.error
import urllib.request

import pulsar

from support import assert_no_more, close_quietly, index_of, payload, receive_n

# Client behaviour is the same over either storage architecture.
BOTH_ARCHITECTURES = True

COUNT = 10


def rest(magnetar, method, path, body=None):
    """One admin call: (status, parsed JSON answer, or the text, or None)."""
    data = None if body is None else json.dumps(body).encode()
    headers = {"Content-Type": "application/json"} if data is not None else {}
    request = urllib.request.Request(
        magnetar.http_url + path, data=data, method=method, headers=headers
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as r:
            status, text = r.status, r.read()
    except urllib.error.HTTPError as e:
        status, text = e.code, e.read()
    if not text.strip():
        return status, None
    try:
        return status, json.loads(text)
    except ValueError:
        return status, text.decode()


def ok(magnetar, method, path, body=None):
    status, answer = rest(magnetar, method, path, body)
    assert 200 <= status < 300, f"{method} {path} -> {status} {answer}"
    return answer


def topic_path(topic):
    assert topic.startswith("persistent://")
    return "/admin/v2/persistent/" + topic[len("persistent://"):]


def sub_path(topic, sub):
    return f"{topic_path(topic)}/subscription/{sub}"


def admin(magnetar, *args, url=True):
    """Runs `magnetar admin --admin-url ... ARGS` (without the URL option
    when `url` is false); (exit code, stdout, stderr)."""
    url_args = ["--admin-url", magnetar.http_url] if url else []
    done = subprocess.run(
        [str(magnetar.binary), "admin", *url_args, *args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    return done.returncode, done.stdout, done.stderr


def produce_unbatched(client, topic, count=COUNT, start=0):
    """One entry per message, published at distinct, increasing times;
    returns the message ids."""
    producer = client.create_producer(topic, batching_enabled=False)
    ids = []
    for i in range(start, start + count):
        if ids:
            time.sleep(0.01)
        ids.append(producer.send(payload(i)))
    producer.close()
    return ids


def backlog(magnetar, topic, sub):
    stats = ok(magnetar, "GET", f"{topic_path(topic)}/stats")
    return stats["subscriptions"][sub]["msgBacklog"]


def wait_for(what, condition, timeout_s=30):
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def subscribe(client, topic, sub):
    return client.subscribe(
        topic,
        sub,
        consumer_type=pulsar.ConsumerType.Exclusive,
        initial_position=pulsar.InitialPosition.Earliest,
    )


def test_reset_cursor_by_time_and_message_id_redelivers_to_a_connected_consumer(
    magnetar, new_client, topic
):
    client = new_client()
    consumer = subscribe(client, topic, "s")
    produce_unbatched(client, topic)
    messages = receive_n(consumer, COUNT, ack=True)
    assert [index_of(m) for m in messages] == list(range(COUNT))
    wait_for("the acknowledgements", lambda: backlog(magnetar, topic, "s") == 0)

    # By time: the first message published at or after message 5's time.
    when = messages[5].publish_timestamp()
    ok(magnetar, "POST", f"{sub_path(topic, 's')}/resetcursor/{when}")
    # (This client keeps what it already received in its queue across the
    # reconnect, so each step takes everything the reset redelivers.)
    again = receive_n(consumer, COUNT - 5, ack=True)
    assert [index_of(m) for m in again] == list(range(5, COUNT))

    # By message id, with the consumer still attached (once the broker has
    # the acknowledgements of what the last reset redelivered).
    wait_for("the acknowledgements", lambda: backlog(magnetar, topic, "s") == 0)
    target = messages[2].message_id()
    ok(
        magnetar,
        "POST",
        f"{sub_path(topic, 's')}/resetcursor",
        {
            "ledgerId": target.ledger_id(),
            "entryId": target.entry_id(),
            "partitionIndex": -1,
            "isExcluded": False,
        },
    )
    again = receive_n(consumer, COUNT - 2, ack=True)
    assert [index_of(m) for m in again] == list(range(2, COUNT))

    # The CLI: back to the start (the consumer reconnects again).
    wait_for("the acknowledgements", lambda: backlog(magnetar, topic, "s") == 0)
    code, _, err = admin(
        magnetar, "topics", "reset-cursor", topic, "-s", "s", "--timestamp", "0"
    )
    assert code == 0, err
    assert index_of(consumer.receive(10_000)) == 0

    # Unknown subscription or topic: 404; a bad time: 400.
    assert rest(magnetar, "POST", f"{sub_path(topic, 'nope')}/resetcursor/0")[0] == 404
    assert rest(magnetar, "POST", f"{sub_path(topic + '-x', 's')}/resetcursor/0")[0] == 404
    assert rest(magnetar, "POST", f"{sub_path(topic, 's')}/resetcursor/soon")[0] == 400
    assert rest(magnetar, "POST", f"{sub_path(topic, 's')}/resetcursor", {"x": 1})[0] == 400


def test_reset_cursor_persists_across_a_restart(magnetar, new_client, topic):
    client = new_client()
    consumer = subscribe(client, topic, "s")
    produce_unbatched(client, topic)
    messages = receive_n(consumer, COUNT, ack=True)
    consumer.close()
    wait_for("the acknowledgements", lambda: backlog(magnetar, topic, "s") == 0)
    target = messages[4].message_id()
    ok(
        magnetar,
        "POST",
        f"{sub_path(topic, 's')}/resetcursor",
        {"ledgerId": target.ledger_id(), "entryId": target.entry_id()},
    )
    assert backlog(magnetar, topic, "s") == COUNT - 4
    close_quietly(client)
    magnetar.restart(graceful=False)

    client = new_client()
    consumer = subscribe(client, topic, "s")
    got = receive_n(consumer, COUNT - 4, ack=True)
    assert [index_of(m) for m in got] == list(range(4, COUNT))


def test_skip_and_clear_backlog(magnetar, new_client, topic):
    client = new_client()
    subscribe(client, topic, "s").close()
    produce_unbatched(client, topic)
    assert backlog(magnetar, topic, "s") == COUNT

    ok(magnetar, "POST", f"{sub_path(topic, 's')}/skip/3")
    assert backlog(magnetar, topic, "s") == COUNT - 3
    code, _, err = admin(magnetar, "topics", "skip", topic, "-s", "s", "-n", "2")
    assert code == 0, err
    assert backlog(magnetar, topic, "s") == COUNT - 5

    consumer = subscribe(client, topic, "s")
    assert index_of(consumer.receive(10_000)) == 5
    consumer.close()

    ok(magnetar, "POST", f"{sub_path(topic, 's')}/skip_all")
    assert backlog(magnetar, topic, "s") == 0
    produce_unbatched(client, topic, count=2, start=COUNT)
    assert backlog(magnetar, topic, "s") == 2
    code, _, err = admin(magnetar, "topics", "clear-backlog", topic, "-s", "s")
    assert code == 0, err
    assert backlog(magnetar, topic, "s") == 0

    consumer = subscribe(client, topic, "s")
    assert_no_more(consumer, 1000)

    assert rest(magnetar, "POST", f"{sub_path(topic, 's')}/skip/-1")[0] == 400
    assert rest(magnetar, "POST", f"{sub_path(topic, 's')}/skip/many")[0] == 400
    assert rest(magnetar, "POST", f"{sub_path(topic, 'nope')}/skip_all")[0] == 404


def test_expire_messages(magnetar, new_client, topic):
    client = new_client()
    subscribe(client, topic, "a").close()
    subscribe(client, topic, "b").close()
    produce_unbatched(client, topic)

    # Nothing is an hour old.
    ok(magnetar, "POST", f"{sub_path(topic, 'a')}/expireMessages/3600")
    assert backlog(magnetar, topic, "a") == COUNT
    # Everything is at least 0 seconds old: only "a" expires.
    ok(magnetar, "POST", f"{sub_path(topic, 'a')}/expireMessages/0")
    assert backlog(magnetar, topic, "a") == 0
    assert backlog(magnetar, topic, "b") == COUNT
    code, _, err = admin(
        magnetar, "topics", "expire-messages-all-subscriptions", topic, "-t", "0"
    )
    assert code == 0, err
    assert backlog(magnetar, topic, "b") == 0
    ok(magnetar, "POST", f"{topic_path(topic)}/all_subscription/expireMessages/0")

    assert rest(magnetar, "POST", f"{sub_path(topic, 'nope')}/expireMessages/0")[0] == 404
    assert rest(magnetar, "POST", f"{sub_path(topic, 'a')}/expireMessages/x")[0] == 400


def test_create_subscription(magnetar, new_client, topic):
    client = new_client()
    ids = produce_unbatched(client, topic, count=3)

    # At the end by default: only later messages are backlog.
    ok(magnetar, "PUT", sub_path(topic, "late"))
    assert rest(magnetar, "PUT", sub_path(topic, "late"))[0] == 409
    # At a message id.
    ok(
        magnetar,
        "PUT",
        sub_path(topic, "from1"),
        {"ledgerId": ids[1].ledger_id(), "entryId": ids[1].entry_id()},
    )
    code, _, err = admin(magnetar, "topics", "create-subscription", topic, "-s", "cli")
    assert code == 0, err
    subs = ok(magnetar, "GET", f"{topic_path(topic)}/subscriptions")
    assert {"late", "from1", "cli"} <= set(subs)
    assert backlog(magnetar, topic, "late") == 0
    assert backlog(magnetar, topic, "from1") == 2

    produce_unbatched(client, topic, count=1, start=3)
    consumer = subscribe(client, topic, "late")
    assert index_of(consumer.receive(10_000)) == 3
    consumer = subscribe(client, topic, "from1")
    assert [index_of(m) for m in receive_n(consumer, 3)] == [1, 2, 3]

    assert rest(magnetar, "PUT", sub_path(topic + "-missing", "s"))[0] == 404


def test_partitioned_topics_apply_to_every_partition(magnetar, new_client, topic):
    ok(magnetar, "PUT", f"{topic_path(topic)}/partitions", 2)
    ok(magnetar, "PUT", sub_path(topic, "s"))
    client = new_client()
    producer = client.create_producer(
        topic, batching_enabled=False, message_routing_mode=pulsar.PartitionsRoutingMode.RoundRobinDistribution
    )
    for i in range(COUNT):
        producer.send(payload(i))
    producer.close()
    stats = ok(magnetar, "GET", f"{topic_path(topic)}/partitioned-stats")
    assert stats["subscriptions"]["s"]["msgBacklog"] == COUNT
    ok(magnetar, "POST", f"{sub_path(topic, 's')}/skip_all")
    stats = ok(magnetar, "GET", f"{topic_path(topic)}/partitioned-stats")
    assert stats["subscriptions"]["s"]["msgBacklog"] == 0
    ok(magnetar, "POST", f"{sub_path(topic, 's')}/resetcursor/0")
    stats = ok(magnetar, "GET", f"{topic_path(topic)}/partitioned-stats")
    assert stats["subscriptions"]["s"]["msgBacklog"] == COUNT
    # A message id without its partition is refused on a partitioned topic.
    status, _ = rest(
        magnetar, "POST", f"{sub_path(topic, 's')}/resetcursor", {"ledgerId": 1, "entryId": 0}
    )
    assert status == 405


def test_clusters(magnetar):
    assert ok(magnetar, "GET", "/admin/v2/clusters") == ["standalone"]
    data = ok(magnetar, "GET", "/admin/v2/clusters/standalone")
    assert data["serviceUrl"] == magnetar.http_url
    assert data["brokerServiceUrl"] == magnetar.url
    assert rest(magnetar, "GET", "/admin/v2/clusters/nowhere")[0] == 404

    # A tenant may only name clusters that exist.
    status, answer = rest(
        magnetar, "PUT", "/admin/v2/tenants/t1", {"adminRoles": [], "allowedClusters": ["nowhere"]}
    )
    assert status == 412, answer
    assert answer["reason"] == "Clusters do not exist"
    ok(magnetar, "PUT", "/admin/v2/clusters/east", {"serviceUrl": "http://east:8080"})
    assert rest(magnetar, "PUT", "/admin/v2/clusters/east", {})[0] == 409
    ok(magnetar, "PUT", "/admin/v2/tenants/t1", {"adminRoles": [], "allowedClusters": ["east"]})
    # Its namespaces cannot live in this broker's cluster.
    assert rest(magnetar, "PUT", "/admin/v2/namespaces/t1/ns")[0] == 403
    status, _ = rest(magnetar, "DELETE", "/admin/v2/clusters/east")
    assert status == 412
    ok(magnetar, "POST", "/admin/v2/tenants/t1", {"adminRoles": [], "allowedClusters": ["standalone"]})
    ok(magnetar, "PUT", "/admin/v2/namespaces/t1/ns")
    ok(magnetar, "DELETE", "/admin/v2/clusters/east")
    assert ok(magnetar, "GET", "/admin/v2/clusters") == ["standalone"]

    code, out, err = admin(magnetar, "clusters", "list")
    assert code == 0, err
    assert json.loads(out) == ["standalone"]
    code, out, err = admin(magnetar, "clusters", "get", "standalone")
    assert code == 0, err
    assert json.loads(out)["brokerServiceUrl"] == magnetar.url


def test_brokers_and_bookies(magnetar):
    me = magnetar.http_url[len("http://"):]
    assert ok(magnetar, "GET", "/admin/v2/brokers/standalone") == [me]
    assert rest(magnetar, "GET", "/admin/v2/brokers/nowhere")[0] == 404
    leader = ok(magnetar, "GET", "/admin/v2/brokers/leaderBroker")
    assert leader["serviceUrl"] == magnetar.http_url
    assert leader["brokerId"] == f"127.0.0.1:{magnetar.broker_port}"
    assert rest(magnetar, "GET", "/admin/v2/brokers/health") == (200, "ok")
    owned = ok(magnetar, "GET", f"/admin/v2/brokers/standalone/{me}/ownedNamespaces")
    assert owned["public/default/0x00000000_0xffffffff"] == {
        "broker_assignment": "shared",
        "is_controlled": False,
        "is_active": True,
    }

    bookies = ok(magnetar, "GET", "/admin/v2/bookies/all")
    if magnetar.architecture == "monolithic":
        # Partitions live on the broker: a monolithic cluster has no bookies.
        assert bookies == {"bookies": []}
        bookie_count = 0
    else:
        assert bookies == {"bookies": [{"bookieId": f"127.0.0.1:{magnetar.bookie_port}"}]}
        racks = ok(magnetar, "GET", "/admin/v2/bookies/racks-info")
        assert [list(r) for r in racks.values()] == [[f"127.0.0.1:{magnetar.bookie_port}"]]
        bookie_count = 1

    for args, check in [
        (("brokers", "list", "standalone"), lambda v: v == [me]),
        (("brokers", "leader-broker"), lambda v: v["serviceUrl"] == magnetar.http_url),
        (("brokers", "namespaces", "standalone", "--broker", me), lambda v: len(v) >= 1),
        (("bookies", "list-bookies"), lambda v: len(v["bookies"]) == bookie_count),
    ]:
        code, out, err = admin(magnetar, *args)
        assert code == 0, f"{args}: {err}"
        assert check(json.loads(out)), f"{args}: {out}"
    # pulsar-admin's form: the broker asked is the one at --url.
    code, out, err = admin(magnetar, "brokers", "namespaces", "standalone", "--url", me, url=False)
    assert code == 0, err
    assert "public/default/0x00000000_0xffffffff" in json.loads(out)
    code, out, err = admin(magnetar, "brokers", "healthcheck")
    assert code == 0, err
    assert out.strip() == "ok"


def test_openapi_document(magnetar):
    doc = ok(magnetar, "GET", "/admin/v2/openapi.json")
    assert doc["openapi"].startswith("3.")
    paths = doc["paths"]
    sub = "/admin/v2/persistent/{tenant}/{namespace}/{topic}/subscription/{subscription}"
    for path, method in [
        ("/admin/v2/tenants", "get"),
        ("/admin/v2/tenants/{tenant}", "put"),
        ("/admin/v2/namespaces/{tenant}/{namespace}", "put"),
        ("/admin/v2/persistent/{tenant}/{namespace}/{topic}/partitions", "put"),
        (sub, "put"),
        (sub + "/resetcursor/{timestamp}", "post"),
        (sub + "/resetcursor", "post"),
        (sub + "/skip/{numMessages}", "post"),
        (sub + "/skip_all", "post"),
        (sub + "/expireMessages/{expireTimeInSeconds}", "post"),
        ("/admin/v2/persistent/{tenant}/{namespace}/{topic}/all_subscription/expireMessages/{expireTimeInSeconds}", "post"),
        ("/admin/v2/clusters", "get"),
        ("/admin/v2/clusters/{cluster}", "delete"),
        ("/admin/v2/brokers/{cluster}", "get"),
        ("/admin/v2/brokers/leaderBroker", "get"),
        ("/admin/v2/brokers/health", "get"),
        ("/admin/v2/brokers/{cluster}/{broker}/ownedNamespaces", "get"),
        ("/admin/v2/bookies/all", "get"),
        ("/admin/v2/bookies/racks-info", "get"),
        ("/admin/v2/namespaces/{tenant}/{namespace}/bundles", "get"),
        ("/admin/v2/namespaces/{tenant}/{namespace}/{bundle}/split", "put"),
        ("/admin/v2/broker-stats/load-report", "get"),
        ("/lookup/v2/topic/persistent/{tenant}/{namespace}/{topic}", "get"),
        ("/admin/v2/openapi.json", "get"),
    ]:
        assert method in paths.get(path, {}), f"{method.upper()} {path} not documented"
