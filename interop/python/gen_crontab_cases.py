"""Writes beat/testdata/crontab_cases.json: next-run times computed by the
pinned Celery's crontab (remaining_estimate, i.e. remaining_delta plus
remaining), and by its interval schedule (plain and relative), which the Go
table tests in beat/ must reproduce.

Each case: the five-field string (crontab.from_string's order), the
schedule's time zone, last_run_at, now, and Celery's next run time
(now + remaining_estimate, in UTC, microseconds kept). Bad strings are listed
with the error Celery raises, so Go refuses the same ones.

The cases are deterministic (seeded); test_beat_vectors.py regenerates them
and compares with the committed file, so the vectors cannot rot.

    .venv/bin/python interop/python/gen_crontab_cases.py [--check]
"""
import json
import os
import random
import sys
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

from celery import Celery
from celery.schedules import crontab, schedule

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "..", "beat", "testdata", "crontab_cases.json")

EXPRS = [
    "* * * * *",
    "*/15 * * * *",
    "0 * * * *",
    "30 2 * * *",
    "0 0 * * *",
    "0 9 * * mon-fri",
    "30 8 * * 1-5",
    "0 18 * * fri-mon",
    "0 0 * * sun",
    "0 0 * * 0",
    "15,45 */3 * * *",
    "0 22-2 * * *",
    "5-50/5 8-17 * * 1,3,5",
    "0 0 1 * *",
    "0 0 31 * *",
    "0 0 29 2 *",
    "0 12 13 * fri",
    "0 0 1-7 * mon",
    "0 6 */10 * *",
    "0 0 * jan,jul *",
    "0 0 1 */3 *",
    "0 4 15 6 *",
    "30 1 * mar-oct sat",
    "*/5 1-3 * * *",
    "0 2 * * *",
    "30 2 * * sun",
    "59 23 31 12 *",
    "17 */2 2-28/3 * tue-thu",
    "0 0 * * monday",
    "0 1 * * */2",
    "0 3 25 dec *",
    "0,20,40 0-6 * * *",
    "45 1 * * *",
]
TZS = ["UTC", "Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "Asia/Kolkata"]
# Around the DST transitions of the zones above, and plain times.
ANCHORS = [
    datetime(2026, 3, 29, 0, 30, tzinfo=timezone.utc),    # Europe spring forward (01:00 UTC)
    datetime(2026, 10, 25, 0, 10, tzinfo=timezone.utc),   # Europe fall back (01:00 UTC)
    datetime(2026, 3, 8, 6, 45, tzinfo=timezone.utc),     # US spring forward (07:00 UTC)
    datetime(2026, 11, 1, 5, 20, tzinfo=timezone.utc),    # US fall back (06:00 UTC)
    datetime(2026, 4, 4, 14, 50, tzinfo=timezone.utc),    # Lord Howe fall back (30 min)
    datetime(2026, 10, 3, 15, 10, tzinfo=timezone.utc),   # Lord Howe spring forward (30 min)
    datetime(2028, 2, 28, 23, 59, 30, tzinfo=timezone.utc),
    datetime(2026, 12, 31, 23, 59, 59, 999999, tzinfo=timezone.utc),
    datetime(2027, 1, 15, 12, 0, tzinfo=timezone.utc),
]
BAD = [
    "* * * *", "* * * * * *", "60 * * * *", "* 24 * * *", "* * 0 * *", "* * 32 * *",
    "* * * 13 *", "* * * * 7", "*/0 * * * *", "-1 * * * *", "* * * * funday",
    "1,,2 * * * *", "*/ * * * *", "1-5/ * * * *", "x * * * *", "* * * foo *",
    "*  * * * *", "0 0 30 2 *", "0 0 31 4,6,9,11 *",
]


def next_run(expr, tz, last, now):
    app = Celery(set_as_current=False)
    app.conf.timezone = tz
    minute, hour, dom, moy, dow = expr.split(" ")
    c = crontab(minute, hour, dow, dom, moy, nowfun=lambda: now, app=app)
    # In UTC: Python adds a timedelta to an aware local datetime on the wall
    # clock, which is not the instant beat sleeps until.
    return now.astimezone(timezone.utc) + c.remaining_estimate(last)


def iso(dt):
    return dt.astimezone(timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")


def cases():
    rnd = random.Random(6)
    out = []
    for expr in EXPRS:
        for tz in TZS:
            lasts = [a + timedelta(minutes=rnd.randint(-90, 90), seconds=rnd.randint(0, 59))
                     for a in ANCHORS]
            lasts += [a for a in ANCHORS]
            lasts += [datetime(2026, 1, 1, tzinfo=timezone.utc)
                      + timedelta(seconds=rnd.randint(0, 3 * 365 * 86400),
                                  microseconds=rnd.randint(0, 999999)) for _ in range(4)]
            for last in lasts:
                # Celery keeps last_run_at's zone; some come in the
                # schedule's zone, as an aware datetime from a store would.
                if rnd.random() < 0.5:
                    last = last.astimezone(ZoneInfo(tz))
                now = last.astimezone(timezone.utc) + timedelta(seconds=rnd.randint(1, 3 * 86400))
                out.append({"expr": expr, "tz": tz, "last_run_at": iso(last), "now": iso(now),
                            "next": iso(next_run(expr, tz, last, now))})
    return out


INTERVALS = [1, 10, 45, 60, 90, 300, 3600, 5400, 86400, 2 * 86400]


def interval_cases():
    """Celery's schedule(run_every, relative): relative rounds to the
    interval's resolution in last_run_at's zone, which beat keeps in the
    app's time zone."""
    rnd = random.Random(7)
    out = []
    for every in INTERVALS:
        for relative in (False, True):
            for tz in TZS:
                app = Celery(set_as_current=False)
                app.conf.timezone = tz
                lasts = [a + timedelta(minutes=rnd.randint(-90, 90), seconds=rnd.randint(0, 59),
                                       microseconds=rnd.randint(0, 999999)) for a in ANCHORS]
                for last in lasts:
                    last = last.astimezone(ZoneInfo(tz))
                    now = last.astimezone(timezone.utc) + timedelta(seconds=rnd.randint(0, 2 * every))
                    s = schedule(run_every=every, relative=relative, nowfun=lambda: now, app=app)
                    nxt = now.astimezone(timezone.utc) + s.remaining_estimate(last)
                    out.append({"every": every, "relative": relative, "tz": tz,
                                "last_run_at": iso(last), "now": iso(now), "next": iso(nxt)})
    return out


def bad_cases():
    out = []
    for expr in BAD:
        try:
            minute, hour, dom, moy, dow = expr.split(" ")
            crontab(minute, hour, dow, dom, moy)
        except Exception as exc:  # noqa: BLE001 - the type is recorded
            out.append({"expr": expr, "error": type(exc).__name__})
        else:
            raise SystemExit(f"Celery accepts {expr!r}; it is not a bad case")
    return out


def document():
    return {
        "generator": "interop/python/gen_crontab_cases.py",
        "celery": __import__("celery").__version__,
        "cases": cases(),
        "intervals": interval_cases(),
        "bad": bad_cases(),
    }


def render():
    """One case per line, so a diff shows which cases changed."""
    doc = document()
    lines = ["{", f' "generator": {json.dumps(doc["generator"])},',
             f' "celery": {json.dumps(doc["celery"])},']
    for key in ("cases", "intervals", "bad"):
        rows = [json.dumps(c, separators=(",", ":")) for c in doc[key]]
        lines.append(f' "{key}": [\n  ' + ",\n  ".join(rows) + "\n ]" + ("," if key != "bad" else ""))
    lines.append("}")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    text = render()
    if "--check" in sys.argv:
        with open(OUT) as f:
            sys.exit(0 if f.read() == text else 1)
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w") as f:
        f.write(text)
    print(f"wrote {len(json.loads(text)['cases'])} cases to {os.path.normpath(OUT)}")
