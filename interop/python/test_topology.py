"""A Go worker on whatever the Python side declared (issue 12): one
Celery-named config file (celeryconf.py reads it for Python, --config for
Go) with a quorum queue on a topic exchange, a priority queue, a queue
with several bindings, and, separately, task_default_queue_type = quorum.

Each test runs with the Python app declaring first (kombu's declarations
and the native delayed delivery topology, as a Python worker leaves them)
and with the worker first; the worker is the Go worker, and, as the
reference, a Python worker on the same config. Every task must run once,
and countdown / retry tasks (native delayed delivery on the quorum queue)
on time: Python -> worker, Go producer (gosend) -> worker, Go worker retry
-> Python worker, Python worker retry -> Go worker.

RabbitMQ only (quorum queues and native delayed delivery are RabbitMQ's).
Results in Redis DB 9.
"""
import json
import os
import signal
import subprocess
import sys
import time
from datetime import datetime, timezone

import pytest

from conftest import (BROKER_URL, HERE, REDIS_HOST, REDIS_PORT, REPO_ROOT, Proc, attach_log,
                      close_celery, message_count, new_uid, wait_until)

pytestmark = pytest.mark.skipif(not BROKER_URL.startswith("amqp"),
                                reason="quorum queues and native delayed delivery are RabbitMQ's")

DB = 9
BACKEND = f"redis://{REDIS_HOST}:{REDIS_PORT}/{DB}"
COUNTDOWN = 2.0
LATE = 3.0  # seconds a countdown task may run after its time (levels are whole seconds)


def main_config(uid):
    """Quorum topic queue (the default queue), priority queue, multi-binding
    queue."""
    return {
        "broker_url": BROKER_URL,
        "result_backend": BACKEND,
        "task_default_queue": f"qa_{uid}",
        "task_queues": [
            {"name": f"qa_{uid}", "exchange": f"tx_{uid}", "exchange_type": "topic",
             "routing_key": f"qa_{uid}.#", "queue_arguments": {"x-queue-type": "quorum"}},
            {"name": f"pr_{uid}", "exchange": f"pr_{uid}", "routing_key": f"pr_{uid}",
             "max_priority": 5},
            {"name": f"mb_{uid}", "bindings": [
                {"exchange": f"mx_{uid}", "exchange_type": "topic", "routing_key": "img.*"},
                {"exchange": f"mx_{uid}", "exchange_type": "topic", "routing_key": "vid.*"}]},
        ],
        "worker_prefetch_multiplier": 2,
        "task_acks_late": True,
    }


def default_quorum_config(uid):
    """No task_queues: Celery's default queue, declared quorum, on a topic
    default exchange (so countdowns can go through native delayed delivery)."""
    return {
        "broker_url": BROKER_URL,
        "result_backend": BACKEND,
        "task_default_queue": f"dq_{uid}",
        "task_default_exchange_type": "topic",
        "task_default_queue_type": "quorum",
    }


def names_of(conf):
    """Queues and exchanges to delete at teardown."""
    uid_names = set()
    for q in conf.get("task_queues", []):
        uid_names.add(q["name"])
        if q.get("exchange"):
            uid_names.add(q["exchange"])
        for b in q.get("bindings", []):
            uid_names.add(b["exchange"])
    uid_names.add(conf["task_default_queue"])
    return sorted(uid_names)


@pytest.fixture(scope="module")
def gosend_bin(tmp_path_factory):
    out = tmp_path_factory.mktemp("gosend") / "gosend"
    proc = subprocess.run(["go", "build", "-o", str(out), "./interop/gosend"], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        pytest.fail(f"go build ./interop/gosend: {proc.stderr[-3000:]}", pytrace=False)
    return str(out)


class Setup:
    """One config file, the Python app on it, and the workers a test starts."""

    def __init__(self, conf, tmp_path, request, goworker_bin, amqp_queues):
        import celeryconf

        self.conf = conf
        self.path = str(tmp_path / "worker.yaml")
        with open(self.path, "w") as f:
            json.dump(conf, f, indent=1)  # JSON is YAML
        self.tmp_path, self.request, self.goworker_bin = tmp_path, request, goworker_bin
        self.app = celeryconf.make_app(self.path)
        self.workers = []
        amqp_queues.track(*names_of(conf))

    def python_declares(self):
        """What a Python project leaves on the broker: its queues as kombu
        declares them, and the native delayed delivery topology of a Python
        worker on quorum queues."""
        from kombu.transport.native_delayed_delivery import (
            bind_queue_to_native_delayed_delivery_exchange,
            declare_native_delayed_delivery_exchanges_and_queues)

        with self.app.connection_for_write() as conn:
            for q in self.app.amqp.queues.values():
                q.bind(conn.default_channel).declare()
            declare_native_delayed_delivery_exchanges_and_queues(conn, "quorum")
            for q in self.app.amqp.queues.values():
                bind_queue_to_native_delayed_delivery_exchange(conn, q)

    def queues(self):
        return [q["name"] for q in self.conf.get("task_queues", [])] or [self.conf["task_default_queue"]]

    def start(self, kind):
        uid = new_uid()
        log = str(self.tmp_path / f"{kind}-{uid}.log")
        queues = ",".join(self.queues())
        if kind == "go":
            host = f"go-{uid}@topology"
            cmd = [self.goworker_bin, "--config", self.path, "-Q", queues, "-c", "4", "-n", host]
            w = Proc(cmd, log, 'msg="worker ready"', label=f"go worker {host}")
        else:
            host = f"py-{uid}@topology"
            celery = os.path.join(os.path.dirname(sys.executable), "celery")
            env = dict(os.environ, GOCELERY_CONFIG=self.path, PYTHONPATH=HERE, PYTHONUNBUFFERED="1")
            cmd = [celery, "-A", "celeryconf", "worker", "-P", "threads", "-c", "4", "-Q", queues,
                   "-n", host, "-l", "info", "--without-gossip", "--without-mingle",
                   "--without-heartbeat"]
            w = Proc(cmd, log, f"{host} ready.", env=env, cwd=HERE, label=f"python worker {host}")
        self.workers.append(w)
        attach_log(self.request.node, w.label, log)
        try:
            w.wait_ready()
        except RuntimeError as exc:
            pytest.fail(str(exc), pytrace=False)
        return w

    def stop(self, w):
        """Warm shutdown; a Python worker's takes seconds when idle, so it
        gets SIGQUIT (cold) after 1 s."""
        for sig, wait in ((signal.SIGTERM, 10 if "go" in w.label else 1), (signal.SIGQUIT, 1)):
            if not w.alive():
                break
            w.proc.send_signal(sig)
            try:
                w.proc.wait(timeout=wait)
            except subprocess.TimeoutExpired:
                pass
        if w.alive():
            w.kill()

    def close(self):
        for w in self.workers:
            self.stop(w)
        close_celery(self.app)


@pytest.fixture
def setup(tmp_path, request, goworker_bin, amqp_queues):
    made = []

    def make(conf):
        s = Setup(conf, tmp_path, request, goworker_bin, amqp_queues)
        made.append(s)
        return s

    yield make
    for s in made:
        s.close()


def gosend(gosend_bin, setup, **kw):
    cmd = [gosend_bin, "--config", setup.path]
    for k, v in kw.items():
        cmd += [f"--{k.replace('_', '-')}", str(v)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def done_at(result):
    d = result.date_done
    if isinstance(d, str):
        d = datetime.fromisoformat(d)
    if d.tzinfo is None:
        d = d.replace(tzinfo=timezone.utc)
    return d.timestamp()


def check(app, rdb, sent, timeout=20):
    """sent: (label, AsyncResult, counter key or None, earliest run or None).
    Every task succeeds, runs once (its counter is 1), and a delayed one runs
    from its time to LATE seconds after."""
    failures = []
    for label, r, key, earliest in sent:
        try:
            value = r.get(timeout=timeout)
        except Exception as exc:  # noqa: BLE001 - report every scenario
            failures.append(f"{label}: {exc!r}")
            continue
        if key is not None and value != 1:
            failures.append(f"{label}: counter is {value}, want 1")
        if earliest is not None:
            at = done_at(r)
            if not earliest - 0.05 <= at <= earliest + LATE:
                failures.append(f"{label}: ran {at - earliest:+.2f}s from its time")
    time.sleep(0.5)  # a duplicate would show in the counters now
    for label, r, key, _ in sent:
        if key is not None and int(rdb.get(key) or 0) != 1:
            failures.append(f"{label}: {key} ran {int(rdb.get(key) or 0)} times")
    assert not failures, "\n".join(failures)


@pytest.fixture
def rdb9():
    import redis

    client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=DB)
    keys = []
    yield client, keys
    if keys:
        client.delete(*keys)
    client.close()


ORDERS = ["python_first", "worker_first"]
WORKERS = ["go", "python"]


@pytest.mark.parametrize("worker", WORKERS)
@pytest.mark.parametrize("order", ORDERS)
def test_task_queues(setup, rdb9, gosend_bin, order, worker):
    rdb, keys = rdb9
    uid = new_uid()
    s = setup(main_config(uid))
    if order == "python_first":
        s.python_declares()
    s.start(worker)
    app = s.app
    qa, pr, mb, tx, mx = (f"qa_{uid}", f"pr_{uid}", f"mb_{uid}", f"tx_{uid}", f"mx_{uid}")

    def counter(label, **opts):
        key = f"topo:{uid}:{label}"
        keys.append(key)
        return key, app.send_task("interop.counter", kwargs={"key": key}, **opts)

    sent = []
    # The Go producer first: its countdown must wait in RabbitMQ (2 s is
    # level 1), not in the worker.
    key = f"topo:{uid}:go-countdown"
    keys.append(key)
    t = time.time()
    tid = gosend(gosend_bin, s, task="interop.counter", queue=qa, kwargs=json.dumps({"key": key}),
                 countdown=f"{COUNTDOWN}s")
    assert message_count("celery_delayed_1") >= 1, "the Go producer's countdown is not in celery_delayed_1"
    sent.append(("go producer countdown on the quorum queue", app.AsyncResult(tid), key, t + COUNTDOWN))
    for label, opts in [
        ("quorum topic queue", {"queue": qa}),
        ("priority queue", {"queue": pr, "priority": 3}),
        ("routing key to the exchange, no queue", {"exchange": tx, "routing_key": f"qa_{uid}.orders"}),
        ("first of several bindings", {"exchange": mx, "routing_key": "img.png"}),
        ("second of several bindings", {"exchange": mx, "routing_key": "vid.mp4"}),
    ]:
        key, r = counter(label, **opts)
        sent.append((label, r, key, None))
    t = time.time()
    key, r = counter("python countdown on the quorum queue", queue=qa, countdown=COUNTDOWN)
    sent.append(("python countdown on the quorum queue", r, key, t + COUNTDOWN))
    t = time.time()
    r = app.send_task("interop.retry", kwargs={"times": 1, "countdown": COUNTDOWN}, queue=qa)
    sent.append(("retry on the quorum queue", r, None, t + COUNTDOWN))
    check(app, rdb, sent)
    assert sent[-1][1].result == 1  # the retried run's request.retries


@pytest.mark.parametrize("worker", WORKERS)
@pytest.mark.parametrize("order", ORDERS)
def test_default_queue_type_quorum(setup, rdb9, gosend_bin, order, worker):
    rdb, keys = rdb9
    uid = new_uid()
    s = setup(default_quorum_config(uid))
    if order == "python_first":
        s.python_declares()
    s.start(worker)
    sent = []
    for label, countdown in [("plain", None), ("countdown", COUNTDOWN)]:
        key = f"topo:{uid}:{label}"
        keys.append(key)
        t = time.time()
        r = s.app.send_task("interop.counter", kwargs={"key": key}, countdown=countdown)
        sent.append((label, r, key, t + countdown if countdown else None))
    key = f"topo:{uid}:go"
    keys.append(key)
    t = time.time()
    tid = gosend(gosend_bin, s, task="interop.counter", kwargs=json.dumps({"key": key}),
                 countdown=f"{COUNTDOWN}s")
    sent.append(("go producer countdown", s.app.AsyncResult(tid), key, t + COUNTDOWN))
    check(s.app, rdb, sent)


@pytest.mark.parametrize("first,second", [("go", "python"), ("python", "go")])
def test_retry_crosses_languages(setup, first, second):
    """A retry with a countdown that one worker publishes (through native
    delayed delivery) is run by a worker of the other language."""
    uid = new_uid()
    s = setup(main_config(uid))
    w = s.start(first)
    t = time.time()
    r = s.app.send_task("interop.retry", kwargs={"times": 1, "countdown": 3}, queue=f"qa_{uid}")
    wait_until(lambda: r.state == "RETRY", 10, message=f"{first} worker's RETRY")
    # 3 s is levels 1 then 0: RabbitMQ holds the retry, not the worker.
    assert message_count("celery_delayed_1") >= 1, f"the {first} worker's retry is not in celery_delayed_1"
    s.stop(w)
    s.start(second)
    assert r.get(timeout=15) == 1
    at = done_at(r)
    assert t + 3 - 0.05 <= at <= t + 3 + LATE + 2, f"ran {at - t:.2f}s after sending"
