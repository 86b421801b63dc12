"""Go -> Celery result backend: task states stored by the Go `results`
package must be read by Celery's own AsyncResult/GroupResult exactly as if a
Python worker had stored them.

Runs `go test ./results -run '^TestExportResults$'` with
GOCELERY_RESULTS_PREFIX and GOCELERY_REDIS_DB set; that test stores fixed
task ids (results/export_test.go, exportCases) under the prefix, and this
file reads them through a Celery app configured with the same
`global_keyprefix`. The keys are deleted afterwards.
"""
import datetime
import decimal
import os
import subprocess
import uuid

import pytest
import redis
from celery import Celery
from celery.exceptions import TaskRevokedError
from celery.exceptions import TimeoutError as CeleryTimeoutError
from celery.result import AsyncResult, GroupResult

# DB 9-15 are for tests; 13 is this file's.
DB = 13
URL = f"redis://127.0.0.1:6379/{DB}"
UTC = datetime.timezone.utc
WHEN = datetime.datetime(2030, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)


@pytest.fixture(scope="module")
def app(repo_root):
    # No trailing separator: Celery and Go must both append "_".
    prefix = f"gocelery-it-{uuid.uuid4().hex}"
    client = redis.Redis.from_url(URL)
    app = Celery("gocelery_results_interop", set_as_current=False)
    app.conf.update(
        result_backend=URL,
        result_backend_transport_options={"global_keyprefix": prefix},
        result_extended=True,
    )
    try:
        cmd = ["go", "test", "./results", "-run", "^TestExportResults$",
               "-count=1", "-v"]
        proc = subprocess.run(
            cmd, cwd=repo_root, capture_output=True, text=True, timeout=600,
            env=dict(os.environ, GOCELERY_RESULTS_PREFIX=prefix,
                     GOCELERY_REDIS_DB=str(DB)))
        if proc.returncode != 0 or "--- PASS: TestExportResults" not in proc.stdout:
            pytest.fail(f"`{' '.join(cmd)}` did not pass (exit {proc.returncode}):\n"
                        f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}",
                        pytrace=False)
        keys = [k.decode() for k in client.scan_iter(match=prefix + "*")]
        assert keys, f"Go stored nothing under {prefix!r} in DB {DB}"
        assert all(k.startswith(prefix + "_celery-task") for k in keys), keys
        yield app
    finally:
        app.close()
        for key in client.scan_iter(match=prefix + "*"):
            client.delete(key)
        client.close()


def result(app, task_id):
    return AsyncResult(task_id, app=app)


def test_success_int_with_extended_fields(app):
    r = result(app, "gocelery-int")
    assert r.state == "SUCCESS"
    assert r.ready() and r.successful()
    assert r.result == 42
    assert r.info == 42
    assert r.get(timeout=5) == 42
    assert r.traceback is None
    assert r.date_done == WHEN
    assert r.name == "proj.add"
    assert r.args == [20, 22]
    assert r.kwargs == {"debug": False}
    assert r.worker == "gocelery@test"
    assert r.retries == 1
    assert r.queue == "celery"
    assert [c.id for c in r.children] == ["gocelery-child"]


def test_success_nested_kombu_types(app):
    r = result(app, "gocelery-nested")
    want = {
        "items": [1, 2.5, "three", None, True],
        "when": WHEN,
        "price": decimal.Decimal("12.50"),
        "nested": {"a": [{"b": "c"}]},
    }
    got = r.get(timeout=5)
    assert got == want
    assert isinstance(got["price"], decimal.Decimal)
    assert str(got["price"]) == "12.50"
    assert got["when"].tzinfo is not None
    assert r.state == "SUCCESS"
    assert r.info == want
    assert isinstance(r.date_done, datetime.datetime)  # set by Store


def test_failure_value_error(app):
    r = result(app, "gocelery-failure")
    assert r.state == "FAILURE"
    assert r.failed() and r.ready()
    assert isinstance(r.result, ValueError)
    assert r.result.args == ("bad input", 42)
    assert isinstance(r.info, ValueError)
    with pytest.raises(ValueError) as excinfo:
        r.get(timeout=5)
    assert excinfo.value.args == ("bad input", 42)
    assert str(excinfo.value) == "('bad input', 42)"
    assert r.traceback == ('Traceback (most recent call last):\n'
                           '  File "main.go", line 1, in task\n'
                           "ValueError: ('bad input', 42)\n")
    assert r.get(timeout=5, propagate=False).args == ("bad input", 42)


def test_failure_plain_go_error(app):
    r = result(app, "gocelery-go-error")
    with pytest.raises(RuntimeError, match="^disk full$"):
        r.get(timeout=5)
    assert r.traceback is None


def test_failure_unimported_module(app):
    # exc_module "go" is not importable: Celery synthesizes the class.
    r = result(app, "gocelery-custom-exc")
    with pytest.raises(Exception) as excinfo:
        r.get(timeout=5)
    assert type(excinfo.value).__name__ == "QuotaExceeded"
    assert excinfo.value.args == ("over quota",)


def test_revoked(app):
    r = result(app, "gocelery-revoked")
    assert r.state == "REVOKED"
    assert r.ready() and not r.successful()
    assert isinstance(r.result, TaskRevokedError)
    assert r.result.args == ("revoked",)
    with pytest.raises(TaskRevokedError):
        r.get(timeout=5)
    assert r.children is None


def test_custom_state_progress(app):
    r = result(app, "gocelery-progress")
    assert r.state == "PROGRESS"
    assert not r.ready()
    assert r.info == {"current": 1, "total": 2}
    assert r.result == {"current": 1, "total": 2}
    assert r.date_done is None
    with pytest.raises(CeleryTimeoutError):
        r.get(timeout=0.5)


def test_started(app):
    r = result(app, "gocelery-started")
    assert r.state == "STARTED"
    assert not r.ready()
    assert r.info == {"pid": 4242, "hostname": "gocelery@test"}
    assert r.traceback is None


def test_compressed_result(app):
    # result_compression payloads are self-describing in Celery 5.7.
    assert result(app, "gocelery-compressed").get(timeout=5) == "squeezed"


def test_saved_group(app):
    g = GroupResult.restore("gocelery-group", app=app)
    assert g is not None
    assert [r.id for r in g.results] == ["gocelery-int", "gocelery-nested"]
    assert g.get(timeout=5)[0] == 42


def test_missing_is_pending(app):
    r = result(app, "gocelery-never-stored")
    assert r.state == "PENDING"
    assert r.result is None
