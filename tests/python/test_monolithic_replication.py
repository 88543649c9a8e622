"""The monolithic architecture replicated: etcd and 3 brokers keeping
partitions on their own disks, replication factor 3 and min.insync 2
(followers fetch from the leader over gRPC; a follower leaves the ISR after
2 s of lag), driven by the official client.

Every test asserts the durability contracts (every acknowledged message is
read back, in receipt order) and what its name says about the ISR, read
from the partition record in etcd. Durations are printed, never asserted.
"""

import json
import time

import pulsar
import pytest

from cluster import (  # noqa: F401  (fixtures)
    ROOT,
    MONOLITHIC_LAG_MAX_S,
    PacedProducer,
    check_delivery,
    cluster_factory,
    create_producer_retrying,
    parse_payload,
    producer_options,
    read_all,
    split_topic,
    tagged_payload,
    unique,
    wait_until,
)


@pytest.fixture
def mono(cluster_factory):
    c = cluster_factory(brokers=3, architecture="monolithic")
    c.create_namespace("repl", "ns", ensemble=3, ack_quorum=2)
    return c


def record(cluster, topic):
    """The partition record of `topic` in etcd (dict), or None."""
    t, ns, name = split_topic(topic)
    for key, value, _ in cluster.etcd.list(f"{ROOT}/topics/{t}/{ns}/{name}"):
        if key == f"{ROOT}/topics/{t}/{ns}/{name}":
            return json.loads(value)
    return None


def replica_id(broker):
    return (broker.data_dir / "broker-id").read_text().strip()


def leader_broker(cluster, topic):
    rec = record(cluster, topic)
    return next(b for b in cluster.brokers if replica_id(b) == rec["leader"])


def isr_of(cluster, topic):
    rec = record(cluster, topic)
    return sorted(rec.get("isr") or rec["replicas"]) if rec else []


def ids(brokers):
    return sorted(replica_id(b) for b in brokers)


def copy_bytes(broker, topic_record):
    d = broker.data_dir / "logs" / str(topic_record["log_id"])
    return sum(f.stat().st_size for f in d.glob("*.log")) if d.exists() else 0


def send_all(producer, tag, count):
    ids_ = []
    for i in range(count):
        producer.send(tagged_payload(tag, i))
        ids_.append(i)
    return ids_


def test_every_replica_holds_the_committed_log(mono):
    topic = f"persistent://repl/ns/{unique('copies')}"
    client = mono.client()
    producer = client.create_producer(topic, **producer_options())
    acked = send_all(producer, "a", 200)
    rec = record(mono, topic)
    assert len(rec["replicas"]) == 3 and sorted(rec["isr"]) == sorted(rec["replicas"]), rec
    leader = leader_broker(mono, topic)
    want = copy_bytes(leader, rec)
    assert want > 0
    # Followers hold the same bytes once they have fetched (verbatim batches).
    wait_until(lambda: all(copy_bytes(b, rec) == want for b in mono.brokers), 30,
               f"every replica to hold {want} bytes")
    got = [i for tag, i, _ in read_all(client, topic, len(acked))]
    check_delivery(acked, got)


def test_leader_killed_under_load_loses_no_acknowledged_message(mono, record_property):
    topic = f"persistent://repl/ns/{unique('kill')}"
    client = mono.client()
    producer = client.create_producer(topic, **producer_options())
    old = leader_broker(mono, topic)
    load = PacedProducer(producer, "k", rate=200).start()
    wait_until(lambda: len(load.ok_in_receipt_order()) >= 300, 30, "300 receipts before the kill")
    killed_at = time.monotonic()
    acked_before = len(load.ok_in_receipt_order())
    mono.kill(old)
    wait_until(lambda: record(mono, topic)["leader"] != replica_id(old), 60,
               "a new leader elected from the ISR")
    wait_until(lambda: load.ok_count_between(killed_at + 0.001, time.monotonic()) > 0
               and len(load.ok_in_receipt_order()) > acked_before + 200, 90,
               "receipts from the new leader")
    resumed = time.monotonic() - killed_at
    load.stop()
    rec = record(mono, topic)
    assert replica_id(old) not in rec["isr"], f"the dead leader left the ISR: {rec}"
    assert rec["leader"] in rec["isr"]
    delivered = [i for _, i, _ in read_all(client, topic, len(load.ok_in_receipt_order()))]
    summary = check_delivery(load.ok_in_receipt_order(), delivered, load.failed())
    print(f"\n[leader-kill] resumed after {resumed:.2f}s {json.dumps(summary)}")
    record_property("resumed_s", round(resumed, 2))

    # The old leader comes back as a follower and rejoins the ISR.
    old.spawn()
    wait_until(lambda: replica_id(old) in record(mono, topic)["isr"], 60,
               "the restarted broker back in the ISR")


def test_paused_follower_leaves_the_isr_and_rejoins_after_resume(mono):
    topic = f"persistent://repl/ns/{unique('pause')}"
    client = mono.client()
    producer = client.create_producer(topic, **producer_options())
    send_all(producer, "w", 10)
    leader = leader_broker(mono, topic)
    follower = next(b for b in mono.brokers if b is not leader)
    mono.pause(follower)
    try:
        load = PacedProducer(producer, "p", rate=100).start()
        wait_until(lambda: replica_id(follower) not in isr_of(mono, topic),
                   MONOLITHIC_LAG_MAX_S + 30, "the paused follower out of the ISR")
        shrunk_at = time.monotonic()
        # min.insync (2) still holds: the leader keeps acknowledging.
        wait_until(lambda: load.ok_count_between(shrunk_at, time.monotonic()) >= 100, 30,
                   "receipts with the follower out of the ISR")
    finally:
        mono.resume(follower)
    wait_until(lambda: replica_id(follower) in isr_of(mono, topic), 60,
               "the resumed follower back in the ISR")
    load.stop()
    delivered = [i for tag, i, _ in read_all(client, topic, 10 + len(load.ok_in_receipt_order()))
                 if tag == "p"]
    check_delivery(load.ok_in_receipt_order(), delivered, load.failed())


def test_fewer_in_sync_replicas_than_min_insync_fails_sends_then_recovers(mono):
    topic = f"persistent://repl/ns/{unique('minisr')}"
    client = mono.client()
    producer = client.create_producer(
        topic, send_timeout_millis=10_000, batching_enabled=False)
    acked = send_all(producer, "m", 20)
    leader = leader_broker(mono, topic)
    followers = [b for b in mono.brokers if b is not leader]
    for f in followers:
        mono.kill(f)
    wait_until(lambda: isr_of(mono, topic) == ids([leader]), MONOLITHIC_LAG_MAX_S + 30,
               "the ISR down to the leader")
    started = time.monotonic()
    with pytest.raises(Exception) as refused:
        producer.send(tagged_payload("x", 0))
    took = time.monotonic() - started
    print(f"\n[min-insync] send refused after {took:.2f}s: {refused.value!r}")
    assert mono.grep_logs("not enough replicas"), "the broker said why"

    followers[0].spawn()
    wait_until(lambda: replica_id(followers[0]) in isr_of(mono, topic), 60,
               "a follower back in the ISR")
    producer2, _ = create_producer_retrying(client, topic, **producer_options())
    more = []
    for i in range(20):
        producer2.send(tagged_payload("r", i))
        more.append(i)
    got = read_all(client, topic, len(acked) + len(more))
    check_delivery(acked, [i for tag, i, _ in got if tag == "m"])
    check_delivery(more, [i for tag, i, _ in got if tag == "r"])
    assert not [i for tag, i, _ in got if tag == "x"], "a refused send was stored"


def test_divergent_tail_of_a_killed_leader_is_truncated_when_it_returns(mono):
    topic = f"persistent://repl/ns/{unique('tail')}"
    client = mono.client()
    producer = client.create_producer(topic, **producer_options())
    acked = send_all(producer, "a", 50)
    leader = leader_broker(mono, topic)
    followers = [b for b in mono.brokers if b is not leader]
    # The followers stop fetching; the leader takes writes it can never
    # commit (a tail no follower holds), then dies before the lag limit.
    for f in followers:
        mono.pause(f)
    tail_producer = client.create_producer(
        topic, send_timeout_millis=1_000, batching_enabled=False)
    for i in range(5):
        tail_producer.send_async(tagged_payload("tail", i), lambda *_: None)
    wait_until(lambda: copy_bytes(leader, record(mono, topic)) > copy_bytes(followers[0], record(mono, topic)),
               10, "the tail written on the leader only")
    mono.kill(leader)
    for f in followers:
        mono.resume(f)
    wait_until(lambda: record(mono, topic)["leader"] != replica_id(leader), 60,
               "a follower elected leader")
    producer2, _ = create_producer_retrying(client, topic, **producer_options())
    after = send_all(producer2, "b", 50)

    leader.spawn()
    wait_until(lambda: replica_id(leader) in isr_of(mono, topic), 60,
               "the old leader back in the ISR")
    assert leader.log_text().count("truncating a divergent tail") >= 1
    # Make the returned broker the only one left: what it serves is its
    # own copy, which must be the new leader's history, without the tail.
    for b in mono.brokers:
        if b is not leader:
            mono.kill(b)
    wait_until(lambda: record(mono, topic)["leader"] == replica_id(leader), 60,
               "the returned broker leading")
    got = read_all(client, topic, len(acked) + len(after))
    check_delivery(acked, [i for tag, i, _ in got if tag == "a"])
    check_delivery(after, [i for tag, i, _ in got if tag == "b"])
    assert not [i for tag, i, _ in got if tag == "tail"], "an unacknowledged tail survived"
