"""faults_celery: the Celery 5.7 side of the fault suite (fault_suite.py).

It registers the Go interop contract's own task names (interop.counter,
interop.sleep) with the same behaviour, so the suite sends the very same
messages to a Go worker and to this Celery prefork worker. Configured from
the environment (the suite sets these; Celery's setting names in brackets):

    FAULTS_BROKER, FAULTS_BACKEND, FAULTS_QUEUE
    FAULTS_ACKS_LATE=1              [task_acks_late]
    FAULTS_REJECT_ON_WORKER_LOST=1  [task_reject_on_worker_lost]
    FAULTS_TRACK_STARTED=1          [task_track_started]
    FAULTS_SOFT_SHUTDOWN_TIMEOUT=s  [worker_soft_shutdown_timeout]
    FAULTS_SOFT_SHUTDOWN_ON_IDLE=1  [worker_enable_soft_shutdown_on_idle]
    FAULTS_TRANSPORT_OPTIONS=json   [broker_transport_options]

Run: celery -A faults_celery worker -P prefork -Q $FAULTS_QUEUE (from
interop/python).
"""
import json
import os
import time

from celery import Celery
from kombu import Queue


def _flag(name):
    return os.environ.get(name) == "1"


QUEUE = os.environ.get("FAULTS_QUEUE", "faults")

app = Celery("faults_celery", set_as_current=False)
app.conf.update(
    broker_url=os.environ.get("FAULTS_BROKER", "amqp://guest:guest@127.0.0.1:5672//"),
    result_backend=os.environ.get("FAULTS_BACKEND", "redis://127.0.0.1:6379/6"),
    task_default_queue=QUEUE,
    task_queues=(Queue(QUEUE),),
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=True,
    task_acks_late=_flag("FAULTS_ACKS_LATE"),
    task_reject_on_worker_lost=_flag("FAULTS_REJECT_ON_WORKER_LOST"),
    task_track_started=_flag("FAULTS_TRACK_STARTED"),
    worker_soft_shutdown_timeout=float(os.environ.get("FAULTS_SOFT_SHUTDOWN_TIMEOUT", "0")),
    worker_enable_soft_shutdown_on_idle=_flag("FAULTS_SOFT_SHUTDOWN_ON_IDLE"),
    broker_transport_options=json.loads(os.environ.get("FAULTS_TRANSPORT_OPTIONS", "{}")),
)


@app.task(name="interop.counter", bind=True)
def counter(self, key, sleep=0):
    """Sleeps, then INCRs key in the result backend's Redis DB (as the Go
    interop.counter does): the suite counts runs per task from these keys."""
    if sleep:
        time.sleep(sleep)
    return self.app.backend.client.incr(key)


@app.task(name="interop.sleep")
def sleep(seconds):
    time.sleep(seconds)
    return seconds
