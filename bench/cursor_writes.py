#!/usr/bin/env python3
"""What acknowledgements cost the metadata store: etcd writes/s and bytes/s
while SUBS subscriptions acknowledge out of order, with cursor state in
cursor ledgers on the bookies (the default) and with it in etcd
(`--cursors-in-metadata true`, as before cursor ledgers).

    ~/.cache/magnetar-pyenv/bin/python bench/cursor_writes.py [--subs 1000] [--rate 20]
        [--group 10] [--window 30] [--warmup 10] [--modes log,metadata]
        [--architecture decoupled|monolithic]

For each mode it starts etcd, 3 bookies and one broker (monolithic: etcd
and 3 brokers, replication factor 3, min.insync 2; processes on free
ports, in a temporary directory), subscribes SUBS consumers (official
client) to one topic, produces RATE msg/s to it, and has every consumer
acknowledge each group of GROUP messages in a shuffled order, so each
subscription keeps acknowledged ranges with gaps. Over the measured window
it reads etcd's revision (one per write) and its gRPC bytes received, and
counts the acknowledgements sent. Prints one line per mode and a `RESULT
{json}` line. A broker flushes a changed cursor at most every 100 ms, so
once a subscription acknowledges more than 10 msg/s, its metadata writes
per second no longer grow with the acknowledgement rate.
"""

import argparse
import json
import os
import random
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import pulsar

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "python"))
from cluster import Cluster  # noqa: E402



def etcd_status(endpoint):
    req = urllib.request.Request(
        f"{endpoint}/v3/maintenance/status", data=b"{}", method="POST",
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=5) as r:
        body = json.loads(r.read())
    return int(body["header"]["revision"])


def etcd_received_bytes(endpoint):
    with urllib.request.urlopen(f"{endpoint}/metrics", timeout=5) as r:
        text = r.read().decode()
    for line in text.splitlines():
        if line.startswith("etcd_network_client_grpc_received_bytes_total"):
            return float(line.split()[-1])
    raise RuntimeError("etcd exports no etcd_network_client_grpc_received_bytes_total")


class Acker:
    """A message listener that acknowledges each group of `group` messages
    of a subscription in a shuffled order."""

    def __init__(self, group):
        self.group = group
        self.lock = threading.Lock()
        self.pending = {}
        self.acked = 0

    def __call__(self, consumer, msg):
        try:
            self.take(consumer, msg)
        except Exception as e:  # a listener's exception would vanish in the client
            print(f"acker: {e!r}", file=sys.stderr, flush=True)

    def take(self, consumer, msg):
        with self.lock:
            # The client passes a new wrapper object each call: key by name.
            held = self.pending.setdefault(consumer.subscription_name(), [])
            held.append(msg)
            if len(held) < self.group:
                return
            batch = self.pending.pop(consumer.subscription_name())
        random.shuffle(batch)
        for m in batch:
            consumer.acknowledge(m)
        with self.lock:
            self.acked += len(batch)


def run(binary, architecture, mode, subs, rate, group, warmup_s, window_s):
    args = ["--cursors-in-metadata", "true"] if mode == "metadata" else []
    monolithic = architecture == "monolithic"
    with tempfile.TemporaryDirectory(prefix="magnetar-cursor-writes-") as tmp:
        cluster = Cluster(Path(binary), Path(tmp), brokers=3 if monolithic else 1, bookies=3,
                          broker_args=args, architecture=architecture)
        cluster.start()
        try:
            broker = cluster.brokers[0]
            client = pulsar.Client(broker.url, operation_timeout_seconds=60,
                                   message_listener_threads=2, io_threads=2)
            topic = f"persistent://public/default/cursor-writes-{mode}"
            acker = Acker(group)
            consumers = []
            for i in range(subs):
                consumers.append(client.subscribe(
                    topic, f"sub-{i}",
                    consumer_type=pulsar.ConsumerType.Exclusive,
                    message_listener=acker,
                    receiver_queue_size=100,
                ))
            producer = client.create_producer(topic, batching_enabled=False,
                                              block_if_queue_full=True)
            stop = threading.Event()

            def produce():
                interval = 1.0 / rate
                next_at = time.monotonic()
                while not stop.is_set():
                    producer.send_async(b"x" * 100, lambda res, msg_id: None)
                    next_at += interval
                    delay = next_at - time.monotonic()
                    if delay > 0:
                        time.sleep(delay)

            thread = threading.Thread(target=produce, daemon=True)
            thread.start()
            time.sleep(warmup_s)
            endpoint = cluster.etcd.endpoint
            rev0, bytes0, acks0, t0 = (etcd_status(endpoint), etcd_received_bytes(endpoint),
                                       acker.acked, time.monotonic())
            time.sleep(window_s)
            rev1, bytes1, acks1, t1 = (etcd_status(endpoint), etcd_received_bytes(endpoint),
                                       acker.acked, time.monotonic())
            stop.set()
            thread.join()
            elapsed = t1 - t0
            result = {
                "architecture": architecture,
                "mode": mode,
                "subscriptions": subs,
                "produce_rate": rate,
                "ack_group": group,
                "window_s": round(elapsed, 1),
                "acks_per_s": round((acks1 - acks0) / elapsed),
                "etcd_writes_per_s": round((rev1 - rev0) / elapsed, 1),
                "etcd_bytes_in_per_s": round((bytes1 - bytes0) / elapsed),
            }
            client.close()
            return result
        finally:
            cluster.stop()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--subs", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=20, help="messages/s produced")
    parser.add_argument("--group", type=int, default=10,
                        help="messages a consumer acknowledges at once, shuffled")
    parser.add_argument("--warmup", type=float, default=10)
    parser.add_argument("--window", type=float, default=30)
    parser.add_argument("--modes", default="log,metadata")
    parser.add_argument("--architecture", default="decoupled", choices=["decoupled", "monolithic"])
    opts = parser.parse_args()
    binary = os.environ.get("MAGNETAR_BIN") or os.path.join(
        os.environ.get("CARGO_TARGET_DIR", "target"), "debug", "magnetar"
    )
    results = []
    for mode in opts.modes.split(","):
        r = run(binary, opts.architecture, mode, opts.subs, opts.rate, opts.group, opts.warmup, opts.window)
        results.append(r)
        print(
            f"{mode:9} {r['subscriptions']} subscriptions, {r['acks_per_s']} acks/s: "
            f"etcd {r['etcd_writes_per_s']} writes/s, {r['etcd_bytes_in_per_s']} bytes/s in",
            flush=True,
        )
    print("RESULT " + json.dumps(results))


if __name__ == "__main__":
    main()
