"""The field failure this product exists for: two services on one RabbitMQ
vhost.

Service A: a Flask/Celery app (task_default_queue=a_<uid>) whose tasks run
on a Python Celery worker (pyinterop.*). Service B: another Flask/Celery app
(task_default_queue=b_<uid>) whose tasks run on the Go worker (interop.*).
Each service must receive only its own tasks; a task name the Go worker does
not know must come back as FAILURE NotRegistered and be dead-lettered to
b_<uid>.unregistered (counted, not lost), never reaching service A.
"""
import time
from types import SimpleNamespace

import pytest
from celery.exceptions import NotRegistered
from kombu import Connection, Queue

from conftest import BROKER_URL, message_count, new_uid, wait_until
from interop_helpers import flask_result

TIMEOUT = 15
UNKNOWN_TASK = "apps.tasks.scheduled_job.calc_post_score"


@pytest.fixture
def services(go_worker, py_worker, flask_app, amqp_queues):
    uid = new_uid()
    qa, qb = f"a_{uid}", f"b_{uid}"
    py = py_worker(queue=qa, name=f"svc-a-{uid}@interop")
    go = go_worker(queues=qb, name=f"svc-b-{uid}@interop")
    app_a = flask_app(qa, task_namespace="pyinterop")
    app_b = flask_app(qb)
    return SimpleNamespace(
        uid=uid, qa=qa, qb=qb, py=py, go=go, app_a=app_a, app_b=app_b,
        celery_a=app_a.extensions["celery"], celery_b=app_b.extensions["celery"])


def test_each_service_gets_only_its_own_tasks(services):
    s = services
    assert s.celery_a.conf.task_default_queue == s.qa
    assert s.celery_b.conf.task_default_queue == s.qb
    # A: pyinterop tasks by name through A's app; B: interop stubs through B's
    # app, and the same via each Flask app's routes.
    a_results = [s.celery_a.send_task("pyinterop.request") for _ in range(5)]
    b_results = [s.celery_b.tasks["interop.request"].delay() for _ in range(5)]
    a_client, b_client = s.app_a.test_client(), s.app_b.test_client()
    a_flask = a_client.post("/request").get_json()["result_id"]
    b_flask = b_client.post("/request").get_json()["result_id"]

    for r in a_results:
        got = r.get(timeout=TIMEOUT)
        assert got["task"] == "pyinterop.request"
        assert got["hostname"] == s.py.hostname, "service A task ran on the wrong worker"
        assert got["delivery_info"]["routing_key"] == s.qa
    for r in b_results:
        got = r.get(timeout=TIMEOUT)
        assert got["task"] == "interop.request"
        assert got["hostname"] == s.go.hostname, "service B task ran on the wrong worker"
        assert got["delivery_info"]["routing_key"] == s.qb
    body = flask_result(a_client, a_flask)
    assert body["state"] == "SUCCESS" and body["result"]["hostname"] == s.py.hostname
    body = flask_result(b_client, b_flask)
    assert body["state"] == "SUCCESS" and body["result"]["hostname"] == s.go.hostname

    # Same arithmetic on both sides, different workers.
    assert s.celery_a.send_task("pyinterop.add", args=[2**70, 1]).get(timeout=TIMEOUT) == 2**70 + 1
    assert s.celery_b.send_task("interop.add", args=[2**70, 1]).get(timeout=TIMEOUT) == 2**70 + 1

    # Nothing left over or misrouted, nothing dead-lettered.
    assert message_count(s.qa) == 0
    assert message_count(s.qb) == 0
    assert message_count(f"{s.qb}.unregistered") in (None, 0)
    py_log = s.py.log()
    for r in b_results:
        assert r.id not in py_log, "the Python worker saw a service B task"
    for r in a_results:
        assert r.id in py_log  # sanity: the Python worker logs what it receives
        assert r.id not in s.go.log(), "the Go worker saw a service A task"


def test_default_queue_routes_to_go(services):
    s = services
    # No queue, no routing key: task_default_queue decides.
    r = s.celery_b.send_task("interop.request")
    got = r.get(timeout=TIMEOUT)
    assert got["hostname"] == s.go.hostname
    assert got["delivery_info"]["routing_key"] == s.qb
    assert got["delivery_info"]["exchange"] == ""


def test_unknown_task_is_dead_lettered_not_lost(services):
    s = services
    r = s.celery_b.send_task(UNKNOWN_TASK, args=[42], kwargs={"post": "p1"})
    with pytest.raises(NotRegistered, match=UNKNOWN_TASK.replace(".", r"\.")):
        r.get(timeout=TIMEOUT)
    assert r.state == "FAILURE"
    assert isinstance(r.info, NotRegistered)
    assert r.info.args == (UNKNOWN_TASK,)

    dlq = f"{s.qb}.unregistered"
    wait_until(lambda: message_count(dlq) == 1, 10, message=f"1 message in {dlq}")
    time.sleep(0.3)  # nothing else trickles in (no redelivery loop)
    assert message_count(dlq) == 1
    assert message_count(s.qb) == 0
    assert message_count(s.qa) == 0

    # The dead-lettered message is the original task, annotated.
    with Connection(BROKER_URL, connect_timeout=5) as conn:
        msg = Queue(dlq, channel=conn.default_channel, no_declare=True).get(no_ack=False)
        assert msg is not None
        headers = msg.headers
        assert headers["task"] == UNKNOWN_TASK
        assert headers["id"] == r.id
        assert UNKNOWN_TASK in str(headers.get("x-gocelery-reason")), headers
        assert headers.get("x-gocelery-queue") == s.qb
        assert msg.decode()[0] == [42]
        msg.requeue()
    assert wait_until(lambda: message_count(dlq) == 1, 5, message="message back in DLQ")

    # The Go worker is still consuming; service A's worker never saw it.
    assert s.celery_b.send_task("interop.add", args=[1, 2]).get(timeout=TIMEOUT) == 3
    py_log = s.py.log()
    assert r.id not in py_log
    assert UNKNOWN_TASK not in py_log
    assert s.celery_a.send_task("pyinterop.add", args=[1, 2]).get(timeout=TIMEOUT) == 3
