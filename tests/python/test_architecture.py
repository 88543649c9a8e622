"""What only the monolithic (Kafka-style) architecture has, and what keeps the
two apart: a torn segment tail after kill -9 is cut on start without losing
an acknowledged message, and a cluster initialised with one architecture
refuses a broker started with the other, saying why."""

import subprocess
from pathlib import Path

import pulsar
import pytest

from conftest import Standalone, magnetar_bin
from support import drain, index_of, produce

N = 3000


def newest_segment(data_dir: Path) -> Path:
    segments = sorted((data_dir / "broker" / "logs").glob("*/*.log"))
    assert segments, f"no segment files under {data_dir}"
    return max(segments, key=lambda p: p.stat().st_mtime)


@pytest.mark.parametrize("architecture", ["monolithic"])
def test_torn_segment_tail_is_cut_on_start(magnetar, new_client, topic):
    client = new_client()
    produce(client, topic, N, batching=True, flush_every=500)
    magnetar.kill9()
    # A torn write: a batch header that promises more than follows, then junk.
    segment = newest_segment(magnetar.data_dir)
    size = segment.stat().st_size
    with open(segment, "ab") as f:
        f.write(b"\x00\x00\x00\x2a\x01" + b"\x00" * 8 + b"\xff" * 300)
    magnetar.start()

    reader = new_client()
    consumer = reader.subscribe(topic, "verify", initial_position=pulsar.InitialPosition.Earliest)
    # The topic's log was opened (and recovered) for this subscription.
    assert segment.stat().st_size == size, "the torn tail was not cut when the log opened"
    assert drain(consumer) == list(range(N)), "acknowledged messages lost or reordered"
    # The log goes on after the cut.
    produce(reader, topic, 10, start=N)
    assert drain(consumer) == list(range(N, N + 10))


def test_a_cluster_refuses_a_broker_of_the_other_architecture(tmp_path):
    server = Standalone(magnetar_bin(), tmp_path)
    server.start()
    assert server.terminate() == 0
    result = subprocess.run(
        [
            str(magnetar_bin()),
            "standalone",
            "--architecture", "monolithic",
            "--data-dir", str(server.data_dir),
            "--listen", f"127.0.0.1:{server.broker_port}",
            "--http", f"127.0.0.1:{server.broker_http_port}",
        ],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=60,
    )
    output = (result.stdout + result.stderr).decode(errors="replace")
    assert result.returncode != 0, f"a monolithic broker joined a decoupled cluster:\n{output}"
    assert "initialised with the decoupled architecture" in output, output
