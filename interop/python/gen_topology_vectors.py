"""Writes config/testdata/topology.json: what Celery 5.7 / kombu 5.7 declare
(exchange.declare, queue.declare, queue.bind, in order) for a set of
Celery-named configs, recorded on a fake channel. config's tests check that
Topology declares the same.

Run from the repo root:  .venv/bin/python interop/python/gen_topology_vectors.py
"""
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from celery import Celery  # noqa: E402
from kombu.transport.base import to_rabbitmq_queue_arguments  # noqa: E402

import celeryconf  # noqa: E402

CASES = [
    {"name": "defaults", "config": {}, "consume": []},
    {"name": "default_quorum", "config": {"task_default_queue": "work", "task_default_queue_type": "quorum"},
     "consume": ["work", "other"]},
    {"name": "missing_quorum", "config": {"task_create_missing_queue_type": "quorum",
                                          "task_create_missing_queue_exchange_type": "topic"},
     "consume": ["extra"]},
    {"name": "forms", "config": {
        "task_default_queue": "orders",
        "task_default_exchange": "shop",
        "task_default_exchange_type": "topic",
        "task_default_routing_key": "orders.default",
        "task_queue_max_priority": 7,
        "task_queues": [
            {"name": "orders", "exchange": "shop", "exchange_type": "topic", "routing_key": "orders.#",
             "queue_arguments": {"x-queue-type": "quorum", "x-delivery-limit": 5}},
            {"name": "bare"},
            {"name": "prio", "exchange": "prio", "routing_key": "prio", "max_priority": 10},
            {"name": "keyless", "exchange": "fan", "exchange_type": "fanout"},
            {"name": "transient", "exchange": "tx", "routing_key": "tx", "durable": False,
             "auto_delete": True, "exchange_durable": False, "expires": 1.5, "message_ttl": 60,
             "max_length": 100, "max_length_bytes": 1048576},
            {"name": "headers", "exchange": "hdr", "exchange_type": "headers",
             "binding_arguments": {"x-match": "all", "region": "eu"}},
            {"name": "multi", "bindings": [
                {"exchange": "media", "exchange_type": "topic", "routing_key": "image.*"},
                {"exchange": "media", "exchange_type": "topic", "routing_key": "video.*"},
                {"exchange": "audit", "exchange_type": "fanout", "routing_key": ""}]},
            {"name": "explicit", "exchange": "shop", "exchange_type": "topic", "routing_key": "x.y",
             "queue_arguments": {"x-max-priority": 3}},
        ]}, "consume": ["orders", "missing"]},
]


class Recorder:
    """A channel that records what kombu asks of it."""

    def __init__(self):
        self.calls = []

    def prepare_queue_arguments(self, arguments, **kwargs):
        return to_rabbitmq_queue_arguments(arguments, **kwargs)

    def exchange_declare(self, exchange, type, durable, auto_delete, arguments, nowait, passive):
        self.calls.append({"op": "exchange.declare", "exchange": exchange, "type": type,
                           "durable": durable, "auto_delete": auto_delete})

    def queue_declare(self, queue, passive, durable, exclusive, auto_delete, arguments, nowait):
        self.calls.append({"op": "queue.declare", "queue": queue, "durable": durable,
                           "exclusive": exclusive, "auto_delete": auto_delete,
                           "arguments": arguments or {}})
        return (queue, 0, 0)

    def queue_bind(self, queue, exchange, routing_key, arguments, nowait):
        self.calls.append({"op": "queue.bind", "queue": queue, "exchange": exchange,
                           "routing_key": routing_key, "arguments": arguments or {}})


def record(case):
    app = Celery("vectors", set_as_current=False)
    conf = dict(case["config"])
    if "task_queues" in conf:
        conf["task_queues"] = [celeryconf.queue_of(q) for q in conf["task_queues"]]
    app.conf.update(conf)
    queues = app.amqp.queues
    for name in case["consume"]:
        queues[name]  # noqa: B018 - a missing queue is created on lookup, as by -Q
    out = []
    for name, q in queues.items():
        ch = Recorder()
        q.declare(channel=ch)
        # kombu keeps bindings in a set: order them as the file lists them.
        out.append({"queue": name, "calls": ch.calls})
    return out


def main():
    vectors = [{"name": c["name"], "config": c["config"], "consume": c["consume"],
                "declared": record(c)} for c in CASES]
    path = os.path.join(HERE, "..", "..", "config", "testdata", "topology.json")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(vectors, f, indent=1, sort_keys=True)
        f.write("\n")
    print(f"wrote {len(vectors)} cases to {os.path.normpath(path)}")


if __name__ == "__main__":
    main()
