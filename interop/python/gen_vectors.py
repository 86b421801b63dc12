"""Generate golden task-message vectors into protocol/testdata/vectors/.

Each vector is a message published by the pinned Celery through its public
APIs (apply_async / send_task / canvas) onto kombu's in-memory transport, then
taken back off the queue raw, so `wire` holds exactly the headers, properties
and body bytes Celery publishes (after serialization and compression).
`expect` is what Celery's worker code makes of that message (celery_view).

Run: .venv/bin/python interop/python/gen_vectors.py   (or `make vectors`)
Ids are fixed where Celery allows; timestamps derived from "now" (countdown,
expires=seconds), origin, reply_to and random group ids change per run.
"""

import base64
import datetime as dt
import os
import sys
import uuid
from decimal import Decimal

from celery import chain, chord, group
from kombu.utils.json import dumps

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from celery_view import TRANSPORT_PROPERTIES, make_app, versions, worker_view  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.join(ROOT, "protocol", "testdata", "vectors")

UTC = dt.timezone.utc
PLUS2 = dt.timezone(dt.timedelta(hours=2))


def make_tasks(app):
    @app.task(name="proj.add", shared=False)
    def add(x, y=0, z=0):
        return x + y + z

    @app.task(name="proj.tsum", shared=False)
    def tsum(xs):
        return sum(xs)

    @app.task(name="proj.echo", shared=False)
    def echo(*args, **kwargs):
        return args, kwargs

    return add, tsum, echo


app = make_app(protocol=2, name="vectors")
add, tsum, echo = make_tasks(app)
app1 = make_app(protocol=1, name="vectors_v1")
add1, _, _ = make_tasks(app1)

VECTORS = []  # (name, description, app, queue, count, send)


def vector(name, description, on=app, queue="celery", count=1):
    """Register a vector; `count` = messages the call must publish."""
    def register(send):
        VECTORS.append((name, description, on, queue, count, send))
        return send
    return register


def tid(name):
    return f"vec-{name}"


# --- plain apply_async options -------------------------------------------

@vector("simple", 'add.apply_async((2, 2), {"z": 1})')
def _():
    add.apply_async((2, 2), {"z": 1}, task_id=tid("simple"))


@vector("countdown", "add.apply_async((2, 2), countdown=10)")
def _():
    add.apply_async((2, 2), task_id=tid("countdown"), countdown=10)


@vector("eta", "add.apply_async((2, 2), eta=datetime(2030, 1, 2, 5, 4, 5, 678901, tzinfo=+02:00))")
def _():
    add.apply_async((2, 2), task_id=tid("eta"),
                    eta=dt.datetime(2030, 1, 2, 5, 4, 5, 678901, tzinfo=PLUS2))


@vector("expires-seconds", "add.apply_async((2, 2), expires=60)")
def _():
    add.apply_async((2, 2), task_id=tid("expires-seconds"), expires=60)


@vector("expires-datetime", "add.apply_async((2, 2), expires=datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC))")
def _():
    add.apply_async((2, 2), task_id=tid("expires-datetime"),
                    expires=dt.datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC))


@vector("retries", "add.apply_async((2, 2), retries=3)")
def _():
    add.apply_async((2, 2), task_id=tid("retries"), retries=3)


@vector("priority", "add.apply_async((2, 2), priority=7)")
def _():
    add.apply_async((2, 2), task_id=tid("priority"), priority=7)


@vector("custom-headers", 'add.apply_async((2, 2), headers={"x-custom": 1, "periodic_task_name": "foo"})')
def _():
    add.apply_async((2, 2), task_id=tid("custom-headers"),
                    headers={"x-custom": 1, "periodic_task_name": "foo"})


@vector("time-limits", "add.apply_async((2, 2), time_limit=30, soft_time_limit=20)")
def _():
    add.apply_async((2, 2), task_id=tid("time-limits"),
                    time_limit=30, soft_time_limit=20)


@vector("shadow", 'add.apply_async((2, 2), shadow="proj.add.shadowed")')
def _():
    add.apply_async((2, 2), task_id=tid("shadow"), shadow="proj.add.shadowed")


@vector("ignore-result", "add.apply_async((2, 2), ignore_result=True)")
def _():
    add.apply_async((2, 2), task_id=tid("ignore-result"), ignore_result=True)


# --- callbacks and canvas --------------------------------------------------

@vector("link", 'add.apply_async((2, 2), link=add.s(10).set(task_id="vec-link-cb"))')
def _():
    add.apply_async((2, 2), task_id=tid("link"),
                    link=add.s(10).set(task_id="vec-link-cb"))


@vector("link-error", 'add.apply_async((2, 2), link_error=add.si(0, 0).set(task_id="vec-link-error-eb"))')
def _():
    add.apply_async((2, 2), task_id=tid("link-error"),
                    link_error=add.si(0, 0).set(task_id="vec-link-error-eb"))


@vector("chain", "chain(add.s(2, 2), add.s(4), add.s(8)).apply_async()  (only the first step is published)")
def _():
    chain(add.s(2, 2).set(task_id="vec-chain-1"),
          add.s(4).set(task_id="vec-chain-2"),
          add.s(8).set(task_id="vec-chain-3")).apply_async()


@vector("group", 'group(add.s(1, 1), add.s(2, 2), add.s(3, 3)).apply_async(task_id="vec-group")', count=3)
def _():
    group(add.s(1, 1).set(task_id="vec-group-0"),
          add.s(2, 2).set(task_id="vec-group-1"),
          add.s(3, 3).set(task_id="vec-group-2")).apply_async(task_id="vec-group")


# The header's group id comes from the chord's own task_id option (a group's
# task_id is dropped when chord() unwraps it); the body keeps its .set() id.
@vector("chord", 'chord([add.s(1, 1), add.s(2, 2)], tsum.s(), task_id="vec-chord-group").apply_async()  (header messages; the body rides in embed.chord)', count=2)
def _():
    chord([add.s(1, 1).set(task_id="vec-chord-h0"),
           add.s(2, 2).set(task_id="vec-chord-h1")],
          tsum.s().set(task_id="vec-chord-body"),
          task_id="vec-chord-group").apply_async()


# The upgraded chord's group id is random: Celery does not carry the group's
# task_id into the chord it builds.
@vector("chain-group-task", "chain(add.s(1, 1), group(add.s(1), add.s(2)), tsum.s()).apply_async()  (group + task upgraded to a chord in embed.chain)")
def _():
    chain(add.s(1, 1).set(task_id="vec-cgt-1"),
          group(add.s(1).set(task_id="vec-cgt-g0"),
                add.s(2).set(task_id="vec-cgt-g1")),
          tsum.s().set(task_id="vec-cgt-body")).apply_async()


# --- serializers and compression --------------------------------------------

@vector("msgpack", 'add.apply_async((1, 2), {"z": 3}, serializer="msgpack")')
def _():
    add.apply_async((1, 2), {"z": 3}, task_id=tid("msgpack"), serializer="msgpack")


for _alias in ("zlib", "bzip2", "lzma"):
    @vector(f"compression-{_alias}", f'echo.apply_async(("hello " * 20,), compression="{_alias}")')
    def _(alias=_alias):
        echo.apply_async(("hello " * 20,), {"n": 1},
                         task_id=tid(f"compression-{alias}"), compression=alias)


# --- argument values ----------------------------------------------------------

@vector("kombu-types", "echo.apply_async with datetime (aware, naive), date, time, Decimal, UUID, bytes (utf-8 and not)")
def _():
    echo.apply_async(
        (dt.datetime(2030, 1, 2, 3, 4, 5, 678901, tzinfo=UTC),
         dt.datetime(2030, 1, 2, 3, 4, 5),
         dt.date(2030, 1, 2),
         dt.time(3, 4, 5, 678901),
         Decimal("1.10"),
         uuid.UUID("12345678-1234-5678-1234-567812345678"),
         b"abc",
         b"\xff\x00\xfe"),
        {"when": dt.datetime(2030, 1, 2, tzinfo=UTC), "amount": Decimal("-0.001")},
        task_id=tid("kombu-types"))


@vector("unicode", "echo.apply_async with non-ASCII (é€😀, CJK) in args, kwargs keys and values")
def _():
    echo.apply_async(("é€😀", "中文漢字日本語한국어"),
                     {"ключ": "значение", "emoji😀": "😀"},
                     task_id=tid("unicode"))


@vector("large-ints", "echo.apply_async((2**53+1, 2**63-1, -2**63, 2**70, 10**30))")
def _():
    echo.apply_async((2**53 + 1, 2**63 - 1, -2**63, 2**70, 10**30),
                     {"big": 2**64}, task_id=tid("large-ints"))


@vector("floats", "echo.apply_async((0.1, 1e16, 1.5e-7, 1234567.0, -0.0))")
def _():
    echo.apply_async((0.1, 1e16, 1.5e-7, 1234567.0, -0.0), {"half": 0.5},
                     task_id=tid("floats"))


def _nested(depth):
    # Alternates dict and list: {"d9": [{"d8": [ ... {"leaf": 1} ... ]}]}
    node = {"leaf": 1, "s": "x"}
    for i in range(depth):
        node = {f"d{i}": [node, i]}
    return node


@vector("nested", "echo.apply_async(({'d9': [{'d8': [...]}]},), {'tree': ...})  (dict in list in dict, depth 10)")
def _():
    echo.apply_async((_nested(10),), {"tree": _nested(10)}, task_id=tid("nested"))


# Stamping works with the plain 5.7 API: Signature.stamp(**stamps) puts the
# names in stamped_headers and the values in stamps.
@vector("stamps", 'add.s(1, 2).stamp(mystamp="abc", tenant=42) then .apply_async()')
def _():
    sig = add.s(1, 2).set(task_id=tid("stamps"))
    sig.stamp(mystamp="abc", tenant=42)
    sig.apply_async()


# --- protocol v1 and routing ---------------------------------------------------

@vector("v1-simple", 'task_protocol=1: add.apply_async((2, 2), {"z": 1})', on=app1)
def _():
    add1.apply_async((2, 2), {"z": 1}, task_id=tid("v1-simple"))


@vector("v1-countdown-timelimit", "task_protocol=1: add.apply_async((1, 2), countdown=10, time_limit=5, soft_time_limit=3)", on=app1)
def _():
    add1.apply_async((1, 2), task_id=tid("v1-countdown-timelimit"),
                     countdown=10, time_limit=5, soft_time_limit=3)


@vector("send-task-queue", 'app.send_task("proj.remote", (1,), {"a": "b"}, queue="other", routing_key="other.key")', queue="other")
def _():
    app.send_task("proj.remote", (1,), {"a": "b"}, task_id=tid("send-task-queue"),
                  queue="other", routing_key="other.key")


# --- output -------------------------------------------------------------------

def drain(on, queue):
    """Raw transport dicts (body still base64, compressed) left on `queue`."""
    out = []
    with on.connection_for_write() as conn:
        ch = conn.default_channel
        while (m := ch.basic_get(queue, no_ack=True)) is not None:
            out.append(m._raw)
    return out


def wire_of(raw):
    props = {k: v for k, v in raw["properties"].items()
             if k not in TRANSPORT_PROPERTIES}
    assert raw["properties"]["body_encoding"] == "base64"
    return {
        "content_type": raw["content-type"],
        "content_encoding": raw["content-encoding"],
        "headers": raw["headers"],
        "properties": props,
        "body_b64": raw["body"],  # memory transport's standard base64 of the sent bytes
    }


def main():
    os.makedirs(OUT, exist_ok=True)
    for f in os.listdir(OUT):  # drop vectors that no longer exist
        if f.endswith(".json"):
            os.remove(os.path.join(OUT, f))
    names = []
    for name, description, on, queue, count, send in VECTORS:
        for q in ("celery", queue):  # start from empty queues
            drain(on, q)
        send()
        raws = drain(on, queue)
        if len(raws) != count:
            sys.exit(f"{name}: expected {count} message(s) on {queue!r}, got {len(raws)}")
        for i, raw in enumerate(raws):
            vname = name if count == 1 else f"{name}-{i}"
            wire = wire_of(raw)
            base64.b64decode(wire["body_b64"], validate=True)
            vec = {
                "name": vname,
                "description": description,
                **versions(),
                "wire": wire,
                # Not part of the schema: where Celery routed it (informational).
                "delivery_info": {k: raw["properties"]["delivery_info"][k]
                                  for k in ("exchange", "routing_key")},
                "expect": worker_view(on, wire),
            }
            with open(os.path.join(OUT, vname + ".json"), "w", encoding="utf-8") as f:
                f.write(dumps(vec, indent=1) + "\n")
            names.append(vname)
    print(f"wrote {len(names)} vectors to {os.path.relpath(OUT, ROOT)}: {' '.join(names)}")


if __name__ == "__main__":
    main()
