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

from support import close_quietly, wait_mark_delete_persisted
from cluster import (  # noqa: F401  (fixtures)
    LEASE_TTL_S,
    ROOT,
    MONOLITHIC_LAG_MAX_S,
    PacedProducer,
    check_delivery,
    cluster_factory,
    copy_bytes,
    create_producer_retrying,
    ids,
    isr_of,
    leader_broker,
    parse_payload,
    producer_options,
    read_all,
    record,
    replica_id,
    send_all,
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


def test_acknowledgements_are_kept_in_a_cursor_log_on_the_partition_replicas(mono):
    """A subscription's cursor is a replicated log of its own on its
    partition's replicas: once the leader has stored the acks, it is killed
    -9, and the new leader delivers exactly the unacknowledged messages."""
    topic = f"persistent://repl/ns/{unique('acks')}"
    t, ns, name = split_topic(topic)
    client = mono.client()
    consumer = client.subscribe(topic, "acks", consumer_type=pulsar.ConsumerType.Exclusive,
                                initial_position=pulsar.InitialPosition.Earliest)
    producer = client.create_producer(topic, **producer_options(batching_enabled=False))
    send_all(producer, "c", 100)
    received = [consumer.receive(10_000) for _ in range(100)]
    assert [parse_payload(m.data())[1] for m in received] == list(range(100))
    for msg in received[:60]:
        consumer.acknowledge(msg)
    leader = leader_broker(mono, topic)
    last = received[59].message_id()
    wait_mark_delete_persisted(leader.http_url, topic, "acks", (last.ledger_id(), last.entry_id()))

    partition = record(mono, topic)
    cursor_log = json.loads(next(v for k, v, _ in mono.etcd.list(f"{ROOT}/topics/{t}/{ns}/{name}/")
                                 if k == f"{ROOT}/topics/{t}/{ns}/{name}/acks"))
    assert sorted(cursor_log["replicas"]) == sorted(partition["replicas"]), cursor_log
    assert cursor_log["leader"] == partition["leader"], cursor_log
    cursor = json.loads(next(v for k, v, _ in mono.etcd.list(f"{ROOT}/cursors/{t}/{ns}/{name}/acks")))
    assert cursor.get("in_log") is True, cursor

    mono.kill(leader)
    close_quietly(client)
    # The new client's lookup elects a new leader from the ISR.
    client = mono.client()
    consumer = client.subscribe(topic, "acks", consumer_type=pulsar.ConsumerType.Exclusive)
    assert record(mono, topic)["leader"] != replica_id(leader)
    again = [parse_payload(consumer.receive(30_000).data())[1] for _ in range(40)]
    assert again == list(range(60, 100)), f"redelivered {again}"
    with pytest.raises(pulsar.Timeout):
        consumer.receive(1_000)
    client.close()


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
    # Connected to the leader before the followers stop (lookups through
    # the service URL could land on a paused broker).
    tail_producer = client.create_producer(
        topic, send_timeout_millis=1_000, batching_enabled=False)
    tail_results = {}

    def send_tail(i):
        tail_producer.send_async(tagged_payload("tail", i),
                                 lambda res, _id, i=i: tail_results.setdefault(i, str(res)))

    # The followers stop fetching; the leader takes writes it can never
    # commit, then dies before the lag limit. A fetch already waiting at the
    # leader may still carry the first tail entry to a follower (it reads
    # it when resumed), so the new leader may hold that one; the later ones
    # were appended after every follower's last fetch and exist on the old
    # leader only: the divergent tail.
    for f in followers:
        mono.pause(f)
    rec = record(mono, topic)
    before_tail = copy_bytes(leader, rec)
    send_tail(0)
    wait_until(lambda: copy_bytes(leader, rec) > before_tail, 10, "the first tail entry on the leader")
    first_tail = copy_bytes(leader, rec)
    for i in range(1, 5):
        send_tail(i)
    wait_until(lambda: copy_bytes(leader, rec) > first_tail, 10, "the rest of the tail on the leader")
    mono.kill(leader)
    for f in followers:
        mono.resume(f)
    wait_until(lambda: record(mono, topic)["leader"] != replica_id(leader), 60,
               "a follower elected leader")
    producer2, _ = create_producer_retrying(client, topic, **producer_options())
    after = send_all(producer2, "b", 50)
    # The history as the new leader serves it.
    history = [(tag, i) for tag, i, _ in read_all(client, topic, len(acked) + len(after))]

    leader.spawn()
    wait_until(lambda: replica_id(leader) in isr_of(mono, topic), 60,
               "the old leader back in the ISR")
    assert "truncating a divergent tail" in leader.log_text(), leader.log_tail(40)
    # Make the returned broker the only one left: what it serves is its
    # own copy, which must be the new leader's history, without the tail.
    for b in mono.brokers:
        if b is not leader:
            mono.kill(b)
    wait_until(lambda: record(mono, topic)["leader"] == replica_id(leader), 60,
               "the returned broker leading")
    got = [(tag, i) for tag, i, _ in read_all(client, topic, len(history), subscription="again")]
    assert got == history, "the returned broker serves another history than the new leader did"
    check_delivery(acked, [i for tag, i in got if tag == "a"])
    check_delivery(after, [i for tag, i in got if tag == "b"])
    kept = [i for tag, i in got if tag == "tail"]
    assert all(i == 0 for i in kept), f"tail entries only the old leader held survived: {kept}"
    print(f"\n[divergent-tail] tail callbacks {tail_results}, kept {kept}")


def test_paused_leader_is_deposed_and_acknowledges_nothing_after_resuming(mono, record_property):
    topic = f"persistent://repl/ns/{unique('zombie')}"
    client = mono.client()
    first = client.create_producer(topic, **producer_options())
    zombie = leader_broker(mono, topic)
    zombie_epoch = record(mono, topic)["leader_epoch"]
    before = PacedProducer(first, "z", rate=200).start()
    wait_until(lambda: len(before.ok_in_receipt_order()) >= 300, 30, "300 receipts before the pause")

    paused_at = time.monotonic()
    mono.pause(zombie)
    # The first producer waits on the stopped process; a second one on the
    # multi-host URL is served by the leader elected once the lease is gone.
    second, _ = create_producer_retrying(client, topic, **producer_options())
    during = PacedProducer(second, "y", rate=200).start()
    wait_until(lambda: during.ok_count_between(paused_at, time.monotonic()) >= 100, 60,
               "receipts from the new leader during the pause")
    deposed = record(mono, topic)
    assert deposed["leader"] != replica_id(zombie) and deposed["leader_epoch"] > zombie_epoch, deposed
    assert zombie.paused, "the zombie must still be paused when it was deposed"
    remaining = paused_at + 3 * LEASE_TTL_S - time.monotonic()
    if remaining > 0:
        time.sleep(remaining)

    resumed_at = time.monotonic()
    mono.resume(zombie)
    # The resumed broker finds its lease and its epoch gone: whatever its
    # log took after the last confirmed entry is never confirmed, and its
    # producer moves to the new leader.
    wait_until(lambda: before.ok_count_between(resumed_at, time.monotonic()) >= 50, 90,
               "the first producer continuing on the new leader after SIGCONT")
    before.stop()
    during.stop()
    for load in (before, during):
        assert not load.missing_callbacks(), f"no callback for {load.missing_callbacks()[:10]}"
    acked_z = before.ok_in_receipt_order()
    acked_y = during.ok_in_receipt_order()
    delivered = read_all(client, topic, len(acked_z) + len(acked_y))
    summary = {
        "z": check_delivery(acked_z, [i for t, i, _ in delivered if t == "z"], before.failed()),
        "y": check_delivery(acked_y, [i for t, i, _ in delivered if t == "y"], during.failed()),
    }
    rec = record(mono, topic)
    assert rec["leader"] != replica_id(zombie), rec
    # The zombie rejoins as a follower of the new epoch.
    wait_until(lambda: replica_id(zombie) in isr_of(mono, topic), 60,
               "the resumed broker back in the ISR as a follower")
    print(f"\n[zombie-leader] {json.dumps(summary)}")
    record_property("resume_to_first_producer_continuing_s",
                    round(time.monotonic() - resumed_at, 2))
