"""The Python mirror (pyinterop.*) on a real Python Celery worker behaves as
the contract says: the reference the Go worker is held to, and the consumer
for Go-producer tests."""
import re
from datetime import datetime, timedelta, timezone

import pytest
from celery.exceptions import TaskRevokedError

from conftest import new_uid
from interop_helpers import ADD_CASES, StateTap, echo_payload, poll_states, typed

TIMEOUT = 15


@pytest.fixture
def py(py_worker, flask_app):
    worker = py_worker()
    app = flask_app(worker.queue, task_namespace="pyinterop")
    celery = app.extensions["celery"]

    def send(name, args=(), kwargs=None, **options):
        return celery.send_task(f"pyinterop.{name}", args=list(args), kwargs=kwargs or {},
                                **options)
    send.worker = worker
    send.celery = celery
    return send


def test_pyinterop_contract(py, rdb, redis_prefix):
    for x, y, want in ADD_CASES:
        assert typed(py("add", (x, y)).get(timeout=TIMEOUT)) == typed(want), (x, y)

    args, kwargs = echo_payload()
    got = py("echo", args, kwargs).get(timeout=TIMEOUT)
    assert typed(got) == typed({"args": args, "kwargs": kwargs})

    r = py("fail", ("py boom",))
    with pytest.raises(ValueError, match=re.escape("py boom")):
        r.get(timeout=TIMEOUT)
    assert r.state == "FAILURE" and "ValueError" in r.traceback

    assert py("sleep", (0.1,)).get(timeout=TIMEOUT) == 0.1

    key = redis_prefix + "pyc"
    assert [py("counter", (key,), {"sleep": 0.01}).get(timeout=TIMEOUT) for _ in range(2)] == [1, 2]

    custom = {"x-trace-id": new_uid()}
    r = py("request", headers=custom)
    got = r.get(timeout=TIMEOUT)
    assert got["id"] == got["root_id"] == r.id
    assert got["parent_id"] is None and got["retries"] == 0
    assert got["task"] == "pyinterop.request"
    assert got["hostname"] == py.worker.hostname
    assert got["delivery_info"]["routing_key"] == py.worker.queue
    assert got["headers"]["x-trace-id"] == custom["x-trace-id"]

    r = py("add", (1, 2), expires=datetime.now(timezone.utc) - timedelta(seconds=10))
    with pytest.raises(TaskRevokedError):
        r.get(timeout=TIMEOUT)
    assert r.state == "REVOKED"


def test_pyinterop_progress_and_retry(py, rdb):
    tap = StateTap(rdb)
    try:
        p = py("progress", (2,), {"delay": 0.2})
        seen = poll_states(p)
        r = py("retry", (2,))
        assert r.get(timeout=TIMEOUT) == 2
        p_states = [(m["status"], m["result"]) for m in tap.states(p.id)]
        r_states = [m["status"] for m in tap.states(r.id)]
    finally:
        tap.close()
    assert ("PROGRESS", {"current": 2, "total": 2}) in seen
    assert p_states == [("PROGRESS", {"current": 1, "total": 2}),
                        ("PROGRESS", {"current": 2, "total": 2}), ("SUCCESS", 2)]
    assert r_states == ["RETRY", "RETRY", "SUCCESS"]
