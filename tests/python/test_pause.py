"""SIGSTOP of the whole `magnetar standalone` in the middle of a produce
stream: once it is resumed, every send succeeds and is stored exactly once,
in order (a paused process must not take its own frozen bookie for a failed
one and fail the writes in flight)."""

import os
import signal
import threading
import time

import pulsar

from support import drain, payload

# Client behaviour is the same over either storage architecture.
BOTH_ARCHITECTURES = True

PAUSE_S = 6


def test_pause_mid_stream_is_transparent(magnetar, new_client, topic):
    client = new_client(operation_timeout_seconds=30)
    producer = client.create_producer(
        topic,
        batching_enabled=True,
        batching_max_publish_delay_ms=5,
        block_if_queue_full=True,
        send_timeout_millis=60_000,
    )
    results = []
    lock = threading.Lock()

    def record(i):
        def callback(res, _msg_id):
            with lock:
                results.append((i, res))

        return callback

    pid = magnetar.proc.pid

    def pause():
        time.sleep(1.0)
        os.kill(pid, signal.SIGSTOP)
        time.sleep(PAUSE_S)
        os.kill(pid, signal.SIGCONT)

    pauser = threading.Thread(target=pause)
    pauser.start()
    sent = 0
    started = time.monotonic()
    while time.monotonic() - started < PAUSE_S + 3:
        producer.send_async(payload(sent), record(sent))
        sent += 1
        if sent % 100 == 0:
            time.sleep(0.005)
    pauser.join()
    producer.flush()
    failed = [(i, str(res)) for i, res in results if res != pulsar.Result.Ok]
    assert not failed, f"{len(failed)} sends failed, e.g. {failed[:3]}"
    assert len(results) == sent

    consumer = client.subscribe(
        topic, "check", initial_position=pulsar.InitialPosition.Earliest
    )
    stored = drain(consumer)
    assert stored == list(range(sent)), (
        f"stored {len(stored)} of {sent}: lost, duplicated or reordered "
        f"(first differences at {next((k for k, (a, b) in enumerate(zip(stored, range(sent))) if a != b), None)})"
    )
