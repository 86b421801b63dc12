"""The Go beat with its schedule in PostgreSQL, on both schemas, fires
tasks that a real Python Celery worker runs (broker: Redis DB 8).

- django: a real Django project (djangoproj/, django-celery-beat 2.9.0
  from PyPI, its migrations run against a test database) whose
  PeriodicTasks are made through the ORM: an IntervalSchedule of 1 s, a
  CrontabSchedule (every minute of this hour and the next on Berlin's
  clock, in its timezone Europe/Berlin), a one_off ClockedSchedule,
  one whose interval task is disabled through the ORM mid-run, one with
  expire_seconds, queue and headers, and a solar one (refused).
- periodic_task: the same, driven by plain SQL from Python (as a Flask
  app with SQLAlchemy would), after `gocelery beat migrate`.

One scenario runs both schemas at once, so a single minute boundary serves
both crontabs: three `gocelery beat` replicas per schema (lock TTL 1.5 s),
the leader of each killed with kill -9 after a few ticks. Every tick is
counted where it runs (pyinterop.counter INCRs a key per entry), so a tick
sent twice counts twice and a lost one is missing. The test functions then
check each guarantee on what the scenario recorded.

Each module run has a database of its own (created and dropped here).
"""
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from datetime import datetime, timedelta, timezone

import psycopg
import pytest
import redis

from conftest import BACKEND_URL, HERE, REDIS_HOST, REDIS_PORT, REDIS_DB, PyWorker, new_uid, wait_until
from test_beat import Beat, gocelery_bin, sends  # noqa: F401

PG_ADMIN = os.environ.get("PGBEAT_TEST_URL", "postgres://gocelery:gocelery@127.0.0.1:5432/gocelery_test")
BROKER = "redis://127.0.0.1:6379/8"
TTL = "1.5s"
DJANGO_DIR = os.path.join(HERE, "djangoproj")


def pg_url(db):
    base, _, _ = PG_ADMIN.rpartition("/")
    return f"{base}/{db}"


def leader_of(beats):
    """The replica that logged "beat: leader" last."""
    best, best_t = None, ""
    for b in beats:
        for line in b.log().splitlines():
            if 'msg="beat: leader"' in line:
                t = line.split(" ", 1)[0]
                if t > best_t:
                    best, best_t = b, t
    return best


def log_ts(s):
    return datetime.fromisoformat(s["time"].replace("Z", "+00:00")).timestamp()


class Scenario:
    """What the scenario recorded, for the test functions."""


@pytest.fixture(scope="module")
def pgdb():
    name = f"beat_pg_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as c:
        c.execute(f"CREATE DATABASE {name}")
    yield name
    with psycopg.connect(PG_ADMIN, autocommit=True) as c:
        c.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture(scope="module")
def django_models(pgdb):
    """Django's migrate on the test database, then the ORM in this process."""
    env = dict(os.environ, DJANGO_DB_NAME=pgdb, DJANGO_SETTINGS_MODULE="djangoproj.settings")
    proc = subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=DJANGO_DIR, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # The project's settings, configured in this process without
    # DJANGO_SETTINGS_MODULE (workers started later would inherit it, and
    # Celery's Django fixup would then load Django in them).
    import importlib.util

    import django
    from django.conf import settings
    spec = importlib.util.spec_from_file_location("beatpg_settings", os.path.join(DJANGO_DIR, "djangoproj", "settings.py"))
    mod = importlib.util.module_from_spec(spec)
    saved = os.environ.get("DJANGO_DB_NAME")
    os.environ["DJANGO_DB_NAME"] = pgdb
    try:
        spec.loader.exec_module(mod)
    finally:
        if saved is None:
            del os.environ["DJANGO_DB_NAME"]
        else:
            os.environ["DJANGO_DB_NAME"] = saved
    if not settings.configured:
        settings.configure(**{k: getattr(mod, k) for k in dir(mod) if k.isupper()})
    else:  # a second module run in one session: same project, this database
        settings.DATABASES["default"]["NAME"] = pgdb
    django.setup()
    from django_celery_beat import models
    yield models
    from django.db import connections
    connections.close_all()


def cli(gocelery_bin, *args):  # noqa: F811
    proc = subprocess.run([gocelery_bin, "beat", *args], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, f"gocelery beat {' '.join(args)}: {proc.stderr}"
    return proc.stdout


@pytest.fixture(scope="module")
def scenario(gocelery_bin, pgdb, django_models, tmp_path_factory):  # noqa: F811
    m = django_models
    tmp = tmp_path_factory.mktemp("beatpg")
    url = pg_url(pgdb)
    uid = new_uid()
    counters = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=REDIS_DB, socket_timeout=10)
    key = lambda s, n: f"beatpg-{uid}-{s}-{n}"  # noqa: E731
    queue = f"beatpg_{uid}"
    worker = PyWorker(queue, tmp / "worker.log", f"py-{uid}@beatpg", concurrency=4, broker_url=BROKER)
    beats = {"django": [], "periodic_task": []}
    sc = Scenario()
    sc.key, sc.counters, sc.queue, sc.url = key, counters, queue, url
    try:
        worker.wait_ready()
        # --- django: through the ORM -----------------------------------
        every1 = m.IntervalSchedule.objects.create(every=1, period=m.IntervalSchedule.SECONDS)
        # Every minute of this hour and the next on Berlin's clock: read in
        # UTC (an hour or two behind) it would never match.
        from zoneinfo import ZoneInfo
        h = datetime.now(ZoneInfo("Europe/Berlin")).hour
        berlin_hours = f"{h},{(h + 1) % 24}"
        cron = m.CrontabSchedule.objects.create(minute="*", hour=berlin_hours, day_of_week="*", day_of_month="*",
                                                month_of_year="*", timezone="Europe/Berlin")
        t0 = datetime.now(timezone.utc)
        sc.oneoff_at = t0 + timedelta(seconds=4)
        clocked = m.ClockedSchedule.objects.create(clocked_time=sc.oneoff_at)
        solar = m.SolarSchedule.objects.create(event="sunset", latitude=52.5, longitude=13.4)
        for name, sched in [("tick", {"interval": every1}), ("cron", {"crontab": cron}),
                            ("stopme", {"interval": every1}),
                            ("once", {"clocked": clocked, "one_off": True}),
                            ("sun", {"solar": solar})]:
            m.PeriodicTask.objects.create(name=name, task="pyinterop.counter", queue=queue,
                                          kwargs=json.dumps({"key": key("django", name)}), **sched)
        m.PeriodicTask.objects.create(name="req", task="pyinterop.request", interval=every1, queue=queue,
                                      expire_seconds=3600, headers=json.dumps({"team": "ops"}), priority=3)
        # --- periodic_task: plain SQL after gocelery beat migrate --------
        out = cli(gocelery_bin, "migrate", "--store", url, "--schema", "periodic_task")
        assert "ready" in out
        cli(gocelery_bin, "migrate", "--store", url, "--schema", "periodic_task")  # idempotent
        with psycopg.connect(url, autocommit=True) as c:
            for name, task, args, kwargs, trigger in [
                    ("tick", "pyinterop.counter", [], {"key": key("periodic_task", "tick")}, "every 1s"),
                    ("cron", "pyinterop.counter", [], {"key": key("periodic_task", "cron")}, f"* {berlin_hours} * * *"),
                    ("stopme", "pyinterop.counter", [], {"key": key("periodic_task", "stopme")}, "every 1s"),
                    ("once", "pyinterop.counter", [], {"key": key("periodic_task", "once")},
                     "at " + sc.oneoff_at.replace(microsecond=0).isoformat().replace("+00:00", "Z")),
                    ("add", "pyinterop.add", [2, 3], {}, "every 1s")]:
                c.execute("INSERT INTO periodic_task (name, task, args, kwargs, options, trigger, timezone, "
                          "description, log_path) VALUES (%s, %s, %s, %s, %s, %s, 'Europe/Berlin', %s, %s)",
                          (name, task, json.dumps(args), json.dumps(kwargs), json.dumps({"queue": queue}),
                           trigger, f"{name} from plain SQL", f"/var/log/{name}.log"))
        # --- three replicas per schema ------------------------------------
        for schema in beats:
            for i in range(3):
                b = Beat([gocelery_bin, "beat", "--store", url, "--schema", schema, "--broker", BROKER,
                          "--result-backend", BACKEND_URL, "--lock-ttl", TTL],
                         str(tmp / f"beat-{schema}-{i}.log"), "beat ready", label=f"{schema} beat {i}")
                beats[schema].append(b)
        for b in beats["django"] + beats["periodic_task"]:
            b.wait_ready()
        sc.beats = beats
        # Kill -9 each schema's leader after 4 of its ticks, right after a send.
        sc.killed = {}
        for schema, bs in beats.items():
            wait_until(lambda: len([s for s in sends(*bs) if s["entry"] == "tick"]) >= 4, 20,
                       interval=0.05, message=f"4 {schema} ticks")
            leader = leader_of(bs)
            n = len(sends(leader))
            wait_until(lambda: len(sends(leader)) > n, 5, interval=0.01, message="a send by the leader")
            time.sleep(0.2)
            leader.signal(signal.SIGKILL)
            leader.proc.wait(timeout=10)
            sc.killed[schema] = (leader, time.time())
        for schema, bs in beats.items():
            alive = [b for b in bs if b.alive()]
            wait_until(lambda: len([s for s in sends(*alive) if s["entry"] == "tick"]) >= 3, 15,
                       interval=0.05, message=f"3 {schema} ticks by the new leader")
        # Disable "stopme": Django through the ORM, periodic_task by SQL.
        t = m.PeriodicTask.objects.get(name="stopme")
        t.enabled = False
        t.save()
        sc.disabled_at = {"django": time.time()}
        with psycopg.connect(url, autocommit=True) as c:
            c.execute("UPDATE periodic_task SET enabled = false WHERE name = 'stopme'")
        sc.disabled_at["periodic_task"] = time.time()
        # Past the first minute boundary after the crontabs were made (both
        # fire there), the one-offs, and 3 s after disabling.
        now = datetime.now(timezone.utc)
        sc.boundary = boundary = t0.replace(second=0, microsecond=0) + timedelta(minutes=1)
        until = max(boundary + timedelta(seconds=2.5), sc.oneoff_at + timedelta(seconds=2), now + timedelta(seconds=3))
        time.sleep((until - datetime.now(timezone.utc)).total_seconds())
        # Let the last "add" run's outcome be recorded before the beats stop.
        with psycopg.connect(url, autocommit=True) as c:
            c.execute("UPDATE periodic_task SET enabled = false WHERE name = 'add'")
            wait_until(lambda: c.execute("SELECT status FROM periodic_task WHERE name = 'add'").fetchone()[0]
                       == "SUCCESS", 5, interval=0.1, message="the last add run recorded")
        for b in beats["django"] + beats["periodic_task"]:
            b.stop(timeout=10)
        sc.stopped_at = time.time()
        # Every send has run by now (each is a quick INCR).
        sc.sends = {schema: sends(*bs) for schema, bs in beats.items()}
        expected = {(schema, s["entry"]) for schema, ss in sc.sends.items() for s in ss
                    if s["entry"] not in ("req", "add")}

        def all_ran():
            return all(int(counters.get(key(sch, e)) or 0) >= len([s for s in sc.sends[sch] if s["entry"] == e])
                       for sch, e in expected)
        def behind():
            return {f"{sch}/{e}": (int(counters.get(key(sch, e)) or 0),
                                   len([s for s in sc.sends[sch] if s["entry"] == e])) for sch, e in expected}
        deadline = time.monotonic() + 15
        while not all_ran():
            if time.monotonic() > deadline:
                pytest.fail(f"not every send ran: (runs, sends) {behind()}\nworker log:\n{worker.tail(40)}",
                            pytrace=False)
            time.sleep(0.2)
        time.sleep(1.0)  # a duplicate would arrive now
        sc.counts = {(sch, e): int(counters.get(key(sch, e)) or 0)
                     for sch in beats for e in ("tick", "cron", "stopme", "once")}
        yield sc
    finally:
        for b in beats["django"] + beats["periodic_task"]:
            b.stop(timeout=10)
        worker.stop()
        keys = list(counters.scan_iter(match=f"beatpg-{uid}-*"))
        if keys:
            counters.delete(*keys)
        counters.close()


def of(sc, schema, entry):
    return sorted((s for s in sc.sends[schema] if s["entry"] == entry), key=lambda s: s["due_ms"])


@pytest.mark.parametrize("schema", ["django", "periodic_task"])
def test_each_tick_runs_once_across_replicas_and_a_kill9(scenario, schema):
    sc = scenario
    ticks = of(sc, schema, "tick")
    dues = [s["due_ms"] for s in ticks]
    assert len(set(dues)) == len(dues), "a due tick was sent twice"
    assert len({s["task_id"] for s in ticks}) == len(ticks)
    fences = sorted({s["fence"] for s in ticks})
    assert len(fences) == 2, f"fences {fences}: want the killed leader's and its successor's"
    killed, killed_at = sc.killed[schema]
    assert killed.label not in {s["beat"] for s in ticks if s["fence"] == fences[1]}
    # The kill frees the advisory lock at once (the session ends): the
    # first tick of the new leader is sent well within the lock TTL.
    first = next(s for s in ticks if s["fence"] == fences[1])
    assert log_ts(first) - killed_at < 2.0, f"takeover send {log_ts(first) - killed_at:.2f}s after the kill"
    # Executions, not ids: the worker ran each tick once.
    assert sc.counts[(schema, "tick")] == len(ticks), f"{sc.counts[(schema, 'tick')]} runs for {len(ticks)} ticks"
    # A second apart, but across the takeover (the missed ticks collapse into one).
    gaps = [(b - a) / 1000 for a, b in zip(dues, dues[1:])]
    assert len(ticks) >= 8 and all(g >= 1.0 for g in gaps), gaps
    assert len([g for g in gaps if g >= 1.6]) <= 1, f"more than one gap: {gaps}"
    assert max(gaps) < 4.0, f"takeover gap {max(gaps)} s with a {TTL} lock TTL"
    # The crontab fired once at each minute boundary it saw, and ran once.
    cron = of(sc, schema, "cron")
    assert len(cron) >= 1 and len({s["due_ms"] for s in cron}) == len(cron)
    assert all(s["due_ms"] % 60000 == 0 for s in cron), [s["due_ms"] for s in cron]
    # The rows were made just after t0: their first match is the boundary
    # after t0, or the next one when the insert crossed it.
    first = int(sc.boundary.timestamp() * 1000)
    assert cron[0]["due_ms"] in (first, first + 60000), (cron, sc.boundary)
    assert cron[-1]["due_ms"] / 1000 <= sc.stopped_at
    assert sc.counts[(schema, "cron")] == len(cron)


@pytest.mark.parametrize("schema", ["django", "periodic_task"])
def test_disabling_stops_sends_within_2s(scenario, schema):
    sc = scenario
    stop = of(sc, schema, "stopme")
    assert stop, "stopme never ran"
    late = [s for s in stop if log_ts(s) > sc.disabled_at[schema] + 2.0]
    assert not late, f"{len(late)} sends more than 2 s after disabling"
    assert sc.counts[(schema, "stopme")] == len(stop)


@pytest.mark.parametrize("schema", ["django", "periodic_task"])
def test_one_off_runs_once(scenario, schema):
    sc = scenario
    once = of(sc, schema, "once")
    assert len(once) == 1 and sc.counts[(schema, "once")] == 1, once
    assert once[0]["due_ms"] == int(sc.oneoff_at.replace(microsecond=0).timestamp() * 1000) or schema == "django"


def test_django_rows_read_back_through_the_orm(scenario, django_models):
    sc, m = scenario, django_models
    tick = m.PeriodicTask.objects.get(name="tick")
    ticks = of(sc, "django", "tick")
    assert tick.total_run_count == len(ticks)
    last_sent = max(log_ts(s) for s in ticks)
    assert abs(tick.last_run_at.timestamp() - last_sent) < 1.0, (tick.last_run_at, last_sent)
    assert tick.enabled
    once = m.PeriodicTask.objects.get(name="once")
    # Django's own disabling of a one-off after its run.
    assert not once.enabled and once.total_run_count == 0 and once.last_run_at is None
    stopme = m.PeriodicTask.objects.get(name="stopme")
    assert not stopme.enabled and stopme.total_run_count == len(of(sc, "django", "stopme"))
    # The solar task is refused with a clear error, and left alone.
    logs = "".join(b.log() for b in sc.beats["django"])
    assert "solar schedules are not run by gocelery beat" in logs
    assert m.PeriodicTask.objects.get(name="sun").total_run_count == 0


def test_django_options_reach_the_worker(scenario):
    """queue, priority, expire_seconds and headers of the row, and the
    periodic_task_name header django-celery-beat sets."""
    sc = scenario
    reqs = of(sc, "django", "req")
    assert reqs
    backend = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=REDIS_DB, socket_timeout=10)
    try:
        meta = json.loads(backend.get(f"celery-task-meta-{reqs[0]['task_id']}"))
    finally:
        backend.close()
    assert meta["status"] == "SUCCESS", meta
    r = meta["result"]
    assert r["expires"], "expire_seconds did not become the message's expires"
    assert r["delivery_info"]["routing_key"] == sc.queue
    assert r["delivery_info"]["priority"] == 3
    hdrs = r["headers"]
    assert hdrs.get("periodic_task_name") == "req" and hdrs.get("team") == "ops", hdrs


def test_periodic_task_columns_from_the_result_backend(scenario, gocelery_bin):  # noqa: F811
    sc = scenario
    with psycopg.connect(sc.url) as c:
        row = c.execute("SELECT status, job_id, result, last_run_time, total_run_count, next_run_at "
                        "FROM periodic_task WHERE name = 'add'").fetchone()
        status, job_id, result, last_run, count, next_run = row
        adds = of(sc, "periodic_task", "add")
        assert count == len(adds)
        assert status == "SUCCESS" and result == 5, row
        assert job_id == adds[-1]["task_id"]
        assert abs(last_run.timestamp() - max(log_ts(s) for s in adds)) < 1.0
        assert next_run is None, "disabled: no next run"
        backend = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=REDIS_DB, socket_timeout=10)
        try:
            meta = json.loads(backend.get(f"celery-task-meta-{job_id}"))
        finally:
            backend.close()
        assert meta["status"] == "SUCCESS" and meta["result"] == 5 and meta["name"] == "pyinterop.add"
        tick = c.execute("SELECT status, job_id, result, total_run_count, next_run_at, last_run_time "
                         "FROM periodic_task WHERE name = 'tick'").fetchone()
        assert tick[3] == len(of(sc, "periodic_task", "tick"))
        assert tick[0] in ("SUCCESS", "SENT") and tick[1]
        assert tick[4] is not None and 0.9 < (tick[4] - tick[5]).total_seconds() < 1.1, tick
    # The CLI reads the same rows.
    listed = {e["name"]: e for e in map(json.loads, cli(gocelery_bin, "list", "--json", "--store", sc.url,
                                                        "--schema", "periodic_task").splitlines())}
    assert listed["add"]["total_run_count"] == count and listed["add"]["last"]["status"] == "SUCCESS"
    assert listed["stopme"]["enabled"] is False
    assert listed["tick"]["log_path"] == "/var/log/tick.log"
