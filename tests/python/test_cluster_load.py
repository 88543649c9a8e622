"""Bundles moving between live brokers, driven by the official client
through a real cluster (etcd, 3 bookies, brokers at E=3, Qw=2, Qa=2):
unloading a bundle under load through another broker, a broker that joins
getting bundles from the load manager, and a bundle split with the
`magnetar admin` CLI. Every test asserts the durability contracts: no send
fails, every acknowledged message is read back in receipt order.

Durations (unload request -> first receipt from the new owner; broker start
-> first bundle owned) are printed, never asserted.
"""

import subprocess
import time

import pulsar

from cluster import (  # noqa: F401  (fixtures)
    PacedProducer,
    bundle_of,
    check_delivery,
    cluster_factory,
    producer_options,
    read_all,
    unique,
    wait_until,
)

def delivered_numbers(client, topic, load):
    got = read_all(client, topic, expected=len(load.ok_in_receipt_order()))
    return [i for tag, i, _ in got if tag == load.tag]


def test_unloading_a_bundle_under_load_loses_nothing(cluster_factory):
    cluster = cluster_factory(brokers=2)
    cluster.create_namespace("moves", "ns")
    topic = f"persistent://moves/ns/{unique('unload')}"
    client = cluster.client()
    load = PacedProducer(client.create_producer(topic, **producer_options()), "u", rate=300).start()
    wait_until(lambda: len(load.ok_in_receipt_order()) >= 200, 30, "the first receipts")
    owner = cluster.broker_by_id(cluster.etcd_owner_of(topic))
    other = next(b for b in cluster.brokers if b is not owner)
    bundle = bundle_of(topic)

    # Asked through the broker that does not own it: the owner unloads.
    asked = time.monotonic()
    cluster.admin("PUT", f"/admin/v2/namespaces/moves/ns/{bundle}/unload", broker=other)
    answered = time.monotonic() - asked
    assert cluster.grep_logs("bundle unloaded", [owner]), "the owner did not unload the bundle"
    old_ledgers = load.ledgers_before(asked)
    wait_until(lambda: load.first_new_receipt_after(asked, old_ledgers) is not None, 60,
               "a receipt from a ledger opened after the unload")
    resumed = load.first_new_receipt_after(asked, old_ledgers)[0] - asked
    since = time.monotonic()
    wait_until(lambda: load.ok_count_between(since, float("inf")) >= 100, 30,
               "100 more receipts after the producer resumed")
    load.stop()
    print(f"\n[unload] request answered in {answered:.3f}s; first receipt from the bundle's "
          f"next ledger {resumed:.3f}s after the request; now owned by "
          f"{cluster.etcd_owner_of(topic)} (was {owner.broker_id})")
    assert not load.failed(), f"sends failed across the unload: {list(load.failed().items())[:5]}"
    check_delivery(load.ok_in_receipt_order(), delivered_numbers(client, topic, load))


def test_a_joining_broker_gets_bundles_shed_to_it(cluster_factory):
    cluster = cluster_factory(
        brokers=1, broker_args=["--load-report-interval", "1s", "--load-shedding", "true"]
    )
    cluster.create_namespace("grow", "ns")
    client = cluster.client()
    # Topics in every one of the 4 bundles, each with a paced producer.
    topics = {}
    for n in range(64):
        topic = f"persistent://grow/ns/t{n}"
        topics.setdefault(bundle_of(topic), topic)
        if len(topics) == 4:
            break
    loads = {
        topic: PacedProducer(client.create_producer(topic, **producer_options()), f"g{n}",
                             rate=50).start()
        for n, topic in enumerate(topics.values())
    }
    first = cluster.brokers[0]
    wait_until(lambda: len(cluster.ownership("grow", "ns")) == 4, 30, "4 owned bundles")
    assert set(cluster.ownership("grow", "ns").values()) == {first.broker_id}

    started = time.monotonic()
    joined = cluster.add_broker()
    wait_until(lambda: joined.broker_id in cluster.ownership("grow", "ns").values(), 60,
               "the new broker owning a bundle")
    took = time.monotonic() - started
    wait_until(
        lambda: list(cluster.ownership("grow", "ns").values()).count(joined.broker_id) == 2,
        60, "2 bundles on each broker",
    )
    balanced = time.monotonic() - started
    print(f"\n[join] first bundle on the new broker {took:.3f}s after it started, 2/2 after "
          f"{balanced:.3f}s (report interval 1s)")
    since = time.monotonic()
    for topic, load in loads.items():
        wait_until(lambda: load.ok_count_between(since, float("inf")) >= 20, 30,
                   f"{topic} acknowledged after the bundles were balanced")
    for topic, load in loads.items():
        load.stop()
        assert not load.failed(), f"{topic}: sends failed while bundles moved: {list(load.failed().items())[:5]}"
        check_delivery(load.ok_in_receipt_order(), delivered_numbers(client, topic, load))


def test_splitting_a_bundle_with_the_cli(cluster_factory):
    cluster = cluster_factory(brokers=2)
    cluster.create_namespace("split", "ns")
    topic = f"persistent://split/ns/{unique('s')}"
    client = cluster.client()
    load = PacedProducer(client.create_producer(topic, **producer_options()), "s", rate=200).start()
    wait_until(lambda: len(load.ok_in_receipt_order()) >= 100, 30, "the first receipts")
    owner = cluster.broker_by_id(cluster.etcd_owner_of(topic))
    other = next(b for b in cluster.brokers if b is not owner)
    bundle = bundle_of(topic)
    done = subprocess.run(
        [str(cluster.binary), "admin", "--admin-url", other.http_url,
         "namespaces", "split-bundle", "split/ns", "--bundle", bundle],
        capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 0, done.stderr
    layout = cluster.admin("GET", "/admin/v2/namespaces/split/ns/bundles", broker=other)
    assert layout["numBundles"] == 5, layout
    start, end = (int(x, 16) for x in bundle.split("_"))
    middle = start + (end - start) // 2
    halves = {f"0x{start:08x}_0x{middle:08x}", f"0x{middle:08x}_0x{end:08x}"}
    owned = {key.rsplit("/", 1)[-1]: b for key, b in cluster.ownership("split", "ns").items()}
    assert halves <= set(owned), owned
    assert bundle not in owned, owned
    assert {owned[h] for h in halves} == {owner.broker_id}, owned
    since = time.monotonic()
    wait_until(lambda: load.ok_count_between(since, float("inf")) >= 100, 30,
               "100 more receipts after the split")
    load.stop()
    assert not load.failed(), f"sends failed across the split: {list(load.failed().items())[:5]}"
    check_delivery(load.ok_in_receipt_order(), delivered_numbers(client, topic, load))


def test_admin_requests_on_a_partitioned_topic_reach_every_partition_owner(cluster_factory):
    cluster = cluster_factory(brokers=2)
    cluster.create_namespace("fan", "ns")
    # A name whose 4 partitions fall in at least 2 bundles, which the load
    # manager spreads over both brokers.
    base = next(
        f"persistent://fan/ns/p{n}" for n in range(1000)
        if len({bundle_of(f"persistent://fan/ns/p{n}-partition-{i}") for i in range(4)}) >= 2
    )
    cluster.create_partitioned(base, 4)
    client = cluster.client()
    client.subscribe(base, "s", initial_position=pulsar.InitialPosition.Earliest).close()
    first_ids = {}
    for i in range(4):
        producer = client.create_producer(f"{base}-partition-{i}", batching_enabled=False)
        ids = [producer.send(f"m{i}-{n}".encode()) for n in range(10)]
        first_ids[i] = ids[0]
        producer.close()
    owners = {i: cluster.etcd_owner_of(f"{base}-partition-{i}") for i in range(4)}
    if len(set(owners.values())) == 1:
        # Placement put both bundles on one broker: move partition 0's
        # bundle to the other one, so the requests below must cross over.
        other = next(b for b in cluster.brokers if b.broker_id != owners[0])
        cluster.admin(
            "PUT",
            f"/admin/v2/namespaces/fan/ns/{bundle_of(f'{base}-partition-0')}/unload"
            f"?destinationBroker={other.broker_id}",
        )
        owners = {i: cluster.etcd_owner_of(f"{base}-partition-{i}") for i in range(4)}
    assert len(set(owners.values())) == 2, f"partitions all on one broker: {owners}"
    local = base.split("://", 1)[1]
    asked = cluster.brokers[0]

    def backlog():
        stats = cluster.admin("GET", f"/admin/v2/persistent/{local}/partitioned-stats", broker=asked)
        # (msgInCounter counts since each partition was last loaded, so a
        # bundle moved above restarts its partitions' counts, as in Pulsar.)
        assert len(stats["partitions"]) == 4, stats
        return {name: s["subscriptions"]["s"]["msgBacklog"] for name, s in stats["partitions"].items()}

    assert sum(backlog().values()) == 40
    cluster.admin("POST", f"/admin/v2/persistent/{local}/subscription/s/skip/3", broker=asked)
    assert sorted(backlog().values()) == [7, 7, 7, 7]
    # Reset one partition owned by the other broker to its first message.
    remote = next(i for i, o in owners.items() if o != asked.broker_id)
    first = first_ids[remote]
    cluster.admin(
        "POST", f"/admin/v2/persistent/{local}/subscription/s/resetcursor",
        {"ledgerId": first.ledger_id(), "entryId": first.entry_id(), "partitionIndex": remote},
        broker=asked,
    )
    after = backlog()
    assert after[f"{base}-partition-{remote}"] == 10, after
    assert sum(after.values()) == 31, after
    cluster.admin("POST", f"/admin/v2/persistent/{local}/subscription/s/skip_all", broker=asked)
    assert sum(backlog().values()) == 0
