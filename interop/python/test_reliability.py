"""Reliability of the Go worker under failures: kill -9 with late acks, a
RabbitMQ restart under load, warm and cold shutdown. Tasks are
interop.counter(key_i, ...), one distinct Redis key per task, so "every key
exists" means "no task was lost" and a value > 1 means "ran more than once"
(allowed: at-least-once).

The RabbitMQ restart test runs `rabbitmqctl stop_app/start_app` (root only):
do not run this module next to other tests that use the same broker.
"""
import os
import re
import shutil
import signal
import socket
import subprocess
import time

import pytest

from conftest import message_count, new_uid, wait_until

N_KILL = 1000
N_RESTART = 300


def existing(rdb, keys):
    """How many of keys exist (EXISTS counts each existing key)."""
    total = 0
    for i in range(0, len(keys), 500):
        total += rdb.exists(*keys[i:i + 500])
    return total


def values(rdb, keys):
    out = []
    for i in range(0, len(keys), 500):
        out.extend(rdb.mget(keys[i:i + 500]))
    return [int(v) if v is not None else 0 for v in out]


def publish_counters(celery, keys, sleep=0.01):
    counter = celery.tasks["interop.counter"]
    with celery.producer_or_acquire() as producer:
        return [counter.apply_async((k,), {"sleep": sleep}, producer=producer) for k in keys]


SUCCEEDED = re.compile(r"Task interop\.counter\[[^\]]+\] succeeded")


def succeeded_in_log(worker):
    """Counter tasks the Go worker logged as succeeded."""
    return len(SUCCEEDED.findall(worker.log()))


def wait_for_count(rdb, keys, at_least, timeout, what):
    deadline = time.monotonic() + timeout
    n = 0
    while time.monotonic() < deadline:
        n = existing(rdb, keys)
        if n >= at_least:
            return n
        time.sleep(0.01)
    pytest.fail(f"{what}: only {n}/{len(keys)} keys after {timeout}s", pytrace=False)


def test_kill_9_with_acks_late_loses_nothing(go_worker, flask_app, rdb, redis_prefix):
    uid = new_uid()
    queue = f"rel_kill_{uid}"
    flags = ["--acks-late"]
    app = flask_app(queue)
    celery = app.extensions["celery"]
    keys = [f"{redis_prefix}k{i}" for i in range(N_KILL)]
    t0 = time.monotonic()
    # All 1,000 are queued (the producer declares the queue) before the
    # worker starts, so the kill happens with most of them still to run.
    publish_counters(celery, keys)
    published = time.monotonic() - t0
    assert message_count(queue) == N_KILL

    first = go_worker(queues=queue, concurrency=8, flags=flags)
    at_kill = wait_for_count(rdb, keys, 100, 30, "before kill -9")
    first.kill()  # SIGKILL: no warm shutdown, unacked messages go back to the queue
    after_kill = existing(rdb, keys)
    assert after_kill < N_KILL - 100, (
        f"{after_kill} of {N_KILL} tasks already done at kill -9: nothing left in flight "
        "to test")

    second = go_worker(queues=queue, concurrency=8, flags=flags)
    wait_for_count(rdb, keys, N_KILL, 120, "after restart")
    vals = values(rdb, keys)
    assert all(v >= 1 for v in vals)
    twice = sum(1 for v in vals if v > 1)
    print(f"\nkill -9: published {N_KILL} in {published:.2f}s; killed at {at_kill} done "
          f"({after_kill} after kill); {twice} task(s) ran more than once "
          f"(max runs {max(vals)}); total {time.monotonic() - t0:.2f}s")
    # Only deliveries that were unacked at the kill can run twice: at most the
    # prefetch window (8 x 4).
    assert twice <= 8 * 4, f"{twice} duplicates exceed the prefetch window of 32"
    assert max(vals) <= 2, f"a task ran {max(vals)} times"
    assert second.alive()
    # The workers' logs account for every run (the first one's log may miss
    # the last few lines: it was killed).
    runs = sum(vals)
    assert succeeded_in_log(first) + succeeded_in_log(second) in range(runs - 8 * 4, runs + 1)
    assert succeeded_in_log(second) >= N_KILL - after_kill


def _port_open(port, host="127.0.0.1"):
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def _rabbitmqctl(*args, timeout=60):
    return subprocess.run(["rabbitmqctl", *args], capture_output=True, text=True,
                          timeout=timeout)


def _ensure_rabbit_up():
    proc = _rabbitmqctl("start_app", timeout=90)
    deadline = time.monotonic() + 90
    while not _port_open(5672):
        if time.monotonic() > deadline:
            raise RuntimeError(f"RabbitMQ port 5672 closed 90 s after start_app: "
                               f"{proc.stdout}{proc.stderr}")
        time.sleep(0.1)
    _rabbitmqctl("await_startup", timeout=90)


@pytest.mark.skipif(shutil.which("rabbitmqctl") is None, reason="rabbitmqctl not installed")
@pytest.mark.skipif(os.geteuid() != 0, reason="rabbitmqctl stop_app/start_app needs root")
def test_rabbitmq_restart_under_load(go_worker, flask_app, rdb, redis_prefix):
    uid = new_uid()
    queue = f"rel_restart_{uid}"
    # One task at a time, so most of the 300 are still queued in RabbitMQ
    # (durable queue, persistent messages) when it stops.
    worker = go_worker(queues=queue, concurrency=1, flags=["--prefetch-multiplier", "1"])
    app = flask_app(queue)
    celery = app.extensions["celery"]
    keys = [f"{redis_prefix}r{i}" for i in range(N_RESTART)]
    t0 = time.monotonic()
    publish_counters(celery, keys)
    # The producer's connection will not survive the restart.
    celery.close()

    try:
        at_stop = wait_for_count(rdb, keys, 50, 30, "before stop_app")
        stop = _rabbitmqctl("stop_app")
        assert stop.returncode == 0, f"rabbitmqctl stop_app failed: {stop.stdout}{stop.stderr}"
        stopped = existing(rdb, keys)
        assert not _port_open(5672), "port 5672 still open after stop_app"
        time.sleep(0.5)  # the worker sees the broker gone, not just a blip
        during = existing(rdb, keys)
        start = _rabbitmqctl("start_app", timeout=90)
        assert start.returncode == 0, f"rabbitmqctl start_app failed: {start.stdout}{start.stderr}"
        wait_until(lambda: _port_open(5672), 60, interval=0.1, message="port 5672 after start_app")
        assert _rabbitmqctl("await_startup", timeout=60).returncode == 0
        restarted = existing(rdb, keys)
        assert restarted < N_RESTART, (
            f"all {N_RESTART} done before RabbitMQ came back: the restart tested nothing")
    finally:
        if not _port_open(5672):
            _ensure_rabbit_up()

    wait_for_count(rdb, keys, N_RESTART, 60, "after RabbitMQ restart")
    vals = values(rdb, keys)
    assert all(v >= 1 for v in vals)
    twice = sum(1 for v in vals if v > 1)
    print(f"\nrabbitmq restart: {at_stop} done at stop_app call, {stopped} when it returned, "
          f"{during} while down, {restarted} at restart; all {N_RESTART} done after "
          f"{time.monotonic() - t0:.2f}s; {twice} ran more than once")
    assert worker.alive(), "the Go worker exited instead of reconnecting:\n" + worker.tail()
    # ... and it is this same process that ran every task, before and after.
    assert succeeded_in_log(worker) == sum(vals)
    assert during == stopped or during - stopped <= 2, (
        f"{during - stopped} tasks completed while RabbitMQ was down (prefetch is 1)")


def test_warm_shutdown_finishes_running_task_and_returns_the_rest(
        go_worker, flask_app, rdb, redis_prefix):
    """SIGTERM: the running task finishes (SUCCESS stored, exit 0); messages
    not started yet go back to the queue, and the next worker runs them."""
    worker = go_worker(concurrency=1, flags=["--track-started", "--prefetch-multiplier", "1"])
    app = flask_app(worker.queue)
    celery = app.extensions["celery"]
    running = celery.tasks["interop.sleep"].delay(1.0)
    wait_until(lambda: running.state == "STARTED", 10, message="sleep task STARTED")
    keys = [f"{redis_prefix}w{i}" for i in range(5)]
    queued = publish_counters(celery, keys, sleep=0)
    t0 = time.monotonic()
    worker.signal(signal.SIGTERM)
    rc = worker.proc.wait(timeout=20)
    took = time.monotonic() - t0
    assert rc == 0, f"warm shutdown exit code {rc}"
    assert running.state == "SUCCESS" and running.get(timeout=1) == 1.0
    assert took < 5, f"warm shutdown took {took:.2f}s for a task with < 1 s left"
    assert existing(rdb, keys) == 0, "tasks queued behind the running one ran during shutdown"
    assert message_count(worker.queue) == len(keys), "queued tasks were not returned to the queue"
    assert all(r.state == "PENDING" for r in queued)

    go_worker(queues=worker.queue, concurrency=2)
    assert [r.get(timeout=10) for r in queued] == [1] * len(keys)


def test_second_sigterm_is_cold_shutdown_late_ack_redelivers(go_worker, flask_app, rdb,
                                                            redis_prefix):
    """Second SIGTERM: cold shutdown, the running task is abandoned; with
    --acks-late its message is redelivered and runs on the next worker."""
    worker = go_worker(concurrency=1, flags=["--track-started", "--acks-late"])
    app = flask_app(worker.queue)
    celery = app.extensions["celery"]
    key = redis_prefix + "cold"
    r = celery.tasks["interop.counter"].delay(key, sleep=2)
    wait_until(lambda: r.state == "STARTED", 10, message="counter task STARTED")
    t0 = time.monotonic()
    worker.signal(signal.SIGTERM)
    time.sleep(0.2)
    assert worker.alive(), "worker exited on the first SIGTERM with a task still running"
    worker.signal(signal.SIGTERM)
    worker.proc.wait(timeout=10)
    assert time.monotonic() - t0 < 1.5, "second SIGTERM did not stop the worker promptly"
    assert rdb.get(key) is None, "the abandoned task completed anyway"
    assert r.state == "STARTED"
    wait_until(lambda: message_count(worker.queue) == 1, 10,
               message="the late-ack message back in the queue")

    go_worker(queues=worker.queue, concurrency=1)
    assert r.get(timeout=15) == 1
