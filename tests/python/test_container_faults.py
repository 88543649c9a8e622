"""Faults across the real container networks of deploy/compose/decoupled.yml
(3 etcd members, 3 bookies, 2 brokers, ledgers at E=2, Qw=2, Qa=2), driven by
the official client under load: a broker cut off from etcd, a bookie cut off
from the brokers, etcd's quorum lost for 30 s, and rolling restarts of every
broker and then every bookie. In each, every message whose send callback
said Ok is read back afterwards, first occurrences in receipt order.

One stack serves the whole module; every test puts back what it broke (in
`finally`) and waits until the stack is healthy again. Where the machine has
no Docker engine these tests skip, saying so.
"""

import base64
import json
import re
import threading
import time
import urllib.error
import urllib.request

import pulsar
import pytest

from cluster import PacedProducer, check_delivery, producer_options, read_all, unique
from containers import ComposeStack, build_image, requires_docker
from support import close_quietly, wait_until

# Each test holds a fault for up to a minute, then waits out the recovery
# and reads everything back: longer than the suite's default limit.
pytestmark = [requires_docker, pytest.mark.timeout(420)]

BROKERS = ["broker-1", "broker-2"]
BOOKIES = ["bookie-1", "bookie-2", "bookie-3"]
ETCD = ["etcd-1", "etcd-2", "etcd-3"]
# Brokers and bookies keep their etcd lease alive for this long by default.
LEASE_TTL_S = 10
RATE = 100  # messages per second per topic
TOPICS = 6
# What a receipt may still be in flight for after the broker let go.
IN_FLIGHT_S = 1.0
VERIFY_SUBSCRIPTION = "verify"


@pytest.fixture(scope="module")
def stack():
    build_image()
    stack = ComposeStack("decoupled")
    try:
        stack.up()
        stack.wait_healthy(BROKERS + BOOKIES)
        yield stack
    except BaseException:
        print(stack.logs())
        raise
    finally:
        stack.down()


def front_ip(stack, broker: str) -> str:
    return stack.advertised_url(broker).split("//", 1)[1].split(":")[0]


def service_url(stack) -> str:
    """Every broker, as a client lists a cluster: lookups go to the next
    host when one fails."""
    return "pulsar://" + ",".join(f"{front_ip(stack, b)}:6650" for b in BROKERS)


def broker_health(stack, broker: str) -> str:
    """The status of a broker's /health (`ok`, `no lease`, `starting`), or
    `unreachable: ...`."""
    try:
        with urllib.request.urlopen(f"http://{front_ip(stack, broker)}:8080/health", timeout=3) as r:
            body = r.read()
    except urllib.error.HTTPError as e:
        body = e.read()
    except OSError as e:
        return f"unreachable: {e}"
    try:
        return json.loads(body)["status"]
    except (ValueError, KeyError, TypeError):
        return f"unreadable: {body[:80]!r}"


def lookup_owner(stack, via: str, topic: str) -> str:
    """The broker whose address `via`'s HTTP lookup names for `topic`."""
    name = topic.split("://", 1)[1]
    url = f"http://{front_ip(stack, via)}:8080/lookup/v2/topic/persistent/{name}"
    with urllib.request.urlopen(url, timeout=10) as r:
        answer = json.loads(r.read())
    ip = answer["brokerUrl"].split("//", 1)[1].split(":")[0]
    owners = [b for b in BROKERS if front_ip(stack, b) == ip]
    assert owners, f"{via} named an unknown owner for {topic}: {answer}"
    return owners[0]


class Workload:
    """One client, `TOPICS` topics, a PacedProducer on each."""

    def __init__(self, url: str, prefix: str, topics=None):
        self.client = pulsar.Client(url, operation_timeout_seconds=30)
        self.topics = topics or [f"persistent://public/default/{unique(prefix)}" for _ in range(TOPICS)]
        self.loads = {}
        for topic in self.topics:
            # The subscription `verify` reads with exists before the first
            # message: without one (and no retention) consumed-by-nobody
            # ledgers are deleted once closed, as in Pulsar.
            self.client.subscribe(topic, VERIFY_SUBSCRIPTION,
                                  consumer_type=pulsar.ConsumerType.Exclusive).close()
            producer = self.client.create_producer(topic, **producer_options())
            self.loads[topic] = PacedProducer(producer, "f", rate=RATE)

    def start(self):
        for load in self.loads.values():
            load.start()
        return self

    def acked(self) -> int:
        return sum(len(load.ok_in_receipt_order()) for load in self.loads.values())

    def acked_after(self, t: float) -> int:
        return sum(load.ok_count_between(t, float("inf")) for load in self.loads.values())

    def wait_acked_after(self, t: float, count: int, what: str, timeout_s: float = 90):
        wait_until(lambda: self.acked_after(t) >= count, timeout_s, f"{count} receipts {what}",
                   poll_s=0.1)

    def stop(self):
        # Stopped together: each waits for its outstanding callbacks.
        threads = [threading.Thread(target=load.stop) for load in self.loads.values()]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    def verify(self, url: str) -> dict:
        """Reads every topic back through `url`: nothing acknowledged lost,
        first occurrences in receipt order."""
        totals = {"acked": 0, "duplicates": 0, "failed": 0}
        client = pulsar.Client(url, operation_timeout_seconds=60)
        try:
            for topic, load in self.loads.items():
                assert not load.missing_callbacks(), f"{topic}: no callback for {load.missing_callbacks()[:10]}"
                acked = load.ok_in_receipt_order()
                delivered = read_all(client, topic, expected=len(acked),
                                     subscription=VERIFY_SUBSCRIPTION)
                try:
                    summary = check_delivery(acked, [i for _, i, _ in delivered], load.failed())
                except AssertionError as e:
                    raise AssertionError(f"{topic}: {e}\n{_explain(load, delivered, e)}") from None
                totals["acked"] += len(acked)
                totals["duplicates"] += summary["duplicates"]
                totals["failed"] += len(load.failed())
        finally:
            close_quietly(client)
        print(f"\n[verify] {totals}")
        return totals

    def close(self):
        close_quietly(self.client)


def _explain(load, delivered, error) -> str:
    """Where the messages near the first problem were acknowledged and
    where they were read: (i, receipt id) and (i, delivered id)."""
    numbers = [int(n) for n in re.findall(r"\d+", str(error).split("delivered", 1)[-1])[:10]]
    near = set(range(min(numbers, default=0) - 3, max(numbers, default=0) + 4))
    with load.lock:
        receipts = sorted((i, key) for i, (res, key, _) in load.results.items() if i in near)
    read = [(i, str(msg_id)) for _, i, msg_id in delivered if i in near]
    return f"receipts {receipts}\ndelivered {read}"


def verify_after_recovery(stack, work: Workload):
    """Once the stack is whole again: everything acknowledged is read back."""
    try:
        restore_healthy(stack)
        assert work.verify(service_url(stack))["acked"] > 0
    finally:
        work.close()


def restore_healthy(stack):
    stack.wait_healthy(ETCD + BOOKIES + BROKERS)
    wait_until(lambda: all(broker_health(stack, b) == "ok" for b in BROKERS), 90,
               "every broker holds a lease again", poll_s=0.5)


def test_a_broker_cut_off_from_etcd_loses_its_bundles_and_acknowledges_nothing_more(stack):
    restore_healthy(stack)
    zombie, survivor = BROKERS
    # Topics whose bundles the zombie-to-be owns (a lookup claims them).
    names = (f"persistent://public/default/{unique('cut-broker')}" for _ in range(200))
    topics = []
    for topic in names:
        if lookup_owner(stack, zombie, topic) == zombie:
            topics.append(topic)
            if len(topics) == TOPICS // 2:
                break
    assert topics, "the first broker owns none of 200 topics' bundles"
    work = Workload(service_url(stack), "cut-broker", topics=topics).start()
    cut = None
    try:
        work.wait_acked_after(0, 300, "before the cut")
        before = {t: load.ledgers_before(time.monotonic()) for t, load in work.loads.items()}
        t_cut = time.monotonic()
        cut = stack.disconnect(zombie, "meta")
        # Clients and bookies still reach it; etcd does not.
        wait_until(lambda: broker_health(stack, zombie) == "no lease", LEASE_TTL_S * 4,
                   "the cut-off broker reports it holds no lease", poll_s=0.2)
        t_let_go = time.monotonic()
        # The survivor takes the bundles over (lookups through it), and
        # writes go on there.
        work.wait_acked_after(t_let_go + IN_FLIGHT_S, 300, "after the cut-off broker let go")
        for topic, load in work.loads.items():
            with load.lock:
                late = [(i, key) for i, (res, key, when) in load.results.items()
                        if res == pulsar.Result.Ok and key and when > t_let_go + IN_FLIGHT_S
                        and key[0] in before[topic]]
            assert not late, f"{topic}: the cut-off broker acknowledged {late[:5]} after letting go"
            assert lookup_owner(stack, survivor, topic) == survivor
        print(f"\n[cut-broker] cut to no lease {t_let_go - t_cut:.1f}s")
    finally:
        if cut:
            stack.reconnect(zombie, cut)
        work.stop()
    verify_after_recovery(stack, work)


def _ledgers(stack) -> dict:
    """Ledger metadata in etcd: {ledger id: metadata}."""
    out = stack.etcdctl("get", "--prefix", "/magnetar/ledgers/", "-w", "json")
    kvs = json.loads(out).get("kvs") or []
    ledgers = {}
    for kv in kvs:
        key = base64.b64decode(kv["key"]).decode()
        try:
            ledgers[int(key.rsplit("/", 1)[1])] = json.loads(base64.b64decode(kv["value"]))
        except ValueError:
            continue
    return ledgers


def test_a_bookie_cut_off_from_the_brokers_is_replaced_and_writes_go_on(stack):
    restore_healthy(stack)
    lost = "bookie-1"
    lost_id = f"{lost}.storage:3181"
    work = Workload(service_url(stack), "cut-bookie").start()
    cut = None
    try:
        work.wait_acked_after(0, 300, "before the cut")
        written = set()
        for load in work.loads.values():
            written |= load.ledgers_before(time.monotonic())
        on_lost = {lid for lid, md in _ledgers(stack).items()
                   if lid in written and lost_id in md["ensembles"][-1][1]}
        assert on_lost, f"no ledger being written is on {lost_id}"
        t_cut = time.monotonic()
        # Still registered in etcd (it reaches the meta network), but no
        # broker can reach it.
        cut = stack.disconnect(lost, "storage")
        work.wait_acked_after(t_cut, 20 * RATE, "after the bookie was cut off")

        def replaced():
            ledgers = _ledgers(stack)
            return all(lost_id not in ledgers[lid]["ensembles"][-1][1] or ledgers[lid]["state"] != "OPEN"
                       for lid in on_lost if lid in ledgers)

        wait_until(replaced, 60, f"every open ledger on {lost_id} changed its ensemble", poll_s=0.5)
        changed = [lid for lid, md in _ledgers(stack).items()
                   if lid in on_lost and len(md["ensembles"]) > 1]
        assert changed, f"no ensemble change away from {lost_id} in {sorted(on_lost)}"
    finally:
        if cut:
            stack.reconnect(lost, cut)
        work.stop()
    verify_after_recovery(stack, work)


def test_etcd_quorum_lost_for_30s_fails_clearly_and_recovers(stack):
    restore_healthy(stack)
    work = Workload(service_url(stack), "no-quorum").start()
    paused = []
    try:
        work.wait_acked_after(0, 300, "before quorum was lost")
        t_lost = time.monotonic()
        stack.pause("etcd-2", "etcd-3")
        paused = ["etcd-2", "etcd-3"]
        # For 30 s: the brokers keep answering, saying they cannot vouch for
        # their bundles once their leases could have run out.
        seen = set()

        def outage_over():
            seen.update(broker_health(stack, b) for b in BROKERS)
            return time.monotonic() - t_lost >= 30

        wait_until(outage_over, 60, "30 s of lost quorum", poll_s=0.5)
        assert "no lease" in seen, f"no broker said it lost its lease: {seen}"
        assert not any(s.startswith("unreachable") for s in seen), f"a broker stopped answering: {seen}"
        # A new producer cannot be served meanwhile: it fails, clearly.
        client = pulsar.Client(service_url(stack), operation_timeout_seconds=5)
        try:
            with pytest.raises(Exception):
                client.create_producer(f"persistent://public/default/{unique('no-quorum-new')}")
        finally:
            close_quietly(client)
        stack.unpause(*paused)
        paused = []
        t_back = time.monotonic()
        work.wait_acked_after(t_back, 20 * RATE, "after quorum came back", timeout_s=120)
        print(f"\n[no-quorum] first receipts after quorum returned within "
              f"{time.monotonic() - t_back:.1f}s")
    finally:
        if paused:
            stack.unpause(*paused)
        work.stop()
    verify_after_recovery(stack, work)


def test_rolling_restarts_of_every_broker_then_every_bookie_lose_nothing_acknowledged(stack):
    restore_healthy(stack)
    work = Workload(service_url(stack), "rolling").start()
    try:
        work.wait_acked_after(0, 300, "before the restarts")
        for service in BROKERS + BOOKIES:
            t = time.monotonic()
            stack.restart(service)
            stack.wait_healthy([service])
            work.wait_acked_after(t, 10 * RATE, f"after {service} restarted", timeout_s=120)
            print(f"\n[rolling] {service} back, writes going on after {time.monotonic() - t:.1f}s")
    finally:
        work.stop()
    verify_after_recovery(stack, work)
