"""Docker Compose topologies of deploy/compose/ for the container tests: the
image built by deploy/build-image.sh from the binary under test, each stack
under its own project name, free host ports and a free front subnet, and torn
down with its volumes afterwards. Tests that need the engine skip (saying
so) where the machine has none.
"""

import json
import os
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

from conftest import REPO, free_port, magnetar_bin
from support import wait_until

COMPOSE_DIR = REPO / "deploy" / "compose"
IMAGE = "magnetar:test"
UP_TIMEOUT_S = 240


def docker_engine() -> bool:
    """Whether a Docker engine answers (not just a client installed)."""
    if not shutil.which("docker") or not shutil.which("docker-compose"):
        return False
    return subprocess.run(["docker", "info"], capture_output=True, timeout=30).returncode == 0


requires_docker = pytest.mark.skipif(
    not docker_engine(), reason="no Docker engine on this machine: container tests skipped"
)


def run(*args, check=True, timeout=UP_TIMEOUT_S, env=None) -> subprocess.CompletedProcess:
    done = subprocess.run(list(args), capture_output=True, text=True, timeout=timeout, env=env)
    if check and done.returncode != 0:
        raise AssertionError(f"{' '.join(args)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}")
    return done


def build_image() -> str:
    """Builds IMAGE from the binary under test (no cargo build)."""
    done = run(str(REPO / "deploy" / "build-image.sh"), "--binary", str(magnetar_bin()), "--tag", IMAGE)
    print(done.stdout.strip())
    return IMAGE


def _used_subnets() -> set:
    ids = run("docker", "network", "ls", "-q").stdout.split()
    if not ids:
        return set()
    inspected = json.loads(run("docker", "network", "inspect", *ids).stdout)
    return {c.get("Subnet") for n in inspected for c in (n.get("IPAM") or {}).get("Config") or []}


def free_front_net() -> str:
    """A 172.28.X prefix whose /24 no Docker network uses."""
    used = _used_subnets()
    for third in range(10, 250):
        prefix = f"172.28.{third}"
        if f"{prefix}.0/24" not in used:
            return prefix
    raise AssertionError("no free 172.28.X.0/24 subnet for the front network")


class ComposeStack:
    """One topology file brought up under a project name of its own."""

    def __init__(self, topology: str):
        self.file = COMPOSE_DIR / f"{topology}.yml"
        self.project = f"mgt{topology[:4]}{uuid.uuid4().hex[:6]}"
        self.pulsar_port = free_port()
        self.http_port = free_port()
        self.front_net = free_front_net()
        self.env = dict(
            os.environ,
            MAGNETAR_IMAGE=IMAGE,
            MAGNETAR_PULSAR_PORT=str(self.pulsar_port),
            MAGNETAR_HTTP_PORT=str(self.http_port),
            MAGNETAR_FRONT_NET=self.front_net,
        )

    @property
    def service_url(self) -> str:
        return f"pulsar://127.0.0.1:{self.pulsar_port}"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def compose(self, *args, check=True, timeout=UP_TIMEOUT_S):
        return run("docker-compose", "-f", str(self.file), "-p", self.project, *args,
                   check=check, timeout=timeout, env=self.env)

    def up(self):
        self.compose("up", "-d")

    def down(self):
        self.compose("down", "-v", "--remove-orphans", "-t", "10", check=False)

    def services(self) -> list:
        return self.compose("config", "--services").stdout.split()

    def container(self, service: str) -> str:
        return self.compose("ps", "-q", service).stdout.strip()

    def inspect(self, service: str) -> dict:
        return json.loads(run("docker", "inspect", self.container(service)).stdout)[0]

    def advertised_url(self, service: str) -> str:
        """The Pulsar URL a broker advertises (its MAGNETAR_ADVERTISE)."""
        env = dict(e.split("=", 1) for e in self.inspect(service)["Config"]["Env"])
        return f"pulsar://{env['MAGNETAR_ADVERTISE']}"

    def health(self, service: str) -> str:
        state = self.inspect(service)["State"]
        return (state.get("Health") or {}).get("Status", state["Status"])

    def wait_healthy(self, services, timeout_s=UP_TIMEOUT_S):
        def all_healthy():
            return all(self.health(s) == "healthy" for s in services)

        try:
            wait_until(all_healthy, timeout_s=timeout_s, what=f"{list(services)} are healthy", poll_s=0.5)
        except AssertionError as e:
            raise AssertionError(f"{e}:\n{self.logs(*services)}") from None

    def logs(self, *services, tail=40) -> str:
        return self.compose("logs", "--no-color", "--tail", str(tail), *services, check=False).stdout

    # -- faults ------------------------------------------------------------

    def network(self, name: str) -> str:
        """The Docker name of the topology's network `name` (front, meta,
        storage)."""
        return f"{self.project}_{name}"

    def disconnect(self, service: str, network: str) -> dict:
        """Cuts `service` off `network` (a real partition: its interface on
        that network is gone). Returns what `reconnect` needs to put it
        back with the same addresses and names."""
        settings = self.inspect(service)["NetworkSettings"]["Networks"][self.network(network)]
        run("docker", "network", "disconnect", self.network(network), self.container(service))
        return {
            "network": network,
            "aliases": [a for a in settings.get("Aliases") or [] if a],
            "ip": (settings.get("IPAMConfig") or {}).get("IPv4Address"),
        }

    def reconnect(self, service: str, cut: dict):
        """Undoes `disconnect`: the same aliases and fixed address."""
        args = ["docker", "network", "connect"]
        for alias in cut["aliases"]:
            args += ["--alias", alias]
        if cut["ip"]:
            args += ["--ip", cut["ip"]]
        run(*args, self.network(cut["network"]), self.container(service))

    def pause(self, *services):
        self.compose("pause", *services)

    def unpause(self, *services):
        self.compose("unpause", *services)

    def restart(self, service: str, grace_s: int = 20):
        self.compose("restart", "-t", str(grace_s), service)

    def etcdctl(self, *args) -> str:
        """etcdctl run inside the first etcd member's container."""
        return run("docker", "exec", self.container("etcd-1"), "/usr/bin/etcdctl", *args).stdout
