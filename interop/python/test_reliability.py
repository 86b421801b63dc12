"""Reliability of the Go worker at shutdown: warm shutdown and the second
SIGTERM's cold shutdown. Tasks are interop.counter(key_i, ...), one distinct
Redis key per task, so "every key exists" means "no task was lost" and a
value > 1 means "ran more than once".

kill -9 with late acks and the RabbitMQ restart under load moved to the fault
suite (fault_suite.py, `make faults`), which runs them on both brokers next to
Celery 5.7 and counts sent / lost / ran twice.
"""
import signal
import time

from conftest import message_count, wait_until


def existing(rdb, keys):
    """How many of keys exist (EXISTS counts each existing key)."""
    total = 0
    for i in range(0, len(keys), 500):
        total += rdb.exists(*keys[i:i + 500])
    return total


def publish_counters(celery, keys, sleep=0.01):
    counter = celery.tasks["interop.counter"]
    with celery.producer_or_acquire() as producer:
        return [counter.apply_async((k,), {"sleep": sleep}, producer=producer) for k in keys]


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
