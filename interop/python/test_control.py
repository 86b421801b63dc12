"""The Go worker seen and driven with Celery's own tools: `celery inspect`,
`celery control`, app.control, the event Receiver Flower uses, and Flower
2.2 itself. Broker-neutral: the Makefile runs it on RabbitMQ and on Redis.
"""
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from datetime import datetime, timedelta, timezone
from types import SimpleNamespace

import pytest
from celery.exceptions import TaskRevokedError
from celery.result import AsyncResult

import flaskapp
from conftest import (BACKEND_URL, BROKER_URL, HERE, _start_go, attach_log, close_celery,
                      delete_queues, new_uid, wait_until)

TIMEOUT = 15
CELERY = os.path.join(os.path.dirname(sys.executable), "celery")


@pytest.fixture(scope="module")
def ctl_env(goworker_bin, tmp_path_factory):
    """One Go worker with task events on (-E), and a Flask app's Celery."""
    log_dir = tmp_path_factory.mktemp("control-goworker")
    uid = new_uid()
    q = f"ctl_{uid}"
    host = f"goctl-{uid}@interop"
    worker = _start_go(goworker_bin, log_dir, None, queues=[q], concurrency=4, name=host,
                       flags=["-E", "--heartbeat-interval", "1s"])
    app = flaskapp.create_app(BROKER_URL, BACKEND_URL, q)
    celery = app.extensions["celery"]
    yield SimpleNamespace(worker=worker, celery=celery, queue=q, host=host)
    worker.stop()
    close_celery(celery)
    delete_queues([q, f"{q}.unregistered", f"{q}.malformed"])


@pytest.fixture
def env(ctl_env, request):
    attach_log(request.node, ctl_env.worker.label, ctl_env.worker.log_path)
    assert ctl_env.worker.alive(), "Go worker died:\n" + ctl_env.worker.tail()
    ctl_env.celery.set_current()
    return ctl_env


def cli(*args, timeout=60):
    """Runs the celery command line against the test broker (app pyinterop)."""
    env = dict(os.environ, PYINTEROP_BROKER=BROKER_URL, PYINTEROP_BACKEND=BACKEND_URL, PYTHONPATH=HERE)
    out = subprocess.run([CELERY, "-A", "pyinterop", *args], cwd=HERE, env=env, capture_output=True,
                         text=True, timeout=timeout)
    return out.returncode, out.stdout + out.stderr


def inspect(env, timeout=3.0):
    return env.celery.control.inspect(destination=[env.host], timeout=timeout)


# --- inspect ----------------------------------------------------------------

def test_cli_inspect_ping(env):
    code, out = cli("inspect", "ping", "-d", env.host, "-t", "5")
    assert code == 0, out
    assert f"{env.host}: OK" in out and "pong" in out


def test_cli_inspect_registered_and_stats_json(env):
    code, out = cli("inspect", "registered", "-d", env.host, "-t", "5", "--json")
    assert code == 0, out
    got = json.loads(out.strip().splitlines()[-1])
    assert "interop.add" in got[env.host]
    code, out = cli("inspect", "stats", "-d", env.host, "-t", "5", "--json")
    assert code == 0, out
    stats = json.loads(out.strip().splitlines()[-1])[env.host]
    assert stats["pool"]["max-concurrency"] == 4
    assert int(stats["clock"]) > 0 and stats["pid"] == env.worker.pid
    assert stats["broker"]["transport"] in ("amqp", "redis")


def test_inspect_api(env):
    i = inspect(env)
    assert i.ping() == {env.host: {"ok": "pong"}}
    assert i.clock()[env.host]["clock"] > 0
    queues = i.active_queues()[env.host]
    assert [q["name"] for q in queues] == [env.queue]
    assert queues[0]["exchange"]["type"] == "direct"


def test_inspect_active_reserved_query(env):
    r = flaskapp.sleep.delay(3)
    i = inspect(env)
    active = wait_until(lambda: i.active().get(env.host), TIMEOUT, message="task active")
    info = next(a for a in active if a["id"] == r.id)
    assert info["name"] == "interop.sleep" and info["args"] == [3]
    assert info["hostname"] == env.host and info["time_start"] and info["acknowledged"]
    assert info["delivery_info"]["routing_key"] == env.queue
    q = i.query_task(r.id)[env.host]
    assert q[r.id][0] == "active"
    safe = i.active(safe=True)[env.host]
    assert next(a for a in safe if a["id"] == r.id)["args"] == "(3,)"
    r.revoke(terminate=True)


def test_inspect_scheduled_then_revoke(env, rdb):
    key = f"ctl:revoke:{new_uid()}"
    r = flaskapp.counter.apply_async((key,), countdown=3)
    i = inspect(env)
    sched = wait_until(lambda: i.scheduled().get(env.host), TIMEOUT, message="task scheduled")
    entry = next(s for s in sched if s["request"]["id"] == r.id)
    assert entry["eta"] and entry["request"]["name"] == "interop.counter"
    # celery control revoke: the queued task never runs.
    code, out = cli("control", "revoke", r.id)
    assert code == 0, out
    assert AsyncResult(r.id, app=env.celery).state == "REVOKED"
    assert r.id in i.revoked()[env.host]
    time.sleep(4)
    assert rdb.get(key) is None, "a revoked task ran"
    with pytest.raises(TaskRevokedError):
        r.get(timeout=TIMEOUT)


def test_revoke_terminate_running(env):
    r = flaskapp.sleep.delay(30)
    i = inspect(env)
    wait_until(lambda: any(a["id"] == r.id for a in i.active().get(env.host) or []), TIMEOUT,
               message="task running")
    started = time.monotonic()
    code, out = cli("control", "terminate", "SIGTERM", r.id)
    assert code == 0, out
    wait_until(lambda: not any(a["id"] == r.id for a in i.active().get(env.host) or []), TIMEOUT,
               message="task terminated")
    assert time.monotonic() - started < 10
    with pytest.raises(TaskRevokedError):
        r.get(timeout=TIMEOUT)


def test_rate_limit_and_time_limit(env):
    c = env.celery.control
    reply = c.rate_limit("interop.echo", "100/m", destination=[env.host], reply=True)
    assert reply == [{env.host: {"ok": "new rate limit set successfully"}}]
    assert "interop.echo [rate_limit=100/m]" in inspect(env).registered("rate_limit")[env.host]
    reply = c.rate_limit("interop.nosuch", "1/s", destination=[env.host], reply=True)
    assert reply == [{env.host: {"error": "unknown task"}}]
    reply = c.rate_limit("interop.echo", "", destination=[env.host], reply=True)
    assert reply == [{env.host: {"ok": "rate limit disabled successfully"}}]
    reply = c.time_limit("interop.progress", soft=0.3, hard=5, destination=[env.host], reply=True)
    assert reply == [{env.host: {"ok": "time limits set successfully"}}]
    r = flaskapp.progress.delay(10, 0.1)
    with pytest.raises(Exception) as exc:
        r.get(timeout=TIMEOUT)
    assert type(exc.value).__name__ == "SoftTimeLimitExceeded"
    c.time_limit("interop.progress", soft=None, hard=None, destination=[env.host], reply=True)


def test_add_and_cancel_consumer(env):
    extra = f"ctl_extra_{new_uid()}"
    c = env.celery.control
    try:
        reply = c.add_consumer(extra, destination=[env.host], reply=True)
        assert reply == [{env.host: {"ok": f"add consumer {extra}"}}]
        names = [q["name"] for q in inspect(env).active_queues()[env.host]]
        assert extra in names
        r = env.celery.send_task("interop.add", (20, 22), queue=extra)
        assert r.get(timeout=TIMEOUT) == 42
        reply = c.cancel_consumer(extra, destination=[env.host], reply=True)
        assert reply == [{env.host: {"ok": f"no longer consuming from {extra}"}}]
        names = [q["name"] for q in inspect(env).active_queues()[env.host]]
        assert extra not in names and env.queue in names
    finally:
        delete_queues([extra])


def test_enable_disable_events(env):
    c = env.celery.control
    assert c.disable_events(destination=[env.host], reply=True) == [{env.host: {"ok": "task events disabled"}}]
    assert c.enable_events(destination=[env.host], reply=True) == [{env.host: {"ok": "task events enabled"}}]
    assert c.enable_events(destination=[env.host], reply=True) == [{env.host: {"ok": "task events already enabled"}}]


# --- events -----------------------------------------------------------------

class EventTap:
    """Captures events from the broker with Celery's own Receiver, the way
    Flower does, in a thread."""

    def __init__(self, app):
        self.app = app
        self.events = []
        self.lock = threading.Lock()
        self.ready = threading.Event()
        self.conn = app.connection_for_read()
        self.recv = app.events.Receiver(self.conn, handlers={"*": self._on})
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _on(self, event):
        with self.lock:
            self.events.append(event)

    def _run(self):
        for _ in self.recv.consume(limit=None, timeout=None, wakeup=False):
            self.ready.set()

    def of(self, host, type_=None, uuid=None):
        with self.lock:
            return [e for e in self.events if e.get("hostname") == host
                    and (type_ is None or e["type"] == type_) and (uuid is None or e.get("uuid") == uuid)]

    def close(self):
        self.recv.should_stop = True
        try:
            self.conn.close()
        except Exception:  # noqa: BLE001
            pass


@pytest.fixture
def tap(env):
    t = EventTap(env.celery)
    # The first heartbeat proves the receiver is bound before tasks are sent.
    wait_until(lambda: t.of(env.host, "worker-heartbeat"), TIMEOUT, message="worker-heartbeat seen")
    yield t
    t.close()


def test_events_seen_by_celery_receiver(env, tap):
    hb = tap.of(env.host, "worker-heartbeat")[-1]
    for field in ("freq", "active", "processed", "loadavg", "sw_ident", "sw_ver", "sw_sys",
                  "clock", "pid", "utcoffset", "timestamp", "local_received"):
        assert field in hb, field
    ok = flaskapp.add.delay(2, 3)
    bad = flaskapp.fail.delay("evt")
    retry = flaskapp.retry.delay(1)
    # Already expired when sent: a 1 ms expiry can still be in the future
    # when a fast worker receives the message.
    expired = flaskapp.add.apply_async((1, 1), expires=datetime.now(timezone.utc) - timedelta(seconds=5))
    ok.get(timeout=TIMEOUT)
    bad.get(timeout=TIMEOUT, propagate=False)
    retry.get(timeout=TIMEOUT)
    want = [(ok.id, "task-received"), (ok.id, "task-started"), (ok.id, "task-succeeded"),
            (bad.id, "task-failed"), (retry.id, "task-retried"), (retry.id, "task-succeeded"),
            (expired.id, "task-revoked")]
    for uid, typ in want:
        wait_until(lambda: tap.of(env.host, typ, uid), TIMEOUT, message=f"{typ} for {uid}")
    rec = tap.of(env.host, "task-received", ok.id)[0]
    assert rec["name"] == "interop.add" and rec["args"] == "(2, 3)" and rec["kwargs"] == "{}"
    assert rec["retries"] == 0 and rec["root_id"] == ok.id
    suc = tap.of(env.host, "task-succeeded", ok.id)[0]
    assert suc["result"] == "5" and suc["runtime"] >= 0
    fail = tap.of(env.host, "task-failed", bad.id)[0]
    assert fail["exception"] == "ValueError('evt')" and "ValueError: evt" in fail["traceback"]
    rev = tap.of(env.host, "task-revoked", expired.id)[0]
    assert rev["expired"] is True and rev["terminated"] is False
    # Celery's state machine, as Flower keeps it.
    state = env.celery.events.State()
    with tap.lock:
        for e in tap.events:
            state.event(dict(e))
    assert state.workers[env.host].alive
    assert state.tasks[ok.id].state == "SUCCESS" and state.tasks[ok.id].name == "interop.add"
    assert state.tasks[bad.id].state == "FAILURE"


# --- Flower -----------------------------------------------------------------

def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get_json(url):
    with urllib.request.urlopen(url, timeout=10) as resp:
        return json.loads(resp.read())


def test_flower_lists_go_worker_and_tasks(env, tmp_path):
    port = free_port()
    log = open(tmp_path / "flower.log", "w")
    proc_env = dict(os.environ, PYINTEROP_BROKER=BROKER_URL, PYINTEROP_BACKEND=BACKEND_URL, PYTHONPATH=HERE,
                    FLOWER_UNAUTHENTICATED_API="true")
    flower = subprocess.Popen([CELERY, "-A", "pyinterop", "flower", f"--port={port}", "--address=127.0.0.1",
                               "--inspect_timeout=3000"], cwd=HERE, env=proc_env, stdout=log, stderr=log)
    try:
        base = f"http://127.0.0.1:{port}"

        def up():
            try:
                return urllib.request.urlopen(base + "/healthcheck", timeout=2).status == 200
            except OSError:
                return False
        wait_until(up, 30, interval=0.2, message="flower up")
        # Flower learns of tasks from events: send some once it listens.
        time.sleep(1.5)
        rs = [flaskapp.add.delay(i, i) for i in range(3)]
        for r in rs:
            r.get(timeout=TIMEOUT)

        def worker_listed():
            workers = get_json(base + "/api/workers?refresh=1")
            return workers.get(env.host)
        info = wait_until(worker_listed, 30, interval=0.5, message="flower lists the Go worker")
        assert "interop.add" in info["registered"]
        assert info["stats"]["pool"]["max-concurrency"] == 4

        def tasks_seen():
            tasks = get_json(base + "/api/tasks")
            return all(tasks.get(r.id, {}).get("state") == "SUCCESS" for r in rs) and tasks
        tasks = wait_until(tasks_seen, 30, interval=0.5, message="flower shows the tasks")
        t = tasks[rs[0].id]
        assert t["name"] == "interop.add" and t["worker"] == env.host and t["result"] == "0"
    finally:
        flower.terminate()
        try:
            flower.wait(timeout=10)
        except subprocess.TimeoutExpired:
            flower.kill()
        log.close()


# --- shutdown ---------------------------------------------------------------

def test_control_shutdown(goworker_bin, tmp_path, request, amqp_queues):
    w = _start_go(goworker_bin, tmp_path, request.node, prefix="ctlshut")
    amqp_queues.track_worker_queues(w.queue)
    # Like a Python worker, the Go worker does not reply to shutdown (Celery
    # raises WorkerShutdown inside the handler), so the command line reports
    # that no node replied; what matters is that the worker stops warmly.
    cli("control", "shutdown", "-d", w.hostname, "-t", "1")
    assert w.proc.wait(timeout=TIMEOUT) == 0


# --- gocelery inspect / control (the Go command line) -------------------------

@pytest.fixture(scope="module")
def gocelery_cli(repo_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("gocli") / "gocelery"
    proc = subprocess.run(["go", "build", "-o", str(out), "./cmd/gocelery"], cwd=repo_root,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]

    def run(*args):
        p = subprocess.run([str(out), *args, "--broker", BROKER_URL], capture_output=True, text=True, timeout=60)
        return p.returncode, p.stdout, p.stderr
    return run


def test_gocelery_inspect_go_and_python_workers(env, py_worker, gocelery_cli):
    py = py_worker()
    code, out, err = gocelery_cli("inspect", "ping", "-d", f"{env.host},{py.hostname}", "-t", "5")
    assert code == 0, err
    assert f"->  {env.host}: OK\n        pong" in out and f"->  {py.hostname}: OK\n        pong" in out
    assert out.rstrip().endswith("2 nodes online.")
    code, out, err = gocelery_cli("inspect", "registered", "-d", py.hostname, "-t", "5", "--json")
    assert code == 0, err
    assert "pyinterop.add" in json.loads(out)[py.hostname]
    code, out, err = gocelery_cli("control", "rate_limit", "pyinterop.echo", "10/s", "-d", py.hostname, "-t", "5")
    assert code == 0, err
    assert "new rate limit set successfully" in out
    code, out, err = gocelery_cli("inspect", "ping", "-d", "nobody@nowhere", "-t", "0.5")
    assert code == 69 and "No nodes replied" in err


def test_gocelery_control_revoke(env, gocelery_cli, rdb):
    key = f"ctl:gorevoke:{new_uid()}"
    r = flaskapp.counter.apply_async((key,), countdown=2)
    code, out, err = gocelery_cli("control", "revoke", r.id, "-d", env.host, "-t", "5")
    assert code == 0, err
    assert f"tasks {{'{r.id}'}} flagged as revoked" in out
    with pytest.raises(TaskRevokedError):
        r.get(timeout=TIMEOUT)
    time.sleep(2.5)
    assert rdb.get(key) is None


# --- statedb and metrics ------------------------------------------------------

def test_statedb_keeps_revokes_across_restart(goworker_bin, tmp_path, request, amqp_queues, rdb):
    state = tmp_path / "worker.state"
    q = f"ctlstate_{new_uid()}"
    host = f"gostate-{new_uid()}@interop"
    w = _start_go(goworker_bin, tmp_path, request.node, queues=[q], name=host, flags=["--statedb", str(state)])
    amqp_queues.track_worker_queues(q)
    app = flaskapp.create_app(BROKER_URL, BACKEND_URL, q)
    celery = app.extensions["celery"]
    try:
        tid = new_uid()
        reply = celery.control.revoke(tid, destination=[host], reply=True)
        assert reply == [{host: {"ok": f"tasks {{'{tid}'}} flagged as revoked"}}]
        w.stop()
        w = _start_go(goworker_bin, tmp_path, request.node, queues=[q], name=host, flags=["--statedb", str(state)])
        key = f"ctl:state:{new_uid()}"
        r = celery.send_task("interop.counter", (key,), task_id=tid)
        wait_until(lambda: "Discarding revoked task" in w.log() and tid in w.log(), TIMEOUT,
                   message="restarted worker discards the revoked task")
        assert rdb.get(key) is None
        assert r.state == "REVOKED"
    finally:
        w.stop()
        close_celery(celery)


def test_metrics_and_healthz(goworker_bin, tmp_path, request, amqp_queues):
    port = free_port()
    w = _start_go(goworker_bin, tmp_path, request.node, prefix="ctlmetrics",
                  flags=["--metrics-addr", f"127.0.0.1:{port}"])
    amqp_queues.track_worker_queues(w.queue)
    app = flaskapp.create_app(BROKER_URL, BACKEND_URL, w.queue)
    celery = app.extensions["celery"]
    try:
        base = f"http://127.0.0.1:{port}"
        assert urllib.request.urlopen(base + "/healthz", timeout=5).read().strip() == b"ok"
        celery.send_task("interop.add", (1, 2)).get(timeout=TIMEOUT)
        celery.send_task("interop.fail", ("m",)).get(timeout=TIMEOUT, propagate=False)
        text = urllib.request.urlopen(base + "/metrics", timeout=5).read().decode()
        assert 'gocelery_tasks_succeeded_total{task="interop.add"} 1' in text
        assert 'gocelery_tasks_failed_total{task="interop.fail"} 1' in text
        assert 'gocelery_task_runtime_seconds_count{task="interop.add"} 1' in text
        assert "gocelery_broker_connected 1" in text and "gocelery_worker_consuming 1" in text
    finally:
        w.stop()
        close_celery(celery)
