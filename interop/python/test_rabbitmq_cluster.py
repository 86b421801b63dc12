"""A three-node RabbitMQ cluster, quorum queue, late acks: the Go worker
next to Celery 5.7 prefork in the same run, figures side by side.

The rig (scripts/ha.sh through scripts/services.sh, started here and
stopped at the end): rabbit-1..3@localhost on 5681-5683. Both workers and
Celery's producer get Celery's URL list, so all three connect to rabbit-1
first, and the queue (declared by the worker, quorum) has its leader there.

For each worker: 5,000 interop counter tasks sent from Python (Celery's
own producer, confirm_publish, through the URL list) while the worker
drains; a third of the way in, kill -9 of rabbit-1: the node the worker,
the producer and the queue's leader are on. Each task INCRs its own key
on the shared Redis (6379, not the rig), so sent / lost / ran twice are
counted on a server nobody kills; "sent" is what the broker confirmed.
Run by make ha (it costs a core while the cluster runs).
"""
import json
import os
import subprocess
import tempfile
import time
import uuid

import pytest

from conftest import REDIS_DB, REDIS_HOST, REDIS_PORT, GoWorker, PyWorker
from interop_helpers import CounterLoad

NODES = [5681, 5682, 5683]
BROKER = ";".join(f"amqp://guest:guest@127.0.0.1:{p}//" for p in NODES)
BACKEND = f"redis://{REDIS_HOST}:{REDIS_PORT}/2"
COUNTERS = f"redis://{REDIS_HOST}:{REDIS_PORT}/{REDIS_DB}"
HA_DIR = os.environ.get("HA_DIR", "/tmp/gocelery-ha")
N = 5000
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FIGURES = []


def services(*args):
    # Output to a file: the nodes started must not hold a pipe of ours.
    with tempfile.TemporaryFile() as out:
        r = subprocess.run([os.path.join(ROOT, "scripts", "services.sh"), *args],
                           stdout=out, stderr=subprocess.STDOUT, timeout=180)
        out.seek(0)
        assert r.returncode == 0, f"services.sh {' '.join(args)}: {out.read().decode(errors='replace')}"


@pytest.fixture(scope="module")
def rig():
    services("cluster-up")
    yield
    services("cluster-down")
    if FIGURES:
        print("\n[cluster] worker        sent  not-run  ran-twice  send-errors  resumed-after")
        for f in FIGURES:
            print(f"[cluster] {f['worker']:<13} {f['sent']:>5} {f['lost']:>8} {f['twice']:>10} "
                  f"{f['send_errors']:>12}  {f['resumed']:>6.1f} s")


def node_pid(n):
    with open(f"{HA_DIR}/rabbit-{n}/pid") as f:
        return int(f.read())


def start_worker(kind, goworker_bin, tmp_path, queue):
    name = f"{kind}-{queue}@cluster"
    log = str(tmp_path / f"{kind}-{queue}.log")
    if kind == "go":
        conf = tmp_path / f"{queue}.json"
        conf.write_text(json.dumps({"task_create_missing_queue_type": "quorum"}))
        os.environ["INTEROP_COUNTER_REDIS"] = COUNTERS
        try:
            return GoWorker(goworker_bin, [queue], log, name, concurrency=8, broker_url=BROKER,
                            backend_url=BACKEND, flags=["--acks-late", "--config", str(conf)]).wait_ready()
        finally:
            del os.environ["INTEROP_COUNTER_REDIS"]
    env = {"PYINTEROP_ACKS_LATE": "1", "PYINTEROP_COUNTER_REDIS": COUNTERS,
           "PYINTEROP_QUEUE_TYPE": "quorum"}
    os.environ.update(env)
    try:
        return PyWorker(queue, log, name, concurrency=4, broker_url=BROKER,
                        backend_url=BACKEND).wait_ready()
    finally:
        for k in env:
            del os.environ[k]


def celery_app(queue):
    from celery import Celery
    from kombu import Queue
    app = Celery("cluster-sender", broker=BROKER, backend=BACKEND, set_as_current=False)
    app.conf.broker_transport_options = {"confirm_publish": True}
    app.conf.task_queues = (Queue(queue, queue_arguments={"x-queue-type": "quorum"}),)
    return app


def scenario(kind, goworker_bin, tmp_path, rdb, prefix):
    queue = f"cluster_{kind}_{uuid.uuid4().hex[:6]}"
    task = "interop.counter" if kind == "go" else "pyinterop.counter"
    keys = [f"{prefix}{queue}:{i}" for i in range(N)]
    worker = start_worker(kind, goworker_bin, tmp_path, queue)
    app = celery_app(queue)
    load = CounterLoad(rdb, keys, lambda k: app.send_task(task, (k,), queue=queue)).start()
    try:
        load.wait_ran(N // 3, 90, f"{kind} worker:\n{worker.tail()}")
        os.kill(node_pid(1), 9)
        at = time.monotonic()
        resumed = load.resumed_after(at, load.ran(), 30, margin=10)
        fig = {"worker": "Go" if kind == "go" else "Celery 5.7",
               **load.finish(120, 60 if resumed is not None else 5),
               "resumed": resumed if resumed is not None else float("nan")}
        FIGURES.append(fig)
        print(f"\n[cluster] {fig}")
        return fig, worker
    finally:
        load.stop.set()
        worker.stop()
        app.close()
        services("cluster-revive", "1")


@pytest.mark.parametrize("kind", ["go", "celery"])
def test_kill9_node_under_load(rig, kind, goworker_bin, tmp_path, rdb, redis_prefix):
    fig, w = scenario(kind, goworker_bin, tmp_path, rdb, redis_prefix)
    if kind == "go":
        assert fig["sent"] == N, f"{N - fig['sent']} tasks never confirmed"
        assert fig["lost"] == 0, f"lost {fig['lost']} confirmed tasks:\n{w.tail()}"
        assert fig["resumed"] < 30, f"the worker did not move to another node:\n{w.tail()}"
