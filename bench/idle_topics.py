#!/usr/bin/env python3
"""Idle topics: what N topics with one subscription each cost a broker that
carries no traffic. Starts its own `magnetar standalone` on free ports in a
temporary directory, subscribes one consumer (official client) to each of N
topics, then measures the standalone's resident memory and its CPU over an
idle window.

    ~/.cache/magnetar-pyenv/bin/python bench/idle_topics.py [N=10000] [IDLE_S=30] [-- standalone args]

Prints RSS before and after, RSS per topic, and idle CPU as % of one core
(from /proc/PID/stat over the window). Needs pulsar-client
(tests/python/requirements.txt) and MAGNETAR_BIN or a built binary.
"""

import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

import pulsar


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_bytes(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # utime and stime are fields 14 and 15 of stat; 12 and 13 after the name.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main():
    args = sys.argv[1:]
    extra = []
    if "--" in args:
        extra = args[args.index("--") + 1 :]
        args = args[: args.index("--")]
    n = int(args[0]) if args else 10_000
    idle_s = float(args[1]) if len(args) > 1 else 30.0
    binary = os.environ.get("MAGNETAR_BIN") or os.path.join(
        os.environ.get("CARGO_TARGET_DIR", "target"), "debug", "magnetar"
    )
    ports = {name: free_port() for name in ("listen", "http", "bookie", "bookie_http")}
    with tempfile.TemporaryDirectory(prefix="magnetar-idle-") as tmp:
        log = open(os.path.join(tmp, "standalone.log"), "w")
        server = subprocess.Popen(
            [
                binary, "standalone", "--data-dir", os.path.join(tmp, "data"),
                "--listen", f"127.0.0.1:{ports['listen']}",
                "--http", f"127.0.0.1:{ports['http']}",
                "--bookie-listen", f"127.0.0.1:{ports['bookie']}",
                "--bookie-http", f"127.0.0.1:{ports['bookie_http']}",
                *extra,
            ],
            stdout=log, stderr=subprocess.STDOUT,
            env={**os.environ, "MAGNETAR_LOG": os.environ.get("MAGNETAR_LOG", "error")},
        )
        try:
            deadline = time.time() + 60
            while True:
                try:
                    urllib.request.urlopen(f"http://127.0.0.1:{ports['http']}/health", timeout=1)
                    break
                except OSError:
                    if time.time() > deadline or server.poll() is not None:
                        raise SystemExit("standalone did not start; see its log")
                    time.sleep(0.1)
            client = pulsar.Client(
                f"pulsar://127.0.0.1:{ports['listen']}",
                operation_timeout_seconds=60,
                logger=pulsar.ConsoleLogger(pulsar.LoggerLevel.Error),
            )
            time.sleep(2)
            before = rss_bytes(server.pid)
            began = time.time()
            consumers = [
                client.subscribe(f"persistent://public/default/idle-{i}", "s")
                for i in range(n)
            ]
            setup_s = time.time() - began
            # Let start-up work (cursor writes of new subscriptions) finish.
            time.sleep(5)
            after = rss_bytes(server.pid)
            cpu0, t0 = cpu_seconds(server.pid), time.time()
            time.sleep(idle_s)
            cpu1, t1 = cpu_seconds(server.pid), time.time()
            idle_cpu = 100 * (cpu1 - cpu0) / (t1 - t0)
            print(f"topics: {n} (one subscription and consumer each), set up in {setup_s:.1f} s")
            print(f"standalone RSS: {before / 2**20:.1f} MiB before, {after / 2**20:.1f} MiB after")
            print(f"RSS per topic: {(after - before) / n / 1024:.1f} KiB")
            print(f"idle CPU over {idle_s:.0f} s: {idle_cpu:.1f}% of one core")
            for c in consumers:
                c.close()
            client.close()
        finally:
            server.terminate()
            try:
                server.wait(30)
            except subprocess.TimeoutExpired:
                server.kill()


if __name__ == "__main__":
    main()
