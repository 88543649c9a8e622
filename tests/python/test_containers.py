"""The container image and the Compose topologies of deploy/: the image is
built from the binary under test, each topology starts with one command, the
official client produces and consumes through the published port, and what
was acknowledged is still there after every broker container restarts."""

import json
import subprocess

import pulsar
import pytest

from containers import ComposeStack, build_image, requires_docker, run
from support import close_quietly, payload, produce, receive_n

pytestmark = requires_docker

# The services each topology serves clients with (all with a healthcheck).
BROKERS = {
    "standalone": ["standalone"],
    "decoupled": ["broker-1", "broker-2"],
    "monolithic": ["broker-1", "broker-2", "broker-3"],
}
TOPICS = 8
MESSAGES = 200


@pytest.fixture(scope="module")
def image():
    return build_image()


def test_image_is_non_root_from_scratch_with_a_healthcheck(image):
    config = json.loads(run("docker", "image", "inspect", image).stdout)[0]["Config"]
    assert config["User"] == "10001:10001"
    assert config["Entrypoint"] == ["/usr/bin/magnetar"]
    assert config["Healthcheck"]["Test"] == ["CMD", "/usr/bin/magnetar", "health"]
    # From scratch: the binaries and their libraries, no shell.
    shell = subprocess.run(["docker", "run", "--rm", "--entrypoint", "/bin/sh", image, "-c", "true"],
                           capture_output=True, timeout=60)
    assert shell.returncode != 0
    for tool in (["/usr/bin/etcd", "--version"], ["/usr/bin/etcdctl", "version"]):
        done = run("docker", "run", "--rm", "--entrypoint", tool[0], image, *tool[1:])
        assert "3." in done.stdout
    whoami = run("docker", "run", "--rm", image, "--version")
    assert whoami.stdout.startswith("magnetar ")


def _produce_everywhere(url, tag, topics=TOPICS):
    client = pulsar.Client(url, operation_timeout_seconds=60)
    try:
        topics = [f"persistent://public/default/smoke-{tag}-{t}" for t in range(topics)]
        for topic in topics:
            produce(client, topic, MESSAGES)
        return topics
    finally:
        close_quietly(client)


def _consume_all(url, topics, subscription):
    client = pulsar.Client(url, operation_timeout_seconds=60)
    try:
        for topic in topics:
            consumer = client.subscribe(topic, subscription,
                                        initial_position=pulsar.InitialPosition.Earliest)
            received = [m.data() for m in receive_n(consumer, MESSAGES, ack=True)]
            assert received == [payload(i) for i in range(MESSAGES)], f"{topic}: lost or reordered"
            consumer.close()
    finally:
        close_quietly(client)


@pytest.mark.parametrize("topology", sorted(BROKERS))
def test_topology_starts_serves_the_official_client_and_keeps_data_across_restarts(image, topology):
    stack = ComposeStack(topology)
    try:
        stack.up()
        stack.wait_healthy(BROKERS[topology])
        topics = _produce_everywhere(stack.service_url, topology)
        _consume_all(stack.service_url, topics, "before-restart")
        # Every broker serves clients of the Docker host at the address it
        # advertises (where lookups send them).
        for broker in BROKERS[topology]:
            url = stack.advertised_url(broker)
            _consume_all(url, _produce_everywhere(url, f"{topology}-{broker}", topics=1), "direct")

        stack.compose("restart", "-t", "20", *BROKERS[topology])
        stack.wait_healthy(BROKERS[topology])
        # A new subscription from the earliest position reads everything
        # again: it was on the volumes, not in the containers.
        _consume_all(stack.service_url, topics, "after-restart")
    except BaseException:
        print(stack.logs())
        raise
    finally:
        stack.down()
