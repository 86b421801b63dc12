"""The Go worker driven by real Python Celery 5.7.0 (RabbitMQ broker, Redis
results), through an unchanged Flask app (flaskapp.py).

Every contract task is sent three ways (task.delay, task.apply_async,
app.send_task) and read back with AsyncResult (.get, .state, .info,
.traceback). Most tests share one Go worker (module scope, its own queue);
tests needing other worker flags start their own.
"""
import re
import time
from datetime import datetime, timedelta, timezone
from types import SimpleNamespace
from uuid import uuid4

import pytest
from celery.exceptions import TaskRevokedError, TimeLimitExceeded

import flaskapp
from conftest import (BACKEND_URL, BROKER_URL, _start_go, attach_log, close_celery,
                      delete_queues, message_count, new_uid, wait_until)
from interop_helpers import ADD_CASES, StateTap, echo_payload, flask_result, poll_states, typed

VIAS = ["delay", "apply_async", "send_task"]
TIMEOUT = 15  # seconds for any single result


@pytest.fixture(scope="module")
def shared_env(goworker_bin, tmp_path_factory):
    """One Go worker (-c 4 --result-extended) and one Flask app for the
    module; each test uses fresh task ids."""
    log_dir = tmp_path_factory.mktemp("shared-goworker")
    worker = _start_go(goworker_bin, log_dir, None, concurrency=4,
                       flags=["--result-extended"], prefix="gw")
    app = flaskapp.create_app(BROKER_URL, BACKEND_URL, worker.queue)
    yield SimpleNamespace(worker=worker, app=app, celery=app.extensions["celery"],
                          queue=worker.queue)
    worker.stop()
    close_celery(app.extensions["celery"])
    delete_queues([worker.queue, f"{worker.queue}.unregistered", f"{worker.queue}.malformed"])


@pytest.fixture
def env(shared_env, request):
    attach_log(request.node, shared_env.worker.label, shared_env.worker.log_path)
    assert shared_env.worker.alive(), "shared Go worker died:\n" + shared_env.worker.tail()
    # flaskapp's module-level shared_task proxies resolve to the current app.
    shared_env.celery.set_current()
    return shared_env


def send(env, via, short, args=(), kwargs=None, **options):
    """Sends interop.<short> the way `via` says."""
    kwargs = kwargs or {}
    task = flaskapp.TASKS[short]
    if via == "delay":
        assert not options, "delay() takes no options"
        r = task.delay(*args, **kwargs)
    elif via == "apply_async":
        r = task.apply_async(args, kwargs, **options)
    elif via == "send_task":
        r = env.celery.send_task(f"interop.{short}", args=list(args), kwargs=kwargs, **options)
    else:
        raise ValueError(via)
    if via != "send_task":
        # The proxy must have resolved to this module's app, not another one.
        assert task._get_current_object().app is env.celery
    return r


# --- interop.add -------------------------------------------------------------

@pytest.mark.parametrize("via", VIAS)
def test_add_number_types(env, via):
    results = [(x, y, want, send(env, via, "add", (x, y))) for x, y, want in ADD_CASES]
    # kwargs form too
    results.append((4, 5, 9, send(env, via, "add", kwargs={"x": 4, "y": 5})))
    for x, y, want, r in results:
        got = r.get(timeout=TIMEOUT)
        assert typed(got) == typed(want), f"add({x!r}, {y!r}) = {got!r}, want {want!r}"
        assert r.state == "SUCCESS"
        assert r.successful()


# --- interop.echo ------------------------------------------------------------

@pytest.mark.parametrize("via", VIAS)
def test_echo_round_trips_types(env, via):
    args, kwargs = echo_payload()
    r = send(env, via, "echo", args, kwargs)
    got = r.get(timeout=TIMEOUT)
    assert set(got) == {"args", "kwargs"}
    for i, (want, have) in enumerate(zip(args, got["args"])):
        assert typed(have) == typed(want), f"args[{i}]: sent {want!r}, got back {have!r}"
    assert len(got["args"]) == len(args)
    assert typed(got["kwargs"]) == typed(kwargs)


def test_echo_no_arguments(env):
    assert env.celery.send_task("interop.echo").get(timeout=TIMEOUT) == {"args": [], "kwargs": {}}


# --- interop.fail ------------------------------------------------------------

@pytest.mark.parametrize("via", VIAS)
def test_fail_reraises_value_error(env, via):
    message = f"boom {new_uid()} \u00fcn\u00efcode (parens) [x]"
    r = send(env, via, "fail", (message,))
    with pytest.raises(ValueError, match=re.escape(message)):
        r.get(timeout=TIMEOUT)
    assert r.state == "FAILURE"
    assert r.failed()
    assert type(r.info) is ValueError
    assert r.info.args == (message,)
    assert isinstance(r.traceback, str) and r.traceback.strip(), r.traceback
    assert "ValueError" in r.traceback
    # propagate=False returns the exception instead of raising it
    assert type(r.get(timeout=TIMEOUT, propagate=False)) is ValueError


def test_fail_traceback_ends_like_python(env):
    # A Python traceback's last line is "<ExcType>: <message>"; tools that
    # show or group failures (Flower, Sentry, log scrapers) read that line.
    message = f"tb-{new_uid()}"
    r = send(env, "delay", "fail", (message,))
    r.get(timeout=TIMEOUT, propagate=False)
    assert r.traceback.startswith("Traceback (most recent call last):")
    assert r.traceback.rstrip("\n").splitlines()[-1] == f"ValueError: {message}", r.traceback


def test_fail_message_as_kwarg(env):
    message = f"kw-{new_uid()}"
    r = send(env, "apply_async", "fail", kwargs={"message": message})
    with pytest.raises(ValueError, match=re.escape(message)):
        r.get(timeout=TIMEOUT)


# --- interop.sleep -----------------------------------------------------------

@pytest.mark.parametrize("via", VIAS)
def test_sleep_returns_seconds(env, via):
    t0 = time.monotonic()
    r = send(env, via, "sleep", (0.3,))
    got = r.get(timeout=TIMEOUT)
    elapsed = time.monotonic() - t0
    assert typed(got) == typed(0.3)
    assert elapsed >= 0.3, elapsed


def test_sleep_int_seconds_returns_int(env):
    assert typed(send(env, "send_task", "sleep", (1,)).get(timeout=TIMEOUT)) == typed(1)


# --- interop.progress --------------------------------------------------------

@pytest.mark.parametrize("via", VIAS)
def test_progress_states_visible(env, via, rdb):
    tap = StateTap(rdb)
    try:
        r = send(env, via, "progress", (3,), {"delay": 0.3})
        seen = poll_states(r, timeout=TIMEOUT)
        published = [(m["status"], m["result"]) for m in tap.states(r.id)]
    finally:
        tap.close()
    progress_seen = [info for state, info in seen if state == "PROGRESS"]
    assert progress_seen, f"PROGRESS never visible through AsyncResult.state; seen {seen}"
    for info in progress_seen:
        assert set(info) == {"current", "total"}, info
        assert info["total"] == 3 and 1 <= info["current"] <= 3, info
    currents = [info["current"] for info in progress_seen]
    assert currents == sorted(currents), f"progress went backwards: {currents}"
    # Every state the worker stored, in order (deterministic, via PUBLISH):
    assert published == [("PROGRESS", {"current": 1, "total": 3}),
                         ("PROGRESS", {"current": 2, "total": 3}),
                         ("PROGRESS", {"current": 3, "total": 3}),
                         ("SUCCESS", 3)], published
    assert seen[-1][0] == "SUCCESS"
    assert r.get(timeout=TIMEOUT) == 3


# --- interop.retry -----------------------------------------------------------

@pytest.mark.parametrize("via", VIAS)
def test_retry_until_times(env, via, rdb):
    tap = StateTap(rdb)
    try:
        r = send(env, via, "retry", (3,))
        seen = poll_states(r, timeout=TIMEOUT, interval=0.005)
        metas = tap.states(r.id)
    finally:
        tap.close()
    assert r.get(timeout=TIMEOUT) == 3
    assert r.state == "SUCCESS"
    assert r.retries == 3  # result_extended
    statuses = [m["status"] for m in metas]
    assert statuses == ["RETRY", "RETRY", "RETRY", "SUCCESS"], statuses
    assert [m["result"]["exc_type"] for m in metas[:3]] == ["ValueError"] * 3
    assert [m["retries"] for m in metas] == [0, 1, 2, 3]
    # Polling AsyncResult.state also saw RETRY (3 windows of ~0.1 s each).
    retry_seen = [info for state, info in seen if state == "RETRY"]
    assert retry_seen, f"RETRY never visible through AsyncResult.state; seen {seen}"


# --- interop.counter ---------------------------------------------------------

@pytest.mark.parametrize("via", VIAS)
def test_counter_increments_redis(env, via, rdb, redis_prefix):
    key = redis_prefix + "counter"
    got = [send(env, via, "counter", (key,)).get(timeout=TIMEOUT) for _ in range(3)]
    got.append(send(env, via, "counter", (key,), {"sleep": 0.05}).get(timeout=TIMEOUT))
    assert got == [1, 2, 3, 4]
    assert rdb.get(key) == b"4"


# --- interop.request ---------------------------------------------------------

@pytest.mark.parametrize("via", VIAS)
def test_request_context(env, via):
    custom = {"x-trace-id": new_uid(), "tenant": "acme", "n": 7}
    options = {} if via == "delay" else {"headers": custom}
    r = send(env, via, "request", **options)
    got = r.get(timeout=TIMEOUT)
    assert got["id"] == r.id
    assert got["task"] == "interop.request"
    assert got["retries"] == 0
    assert got["root_id"] == r.id
    assert got["parent_id"] is None
    assert got["group"] is None
    assert got["eta"] is None
    assert got["expires"] is None
    assert got["hostname"] == env.worker.hostname
    assert got["args"] == [] and got["kwargs"] == {}
    di = got["delivery_info"]
    assert di["routing_key"] == env.queue
    assert di["exchange"] == ""
    assert di["redelivered"] is False
    if via != "delay":
        for k, v in custom.items():
            assert got["headers"].get(k) == v, (k, got["headers"])
    # Celery's own headers are not custom headers
    for celery_header in ("task", "id", "root_id", "argsrepr", "lang"):
        assert celery_header not in got["headers"], got["headers"]


def test_request_args_kwargs_and_task_id(env):
    task_id = f"fixed-{new_uid()}"
    r = env.celery.send_task("interop.request", args=[1, "a"], kwargs={"k": [2]},
                             task_id=task_id)
    got = r.get(timeout=TIMEOUT)
    assert r.id == task_id == got["id"] == got["root_id"]
    assert got["args"] == [1, "a"] and got["kwargs"] == {"k": [2]}


# --- delivery options --------------------------------------------------------

@pytest.mark.parametrize("via", ["apply_async", "send_task"])
def test_countdown_delays_execution(env, via):
    t0 = time.monotonic()
    sent_at = datetime.now(timezone.utc)
    r = send(env, via, "request", countdown=1)
    got = r.get(timeout=TIMEOUT)
    elapsed = time.monotonic() - t0
    assert elapsed >= 1.0, f"countdown=1 task finished after {elapsed:.3f}s"
    assert elapsed < 5.0, f"countdown=1 task took {elapsed:.3f}s"
    assert got["eta"] is not None
    eta = got["eta"] if isinstance(got["eta"], datetime) else datetime.fromisoformat(got["eta"])
    assert timedelta(seconds=0.9) <= eta - sent_at <= timedelta(seconds=2), (eta, sent_at)
    assert r.date_done is not None
    assert r.date_done - sent_at >= timedelta(seconds=1), (r.date_done, sent_at)


@pytest.mark.parametrize("via", ["apply_async", "send_task"])
def test_expired_task_is_revoked(env, via, rdb, redis_prefix):
    key = redis_prefix + "expired"
    r = send(env, via, "counter", (key,),
             expires=datetime.now(timezone.utc) - timedelta(seconds=10))
    wait_until(lambda: r.state == "REVOKED", TIMEOUT, message=f"REVOKED state of {r.id}")
    with pytest.raises(TaskRevokedError, match="expired"):
        r.get(timeout=TIMEOUT)
    assert rdb.get(key) is None, "an expired task must not run"
    # the message was acked, not left in the queue
    assert message_count(env.queue) == 0


def test_time_limit_fails_with_time_limit_exceeded(env):
    t0 = time.monotonic()
    r = send(env, "apply_async", "sleep", (5,), time_limit=1)
    with pytest.raises(TimeLimitExceeded):
        r.get(timeout=TIMEOUT)
    elapsed = time.monotonic() - t0
    assert r.state == "FAILURE"
    assert isinstance(r.info, TimeLimitExceeded)
    assert elapsed < 4.0, f"hard limit 1 s enforced only after {elapsed:.2f}s"
    # the worker is still healthy afterwards
    assert send(env, "delay", "add", (1, 1)).get(timeout=TIMEOUT) == 2


def test_no_started_state_without_track_started(env, rdb):
    tap = StateTap(rdb)
    try:
        r = send(env, "delay", "sleep", (0.3,))
        seen = poll_states(r, timeout=TIMEOUT)
        statuses = [m["status"] for m in tap.states(r.id)]
    finally:
        tap.close()
    assert statuses == ["SUCCESS"]
    assert {s for s, _ in seen} <= {"PENDING", "SUCCESS"}, seen


def test_track_started(go_worker, flask_app, rdb):
    worker = go_worker(flags=["--track-started"], concurrency=2)
    app = flask_app(worker.queue)
    celery = app.extensions["celery"]
    tap = StateTap(rdb)
    try:
        r = celery.tasks["interop.sleep"].delay(1.5)
        seen = poll_states(r, timeout=TIMEOUT)
        statuses = [m["status"] for m in tap.states(r.id)]
    finally:
        tap.close()
    assert statuses == ["STARTED", "SUCCESS"]
    started = [info for state, info in seen if state == "STARTED"]
    assert started, f"STARTED never visible while sleeping; seen {seen}"
    assert started[0]["hostname"] == worker.hostname
    assert isinstance(started[0]["pid"], int) and started[0]["pid"] > 0
    assert r.get(timeout=TIMEOUT) == 1.5


def test_priority(go_worker, flask_app, rdb, redis_prefix):
    """With x-max-priority and one task at a time, a priority-9 task queued
    after five priority-1 tasks runs before them."""
    worker = go_worker(flags=["--max-priority", "10", "--acks-late",
                              "--prefetch-multiplier", "1"], concurrency=1)
    app = flask_app(worker.queue, task_queue_max_priority=10)
    celery = app.extensions["celery"]
    counter = celery.tasks["interop.counter"]
    key = redis_prefix + "prio"
    blocker = celery.tasks["interop.sleep"].delay(1.0)
    # Once the blocker is delivered the worker (prefetch 1, late ack) takes
    # nothing more until it finishes, so the rest waits in RabbitMQ.
    wait_until(lambda: message_count(worker.queue) == 0, 5, message="blocker delivered")
    # RabbitMQ: higher is more urgent. kombu's Redis transport: 0 is.
    low_p, high_p = (9, 0) if BROKER_URL.startswith("redis") else (1, 9)
    lows = [counter.apply_async((key,), priority=low_p) for _ in range(5)]
    high = counter.apply_async((key,), priority=high_p)
    assert not blocker.ready(), "blocker finished too early for the test to mean anything"
    assert high.get(timeout=TIMEOUT) == 1, f"priority {high_p} task did not run first"
    assert sorted(r.get(timeout=TIMEOUT) for r in lows) == [2, 3, 4, 5, 6]
    assert blocker.get(timeout=TIMEOUT) == 1.0
    got = celery.tasks["interop.request"].apply_async(priority=7).get(timeout=TIMEOUT)
    assert got["delivery_info"]["priority"] == 7


# --- the Flask app -----------------------------------------------------------

def test_flask_routes(env):
    client = env.app.test_client()
    resp = client.post("/add", json={"x": 2, "y": 3})
    assert resp.status_code == 202
    body = flask_result(client, resp.get_json()["result_id"])
    assert body == {"state": "SUCCESS", "ready": True, "result": 5}

    resp = client.post("/add", json={"x": 2**70, "y": 0.5})
    body = flask_result(client, resp.get_json()["result_id"])
    assert body["state"] == "SUCCESS" and body["result"] == 2**70 + 0.5

    resp = client.post("/echo", json={"args": [1, "\u00fc"], "kwargs": {"k": None}})
    body = flask_result(client, resp.get_json()["result_id"])
    assert body["result"] == {"args": [1, "\u00fc"], "kwargs": {"k": None}}

    resp = client.post("/fail", json={"message": "flask boom"})
    body = flask_result(client, resp.get_json()["result_id"])
    assert body["state"] == "FAILURE"
    assert body["result"] == {"exc_type": "ValueError", "exc_message": "flask boom"}

    resp = client.post("/request", json={"headers": {"x-from": "flask"}})
    rid = resp.get_json()["result_id"]
    body = flask_result(client, rid)
    assert body["state"] == "SUCCESS"
    assert body["result"]["id"] == rid
    assert body["result"]["hostname"] == env.worker.hostname
    assert body["result"]["headers"]["x-from"] == "flask"
    assert body["result"]["delivery_info"]["routing_key"] == env.queue

    resp = client.post("/tasks/counter", json={"args": [f"interop:{new_uid()}:flask"]})
    assert flask_result(client, resp.get_json()["result_id"])["result"] == 1

    assert client.get(f"/result/{uuid4()}").get_json() == {
        "state": "PENDING", "ready": False, "result": None}


def test_flask_stubs_are_flask_tasks(env):
    task = env.celery.tasks["interop.add"]
    assert "FlaskTask" in [c.__name__ for c in type(task).__mro__]
    assert env.celery.conf.task_default_queue == env.queue
    assert env.celery.conf.result_extended is True
    with pytest.raises(NotImplementedError, match="runs on the Go worker"):
        task(1, 2)  # the body is Go's; calling it locally is a mistake
