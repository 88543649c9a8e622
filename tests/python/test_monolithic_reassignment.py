"""Moving partitions between brokers in the monolithic architecture:
etcd and 4 brokers, replication factor 3 and min.insync 2, so one broker
holds no copy of a new partition and can receive one. Driven by the
official client while the copies move.

Each test checks the durability contracts (every acknowledged message is
read back, in receipt order), that the bytes copied are the partition's
bytes (the receiving broker's replication counter against the segment
files), and that the copies left out are deleted. Durations are printed,
never asserted.
"""

import json
import time

import pytest

from cluster import (  # noqa: F401  (fixtures)
    http,
    PacedProducer,
    bundle_of,
    check_delivery,
    cluster_factory,
    copy_bytes,
    copy_dir,
    leader_broker,
    metric,
    producer_options,
    read_all,
    record,
    replica_id,
    split_topic,
    tagged_payload,
    unique,
    wait_until,
)

FETCHED = "magnetar_broker_replication_fetched_bytes_total"


@pytest.fixture
def mono4(cluster_factory):
    c = cluster_factory(brokers=4, architecture="monolithic")
    c.create_namespace("move", "ns", ensemble=3, ack_quorum=2)
    c.create_namespace("move", "one", ensemble=3, ack_quorum=2, bundles=1)
    return c


def topic_path(topic):
    t, ns, name = split_topic(topic)
    return f"/admin/v2/persistent/{t}/{ns}/{name}"


def fill(producer, tag, count, size=1024):
    for i in range(count):
        producer.send_async(tagged_payload(tag, i, size), None)
    producer.flush()
    return list(range(count))


def spare_of(cluster, rec):
    """The broker holding no copy of the partition."""
    return next(b for b in cluster.brokers if replica_id(b) not in rec["replicas"])


def test_reassignment_under_load_copies_the_partition_and_drops_the_old_copy(mono4):
    topic = f"persistent://move/ns/{unique('reassign')}"
    client = mono4.client()
    producer = client.create_producer(topic, **producer_options())
    filled = fill(producer, "f", 3000)
    rec = record(mono4, topic)
    leader = leader_broker(mono4, topic)
    spare = spare_of(mono4, rec)
    going = next(b for b in mono4.brokers
                 if replica_id(b) in rec["replicas"] and b is not leader)
    staying = [r for r in rec["replicas"] if r != replica_id(going)]
    target = [staying[0], spare.broker_id, *staying[1:]]
    assert metric(spare, FETCHED) == 0

    load = PacedProducer(producer, "l", rate=200).start()
    wait_until(lambda: len(load.ok_in_receipt_order()) >= 100, 30, "receipts before the move")
    started = time.monotonic()
    # Admin calls on a partition go to its leader (others answer 307).
    answer = mono4.admin("POST", topic_path(topic) + "/reassignment",
                         {"replicas": target, "throttleBytesPerSecond": 1 << 20}, broker=leader)
    assert answer["reassignment"]["target"] == [staying[0], replica_id(spare), *staying[1:]], answer
    adding = [r for r in answer["replicas"] if r["adding"]]
    assert [r["replicaId"] for r in adding] == [replica_id(spare)], answer
    assert [r["replicaId"] for r in answer["replicas"] if r["removing"]] == [replica_id(going)]

    wait_until(lambda: record(mono4, topic).get("reassignment") is None, 120,
               "the reassignment to finish")
    took = time.monotonic() - started
    wait_until(lambda: len(load.ok_in_receipt_order()) >= 300, 30, "receipts after the move")
    load.stop()
    done = record(mono4, topic)
    assert sorted(done["replicas"]) == sorted(staying + [replica_id(spare)]), done
    assert sorted(done["isr"]) == sorted(done["replicas"]), done
    assert done["leader"] == replica_id(leader), "the leader stayed"
    wait_until(lambda: not copy_dir(going, done).exists(), 30, "the removed copy deleted")

    # The new copy holds the partition byte for byte, and fetched nothing else.
    size = copy_bytes(leader, done)
    wait_until(lambda: copy_bytes(spare, done) == size, 30, "the new copy caught up")
    assert metric(spare, FETCHED) == size, "bytes copied are the partition's bytes"
    status = mono4.admin("GET", topic_path(topic) + "/replicas", broker=leader)
    assert status["reassignment"] is None and status["sizeBytes"] == size, status
    print(f"\n[reassign] {size} bytes moved in {took:.2f}s at 1 MiB/s throttle")

    acked = load.ok_in_receipt_order()
    got = read_all(client, topic, len(filled) + len(acked))
    check_delivery(filled, [i for tag, i, _ in got if tag == "f"])
    summary = check_delivery(acked, [i for tag, i, _ in got if tag == "l"], load.failed())
    print(f"[reassign] {json.dumps(summary)}")


def test_bundle_move_copies_every_partition_then_the_destination_leads(mono4):
    # One bundle: both partitions move together, as a bundle's topics do.
    base = f"persistent://move/one/{unique('moved')}"
    mono4.create_partitioned(base, 2)
    client = mono4.client()
    producer = client.create_producer(base, **producer_options())
    filled = fill(producer, "f", 2000)
    partitions = [f"{base}-partition-{n}" for n in range(2)]
    recs = [record(mono4, p) for p in partitions]
    owner = mono4.owner_of(partitions[0])
    assert all(r["leader"] == replica_id(owner) for r in recs), recs
    # A broker that holds a copy of neither partition, if there is one;
    # else one missing at least one copy.
    holders = [set(r["replicas"]) for r in recs]
    candidates = [b for b in mono4.brokers if b is not owner]
    dest = min(candidates, key=lambda b: sum(replica_id(b) in h for h in holders))
    before = metric(dest, FETCHED)
    bundle = bundle_of(partitions[0], count=1)

    load = PacedProducer(producer, "l", rate=200).start()
    wait_until(lambda: len(load.ok_in_receipt_order()) >= 100, 30, "receipts before the move")
    started = time.monotonic()
    mono4.admin("PUT", f"/admin/v2/namespaces/move/one/{bundle}/unload"
                f"?destinationBroker={dest.broker_id}&throttleBytesPerSecond={4 << 20}",
                timeout=120)
    took = time.monotonic() - started
    assert mono4.owner_of(partitions[0]) is dest
    wait_until(lambda: all(record(mono4, p)["leader"] == replica_id(dest) for p in partitions),
               60, "the destination leading both partitions")
    wait_until(lambda: len(load.ok_in_receipt_order()) >= 400, 60, "receipts from the new leader")
    load.stop()
    for p, held_before in zip(partitions, holders):
        wait_until(lambda p=p: record(mono4, p).get("reassignment") is None, 60,
                   "the moves finished by the new leader")
        done = record(mono4, p)
        assert len(done["replicas"]) == 3 and replica_id(dest) in done["isr"], done
        if replica_id(dest) in held_before:
            # Nothing to copy: the old leader stays, as a follower.
            assert sorted(done["replicas"]) == sorted(held_before), done
            continue
        # The destination's copy replaced the old leader's.
        assert sorted(done["replicas"]) == sorted(held_before - {replica_id(owner)}
                                                  | {replica_id(dest)}), done
        wait_until(lambda done=done: not copy_dir(owner, done).exists(), 30,
                   "the old leader's copy deleted")
    copied = metric(dest, FETCHED) - before
    # What the destination fetched before leading is part of what it holds.
    held = sum(copy_bytes(dest, record(mono4, p)) for p in partitions)
    assert 0 < copied <= held, (copied, held)
    print(f"\n[bundle-move] copied {copied:.0f} bytes (now holds {held}) in {took:.2f}s")

    # Order holds per partition: check each partition's messages apart.
    acked = load.ok_in_receipt_order()
    got = read_all(client, base, len(filled) + len(acked))
    assert sorted(i for tag, i, _ in got if tag == "f") == filled, "a filled message is missing"
    partition_of = {i: key[2] for i, (_, key, _) in load.results.items() if key}
    for n in range(2):
        here = [(tag, i) for tag, i, mid in got if mid.partition() == n]
        stored = [i for tag, i in here if tag == "f"]
        assert stored == sorted(stored), f"partition {n} out of send order"
        summary = check_delivery([i for i in acked if partition_of.get(i) == n],
                                 [i for tag, i in here if tag == "l"], load.failed())
        print(f"[bundle-move] partition {n}: {json.dumps(summary)}")


def test_reassignments_that_cannot_be_done_are_refused_and_a_cancel_undoes_one(mono4):
    topic = f"persistent://move/ns/{unique('refuse')}"
    client = mono4.client()
    producer = client.create_producer(topic, **producer_options())
    filled = fill(producer, "f", 2000)
    rec = record(mono4, topic)
    leader = leader_broker(mono4, topic)
    spare = spare_of(mono4, rec)
    others = [r for r in rec["replicas"] if r != rec["leader"]]
    path = topic_path(topic) + "/reassignment"

    refused = mono4.admin("POST", path, {"replicas": [*others, spare.broker_id]}, expect=(412,), broker=leader)
    assert "moving its bundle" in refused["reason"], refused
    refused = mono4.admin("POST", path, {"replicas": [rec["leader"], "127.0.0.1:1"]},
                          expect=(412,), broker=leader)
    assert "no live monolithic broker" in refused["reason"], refused
    mono4.admin("POST", path, {"replicas": [rec["leader"], rec["leader"]]}, expect=(412,), broker=leader)
    mono4.admin("POST", path, {"replicas": [rec["leader"]], "throttleBytesPerSecond": 0},
                expect=(400,), broker=leader)
    mono4.admin("POST", path, {"replicas": []}, expect=(412,), broker=leader)
    mono4.admin("POST", path, "not json", expect=(400,), broker=leader)
    assert record(mono4, topic) == rec, "a refused request changed the record"

    # A slow copy, cancelled: the new replica goes again with its copy.
    slow = [rec["leader"], *others, spare.broker_id]
    mono4.admin("POST", path, {"replicas": slow, "throttleBytesPerSecond": 65536}, broker=leader)
    wait_until(lambda: copy_bytes(spare, rec) > 0, 30, "the new copy started")
    other = [rec["leader"], others[0], spare.broker_id]
    conflict = mono4.admin("POST", path, {"replicas": other}, expect=(412,), broker=leader)
    assert "cancel that first" in conflict["reason"], conflict
    mono4.admin("DELETE", path, broker=leader)
    after = record(mono4, topic)
    assert after.get("reassignment") is None and after["replicas"] == rec["replicas"], after
    wait_until(lambda: not copy_dir(spare, rec).exists(), 30, "the cancelled copy deleted")
    # The partition kept serving throughout.
    got = read_all(client, topic, len(filled))
    check_delivery(filled, [i for tag, i, _ in got if tag == "f"])
    assert leader_broker(mono4, topic) is leader


@pytest.mark.parametrize("architecture", ["decoupled", "monolithic"])
def test_standalone_and_ledgers_have_no_copies_to_move(magnetar, new_client, architecture):
    name = unique("nocopies")
    new_client().create_producer(f"persistent://public/default/{name}").send(b"x")
    topic = f"/admin/v2/persistent/public/default/{name}"
    status, answer = http("POST", magnetar.http_url + topic + "/reassignment",
                          {"replicas": ["127.0.0.1:6650"]})
    assert status == 412, answer
    if architecture == "decoupled":
        assert "ledgers on bookies" in answer["reason"], answer
        status, answer = http("GET", magnetar.http_url + topic + "/replicas")
        assert status == 412, answer
    else:
        assert "standalone" in answer["reason"], answer
        status, answer = http("GET", magnetar.http_url + topic + "/replicas")
        assert status == 200 and [r["leader"] for r in answer["replicas"]] == [True], answer
