"""A real multi-broker Magnetar cluster for the client-compatibility suite:
one etcd, three `magnetar bookie` processes and N `magnetar broker`
processes (lease TTL 3 s), all on free 127.0.0.1 ports with temporary
directories, all killed at teardown (and with pytest, through
PR_SET_PDEATHSIG). Nothing is mocked.

Test modules take the `cluster` fixture (3 brokers) or `cluster_factory`
by importing them: `from cluster import cluster  # noqa: F401`.

Besides process control (kill -9, SIGSTOP / SIGCONT) it answers who owns a
topic, two ways: the HTTP lookup of any broker, and the lease-bound
ownership keys in etcd (`/ownership/{tenant}/{ns}/{bundle}`, read through
etcd's JSON gateway, so no etcd client library is needed).
"""

import base64
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import uuid
import urllib.error
import urllib.request
from pathlib import Path

import pulsar
from crc32c import crc32c
import pytest

from conftest import _die_with_parent, free_port, magnetar_bin
from support import close_quietly

READY_TIMEOUT_S = 30
LEASE_TTL_S = 3
# etcd root prefix of the cluster's metadata (every key lives under it).
ROOT = "/magnetar"
# Pulsar's default: each namespace is split into 4 bundles by name hash.
BUNDLES = 4
# Monolithic clusters: replica.lag.time.max of their brokers.
MONOLITHIC_LAG_MAX_S = 2


# ---------------------------------------------------------------------------
# Bundles: which hash range (bundle) a topic belongs to, as the broker
# computes it (CRC32C of the full topic name, 4 equal ranges).

def bundle_of(topic: str, count: int = BUNDLES) -> str:
    """The bundle name (`0x00000000_0x40000000`) holding `topic`, a full
    `persistent://t/ns/name` (a partition: `name-partition-N`)."""
    h = crc32c(topic.encode())
    width = (1 << 32) // count
    index = min(h // width, count - 1)
    start = index * width
    end = 0xFFFFFFFF if index == count - 1 else start + width
    return f"0x{start:08x}_0x{end:08x}"


def bundle_range(name: str):
    """`0x00000000_0x40000000` -> (0, 0x40000000)."""
    start, end = name.split("_")
    return int(start, 16), int(end, 16)


def split_topic(topic: str):
    """`persistent://t/ns/name` -> (t, ns, name)."""
    rest = topic.split("://", 1)[1]
    tenant, namespace, name = rest.split("/", 2)
    return tenant, namespace, name


# ---------------------------------------------------------------------------
# HTTP helpers (stdlib only).

def http(method, url, body=None, timeout=10, raw=False):
    """One HTTP call; returns (status, decoded JSON or text or None). Never
    raises on an HTTP error status."""
    if body is None:
        data = None
    elif isinstance(body, (bytes, str)):
        data = body.encode() if isinstance(body, str) else body
    else:
        data = json.dumps(body).encode()
    request = urllib.request.Request(
        url, data=data, method=method, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status, text = response.status, response.read()
    except urllib.error.HTTPError as e:
        status, text = e.code, e.read()
    if raw or not text:
        return status, (text.decode(errors="replace") if text else None)
    try:
        return status, json.loads(text)
    except ValueError:
        return status, text.decode(errors="replace")


class Process:
    """One child process with its log file; signals and log tail."""

    def __init__(self, name: str, argv, log_path: Path, env=None):
        self.name = name
        self.argv = [str(a) for a in argv]
        self.log_path = log_path
        self.env = env
        self.proc = None
        self.paused = False

    def spawn(self):
        assert self.proc is None, f"{self.name} already running"
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=_die_with_parent,
                env=self.env if self.env is not None else dict(os.environ, NO_COLOR="1"),
            )

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def check_alive(self):
        if self.proc is None:
            raise RuntimeError(f"{self.name} is not running")
        code = self.proc.poll()
        if code is not None:
            raise RuntimeError(f"{self.name} exited with {code}:\n{self.exit_report()}")

    def kill(self, sig=signal.SIGKILL):
        """Sends `sig`; for SIGKILL and SIGTERM also waits for the exit."""
        if self.proc is None:
            return
        if sig in (signal.SIGKILL, signal.SIGTERM):
            if self.paused:
                # A stopped process handles SIGTERM only once continued.
                self.proc.send_signal(signal.SIGCONT)
                self.paused = False
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None
        else:
            self.proc.send_signal(sig)

    def pause(self):
        """SIGSTOP, then waits until every thread of the process is stopped
        (the signal is delivered asynchronously)."""
        self.check_alive()
        self.proc.send_signal(signal.SIGSTOP)
        self.paused = True
        task_dir = Path(f"/proc/{self.proc.pid}/task")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            states = []
            for task in task_dir.iterdir():
                try:
                    # "pid (comm) S ...": the state follows the last ')'.
                    states.append((task / "stat").read_text().rsplit(")", 1)[1].split()[0])
                except (OSError, IndexError):
                    continue
            if states and all(s in ("T", "t") for s in states):
                return
            time.sleep(0.005)
        raise RuntimeError(f"{self.name} did not stop after SIGSTOP")

    def resume(self):
        self.proc.send_signal(signal.SIGCONT)
        self.paused = False

    def stop(self):
        """Teardown: kill -9 whatever state it is in."""
        self.kill(signal.SIGKILL)

    def log_tail(self, lines: int = 60) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def exit_report(self, context: int = 20) -> str:
        """The log lines before the process's final `Error:` report and the
        report itself, without its backtrace; else the log's tail."""
        lines = self.log_tail(100_000).splitlines()
        errors = [i for i, line in enumerate(lines) if line.startswith("Error:")]
        if not errors:
            return "\n".join(lines[-40:])
        start = errors[-1]
        end = next((i for i in range(start, len(lines))
                    if lines[i].strip().startswith("Stack backtrace:")), len(lines))
        return "\n".join(lines[max(start - context, 0):min(end, start + context)])

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""


class Etcd(Process):
    def __init__(self, root: Path):
        self.client_port = free_port()
        self.peer_port = free_port()
        client = f"http://127.0.0.1:{self.client_port}"
        peer = f"http://127.0.0.1:{self.peer_port}"
        binary = os.environ.get("ETCD_BIN") or shutil.which("etcd")
        if not binary:
            pytest.fail("the `etcd` binary is not installed (Debian package etcd-server)")
        super().__init__(
            "etcd",
            [
                binary,
                "--name=test",
                f"--data-dir={root / 'etcd-data'}",
                f"--listen-client-urls={client}",
                f"--advertise-client-urls={client}",
                f"--listen-peer-urls={peer}",
                f"--initial-advertise-peer-urls={peer}",
                f"--initial-cluster=test={peer}",
            ],
            root / "etcd.log",
        )

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.client_port}"

    def healthy(self) -> bool:
        try:
            status, body = http("GET", f"{self.endpoint}/health", timeout=1)
        except OSError:
            return False
        return status == 200 and isinstance(body, dict) and body.get("health") == "true"

    def list(self, prefix: str):
        """Keys under `prefix` (absolute etcd keys): [(key, value bytes, lease)]."""
        start = prefix.encode()
        end = bytearray(start)
        end[-1] += 1
        status, body = http(
            "POST",
            f"{self.endpoint}/v3/kv/range",
            {
                "key": base64.b64encode(start).decode(),
                "range_end": base64.b64encode(bytes(end)).decode(),
            },
            timeout=5,
        )
        assert status == 200, f"etcd range {prefix}: {status} {body}"
        out = []
        for kv in body.get("kvs", []) or []:
            out.append(
                (
                    base64.b64decode(kv["key"]).decode(),
                    base64.b64decode(kv.get("value", "")),
                    int(kv.get("lease", 0) or 0),
                )
            )
        return out


class Bookie(Process):
    def __init__(self, binary: Path, root: Path, index: int, metadata_url: str):
        self.index = index
        self.grpc_port = free_port()
        self.http_port = free_port()
        data = root / f"bookie{index}"
        data.mkdir()
        super().__init__(
            f"bookie{index}",
            [
                binary, "bookie",
                "--metadata", metadata_url,
                "--data-dir", data / "data",
                "--listen", f"127.0.0.1:{self.grpc_port}",
                "--http", f"127.0.0.1:{self.http_port}",
                "--advertise", f"127.0.0.1:{self.grpc_port}",
            ],
            root / f"bookie{index}.log",
        )

    def healthy(self) -> bool:
        try:
            status, _ = http("GET", f"http://127.0.0.1:{self.http_port}/health", timeout=1)
        except OSError:
            return False
        return status == 200


class Broker(Process):
    def __init__(self, binary: Path, root: Path, index: int, metadata_url: str,
                 lease_ttl_s: float, extra_args=(), architecture: str = "decoupled",
                 tls=None):
        self.index = index
        self.port = free_port()
        self.http_port = free_port()
        self.data_dir = root / f"broker{index}-data"
        if architecture == "monolithic":
            # Replication 3, min.insync 2, as the public comparisons ran
            # Kafka; a follower leaves the ISR after 2 s of lag.
            storage = [
                "--architecture", "monolithic",
                "--data-dir", str(self.data_dir),
                "--replication-listen", f"127.0.0.1:{free_port()}",
                "--replica-lag-max", f"{MONOLITHIC_LAG_MAX_S}s",
                "--ensemble-size", "3", "--write-quorum", "3", "--ack-quorum", "2",
            ]
        else:
            storage = ["--ensemble-size", "3", "--write-quorum", "2", "--ack-quorum", "2"]
        # tls = (certificate, key): pulsar+ssl:// and HTTPS on ports of its own.
        self.tls_port = self.https_port = None
        if tls:
            self.tls_port, self.https_port = free_port(), free_port()
            storage += ["--tls-cert", tls[0], "--tls-key", tls[1],
                        "--tls-listen", f"127.0.0.1:{self.tls_port}",
                        "--https", f"127.0.0.1:{self.https_port}"]
        super().__init__(
            f"broker{index}",
            [
                binary, "broker",
                "--metadata", metadata_url,
                "--listen", f"127.0.0.1:{self.port}",
                "--http", f"127.0.0.1:{self.http_port}",
                "--lease-ttl", f"{lease_ttl_s}s",
                *storage,
                *extra_args,
            ],
            root / f"broker{index}.log",
        )

    @property
    def broker_id(self) -> str:
        """The id brokers know it by (its advertised Pulsar address)."""
        return f"127.0.0.1:{self.port}"

    @property
    def address(self) -> str:
        return self.broker_id

    @property
    def url(self) -> str:
        return f"pulsar://{self.broker_id}"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def https_url(self) -> str:
        return f"https://127.0.0.1:{self.https_port}"

    def accepting(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                return True
        except OSError:
            return False

    def __repr__(self):
        return f"<broker{self.index} {self.broker_id}>"


class Cluster:
    """etcd + bookies + brokers sharing metadata under ROOT. The load
    manager's own shedding is off unless `broker_args` say otherwise: most
    tests move bundles by failure or by hand only, so that who owns what is
    their doing."""

    def __init__(self, binary: Path, root: Path, brokers: int = 3, bookies: int = 3,
                 lease_ttl_s: float = LEASE_TTL_S, broker_args=(), architecture="decoupled",
                 racks=None, tls=None):
        self.binary = binary
        self.root = root
        self.lease_ttl_s = lease_ttl_s
        self.architecture = architecture
        self.etcd = Etcd(root)
        self.metadata_url = f"etcd://127.0.0.1:{self.etcd.client_port}{ROOT}"
        if architecture == "monolithic":
            bookies = 0
        self.bookies = [Bookie(binary, root, i, self.metadata_url) for i in range(bookies)]
        broker_args = list(broker_args)
        if "--load-shedding" not in broker_args:
            broker_args += ["--load-shedding", "false"]
        self.broker_args = broker_args
        # racks[i]: broker i's --rack (monolithic replica placement).
        self.brokers = [
            Broker(binary, root, i, self.metadata_url, lease_ttl_s,
                   broker_args + (["--rack", racks[i]] if racks else []), architecture, tls)
            for i in range(brokers)
        ]
        self.clients = []

    # -- lifecycle ---------------------------------------------------------

    def start(self):
        self.etcd.spawn()
        self._wait("etcd", self.etcd.healthy, [self.etcd])
        for p in self.bookies + self.brokers:
            p.spawn()
        procs = self.bookies + self.brokers
        self._wait("bookies", lambda: all(b.healthy() for b in self.bookies), procs)
        self._wait(
            "bookie registrations",
            lambda: len(self.etcd.list(f"{ROOT}/bookies/available/")) >= len(self.bookies),
            procs,
        )
        self._wait("brokers", lambda: all(b.accepting() for b in self.brokers), procs)
        self._wait(
            "broker registrations",
            lambda: set(self.registered_brokers()) >= {b.broker_id for b in self.brokers},
            procs,
        )

    def add_broker(self) -> "Broker":
        """Starts one more broker (same arguments) and waits until it is
        registered."""
        broker = Broker(self.binary, self.root, len(self.brokers), self.metadata_url,
                        self.lease_ttl_s, self.broker_args, self.architecture)
        self.brokers.append(broker)
        broker.spawn()
        self._wait("the new broker", broker.accepting, [broker])
        self._wait("its registration", lambda: broker.broker_id in self.registered_brokers(),
                   [broker])
        return broker

    def _wait(self, what, ready, procs):
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            for p in procs:
                p.check_alive()
            try:
                if ready():
                    return
            except (OSError, AssertionError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what} not ready after {READY_TIMEOUT_S}s:\n{self.log_tails(30)}")
            time.sleep(0.05)

    def stop(self):
        for client in self.clients:
            close_quietly(client, timeout_s=5)
        self.clients = []
        for p in self.brokers + self.bookies + [self.etcd]:
            p.stop()

    # -- processes ---------------------------------------------------------

    def kill(self, broker: Broker, sig=signal.SIGKILL):
        broker.kill(sig)

    def pause(self, broker: Broker):
        broker.pause()

    def resume(self, broker: Broker):
        broker.resume()

    def live_brokers(self):
        return [b for b in self.brokers if b.running() and not b.paused]

    def broker_by_id(self, broker_id: str) -> Broker:
        for b in self.brokers:
            if b.broker_id == broker_id or b.url == broker_id:
                return b
        raise AssertionError(f"{broker_id} is none of {self.brokers}")

    # -- clients -----------------------------------------------------------

    @property
    def service_url(self) -> str:
        """Multi-host service URL naming every broker."""
        return "pulsar://" + ",".join(b.broker_id for b in self.brokers)

    def client(self, **overrides) -> pulsar.Client:
        """An official client on the multi-host URL, closed at teardown."""
        # MAGNETAR_CLIENT_LOG=FILE: the clients' own log (level
        # MAGNETAR_CLIENT_LOG_LEVEL, default Info), to see their lookups
        # and reconnections.
        log_file = os.environ.get("MAGNETAR_CLIENT_LOG")
        options = dict(
            operation_timeout_seconds=30,
            connection_timeout_ms=3000,
            logger=(pulsar.FileLogger(getattr(pulsar.LoggerLevel,
                                              os.environ.get("MAGNETAR_CLIENT_LOG_LEVEL", "Info")),
                                      log_file) if log_file
                    else pulsar.ConsoleLogger(pulsar.LoggerLevel.Error)),
        )
        options.update(overrides)
        client = pulsar.Client(self.service_url, **options)
        self.clients.append(client)
        return client

    # -- admin REST ----------------------------------------------------------

    def admin(self, method, path, body=None, broker: Broker = None, expect=(200, 204),
              timeout=10):
        """An admin REST call on `broker` (default: the first live one);
        asserts the status is one of `expect` and returns the JSON answer."""
        broker = broker or self.live_brokers()[0]
        status, answer = http(method, broker.http_url + path, body, timeout=timeout)
        if expect is not None:
            assert status in expect, f"{method} {broker.http_url}{path} -> {status}: {answer}"
        return answer

    def create_namespace(self, tenant: str, namespace: str, broker: Broker = None,
                         ensemble=3, write_quorum=None, ack_quorum=2, bundles=None):
        """Tenant (if absent) and namespace (with `bundles` bundles, default
        4), with persistence E/Qw/Qa (monolithic: replication factor E,
        min.insync Qa; Qw defaults to E there and to 2 otherwise)."""
        if write_quorum is None:
            write_quorum = ensemble if self.architecture == "monolithic" else 2
        self.admin(
            "PUT", f"/admin/v2/tenants/{tenant}",
            {"adminRoles": [], "allowedClusters": ["standalone"]},
            broker=broker, expect=(200, 204, 409),
        )
        policies = {"bundles": {"numBundles": bundles}} if bundles else None
        self.admin("PUT", f"/admin/v2/namespaces/{tenant}/{namespace}", policies, broker=broker)
        self.admin(
            "POST", f"/admin/v2/namespaces/{tenant}/{namespace}/persistence",
            {
                "bookkeeperEnsemble": ensemble,
                "bookkeeperWriteQuorum": write_quorum,
                "bookkeeperAckQuorum": ack_quorum,
                "managedLedgerMaxMarkDeleteRate": 0,
            },
            broker=broker,
        )

    def create_partitioned(self, topic: str, partitions: int, broker: Broker = None):
        t, ns, name = split_topic(topic)
        self.admin("PUT", f"/admin/v2/persistent/{t}/{ns}/{name}/partitions", partitions,
                   broker=broker)

    # -- ownership -----------------------------------------------------------

    def lookup(self, topic: str, broker: Broker = None) -> dict:
        """The HTTP lookup answer of `broker` for `topic` (claims the
        bundle for someone if nobody owns it, as a client lookup does)."""
        t, ns, name = split_topic(topic)
        return self.admin("GET", f"/lookup/v2/topic/persistent/{t}/{ns}/{name}",
                          broker=broker, expect=(200,))

    def owner_of(self, topic: str, broker: Broker = None) -> Broker:
        """The broker the HTTP lookup of `broker` names for `topic`."""
        return self.broker_by_id(self.lookup(topic, broker)["brokerUrl"])

    def ownership(self, tenant: str = None, namespace: str = None) -> dict:
        """Bundle ownership keys in etcd: {"t/ns/bundle": brokerId}."""
        prefix = f"{ROOT}/ownership/"
        if tenant:
            prefix += f"{tenant}/"
            if namespace:
                prefix += f"{namespace}/"
        out = {}
        for key, value, _lease in self.etcd.list(prefix):
            owner = json.loads(value)
            out[key[len(f"{ROOT}/ownership/"):]] = owner["brokerId"]
        return out

    def etcd_owner_of(self, topic: str):
        """The brokerId in the ownership key of the bundle holding `topic`
        (whichever owned range holds its hash, so split bundles count
        too), or None when nobody owns it."""
        t, ns, _ = split_topic(topic)
        h = crc32c(topic.encode())
        for key, owner in self.ownership(t, ns).items():
            start, end = bundle_range(key.rsplit("/", 1)[-1])
            if start <= h < end or (end == 0xFFFFFFFF and h == end):
                return owner
        return None

    def registered_brokers(self):
        return [
            json.loads(v).get("brokerId", k.rsplit("/", 1)[-1])
            for k, v, _ in self.etcd.list(f"{ROOT}/brokers/available/")
        ]

    def wait_owner(self, topic: str, not_in=(), timeout_s: float = 60) -> Broker:
        """Waits until the etcd ownership key of `topic` names a broker
        outside `not_in`; returns it."""
        excluded = {b.broker_id for b in not_in}
        deadline = time.monotonic() + timeout_s
        while True:
            owner = self.etcd_owner_of(topic)
            if owner is not None and owner not in excluded:
                return self.broker_by_id(owner)
            assert time.monotonic() < deadline, f"{topic}: still owned by {owner}"
            time.sleep(0.1)

    def watch_handover(self, topic: str, old_owner: Broker, since: float, timeout_s: float = 60):
        """Starts polling etcd (every 25 ms, in a thread) for the moment the
        ownership key of `topic`'s bundle stops naming `old_owner` and the
        moment it names another broker; call the result to get both, in
        seconds after `since` (None if not seen)."""
        seen = {"gone": None, "new": None}
        stop = threading.Event()

        def poll():
            deadline = time.monotonic() + timeout_s
            while not stop.is_set() and time.monotonic() < deadline:
                try:
                    owner = self.etcd_owner_of(topic)
                except Exception:
                    owner = old_owner.broker_id
                now = time.monotonic()
                if owner != old_owner.broker_id and seen["gone"] is None:
                    seen["gone"] = now - since
                if owner not in (None, old_owner.broker_id):
                    seen["new"] = now - since
                    return
                time.sleep(0.025)

        thread = threading.Thread(target=poll, daemon=True)
        thread.start()

        def result():
            thread.join(timeout_s)
            stop.set()
            return {k: (round(v, 3) if v is not None else None) for k, v in seen.items()}

        return result

    # -- logs ----------------------------------------------------------------

    def log_tails(self, lines: int = 40) -> str:
        parts = []
        for p in [self.etcd] + self.bookies + self.brokers:
            parts.append(f"----- {p.name} ({p.log_path.name}) -----\n{p.log_tail(lines)}")
        return "\n".join(parts)

    def grep_logs(self, needle: str, procs=None):
        """Lines holding `needle` in the logs of `procs` (default brokers)."""
        out = []
        for p in procs or self.brokers:
            out += [f"{p.name}: {line}" for line in p.log_text().splitlines() if needle in line]
        return out


# ---------------------------------------------------------------------------
# Fixtures.

_PLUGIN = "magnetar-cluster-log-tails"


class _LogTailPlugin:
    """Attaches the cluster's log tails to a failed test's report."""

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_makereport(self, item, call):
        outcome = yield
        report = outcome.get_result()
        if report.failed and report.when in ("call", "teardown"):
            for cluster in getattr(item, "_magnetar_clusters", []):
                report.sections.append(("magnetar cluster logs (tails)", cluster.log_tails(50)))


@pytest.fixture
def cluster_factory(request, tmp_path):
    """Starts clusters on demand (`cluster_factory(brokers=2)`); every
    process is killed at teardown, the data removed, logs copied to the
    test's tmp_path."""
    if not request.config.pluginmanager.has_plugin(_PLUGIN):
        request.config.pluginmanager.register(_LogTailPlugin(), _PLUGIN)
    binary = magnetar_bin()
    if not binary.is_file():
        pytest.fail(f"{binary} not found: set MAGNETAR_BIN or run `cargo build --bin magnetar`")
    started = []
    request.node._magnetar_clusters = started

    def make(**kwargs):
        root = Path(tempfile.mkdtemp(prefix="magnetar-cluster-"))
        c = Cluster(binary, root, **kwargs)
        started.append(c)
        c.start()
        return c

    try:
        yield make
    finally:
        for i, c in enumerate(started):
            c.stop()
            logs = tmp_path / f"cluster{i}-logs"
            logs.mkdir(exist_ok=True)
            for p in [c.etcd] + c.bookies + c.brokers:
                try:
                    shutil.copy(p.log_path, logs / p.log_path.name)
                except OSError:
                    pass
            shutil.rmtree(c.root, ignore_errors=True)


@pytest.fixture
def cluster(cluster_factory):
    """etcd, 3 bookies and 3 brokers (lease TTL 3 s)."""
    return cluster_factory(brokers=3)


# ---------------------------------------------------------------------------
# Load: a paced producer whose every send is accounted for.

def tagged_payload(tag: str, i: int, size: int = 64) -> bytes:
    head = f"{tag}:{i:08d};".encode()
    return (head * (size // len(head) + 1))[:max(size, len(head))]


def parse_payload(data: bytes):
    """(tag, i) of a `tagged_payload`, checking the whole body."""
    head = data.split(b";", 1)[0]
    tag, num = head.decode().split(":")
    i = int(num)
    assert data == tagged_payload(tag, i, len(data)), f"corrupted body {data[:60]!r}"
    return tag, i


class PacedProducer:
    """Sends `tag:i` for i in 0.. at `rate` msg/s with send_async from its
    own thread until stopped (or `count` sent), recording for every message
    its send time, callback time, result and message id."""

    def __init__(self, producer, tag: str, rate: float, count: int = None):
        self.producer = producer
        self.tag = tag
        self.rate = rate
        self.count = count
        self.lock = threading.Lock()
        self.sent_at = {}
        self.results = {}  # i -> (Result, (ledger, entry, partition, batch) or None, t)
        self.receipt_order = []  # i in callback order, Ok ones only
        self.stopped = threading.Event()
        self.send_errors = []
        self.thread = threading.Thread(target=self._run, daemon=True)

    def start(self):
        self.t0 = time.monotonic()
        self.thread.start()
        return self

    def _callback(self, i):
        def on_sent(res, msg_id):
            now = time.monotonic()
            try:
                key = (
                    (msg_id.ledger_id(), msg_id.entry_id(), msg_id.partition(), msg_id.batch_index())
                    if res == pulsar.Result.Ok else None
                )
            except Exception:
                key = None
            with self.lock:
                self.results[i] = (res, key, now)
                if res == pulsar.Result.Ok:
                    self.receipt_order.append(i)

        return on_sent

    def _run(self):
        i = 0
        while not self.stopped.is_set() and (self.count is None or i < self.count):
            due = self.t0 + i / self.rate
            wait = due - time.monotonic()
            if wait > 0:
                self.stopped.wait(wait)
                if self.stopped.is_set():
                    break
            with self.lock:
                self.sent_at[i] = time.monotonic()
            try:
                self.producer.send_async(tagged_payload(self.tag, i), self._callback(i))
            except Exception as e:  # e.g. queue full without blocking
                now = time.monotonic()
                with self.lock:
                    self.results[i] = (e, None, now)
                    self.send_errors.append((i, repr(e)))
            i += 1

    def stop(self, settle_s: float = 60):
        """Stops sending and waits (up to `settle_s`) for every callback."""
        self.stopped.set()
        self.thread.join(30)
        try:
            self.producer.flush()
        except Exception:
            pass
        deadline = time.monotonic() + settle_s
        while time.monotonic() < deadline:
            with self.lock:
                if len(self.results) >= len(self.sent_at):
                    break
            time.sleep(0.05)

    @property
    def sent(self) -> int:
        with self.lock:
            return len(self.sent_at)

    def ok_in_receipt_order(self):
        with self.lock:
            return list(self.receipt_order)

    def failed(self):
        with self.lock:
            return {i: r for i, (r, _, _) in self.results.items() if r != pulsar.Result.Ok}

    def missing_callbacks(self):
        with self.lock:
            return sorted(set(self.sent_at) - set(self.results))

    def ok_count_between(self, start: float, end: float) -> int:
        with self.lock:
            return sum(1 for r, _, t in self.results.values()
                       if r == pulsar.Result.Ok and start <= t <= end)

    def ledgers_before(self, t: float):
        """Ledger ids of receipts that arrived before `t`."""
        with self.lock:
            return {k[0] for r, k, when in self.results.values()
                    if r == pulsar.Result.Ok and k and when < t}

    def first_new_receipt_after(self, t: float, old_ledgers=None):
        """The earliest Ok callback after `t` whose message sits in a ledger
        none of the receipts before `t` named (so it was stored by the new
        owner, not a late receipt from the old one); (time, i) or None."""
        old = self.ledgers_before(t) if old_ledgers is None else set(old_ledgers)
        with self.lock:
            candidates = [
                (when, i) for i, (r, k, when) in self.results.items()
                if r == pulsar.Result.Ok and when > t and k and k[0] not in old
            ]
        return min(candidates) if candidates else None


def create_producer_retrying(client, topic, timeout_s: float = 60, **options):
    """create_producer, retried as an application would: while a dead or
    paused owner's lease runs, lookups name it and creating fails
    (ConnectError, Timeout). Returns (producer, attempts)."""
    deadline = time.monotonic() + timeout_s
    attempts = 0
    while True:
        attempts += 1
        try:
            return client.create_producer(topic, **options), attempts
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def read_all(client, topic, expected: int, idle_ms: int = 3000, limit_s: float = 90,
             subscription="verify"):
    """Reads `topic` from the beginning with a fresh Exclusive subscription
    until `expected` messages arrived and then nothing for `idle_ms`;
    returns [(tag, i, message_id)] in delivery order."""
    consumer = client.subscribe(
        topic, subscription,
        consumer_type=pulsar.ConsumerType.Exclusive,
        initial_position=pulsar.InitialPosition.Earliest,
        receiver_queue_size=1000,
    )
    out = []
    deadline = time.monotonic() + limit_s
    try:
        while time.monotonic() < deadline:
            wait = idle_ms if len(out) >= expected else 10_000
            try:
                msg = consumer.receive(wait)
            except pulsar.Timeout:
                if len(out) >= expected:
                    return out
                continue
            tag, i = parse_payload(msg.data())
            out.append((tag, i, msg.message_id()))
            consumer.acknowledge(msg)
    finally:
        try:
            consumer.close()
        except Exception:
            pass
    return out


def check_delivery(acked_in_receipt_order, delivered, failed=()):
    """Checks one producer's messages as a reader saw them: every message
    acknowledged to the producer is there, and their first occurrences
    come in receipt order. Returns a summary dict (duplicates, and
    messages whose send failed yet were delivered: their fate was unknown
    to the producer, so that is allowed)."""
    seen = set()
    first = []
    duplicates = []
    for i in delivered:
        if i in seen:
            duplicates.append(i)
        else:
            seen.add(i)
            first.append(i)
    acked = set(acked_in_receipt_order)
    missing = sorted(acked - seen)
    assert not missing, (
        f"{len(missing)} acknowledged messages missing, e.g. {missing[:20]} "
        f"(acked {len(acked)}, delivered {len(delivered)})"
    )
    first_acked = [i for i in first if i in acked]
    if first_acked != list(acked_in_receipt_order):
        bad = next(n for n, (a, b) in enumerate(zip(first_acked, acked_in_receipt_order)) if a != b)
        raise AssertionError(
            f"acknowledged messages out of receipt order at position {bad}: delivered "
            f"{first_acked[max(0, bad - 5):bad + 5]}, receipts {list(acked_in_receipt_order)[max(0, bad - 5):bad + 5]}"
        )
    unacked_delivered = sorted(seen - acked)
    return {
        "acked": len(acked),
        "delivered": len(delivered),
        "duplicates": len(duplicates),
        "duplicate_examples": duplicates[:10],
        "delivered_without_receipt": len(unacked_delivered),
        "delivered_without_receipt_examples": unacked_delivered[:10],
        "failed_sends": len(failed),
    }


# ---------------------------------------------------------------------------
# Small helpers of the cluster tests.

# A send may wait through a failover (lease TTL plus recovery) and more.
SEND_TIMEOUT_MS = 60_000


def wait_until(condition, timeout_s, what):
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(0.05)


def unique(prefix):
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def send_all(producer, tag, count):
    """Sends `tag:0` .. `tag:count-1` one by one, each waiting for its
    receipt; returns the indexes (all acknowledged)."""
    for i in range(count):
        producer.send(tagged_payload(tag, i))
    return list(range(count))


def producer_options(**overrides):
    options = dict(
        batching_enabled=True,
        batching_max_messages=100,
        batching_max_publish_delay_ms=5,
        block_if_queue_full=True,
        max_pending_messages=20_000,
        send_timeout_millis=SEND_TIMEOUT_MS,
    )
    options.update(overrides)
    return options


# ---------------------------------------------------------------------------
# Monolithic clusters: partition records and the brokers' copies.

def record(cluster, topic):
    """The partition record of `topic` in etcd (dict), or None."""
    t, ns, name = split_topic(topic)
    for key, value, _ in cluster.etcd.list(f"{ROOT}/topics/{t}/{ns}/{name}"):
        if key == f"{ROOT}/topics/{t}/{ns}/{name}":
            return json.loads(value)
    return None


def replica_id(broker):
    """The id partition records name `broker` by (kept in its data dir)."""
    return (broker.data_dir / "broker-id").read_text().strip()


def leader_broker(cluster, topic):
    rec = record(cluster, topic)
    return next(b for b in cluster.brokers if replica_id(b) == rec["leader"])


def isr_of(cluster, topic):
    rec = record(cluster, topic)
    return sorted(rec.get("isr") or rec["replicas"]) if rec else []


def ids(brokers):
    return sorted(replica_id(b) for b in brokers)


def copy_dir(broker, topic_record):
    return broker.data_dir / "logs" / str(topic_record["log_id"])


def copy_bytes(broker, topic_record):
    """Bytes of `broker`'s segment files of the log (0 if it has none)."""
    d = copy_dir(broker, topic_record)
    return sum(f.stat().st_size for f in d.glob("*.log")) if d.exists() else 0


def metric(broker, name):
    """The value of one unlabelled metric on `broker`'s /metrics, or 0."""
    with urllib.request.urlopen(broker.http_url + "/metrics", timeout=10) as r:
        for line in r.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    return 0.0
