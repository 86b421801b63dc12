"""celeryconf: a Celery app configured from the same file as a Go worker's
``--config worker.yaml`` (Celery's setting names).

The file is written in JSON (which is YAML too), so no YAML package is
needed here. ``task_queues`` entries become the kombu objects a Python
project would write by hand::

    {"name": "orders", "exchange": "shop", "exchange_type": "topic",
     "routing_key": "orders.#", "queue_arguments": {"x-queue-type": "quorum"}}
    ->  Queue("orders", Exchange("shop", type="topic"), routing_key="orders.#",
              queue_arguments={"x-queue-type": "quorum"})

Tasks carry the Go interop names (interop.counter, interop.retry), so the
same suite runs against a Go worker and, as the reference, this one::

    GOCELERY_CONFIG=/path/worker.yaml celery -A celeryconf worker -Q orders
"""
import json
import os

from celery import Celery
from kombu import Exchange, Queue, binding

QUEUE_ATTRS = ("durable", "auto_delete", "exclusive", "max_priority", "expires",
               "message_ttl", "max_length", "max_length_bytes")


def exchange_of(spec):
    kw = {}
    if "exchange_durable" in spec:
        kw["durable"] = spec["exchange_durable"]
    if "exchange_auto_delete" in spec:
        kw["auto_delete"] = spec["exchange_auto_delete"]
    return Exchange(spec["exchange"], type=spec.get("exchange_type", "direct"), **kw)


def queue_of(spec):
    kw = {k: spec[k] for k in QUEUE_ATTRS if k in spec}
    if spec.get("queue_arguments"):
        kw["queue_arguments"] = spec["queue_arguments"]
    if spec.get("binding_arguments"):
        kw["binding_arguments"] = spec["binding_arguments"]
    if spec.get("bindings"):
        kw["bindings"] = [binding(exchange_of(b), routing_key=b.get("routing_key", ""),
                                  arguments=b.get("arguments")) for b in spec["bindings"]]
        return Queue(spec["name"], **kw)
    exchange = exchange_of(spec) if spec.get("exchange") else None
    return Queue(spec["name"], exchange, routing_key=spec.get("routing_key", ""), **kw)


def load(path):
    with open(path) as f:
        conf = json.load(f)
    if "task_queues" in conf:
        conf["task_queues"] = [queue_of(q) for q in conf["task_queues"]]
    return conf


def make_app(path):
    app = Celery("celeryconf", set_as_current=False)
    app.conf.update(load(path))
    app.conf.update(broker_connection_retry_on_startup=True, worker_hijack_root_logger=True)

    @app.task(name="interop.counter", bind=True)
    def counter(self, key, sleep=0):
        return self.app.backend.client.incr(key)

    @app.task(name="interop.retry", bind=True)
    def retry(self, times, countdown=0.1):
        if self.request.retries < times:
            raise self.retry(countdown=countdown, max_retries=times,
                             exc=ValueError(f"retry {self.request.retries + 1} of {times}"))
        return self.request.retries

    return app


if os.environ.get("GOCELERY_CONFIG"):
    app = make_app(os.environ["GOCELERY_CONFIG"])
