"""Redis as broker: where kombu's visibility timeout duplicates or loses
tasks, the Go worker must not.

- A late-ack task running 3x longer than the visibility timeout is never
  redelivered while its Go worker lives (the worker keeps its unacked_index
  score fresh), even with kombu's own restore running every second.
- The same scenario with Python workers shows kombu's duplicate: printed as
  a contrast, not asserted (it is Celery's documented caveat).

kill -9 of a worker (it loses nothing: its messages come back after the
visibility timeout) moved to the fault suite (fault_suite.py, `make faults`),
next to Celery 5.7 on a Redis broker of its own.
"""
import json
import os
import threading
import time
import uuid

from kombu import Connection

from conftest import BACKEND_URL, GoWorker, PyWorker

REDIS_BROKER = "redis://127.0.0.1:6379/4"
VT = 2  # visibility timeout, seconds
TRANSPORT_OPTIONS = {"visibility_timeout": VT, "unacked_restore_interval": 1,
                     "unacked_restore_throttle": 1}


def go(goworker_bin, tmp_path, queue, name, *flags, concurrency=2):
    return GoWorker(goworker_bin, [queue], str(tmp_path / f"{name}.log"), f"{name}@interop",
                    concurrency=concurrency, broker_url=REDIS_BROKER,
                    flags=["--acks-late", "--visibility-timeout", f"{VT}s",
                           "--restore-interval", "1s", *flags]).wait_ready()


def send(name, queue, *args, **kwargs):
    from celery import Celery
    app = Celery("sender", broker=REDIS_BROKER, backend=BACKEND_URL)
    try:
        return [app.send_task(name, a, kwargs, queue=queue) for a in args]
    finally:
        app.close()


def kombu_restorer(stop):
    """What every kombu consumer does periodically: restore unacked
    messages older than the visibility timeout."""
    with Connection(REDIS_BROKER, transport_options={"visibility_timeout": VT}) as conn:
        ch = conn.default_channel
        while not stop.is_set():
            ch.qos.restore_visible()
            time.sleep(0.5)


def test_long_task_not_redelivered_while_go_worker_lives(goworker_bin, tmp_path, rdb, redis_prefix):
    queue = "rr_go_" + uuid.uuid4().hex[:8]
    key = redis_prefix + "long"
    workers = [go(goworker_bin, tmp_path, queue, f"g{i}") for i in (1, 2)]
    stop = threading.Event()
    restorer = threading.Thread(target=kombu_restorer, args=(stop,), daemon=True)
    restorer.start()
    try:
        (r,) = send("interop.counter", queue, (key,), sleep=3 * VT)
        assert r.get(timeout=30) == 1
        time.sleep(VT + 1.5)  # a duplicate would have had time to run
        assert int(rdb.get(key)) == 1, "the task ran twice"
    finally:
        stop.set()
        restorer.join(5)
        for w in workers:
            w.stop()


def test_python_workers_duplicate_for_contrast(tmp_path, rdb, redis_prefix, capsys):
    queue = "rr_py_" + uuid.uuid4().hex[:8]
    key = redis_prefix + "long"
    os.environ["PYINTEROP_TRANSPORT_OPTIONS"] = json.dumps(TRANSPORT_OPTIONS)
    os.environ["PYINTEROP_ACKS_LATE"] = "1"
    try:
        workers = [PyWorker(queue, str(tmp_path / f"p{i}.log"), f"p{i}@interop",
                            concurrency=1, broker_url=REDIS_BROKER).wait_ready() for i in (1, 2)]
    finally:
        del os.environ["PYINTEROP_TRANSPORT_OPTIONS"], os.environ["PYINTEROP_ACKS_LATE"]
    try:
        (r,) = send("pyinterop.counter", queue, (key,), sleep=3 * VT)
        r.get(timeout=30)
        deadline = time.monotonic() + 4 * VT
        while time.monotonic() < deadline and int(rdb.get(key) or 0) < 2:
            time.sleep(0.2)
        runs = int(rdb.get(key) or 0)
    finally:
        for w in workers:
            w.stop()
    with capsys.disabled():
        print(f"\n[contrast] Python Celery 5.7 workers, Redis broker, late ack, task {3 * VT}s, "
              f"visibility_timeout {VT}s: the task ran {runs} time(s) (Go workers, same setup: 1)")
    assert runs >= 1
