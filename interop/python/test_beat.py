"""The Go beat (`gocelery beat`) fires periodic tasks that a real Python
Celery worker runs, on the broker under test (RabbitMQ, or Redis with
INTEROP_BROKER_URL), and records what each run did (SUCCESS with the
result, FAILURE with the exception) on the entry, as `gocelery beat list`
shows it.

The schedule lives in Redis DB 5 under a unique key prefix per test. The
helpers here are shared by test_beat_replicas.py and test_beat_redbeat.py.
"""
import json
import os
import re
import subprocess
import time

import pytest
import redis

from conftest import (BACKEND_URL, BROKER_URL, REDIS_HOST, REDIS_PORT, Proc, attach_log,
                      new_uid, wait_until)

BEAT_DB = 5
BEAT_REDIS_URL = f"redis://{REDIS_HOST}:{REDIS_PORT}/{BEAT_DB}"


@pytest.fixture(scope="session")
def gocelery_bin(repo_root, tmp_path_factory):
    """Builds ./cmd/gocelery once per session."""
    out = tmp_path_factory.mktemp("gocelerybin") / "gocelery"
    proc = subprocess.run(["go", "build", "-o", str(out), "./cmd/gocelery"], cwd=repo_root,
                          capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        pytest.fail(f"go build ./cmd/gocelery failed:\n{proc.stderr[-3000:]}", pytrace=False)
    return str(out)


@pytest.fixture
def beat_store():
    """A unique redbeat key prefix in DB 5 and a client on it (decoded
    strings, as redbeat's); the prefix's keys are deleted at teardown."""
    client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=BEAT_DB, decode_responses=True,
                         socket_timeout=10)
    prefix = f"beat-{new_uid()}:"
    yield client, prefix
    keys = list(client.scan_iter(match=prefix + "*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


class Beat(Proc):
    kind = "go beat"


@pytest.fixture
def go_beat(gocelery_bin, tmp_path, request):
    """Factory: go_beat(prefix, *flags) starts `gocelery beat` on the test
    broker and backend with the store in DB 5; SIGTERM/SIGKILL at teardown."""
    beats = []

    def start(prefix, *flags, label=None):
        uid = new_uid()
        log_path = os.path.join(str(tmp_path), f"beat-{uid}.log")
        cmd = [gocelery_bin, "beat", "--broker", BROKER_URL, "--result-backend", BACKEND_URL,
               "--redis", BEAT_REDIS_URL, "--key-prefix", prefix, *flags]
        b = Beat(cmd, log_path, "beat ready", label=label or f"go beat {uid}")
        beats.append(b)
        attach_log(request.node, b.label, log_path)
        try:
            b.wait_ready()
        except RuntimeError as exc:
            pytest.fail(str(exc), pytrace=False)
        return b

    yield start
    for b in beats:
        b.stop(timeout=10)


def beat_cli(gocelery_bin, prefix, *args, check=True):
    """Runs `gocelery beat <args>` on the test store; returns the process."""
    proc = subprocess.run([gocelery_bin, "beat", *args, "--redis", BEAT_REDIS_URL,
                           "--key-prefix", prefix], capture_output=True, text=True, timeout=30)
    if check and proc.returncode != 0:
        pytest.fail(f"gocelery beat {' '.join(args)}: exit {proc.returncode}\n{proc.stderr}",
                    pytrace=False)
    return proc


def beat_list(gocelery_bin, prefix):
    """`gocelery beat list --json`, by entry name."""
    out = beat_cli(gocelery_bin, prefix, "list", "--json").stdout
    return {e["name"]: e for e in map(json.loads, out.splitlines())}


SENT_RE = re.compile(r'time=(\S+) .*msg="beat: task sent" .*entry=(\S+) .*task_id=(\S+) '
                     r'due_ms=(\d+) delay_ms=(-?\d+) fence=(\d+) resend=(\w+)')


def sends(*beats):
    """The "task sent" log lines of beats, as dicts."""
    out = []
    for b in beats:
        for m in SENT_RE.finditer(b.log()):
            out.append({"time": m[1], "entry": m[2], "task_id": m[3], "due_ms": int(m[4]),
                        "delay_ms": int(m[5]), "fence": int(m[6]), "resend": m[7] == "true",
                        "beat": b.label})
    return out


def test_go_beat_runs_tasks_on_python_worker(gocelery_bin, go_beat, py_worker, beat_store, rdb):
    """Entries added with the CLI fire on a Python worker; the last run's
    state, result or error and task id are recorded on each entry."""
    client, prefix = beat_store
    w = py_worker()
    key = f"beat-counter-{new_uid()}"
    beat_cli(gocelery_bin, prefix, "add", "count", "--task", "pyinterop.counter",
             "--kwargs", json.dumps({"key": key}), "--queue", w.queue, "--trigger", "every 1s")
    beat_cli(gocelery_bin, prefix, "add", "add", "--task", "pyinterop.add", "--args", "[2, 3]",
             "--queue", w.queue, "--trigger", "every 1s")
    beat_cli(gocelery_bin, prefix, "add", "fail", "--task", "pyinterop.fail",
             "--args", '["nightly job broke"]', "--queue", w.queue, "--trigger", "every 1s")
    beat_cli(gocelery_bin, prefix, "add", "later", "--task", "pyinterop.add", "--args", "[1, 1]",
             "--queue", w.queue, "--trigger", "0 0 1 1 *")
    beat = go_beat(prefix)
    try:
        wait_until(lambda: int(rdb.get(key) or 0) >= 3, 20, message="3 counter runs")

        def recorded():
            entries = beat_list(gocelery_bin, prefix)
            return all(entries[n]["last"].get("status") in ("SUCCESS", "FAILURE")
                       for n in ("count", "add", "fail")) and entries

        entries = wait_until(recorded, 15, interval=0.3, message="outcomes recorded")
    finally:
        beat.stop(timeout=10)
    assert entries["add"]["last"]["status"] == "SUCCESS"
    assert entries["add"]["last"]["result"] == 5
    assert entries["fail"]["last"]["status"] == "FAILURE"
    assert entries["fail"]["last"]["error"] == "ValueError: nightly job broke"
    assert entries["count"]["last"]["status"] == "SUCCESS"
    assert isinstance(entries["count"]["last"]["result"], int)
    # The recorded task id is a real task of the Python worker's backend.
    tid = entries["add"]["last"]["task_id"]
    meta = json.loads(rdb.get(f"celery-task-meta-{tid}"))
    assert meta["status"] == "SUCCESS" and meta["result"] == 5 and meta["name"] == "pyinterop.add"
    assert entries["later"]["total_run_count"] == 0 and entries["later"]["last"].get("status") is None
    # Every run sent was run once: the counter equals count's sends.
    count_sends = [s for s in sends(beat) if s["entry"] == "count"]
    wait_until(lambda: int(rdb.get(key) or 0) == len(count_sends), 10,
               message=f"counter == {len(count_sends)} sends")
    assert len({s["task_id"] for s in count_sends}) == len(count_sends)
    assert beat_list(gocelery_bin, prefix)["count"]["total_run_count"] == len(count_sends)
