"""Fixtures for the client-compatibility suite: a real `magnetar standalone`
process on free 127.0.0.1 ports with a temporary data directory, and official
`pulsar-client` clients pointed at it. Nothing is mocked.

The binary is $MAGNETAR_BIN, else ${CARGO_TARGET_DIR:-target}/debug/magnetar
(build it with `cargo build --bin magnetar` first).
"""

import ctypes
import itertools
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

import pulsar
import pytest

from support import close_quietly

REPO = Path(__file__).resolve().parents[2]
READY_TIMEOUT_S = 30
STOP_TIMEOUT_S = 30


def magnetar_bin() -> Path:
    if os.environ.get("MAGNETAR_BIN"):
        return Path(os.environ["MAGNETAR_BIN"])
    target = Path(os.environ.get("CARGO_TARGET_DIR") or REPO / "target")
    return target / "debug" / "magnetar"


# Ports are handed out below the kernel's ephemeral range: an outgoing
# connection (which takes an ephemeral port) can then never claim a port
# between this check and the server's own bind.
_PORTS_LOW = 10000


def _ephemeral_low() -> int:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


_port_span = max(_ephemeral_low() - _PORTS_LOW, 1)
# Spread processes apart; within one, never hand out a port twice.
_port_cursor = itertools.count((os.getpid() * 7919) % _port_span)


def free_port() -> int:
    """A port nobody listens on right now, outside the ephemeral range and
    not handed out before by this process."""
    for _ in range(_port_span):
        port = _PORTS_LOW + next(_port_cursor) % _port_span
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# Looked up before any fork: the child may only call it.
_prctl = ctypes.CDLL(None, use_errno=True).prctl
PR_SET_PDEATHSIG = 1


def _die_with_parent():
    """Runs in the child before exec: SIGKILL it if pytest dies (e.g. a
    pytest-timeout abort), so no server outlives the run."""
    _prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL))


ARCHITECTURES = ("decoupled", "monolithic")


def pytest_generate_tests(metafunc):
    """Runs the tests of a module that sets BOTH_ARCHITECTURES = True once per
    architecture (ids `[decoupled]`, `[monolithic]`); others run decoupled."""
    if "architecture" in metafunc.fixturenames:
        for marker in metafunc.definition.iter_markers("parametrize"):
            if "architecture" in marker.args[0]:
                return  # the test names its architecture itself
        both = getattr(metafunc.module, "BOTH_ARCHITECTURES", False)
        metafunc.parametrize("architecture", ARCHITECTURES if both else ARCHITECTURES[:1])


class Standalone:
    """One `magnetar standalone` process. Ports and data directory are kept
    across restarts, so a restarted server is the same server to clients."""

    def __init__(self, binary: Path, root: Path, extra_args=(), architecture="decoupled"):
        self.binary = binary
        self.root = root
        self.architecture = architecture
        self.extra_args = ["--architecture", architecture, *extra_args]
        self.data_dir = root / "data"
        self.log_path = root / "standalone.log"
        self.broker_port = free_port()
        self.broker_http_port = free_port()
        self.bookie_port = free_port()
        self.bookie_http_port = free_port()
        self.proc = None
        self.starts = 0

    @property
    def url(self) -> str:
        """Service URL for Pulsar clients."""
        return f"pulsar://127.0.0.1:{self.broker_port}"

    @property
    def http_url(self) -> str:
        """The broker's HTTP (admin REST) endpoint."""
        return f"http://127.0.0.1:{self.broker_http_port}"

    def start(self):
        assert self.proc is None, "already running"
        self.starts += 1
        with open(self.log_path, "ab") as log:
            log.write(f"\n===== start #{self.starts} =====\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                [
                    str(self.binary),
                    "standalone",
                    "--data-dir", str(self.data_dir),
                    "--listen", f"127.0.0.1:{self.broker_port}",
                    "--http", f"127.0.0.1:{self.broker_http_port}",
                    "--bookie-listen", f"127.0.0.1:{self.bookie_port}",
                    "--bookie-http", f"127.0.0.1:{self.bookie_http_port}",
                    *self.extra_args,
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=_die_with_parent,
            )
        self._wait_ready()

    def _wait_ready(self):
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            code = self.proc.poll()
            if code is not None:
                self.proc = None
                raise RuntimeError(
                    f"magnetar standalone exited with {code} before serving:\n{self.log_tail()}"
                )
            if self._bookie_healthy() and self._broker_accepting():
                return
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"magnetar standalone not ready after {READY_TIMEOUT_S}s:\n{self.log_tail()}"
                )
            time.sleep(0.05)

    def _broker_accepting(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.broker_port), timeout=1):
                return True
        except OSError:
            return False

    def _bookie_healthy(self) -> bool:
        if self.architecture == "monolithic":
            return True  # no bookie: partitions live in the broker's data dir
        url = f"http://127.0.0.1:{self.bookie_http_port}/health"
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                return r.status == 200
        except OSError:
            return False

    def terminate(self) -> int:
        """SIGTERM and wait for a graceful exit; returns the exit code."""
        proc, self.proc = self.proc, None
        assert proc is not None, "not running"
        proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise AssertionError(
                f"magnetar standalone did not exit within {STOP_TIMEOUT_S}s of SIGTERM"
            )

    def kill9(self):
        """kill -9: a crash, no chance to flush anything."""
        proc, self.proc = self.proc, None
        if proc is not None:
            proc.kill()
            proc.wait()

    def restart(self, graceful: bool):
        """Stops the server (SIGTERM and wait, or kill -9) and starts it
        again on the same ports and data directory."""
        if graceful:
            code = self.terminate()
            assert code == 0, f"graceful shutdown exited with {code}:\n{self.log_tail()}"
        else:
            self.kill9()
        self.start()

    def log_tail(self, lines: int = 60) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])


@pytest.fixture
def magnetar_args():
    """Extra `magnetar standalone` flags. A test module overrides this fixture
    to run its servers differently, e.g. with a short housekeeping interval."""
    return []


@pytest.fixture
def magnetar(magnetar_args, architecture):
    """A fresh `magnetar standalone` per test (with `magnetar_args`, in the
    test's `architecture`); killed and its directory removed at teardown."""
    binary = magnetar_bin()
    if not binary.is_file():
        pytest.fail(f"{binary} not found: set MAGNETAR_BIN or run `cargo build --bin magnetar`")
    root = Path(tempfile.mkdtemp(prefix="magnetar-py-"))
    server = Standalone(binary, root, extra_args=magnetar_args, architecture=architecture)
    try:
        server.start()
        yield server
    finally:
        server.kill9()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def new_client(magnetar):
    """Factory of clients of the test's server, all closed at teardown
    (before the server stops)."""
    clients = []

    def make(**overrides):
        options = dict(
            operation_timeout_seconds=15,
            connection_timeout_ms=5000,
            logger=pulsar.ConsoleLogger(pulsar.LoggerLevel.Warn),
        )
        options.update(overrides)
        client = pulsar.Client(magnetar.url, **options)
        clients.append(client)
        return client

    yield make
    for client in clients:
        close_quietly(client)


@pytest.fixture
def topic(request):
    """A topic name no other test uses."""
    name = "".join(c if c.isalnum() else "-" for c in request.node.name)
    return f"persistent://public/default/{name}-{uuid.uuid4().hex[:8]}"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Attaches the server's log tail to a failed test's report."""
    outcome = yield
    report = outcome.get_result()
    if report.failed and report.when in ("call", "teardown"):
        server = item.funcargs.get("magnetar")
        if isinstance(server, Standalone):
            report.sections.append(
                ("magnetar standalone log (tail)", server.log_tail(80))
            )
