"""Operating a monolithic cluster: rack-aware replica placement, draining
a broker so it can be removed, and unclean leader election as a namespace
policy. Real brokers on etcd, the official client; every test checks that
what was acknowledged is read back (unclean election excepted, which by
definition gives up what only the lost in-sync replicas held: the test
checks exactly that loss and nothing more).
"""

from cluster import (  # noqa: F401  (fixtures)
    MONOLITHIC_LAG_MAX_S,
    ROOT,
    check_delivery,
    cluster_factory,
    copy_dir,
    create_producer_retrying,
    isr_of,
    leader_broker,
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



def test_replicas_spread_over_racks(cluster_factory):
    racks = ["r1", "r1", "r2", "r3"]
    c = cluster_factory(brokers=4, architecture="monolithic", racks=racks)
    c.create_namespace("racks", "ns", ensemble=3, ack_quorum=2)
    rack_of = {replica_id(b): racks[b.index] for b in c.brokers}
    client = c.client()
    for n in range(6):
        topic = f"persistent://racks/ns/{unique(f't{n}')}"
        client.create_producer(topic).send(b"x")
        rec = record(c, topic)
        spread = sorted(rack_of[r] for r in rec["replicas"])
        assert spread == ["r1", "r2", "r3"], f"{topic}: replicas {rec['replicas']} on {spread}"


def test_a_drained_broker_serves_and_stores_nothing_and_nothing_is_lost(cluster_factory):
    c = cluster_factory(brokers=4, architecture="monolithic")
    c.create_namespace("drain", "ns", ensemble=3, ack_quorum=2)
    client = c.client()
    topics = [f"persistent://drain/ns/{unique(f't{n}')}" for n in range(4)]
    acked = {}
    for topic in topics:
        producer = client.create_producer(topic, **producer_options())
        acked[topic] = send_all(producer, "a", 200)
    # The broker holding the most: it leads or follows several.
    held = {b.broker_id: sum(replica_id(b) in record(c, t)["replicas"] for t in topics)
            for b in c.brokers}
    going = c.broker_by_id(max(held, key=held.get))
    others = [b for b in c.brokers if b is not going]
    report = c.admin("POST", f"/admin/v2/brokers/standalone/{going.broker_id}/drain",
                     broker=others[0], expect=(200,), timeout=180)
    print(f"\n[drain] {report}")
    assert report["skipped"] == [], report
    # It owns no bundle and holds no copy; its copies' directories are gone.
    owners = c.ownership()
    assert owners and going.broker_id not in owners.values(), owners
    for topic in topics:
        rec = record(c, topic)
        assert replica_id(going) not in rec["replicas"], rec
        assert len(rec["replicas"]) == 3 and sorted(rec["isr"]) == sorted(rec["replicas"]), rec
        wait_until(lambda rec=rec: not copy_dir(going, rec).exists(), 30,
                   "the drained broker's copy deleted")
    # Stop it for good; every topic is whole on the others.
    c.kill(going)
    for topic in topics:
        got = read_all(client, topic, len(acked[topic]))
        check_delivery(acked[topic], [i for tag, i, _ in got if tag == "a"])


def test_unclean_leader_election_is_a_namespace_policy(cluster_factory):
    c = cluster_factory(brokers=3, architecture="monolithic")
    # min.insync 1, so that one surviving replica may take writes.
    c.create_namespace("unclean", "ns", ensemble=3, ack_quorum=1)
    topic = f"persistent://unclean/ns/{unique('t')}"
    t, ns, name = split_topic(topic)
    client = c.client()
    producer = client.create_producer(topic, **producer_options())
    first = send_all(producer, "a", 50)
    leader = leader_broker(c, topic)
    behind, other = [b for b in c.brokers if b is not leader]
    # Every replica holds the first 50; then one falls out of the ISR and
    # misses the next 50, which the other two hold.
    wait_until(lambda: all(copy_dir(b, record(c, topic)).exists() for b in c.brokers), 30,
               "every replica holding a copy")
    c.pause(behind)
    wait_until(lambda: replica_id(behind) not in isr_of(c, topic), MONOLITHIC_LAG_MAX_S + 30,
               "the paused replica out of the ISR")
    send_all(producer, "b", 50)
    # The whole ISR dies; only the replica out of it is left.
    c.kill(leader)
    c.kill(other)
    c.resume(behind)
    wait_until(lambda: set(c.registered_brokers()) == {behind.broker_id}, 30,
               "the dead brokers' leases to end")
    lookup = f"/lookup/v2/topic/persistent/{t}/{ns}/{name}"
    answer = c.admin("GET", lookup, broker=behind, expect=(500, 503, 412))
    assert "unclean leader election is off" in answer["reason"], answer
    assert record(c, topic)["leader"] == replica_id(leader), "no unclean election while it is off"

    c.admin("POST", f"/admin/v2/namespaces/{t}/{ns}/uncleanLeaderElection", True, broker=behind)
    assert c.admin("GET", f"/admin/v2/namespaces/{t}/{ns}/uncleanLeaderElection",
                   broker=behind, expect=(200,)) is True
    producer2, _ = create_producer_retrying(
        c.client(), topic, **producer_options(send_timeout_millis=10_000))
    later = send_all(producer2, "c", 20)
    rec = record(c, topic)
    assert rec["leader"] == replica_id(behind) and rec["isr"] == [replica_id(behind)], rec
    got = read_all(client, topic, len(first) + len(later))
    check_delivery(first, [i for tag, i, _ in got if tag == "a"])
    check_delivery(later, [i for tag, i, _ in got if tag == "c"])
    lost = [i for tag, i, _ in got if tag == "b"]
    assert lost == [], f"the unclean leader served entries it never had: {lost}"

    # The old leader returns as a follower and cuts the tail the new
    # leader never had, then rejoins.
    leader.spawn()
    wait_until(lambda: replica_id(leader) in isr_of(c, topic), 60, "the old leader in sync again")
    assert "truncating a divergent tail" in leader.log_text(), leader.log_tail(40)
