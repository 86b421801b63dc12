"""Celery's rpc:// result backend with the Go worker: a Python app with
result_backend="rpc://" sends tasks (every one carries reply_to, the app's
oid queue) and reads the states the Go worker (--result-backend rpc://)
publishes back to that queue, with Celery 5.7's own AsyncResult: .get(),
.get(on_message=...), .state polling, FAILURE and REVOKED re-raised.

Runs on RabbitMQ and on Redis as broker (kombu's default-exchange LPUSH to
the oid list), whatever INTEROP_BROKER_URL says: rpc:// is a broker-side
backend, so both are this file's business. Redis DB 14 is this file's.
"""
import os
import re
import time
from types import SimpleNamespace

import pytest
import redis
from celery import Celery, chain
from celery.exceptions import TaskRevokedError
from celery.result import ResultSet

from conftest import BROKER_URL, GoWorker, attach_log, delete_queues, new_uid
from interop_helpers import echo_payload, poll_states, typed

TIMEOUT = 15
REDIS_DB = 14
REDIS_BROKER = f"redis://127.0.0.1:6379/{REDIS_DB}"
AMQP_BROKER = BROKER_URL if BROKER_URL.startswith("amqp") else "amqp://guest:guest@127.0.0.1:5672//"


def rpc_app(broker_url, queue):
    app = Celery(f"rpc_interop_{new_uid()}", broker=broker_url, backend="rpc://",
                 set_as_current=False)
    app.conf.update(task_default_queue=queue, broker_connection_retry_on_startup=False)
    return app


@pytest.fixture(scope="module", params=["amqp", "redis"])
def rpc_env(request, goworker_bin, tmp_path_factory):
    """One Go worker (--result-backend rpc:// --track-started) and one
    Python app on the broker, per broker."""
    broker_url = AMQP_BROKER if request.param == "amqp" else REDIS_BROKER
    queue = f"rpc_{request.param}_{new_uid()}"
    log_dir = tmp_path_factory.mktemp(f"rpc-{request.param}")
    worker = GoWorker(goworker_bin, [queue], os.path.join(str(log_dir), "goworker.log"),
                      f"rpc-{new_uid()}@interop", concurrency=4,
                      flags=["--track-started", "--default-queue", queue], backend_url="rpc://", broker_url=broker_url)
    app = rpc_app(broker_url, queue)
    try:
        worker.wait_ready()
        yield SimpleNamespace(worker=worker, app=app, queue=queue, broker_url=broker_url,
                              transport=request.param)
    finally:
        worker.stop()
        app.close()
        if request.param == "amqp":
            delete_queues([queue, f"{queue}.unregistered", f"{queue}.malformed"])
        else:
            redis.Redis.from_url(REDIS_BROKER).flushdb()


@pytest.fixture
def env(rpc_env, request):
    attach_log(request.node, rpc_env.worker.label, rpc_env.worker.log_path)
    assert rpc_env.worker.alive(), "Go worker died:\n" + rpc_env.worker.tail()
    return rpc_env


def test_get_returns_go_result(env):
    r = env.app.send_task("interop.add", args=[2, 3])
    assert r.get(timeout=TIMEOUT) == 5
    assert r.state == "SUCCESS" and r.successful()
    big = env.app.send_task("interop.add", args=[2**70, 1])
    assert big.get(timeout=TIMEOUT) == 2**70 + 1


def test_echo_types_round_trip(env):
    args, kwargs = echo_payload()
    r = env.app.send_task("interop.echo", args=args, kwargs=kwargs)
    got = r.get(timeout=TIMEOUT)
    assert typed(got["args"]) == typed(args)
    assert typed(got["kwargs"]) == typed(kwargs)


def test_failure_reraises(env):
    message = f"rpc boom {new_uid()} \u00fcn\u00efcode"
    r = env.app.send_task("interop.fail", args=[message])
    with pytest.raises(ValueError, match=re.escape(message)):
        r.get(timeout=TIMEOUT)
    assert r.state == "FAILURE" and r.failed()
    assert type(r.info) is ValueError and r.info.args == (message,)
    assert r.traceback.rstrip("\n").splitlines()[-1] == f"ValueError: {message}", r.traceback


def test_every_state_reaches_on_message(env):
    """get(on_message=...) is called with each state the worker published,
    in order: STARTED (--track-started), each PROGRESS, SUCCESS."""
    seen = []
    r = env.app.send_task("interop.progress", args=[3], kwargs={"delay": 0.05})
    assert r.get(timeout=TIMEOUT, on_message=seen.append) == 3
    assert [(m["status"], m["result"]) for m in seen][1:] == [
        ("PROGRESS", {"current": 1, "total": 3}),
        ("PROGRESS", {"current": 2, "total": 3}),
        ("PROGRESS", {"current": 3, "total": 3}),
        ("SUCCESS", 3)], seen
    assert seen[0]["status"] == "STARTED" and set(seen[0]["result"]) == {"pid", "hostname"}, seen[0]
    assert all(m["task_id"] == r.id for m in seen)


def test_progress_seen_by_polling_state(env):
    """.state/.info without get(): RPCBackend.get_task_meta reads the reply
    queue with basic_get and puts the latest state back. A fresh app, so
    its oid queue has no consumer that would take the states first.

    RabbitMQ only: on Redis, Celery 5.7's own polling loses the final state
    now and then (1 run in 6 with a Python worker as with this one: .state
    stays at the last PROGRESS), so there only get() is reliable."""
    if env.transport == "redis":
        pytest.skip("Celery's rpc:// .state polling on Redis drops the final state at times, "
                    "with a Python worker too; get() is tested there")
    app = rpc_app(env.broker_url, env.queue)
    try:
        r = app.send_task("interop.progress", args=[3], kwargs={"delay": 0.3})
        seen = poll_states(r, timeout=TIMEOUT)
    finally:
        app.close()
    progress = [info for state, info in seen if state == "PROGRESS"]
    assert progress, f"PROGRESS never seen through .state; seen {seen}"
    for info in progress:
        assert info["total"] == 3 and 1 <= info["current"] <= 3, info
    assert seen[-1] == ("SUCCESS", 3), seen


def test_retry_states(env):
    seen = []
    r = env.app.send_task("interop.retry", kwargs={"times": 2})
    assert r.get(timeout=TIMEOUT, on_message=seen.append) == 2
    assert [m["status"] for m in seen] == ["STARTED", "RETRY", "STARTED", "RETRY", "STARTED", "SUCCESS"], seen
    retry = seen[1]
    assert retry["result"]["exc_type"] == "ValueError" and retry["result"]["exc_message"] == ["retry 1 of 2"]


def test_expired_task_is_revoked(env):
    r = env.app.send_task("interop.add", args=[1, 1], expires=-1)
    with pytest.raises(TaskRevokedError):
        r.get(timeout=TIMEOUT)
    assert r.state == "REVOKED"


def test_revoked_eta_task_reraises(env):
    """A revoked countdown task: as Celery's worker, the Go worker publishes
    REVOKED (with the request's reply_to) when it discards the task."""
    r = env.app.send_task("interop.add", args=[2, 2], countdown=1.5)
    time.sleep(0.2)  # received and held by the worker
    env.app.control.revoke(r.id)
    with pytest.raises(TaskRevokedError):
        r.get(timeout=TIMEOUT)
    assert r.state == "REVOKED"


def test_many_results_one_reply_queue(env):
    """Fifty tasks share the client's one reply queue; each result reaches
    its own AsyncResult (by correlation_id), whichever order they finish in,
    with get() one by one and with ResultSet's native join."""
    rs = [env.app.send_task("interop.add", args=[i, 1000]) for i in range(50)]
    # Read in reverse so most states arrive before their get(): Celery
    # buffers them for the later waiter.
    assert [r.get(timeout=TIMEOUT) for r in reversed(rs)] == [i + 1000 for i in reversed(range(50))]
    more = ResultSet([env.app.send_task("interop.add", args=[i, 1]) for i in range(20)])
    assert more.join_native(timeout=TIMEOUT) == [i + 1 for i in range(20)]


def test_chain_result_reaches_the_client(env):
    """Celery's freeze gives every chain step the client's oid as reply_to;
    the Go worker sends the next step with it, so the last step's result
    comes back to the client, as with a Python worker."""
    c = chain(env.app.signature("interop.add", (1, 2)), env.app.signature("interop.add", (10,)),
              env.app.signature("interop.add", (100,)))
    assert c.apply_async().get(timeout=TIMEOUT) == 113


def test_states_of_other_clients_stay_apart(env):
    """Two apps, two reply queues: each gets only its own results."""
    other = rpc_app(env.broker_url, env.queue)
    try:
        a = env.app.send_task("interop.add", args=[1, 2])
        b = other.send_task("interop.add", args=[10, 20])
        assert b.get(timeout=TIMEOUT) == 30
        assert a.get(timeout=TIMEOUT) == 3
        assert env.app.thread_oid != other.thread_oid
    finally:
        other.close()


def test_reply_to_as_sent(env):
    """The Go worker answers to the message's reply_to, whichever queue it
    names: app A sends with B's oid as reply_to, and B reads the result."""
    b = rpc_app(env.broker_url, env.queue)
    try:
        # B's first task declares B's reply queue, as Celery's on_task_call does.
        assert b.send_task("interop.add", args=[1, 1]).get(timeout=TIMEOUT) == 2
        r = env.app.send_task("interop.add", args=[4, 4], reply_to=b.thread_oid)
        assert b.AsyncResult(r.id).get(timeout=TIMEOUT) == 8
    finally:
        b.close()
