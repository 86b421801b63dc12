"""The Go beat and Python's `celery beat -S redbeat.RedBeatScheduler`
(celery-redbeat, pinned) take turns on one store: redbeat runs an entry Go
wrote, Go runs an entry redbeat wrote, and the run count goes on across
the handover (redbeat's lock key is the Go beat's lock key too).
"""
import json
import os
import sys

from conftest import BACKEND_URL, BROKER_URL, HERE, Proc, attach_log, new_uid, wait_until
from test_beat import (BEAT_REDIS_URL, beat_cli, beat_list, beat_store, go_beat,  # noqa: F401
                       gocelery_bin)

BEAT_APP = """
import os
from pyinterop import app
app.conf.update(
    redbeat_redis_url=os.environ["BEAT_REDIS_URL"],
    redbeat_key_prefix=os.environ["BEAT_KEY_PREFIX"],
    beat_max_loop_interval=1,
)
"""


def start_redbeat(tmp_path, request, prefix):
    with open(tmp_path / "rbapp.py", "w") as f:
        f.write(BEAT_APP)
    env = dict(os.environ, PYINTEROP_BROKER=BROKER_URL, PYINTEROP_BACKEND=BACKEND_URL,
               BEAT_REDIS_URL=BEAT_REDIS_URL, BEAT_KEY_PREFIX=prefix,
               PYTHONPATH=f"{HERE}:{tmp_path}", PYTHONUNBUFFERED="1")
    celery = os.path.join(os.path.dirname(sys.executable), "celery")
    log_path = str(tmp_path / f"redbeat-{new_uid()}.log")
    p = Proc([celery, "-A", "rbapp", "beat", "-S", "redbeat.RedBeatScheduler", "-l", "debug",
              "--max-interval", "1", "-s", str(tmp_path / "celerybeat-schedule")],
             log_path, "beat: Acquired lock", env=env, cwd=str(tmp_path), label="python redbeat")
    attach_log(request.node, p.label, log_path)
    return p.wait_ready()


def test_go_and_redbeat_take_turns(gocelery_bin, go_beat, py_worker, beat_store, rdb,  # noqa: F811
                                   tmp_path, request):
    from celery import Celery
    from celery.schedules import crontab, schedule
    from redbeat import RedBeatSchedulerEntry

    client, prefix = beat_store
    w = py_worker()
    k_go, k_py = f"rb-go-{new_uid()}", f"rb-py-{new_uid()}"
    # An entry written by Go...
    beat_cli(gocelery_bin, prefix, "add", "from-go", "--task", "pyinterop.counter",
             "--kwargs", json.dumps({"key": k_go}), "--queue", w.queue, "--trigger", "every 1s")
    # ... and two written by redbeat itself.
    writer = Celery("rbwriter", set_as_current=False)
    writer.conf.update(redbeat_redis_url=BEAT_REDIS_URL, redbeat_key_prefix=prefix,
                       broker_url=BROKER_URL)
    try:
        RedBeatSchedulerEntry("from-py", "pyinterop.counter", schedule(run_every=1.0),
                              kwargs={"key": k_py}, options={"queue": w.queue}, app=writer).save()
        RedBeatSchedulerEntry("py-cron", "pyinterop.add",
                              crontab(minute="30", hour="2", day_of_week="mon-fri"),
                              args=[1, 2], options={"queue": w.queue}, app=writer).save()
    finally:
        writer.close()

    # Turn 1: Python redbeat runs both, including the Go-written one.
    rb = start_redbeat(tmp_path, request, prefix)
    try:
        wait_until(lambda: int(rdb.get(k_go) or 0) >= 2 and int(rdb.get(k_py) or 0) >= 2, 30,
                   interval=0.2, message="redbeat running both entries")
    finally:
        rb.stop(timeout=15)
    assert "Releasing lock" in rb.log()
    entries = beat_list(gocelery_bin, prefix)
    after_py = entries["from-go"]["total_run_count"]
    assert after_py >= 2, entries["from-go"]
    assert entries["py-cron"]["trigger"] == "30 2 * * mon-fri"
    assert entries["py-cron"]["args"] == [1, 2]
    go_before, py_before = int(rdb.get(k_go)), int(rdb.get(k_py))

    # Turn 2: the Go beat takes the lock and goes on with both.
    go = go_beat(prefix)
    try:
        wait_until(lambda: int(rdb.get(k_go) or 0) >= go_before + 2
                   and int(rdb.get(k_py) or 0) >= py_before + 2, 20, interval=0.2,
                   message="the Go beat running both entries")
    finally:
        go.stop(timeout=10)
    entries = beat_list(gocelery_bin, prefix)
    assert entries["from-go"]["total_run_count"] >= after_py + 2
    assert entries["from-py"]["last"]["status"] in ("SENT", "SUCCESS")
    assert entries["py-cron"]["total_run_count"] == 0
    # The Go beat's writes are still redbeat's: redbeat loads every entry.
    reader = Celery("rbreader", set_as_current=False)
    reader.conf.update(redbeat_redis_url=BEAT_REDIS_URL, redbeat_key_prefix=prefix,
                       broker_url=BROKER_URL)
    try:
        for name in ("from-go", "from-py", "py-cron"):
            e = RedBeatSchedulerEntry.from_key(prefix + name, app=reader)
            assert e.name == name and e.last_run_at is not None
        assert RedBeatSchedulerEntry.from_key(prefix + "from-go", app=reader).total_run_count \
            == entries["from-go"]["total_run_count"]
    finally:
        reader.close()
