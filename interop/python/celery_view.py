"""What a real Celery worker sees when it receives a given wire message.

Shared by gen_vectors.py (to write the `expect` half of each vector) and by
the tests (to re-derive `expect` from `wire` and compare). Everything here
goes through Celery's/kombu's own receive-side code, so a vector's `expect`
is Celery's interpretation, not ours.

Vector file schema (kombu JSON)::

    {"name", "description", "celery_version", "kombu_version",
     "wire": {"content_type", "content_encoding", "headers", "properties",
              "body_b64"},
     "expect": {<EXPECT_KEYS>}}
"""

import base64
import copy
from collections.abc import Mapping

import celery
import kombu
from celery import Celery
from celery.canvas import maybe_signature
from celery.worker.request import Request
from celery.worker.strategy import hybrid_to_proto2, proto1_to_proto2
from kombu.message import Message
from kombu.serialization import prepare_accept_content
from kombu.utils.json import dumps, loads

# Headers Celery itself defines; anything else in `headers` is a custom one
# (apply_async(headers=...)) that the worker exposes in task.request.
KNOWN_HEADERS = frozenset(
    "lang task id shadow eta expires group group_index retries timelimit "
    "root_id parent_id argsrepr kwargsrepr origin ignore_result "
    "replaced_task_nesting stamped_headers stamps compression meth".split()
)

EXPECT_KEYS = (
    "protocol", "id", "task", "args", "kwargs", "eta", "expires", "retries",
    "timelimit", "root_id", "parent_id", "group", "shadow", "origin",
    "argsrepr", "kwargsrepr", "lang", "group_index", "ignore_result",
    "replaced_task_nesting", "stamped_headers", "stamps", "custom_headers",
    "callbacks", "errbacks", "chain", "chord", "correlation_id", "reply_to",
    "delivery_mode", "priority", "content_type", "content_encoding",
    "compression",
)

# Transport bookkeeping that is not part of what a producer sends.
TRANSPORT_PROPERTIES = ("delivery_info", "delivery_tag", "body_encoding")


def make_app(protocol=2, name="gocelery_interop"):
    """A broker-less app: memory transport, in-process cache result backend.

    cache+memory:// is a key/value backend, so chords work without a server.
    msgpack is accepted so msgpack vectors decode like on a configured worker.
    """
    app = Celery(name, broker="memory://", backend="cache+memory://",
                 set_as_current=False)
    app.conf.update(
        task_protocol=protocol,
        accept_content=["json", "msgpack"],
        enable_utc=True,
        timezone="UTC",
    )
    return app


def _noop(*args, **kwargs):
    return None


def task_for(app, name):
    """Registered task, or a stub so Request() works for arbitrary names
    (a worker would reject unknown names before building a Request)."""
    try:
        return app.tasks[name]
    except KeyError:
        return app.task(name=name, shared=False)(_noop)


def kombu_message(app, wire):
    """Rebuild the received kombu Message from the wire parts.

    kombu's Message() decompresses the body (via the `compression` header)
    exactly as on receive; accept = the worker's accept_content.
    """
    msg = Message(
        body=base64.b64decode(wire["body_b64"]),
        content_type=wire["content_type"],
        content_encoding=wire["content_encoding"],
        headers=copy.deepcopy(wire["headers"]),
        properties=copy.deepcopy(wire["properties"]),
        delivery_info={"exchange": "", "routing_key": "celery"},
        accept=prepare_accept_content(app.conf.accept_content),
    )
    if msg.errors:  # e.g. decompression failed
        msg._reraise_error()
    return msg


def worker_request(app, wire):
    """(message, Request, embed) following Celery's consumer/strategy code.

    Mirrors consumer.on_task_received + strategy.default.task_message_handler:
    v2 = `task` header present; otherwise the body is decoded and, as in the
    worker, a v1 body that has `args` goes through hybrid_to_proto2 (this is
    what every Celery-produced v1 message hits), else proto1_to_proto2.
    """
    message = kombu_message(app, wire)
    if "task" in message.headers:
        body, headers, decoded = None, None, False
        utc = app.uses_utc_timezone()
        name = message.headers["task"]
        payload = message.payload
        embed = payload[2] if len(payload) > 2 else None
    else:
        payload = message.decode()
        if not isinstance(payload, Mapping) or "task" not in payload:
            raise ValueError(f"unknown message (neither v2 nor v1): {payload!r}")
        name = payload["task"]
        convert = hybrid_to_proto2 if "args" in payload else proto1_to_proto2
        body, headers, decoded, utc = convert(message, payload)
        embed = body[2]
    req = Request(message, app=app, task=task_for(app, name), body=body,
                  headers=headers, decoded=decoded, utc=utc)
    # Python producers always send the 4-key mapping; tolerate null like trace.
    embed = embed or {}
    return message, req, embed


def worker_view(app, wire):
    """The `expect` dict for a wire message (see EXPECT_KEYS).

    For v1 messages the fields v1 lacks come from Celery's conversion:
    lang/root_id/parent_id/shadow/origin/argsrepr/kwargsrepr = null (hybrid
    path) or argsrepr/kwargsrepr = saferepr(...) (proto1 path), group_index =
    null on the hybrid path (it does not copy it), ignore_result = the task's
    default (false), replaced_task_nesting = 0, stamped_headers = null,
    stamps = {}.
    """
    message, req, embed = worker_request(app, wire)
    rd = req.request_dict
    props = message.properties
    return {
        "protocol": 2 if "task" in message.headers else 1,
        "id": req.id,
        "task": req.type,
        "args": list(req.args),
        "kwargs": dict(req.kwargs),
        # Request parses these with maybe_iso8601 and makes them aware
        # (naive = UTC), i.e. exactly what the worker schedules/expires on.
        "eta": req.eta,
        "expires": req.expires,
        "retries": rd.get("retries", 0),
        "timelimit": list(req.time_limits),
        "root_id": req.root_id,
        "parent_id": req.parent_id,
        "group": req.group,
        "shadow": rd.get("shadow"),
        "origin": rd.get("origin"),
        "argsrepr": req.argsrepr,
        "kwargsrepr": req.kwargsrepr,
        "lang": rd.get("lang"),
        "group_index": req.group_index,
        "ignore_result": bool(req.ignore_result),
        "replaced_task_nesting": req.replaced_task_nesting,
        "stamped_headers": rd.get("stamped_headers"),
        "stamps": rd.get("stamps") or {},
        "custom_headers": {k: v for k, v in message.headers.items()
                           if k not in KNOWN_HEADERS},
        "callbacks": embed.get("callbacks"),
        "errbacks": embed.get("errbacks"),
        "chain": embed.get("chain"),
        "chord": embed.get("chord"),
        "correlation_id": props.get("correlation_id"),
        "reply_to": props.get("reply_to"),
        "delivery_mode": props.get("delivery_mode"),
        "priority": props.get("priority"),
        "content_type": message.content_type,
        "content_encoding": message.content_encoding,
        "compression": message.headers.get("compression"),
    }


def normalize(obj):
    """Round-trip through kombu JSON so tuples/lists and tagged types compare
    the same whether they came from a file or from live objects."""
    return loads(dumps(obj))


def typed(obj):
    """Make equality type-strict: Python says True == 1 == 1.0 and
    0.0 == -0.0, but a Go encoder must not turn an int into a float, a bool
    into an int or lose the sign of zero."""
    if isinstance(obj, Mapping):
        return {k: typed(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [typed(v) for v in obj]
    if isinstance(obj, float):
        return ("float", repr(obj))
    return (type(obj).__name__, obj)  # also datetime, Decimal, UUID, bytes


def same(a, b):
    return typed(normalize(a)) == typed(normalize(b))


def embedded_signatures(view):
    """Every signature dict in callbacks/errbacks/chain/chord."""
    sigs = list(view["callbacks"] or []) + list(view["errbacks"] or [])
    sigs += list(view["chain"] or [])
    if view["chord"] is not None:
        sigs.append(view["chord"])
    return sigs


def check_signature(app, d, path="sig"):
    """Celery must rebuild `d` (recursively for chain/group/chord) and
    reserialise it to the same data. Returns the number of signatures seen."""
    assert isinstance(d, Mapping), f"{path}: not a mapping: {d!r}"
    sig = maybe_signature(copy.deepcopy(d), app=app)
    assert sig is not None, f"{path}: maybe_signature returned None"
    again = maybe_signature(normalize(sig), app=app)
    assert same(again, sig), f"{path}: reserialising is not stable"
    seen = 1
    kind = d.get("subtask_type")
    kw = d.get("kwargs") or {}
    if kind == "chord":
        # _chord.from_dict unwraps a group header into a plain task list and
        # drops the group's own options (its id is the chord's task_id
        # again), so Celery's own chords do not reserialise verbatim: compare
        # what survives; header and body are checked exactly below.
        header = kw["header"]
        tasks = header
        if isinstance(header, Mapping) and header.get("subtask_type") == "group":
            tasks = header["kwargs"]["tasks"]
            seen += check_signature(app, header, f"{path}.header")
        else:
            for i, t in enumerate(header):
                seen += check_signature(app, t, f"{path}.header[{i}]")
        rebuilt = normalize(sig)
        assert same(rebuilt["kwargs"]["header"], tasks), f"{path}: header differs"
        assert same(rebuilt["kwargs"]["body"], kw["body"]), f"{path}: body differs"
        assert same(rebuilt["kwargs"].get("kwargs"), kw.get("kwargs")), f"{path}: kwargs differ"
        for key in ("task", "args", "options", "subtask_type", "immutable"):
            assert same(rebuilt.get(key), d.get(key)), f"{path}: {key} differs"
        seen += check_signature(app, kw["body"], f"{path}.body")
    else:
        assert same(sig, d), f"{path}: reserialised differs"
    if kind in ("chain", "group"):
        for i, t in enumerate(kw.get("tasks") or []):
            seen += check_signature(app, t, f"{path}.tasks[{i}]")
    # Older producers put the chord body in each group member's options.
    sub = (d.get("options") or {}).get("chord")
    if isinstance(sub, Mapping):
        seen += check_signature(app, sub, f"{path}.options.chord")
    return seen


def versions():
    return {"celery_version": celery.__version__,
            "kombu_version": kombu.__version__}


def load_vector(path):
    with open(path, encoding="utf-8") as f:
        return loads(f.read())


def diff_views(want, got):
    """Human-readable list of differing keys (after normalisation)."""
    want, got = normalize(want), normalize(got)
    out = []
    for k in sorted(set(want) | set(got)):
        if not same(want.get(k, "<missing>"), got.get(k, "<missing>")):
            out.append(f"  {k}: expect={want.get(k, '<missing>')!r} "
                       f"celery={got.get(k, '<missing>')!r}")
    return out
