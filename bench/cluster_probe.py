#!/usr/bin/env python3
"""Timing probes for bench/cluster.sh, with the official `pulsar-client`:

  failover   a paced producer on TOPIC; after a warm-up, kill -9 the broker
             owning TOPIC (its partition 0 if partitioned) and time the
             first receipt stored by a new owner (a message id in a ledger
             no earlier receipt named).
  subscribe  create a durable subscription (so a backlog is kept).
  unload     unload the bundle holding TOPIC through the admin REST API and
             time until a consumer of SUB (reading from its start) and a
             producer are served again, by whichever broker took it.

Prints one human line and one `RESULT {json}` line per probe.
"""

import argparse
import json
import os
import signal
import sys
import threading
import time
import urllib.error
import urllib.request

import pulsar
from crc32c import crc32c

BUNDLES = 4


def bundle_of(topic: str, count: int = BUNDLES) -> str:
    """The broker's bundle of a full topic name (CRC32C, equal ranges)."""
    h = crc32c(topic.encode())
    width = (1 << 32) // count
    index = min(h // width, count - 1)
    start = index * width
    end = 0xFFFFFFFF if index == count - 1 else start + width
    return f"0x{start:08x}_0x{end:08x}"


def http(method, url, body=None, timeout=30):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read().decode(errors="replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")


def lookup_answer(http_url, topic):
    rest = topic.split("://", 1)[1]
    status, body = http("GET", f"{http_url}/lookup/v2/topic/persistent/{rest}")
    if status != 200:
        raise RuntimeError(f"lookup of {topic} on {http_url}: {status} {body}")
    return json.loads(body)


def lookup(http_url, topic):
    """The owner's broker id (host:port of its Pulsar listener)."""
    return lookup_answer(http_url, topic)["brokerUrl"].removeprefix("pulsar://")


def partitions_of(http_url, topic):
    rest = topic.split("://", 1)[1]
    status, body = http("GET", f"{http_url}/admin/v2/persistent/{rest}/partitions")
    return json.loads(body).get("partitions", 0) if status == 200 else 0


def client(url):
    # The client logs every refused connection to the killed broker: to the
    # file $PULSAR_LOG_FILE, else nowhere, so the output is the results.
    logger = pulsar.FileLogger(pulsar.LoggerLevel.Warn, os.environ.get("PULSAR_LOG_FILE", "/dev/null"))
    return pulsar.Client(url, operation_timeout_seconds=60, connection_timeout_ms=3000,
                         logger=logger)


def result(name, data, line):
    print(line)
    print("RESULT " + json.dumps({"probe": name, **data}, sort_keys=True), flush=True)


def failover(args):
    brokers = dict(item.split("=", 1) for item in args.broker)  # id -> pid
    http_urls = args.http
    parts = partitions_of(http_urls[0], args.topic)
    target = f"{args.topic}-partition-0" if parts else args.topic
    c = client(args.url)
    producer = c.create_producer(
        args.topic, batching_enabled=True, batching_max_publish_delay_ms=5,
        block_if_queue_full=True, max_pending_messages=50_000, send_timeout_millis=120_000)
    lock = threading.Lock()
    receipts = []  # (time, ledger, ok)
    stop = threading.Event()

    def cb(res, msg_id):
        now = time.monotonic()
        with lock:
            receipts.append((now, msg_id.ledger_id() if res == pulsar.Result.Ok else None,
                             res == pulsar.Result.Ok))

    def run():
        t0, i = time.monotonic(), 0
        payload = b"x" * args.size
        while not stop.is_set():
            wait = t0 + i / args.rate - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            producer.send_async(payload, cb)
            i += 1

    sender = threading.Thread(target=run, daemon=True)
    sender.start()
    time.sleep(args.warmup)
    owner = lookup(http_urls[0], target)
    pid = int(brokers[owner])
    with lock:
        old = {l for _, l, ok in receipts if ok}
    t_kill = time.monotonic()
    os.kill(pid, signal.SIGKILL)
    first = None
    deadline = t_kill + args.timeout
    while first is None and time.monotonic() < deadline:
        time.sleep(0.02)
        with lock:
            new = [t for t, l, ok in receipts if ok and t > t_kill and l not in old]
        if new:
            first = min(new)
    time.sleep(args.after)
    stop.set()
    sender.join(10)
    try:
        producer.flush()
    except Exception:
        pass
    with lock:
        ok = sum(1 for _, _, k in receipts if k)
        failed = sum(1 for _, _, k in receipts if not k)
    c.close()
    data = {
        "topic": args.topic, "killed": owner, "killed_pid": pid,
        "kill_to_first_new_receipt_s": None if first is None else round(first - t_kill, 3),
        "acked": ok, "failed": failed, "rate": args.rate,
    }
    line = (f"failover: killed {owner} (pid {pid}); first receipt from the new owner "
            + (f"{first - t_kill:.3f} s after the kill" if first else f"NOT within {args.timeout} s")
            + f"; {ok} acked, {failed} failed sends")
    result("failover", data, line)
    return 0 if first is not None else 1


def subscribe(args):
    c = client(args.url)
    c.subscribe(args.topic, args.sub, consumer_type=pulsar.ConsumerType.Exclusive,
                initial_position=pulsar.InitialPosition.Earliest).close()
    c.close()
    return 0


def unload(args):
    http_urls = args.http
    topic = args.topic
    tenant, namespace, _ = topic.split("://", 1)[1].split("/", 2)
    answer = lookup_answer(http_urls[0], topic)
    owner = answer["brokerUrl"].removeprefix("pulsar://")
    owner_http = answer["httpUrl"]
    bundle = args.bundle or bundle_of(topic)
    status, body = http("GET", f"{owner_http}/admin/v2/persistent/{tenant}/{namespace}/"
                        f"{topic.rsplit('/', 1)[1]}/stats")
    backlog = json.loads(body).get("backlogSize") if status == 200 else None
    # Moved to a named other broker (Pulsar's `destinationBroker`), so the
    # figure is a real move rather than an unload the load manager may
    # place back on the same broker.
    destination = next(u for u in http_urls if u.rstrip("/") != owner_http.rstrip("/"))
    query = f"?destinationBroker={destination.removeprefix('http://').rstrip('/')}"
    t0 = time.monotonic()
    status, body = http("PUT", f"{owner_http}/admin/v2/namespaces/{tenant}/{namespace}/{bundle}/unload"
                        f"{query}", timeout=120)
    unload_s = time.monotonic() - t0
    if status == 404:
        print(f"unload: PUT /admin/v2/namespaces/{tenant}/{namespace}/{bundle}/unload answered 404: "
              f"the bundle unload endpoint is not implemented by this broker build ({body.strip()[:200]})")
        print("RESULT " + json.dumps({"probe": "unload", "error": "endpoint 404"}), flush=True)
        return 3
    if status not in (200, 204):
        print(f"unload: {status} {body[:300]}")
        print("RESULT " + json.dumps({"probe": "unload", "error": f"{status}"}), flush=True)
        return 1
    c = client(args.url)
    consumer = c.subscribe(topic, args.sub, consumer_type=pulsar.ConsumerType.Exclusive,
                           initial_position=pulsar.InitialPosition.Earliest)
    consumer_ready = time.monotonic() - t0
    consumer.receive(120_000)
    first_read = time.monotonic() - t0
    producer = c.create_producer(topic, send_timeout_millis=120_000)
    producer.send(b"after-unload")
    first_send = time.monotonic() - t0
    new_owner = lookup(http_urls[0], topic)
    c.close()
    data = {
        "topic": topic, "bundle": bundle, "backlog_bytes": backlog, "old_owner": owner,
        "new_owner": new_owner, "unload_request_s": round(unload_s, 3),
        "consumer_subscribed_s": round(consumer_ready, 3), "first_read_s": round(first_read, 3),
        "first_send_s": round(first_send, 3),
    }
    result("unload", data,
           f"unload: bundle {bundle} ({backlog} backlog bytes) {owner} -> {new_owner}: request "
           f"{unload_s:.3f} s, first message read {first_read:.3f} s, first send "
           f"{first_send:.3f} s after the request")
    return 0


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser("failover")
    f.add_argument("--url", required=True)
    f.add_argument("--topic", required=True)
    f.add_argument("--http", action="append", required=True, help="broker HTTP URL (repeat)")
    f.add_argument("--broker", action="append", required=True, help="BROKER_ID=PID (repeat)")
    f.add_argument("--rate", type=float, default=1000)
    f.add_argument("--size", type=int, default=1024)
    f.add_argument("--warmup", type=float, default=3)
    f.add_argument("--after", type=float, default=2)
    f.add_argument("--timeout", type=float, default=60)
    s = sub.add_parser("subscribe")
    s.add_argument("--url", required=True)
    s.add_argument("--topic", required=True)
    s.add_argument("--sub", required=True)
    u = sub.add_parser("unload")
    u.add_argument("--url", required=True)
    u.add_argument("--topic", required=True)
    u.add_argument("--sub", required=True)
    u.add_argument("--http", action="append", required=True)
    u.add_argument("--bundle")
    args = p.parse_args()
    return {"failover": failover, "subscribe": subscribe, "unload": unload}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
