"""pyinterop: the Python mirror of the Go interop task contract.

The same tasks as interop/tasks (Go), under the names ``pyinterop.*`` and
with the same behaviour, as real Celery tasks. Used as the Python-worker side
of the interop tests (a second service next to the Go one) and as the
consumer for Go-producer tests.

Run a worker with::

    PYINTEROP_BROKER=amqp://guest:guest@127.0.0.1:5672// \
    PYINTEROP_BACKEND=redis://127.0.0.1:6379/2 \
    PYINTEROP_QUEUE=myqueue \
    celery -A pyinterop worker -P threads -Q myqueue

(run from interop/python, or with it on PYTHONPATH).
"""
import json
import os
import time

from celery import Celery
from kombu import Queue

DEFAULT_BROKER = "amqp://guest:guest@127.0.0.1:5672//"
DEFAULT_BACKEND = "redis://127.0.0.1:6379/2"
DEFAULT_QUEUE = "pyinterop"

BROKER = os.environ.get("PYINTEROP_BROKER", DEFAULT_BROKER)
BACKEND = os.environ.get("PYINTEROP_BACKEND", DEFAULT_BACKEND)
QUEUE = os.environ.get("PYINTEROP_QUEUE", DEFAULT_QUEUE)

app = Celery("pyinterop", set_as_current=False)
app.conf.update(
    broker_url=BROKER,
    result_backend=BACKEND,
    task_default_queue=QUEUE,
    # PYINTEROP_QUEUE_TYPE=quorum: the cluster tests' quorum queue.
    task_queues=(Queue(QUEUE, queue_arguments=(
        {"x-queue-type": os.environ["PYINTEROP_QUEUE_TYPE"]} if os.environ.get("PYINTEROP_QUEUE_TYPE") else None)),),
    result_extended=True,
    task_serializer="json",
    result_serializer="json",
    accept_content=["json", "msgpack"],
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=True,
    # Reliability tests set these: kombu's visibility timeout and restore
    # cadence on Redis, and late acks.
    broker_transport_options=json.loads(os.environ.get("PYINTEROP_TRANSPORT_OPTIONS", "{}")),
    task_acks_late=os.environ.get("PYINTEROP_ACKS_LATE") == "1",
    # Sentinel tests: master_name for a sentinel:// result backend.
    result_backend_transport_options=json.loads(
        os.environ.get("PYINTEROP_BACKEND_TRANSPORT_OPTIONS", "{}")),
)


@app.task(name="pyinterop.add")
def add(x, y):
    """x + y: ints stay ints (big ones too), floats stay floats."""
    return x + y


@app.task(name="pyinterop.xsum")
def xsum(values):
    """sum(values): the chord body of the contract."""
    return sum(values)


@app.task(name="pyinterop.echo")
def echo(*args, **kwargs):
    """Returns its arguments unchanged."""
    return {"args": list(args), "kwargs": kwargs}


@app.task(name="pyinterop.fail")
def fail(message="pyinterop.fail"):
    raise ValueError(message)


@app.task(name="pyinterop.sleep")
def sleep(seconds):
    time.sleep(seconds)
    return seconds


@app.task(name="pyinterop.progress", bind=True)
def progress(self, steps, delay=0):
    for i in range(1, steps + 1):
        self.update_state(state="PROGRESS", meta={"current": i, "total": steps})
        if delay:
            time.sleep(delay)
    return steps


@app.task(name="pyinterop.retry", bind=True)
def retry(self, times):
    retries = self.request.retries
    if retries < times:
        raise self.retry(countdown=0.1, max_retries=times,
                         exc=ValueError(f"retry {retries + 1} of {times}"))
    return retries


@app.task(name="pyinterop.counter", bind=True)
def counter(self, key, sleep=0):
    """Sleeps, then INCRs key in the result backend's Redis DB."""
    if sleep:
        time.sleep(sleep)
    return _counter_client(self.app).incr(key)


_counters = None


def _counter_client(app):
    """The backend's Redis, or PYINTEROP_COUNTER_REDIS: failover tests
    count on a Redis that is not the one they kill."""
    global _counters
    url = os.environ.get("PYINTEROP_COUNTER_REDIS")
    if not url:
        return app.backend.client
    if _counters is None:
        import redis
        _counters = redis.Redis.from_url(url)
    return _counters


@app.task(name="pyinterop.request", bind=True)
def request(self):
    """The request context, with the same fields as the Go interop.request."""
    r = self.request
    di = r.delivery_info or {}
    return {
        "id": r.id,
        "task": r.task,
        "retries": r.retries,
        "timelimit": list(r.timelimit or (None, None)),
        "root_id": r.root_id,
        "parent_id": r.parent_id,
        "group": r.group,
        "eta": r.eta,
        "expires": r.expires,
        "delivery_info": {
            "exchange": di.get("exchange"),
            "routing_key": di.get("routing_key"),
            "priority": di.get("priority"),
            "redelivered": di.get("redelivered"),
        },
        "headers": dict(r.headers or {}),
        "hostname": r.hostname,
        "args": list(r.args or []),
        "kwargs": dict(r.kwargs or {}),
    }
