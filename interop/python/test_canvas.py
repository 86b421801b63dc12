"""Python canvas over Go tasks: chains, groups, chords and errbacks built by
real Celery 5.7.0 (through the Flask app's stubs) complete through the Go
worker, which sends the next chain step, the callbacks and errbacks, and joins
chords in the Redis backend exactly as a Python worker would. A mixed chain
runs Python -> Go -> Python across two queues; a chord's header runs on Go
and its body on Python, and the other way round.

Broker-neutral: the Makefile runs it on RabbitMQ and again on Redis.
"""
from types import SimpleNamespace

import pytest
from celery import chain, chord, group
from celery.exceptions import ChordError
from celery.result import AsyncResult

import flaskapp
from conftest import (BACKEND_URL, BROKER_URL, _start_go, close_celery, delete_queues,
                      new_uid, wait_until)

TIMEOUT = 30


@pytest.fixture(scope="module")
def canvas_env(goworker_bin, tmp_path_factory):
    """A Go worker whose default queue is its own queue, as a Python worker's
    task_default_queue would be: chain steps and chord bodies that name no
    queue stay on the Go side."""
    log_dir = tmp_path_factory.mktemp("canvas-goworker")
    uid = new_uid()
    q = f"canvas_{uid}"
    worker = _start_go(goworker_bin, log_dir, None, queues=[q], concurrency=8,
                       flags=["--default-queue", q])
    app = flaskapp.create_app(BROKER_URL, BACKEND_URL, q)
    celery = app.extensions["celery"]
    yield SimpleNamespace(worker=worker, celery=celery, queue=q)
    worker.stop()
    close_celery(celery)
    delete_queues([q, f"{q}.unregistered", f"{q}.malformed"])


@pytest.fixture
def env(canvas_env, request):
    from conftest import attach_log
    attach_log(request.node, canvas_env.worker.label, canvas_env.worker.log_path)
    assert canvas_env.worker.alive(), "Go worker died:\n" + canvas_env.worker.tail()
    canvas_env.celery.set_current()
    return canvas_env


add, xsum, fail, counter = flaskapp.add, flaskapp.xsum, flaskapp.fail, flaskapp.counter


def get(r, **kwargs):
    """r.get() once r is ready. Celery's Redis result consumer SUBSCRIBEs
    without waiting for Redis to confirm, then reads the state once: a Go
    chain can finish in that window, its PUBLISH is missed and get() waits
    for nothing (a Celery client race, hit when workers are fast). Polling
    the state first closes it."""
    wait_until(r.ready, TIMEOUT, interval=0.01, message=f"result {r.id} ready")
    return r.get(timeout=TIMEOUT, **kwargs)


def test_chain_of_go_tasks(env):
    r = chain(add.s(1, 1), add.s(2), add.s(3)).apply_async()
    assert get(r) == 7
    # parent links as a Python worker records them: each step's parent is
    # the step before, and all share the first step's id as root.
    first = r.parent.parent
    assert get(r.parent) == 4
    assert get(first) == 2
    for step in (r, r.parent):
        meta = env.celery.backend.get_task_meta(step.id)
        assert meta["parent_id"] == step.parent.id


def test_chain_immutable_step(env):
    r = chain(add.s(1, 1), add.si(10, 10), add.s(5)).apply_async()
    assert get(r) == 25


def test_group_of_100(env):
    g = group(add.s(i, i) for i in range(100)).apply_async()
    assert get(g) == [2 * i for i in range(100)]


def test_chord_group_xsum(env):
    r = chord((add.s(i, i) for i in range(20)), xsum.s()).apply_async()
    assert get(r) == sum(2 * i for i in range(20))


def test_chord_results_in_header_order(env):
    # The body gets the header's results in header order, not completion
    # order: the sleeps make the first header task finish last.
    sleep = flaskapp.sleep
    r = chord([sleep.si(0.5), sleep.si(0.2), sleep.si(0)], flaskapp.echo.s()).apply_async()
    got = get(r)
    assert got["args"] == [[0.5, 0.2, 0]]


def test_chain_of_chords(env):
    # The first chord's result is the partial argument of the second
    # chord's header tasks: add(6, 10) + add(6, 20) = 42.
    c = chain(chord([add.s(1, 1), add.s(2, 2)], xsum.s()),
              chord([add.s(10), add.s(20)], xsum.s()))
    assert get(c.apply_async()) == 42


def test_chain_with_group_upgraded_to_chord(env):
    # chain(task, group, task): Celery turns group + task into a chord whose
    # header gets the first task's result.
    r = chain(add.s(1, 1), group(add.s(1), add.s(2)), xsum.s()).apply_async()
    assert get(r) == 3 + 4


def test_link_callback(env, rdb):
    key = f"canvas:link:{new_uid()}"
    r = add.apply_async((2, 3), link=counter.si(key))
    assert get(r) == 5
    wait_until(lambda: rdb.get(key) == b"1", TIMEOUT, message="link callback ran")


def test_link_callback_gets_result(env):
    cid = new_uid()
    r = add.apply_async((2, 3), link=add.s(100).set(task_id=cid))
    assert get(r) == 5
    child = AsyncResult(cid, app=env.celery)
    assert get(child) == 105
    assert env.celery.backend.get_task_meta(cid)["parent_id"] == r.id


def test_several_callbacks_run_as_a_group(env):
    ids = [new_uid() for _ in range(3)]
    r = add.apply_async((1, 2), link=[add.s(i).set(task_id=t) for i, t in enumerate(ids)])
    assert get(r) == 3
    assert [get(AsyncResult(t, app=env.celery)) for t in ids] == [3, 4, 5]


def test_errback_on_failure(env, rdb):
    key = f"canvas:errback:{new_uid()}"
    r = fail.apply_async(("boom",), link_error=counter.si(key))
    with pytest.raises(ValueError, match="boom"):
        get(r)
    wait_until(lambda: rdb.get(key) == b"1", TIMEOUT, message="errback ran once")


def test_errback_gets_task_id(env):
    # Old-style errbacks are sent as tasks with the failed task's id first.
    eb = flaskapp.echo.s()
    eb_id = str(new_uid())
    r = fail.apply_async(("boom",), link_error=eb.set(task_id=eb_id))
    get(r, propagate=False)
    got = get(AsyncResult(eb_id, app=env.celery))
    assert got["args"] == [r.id]


def test_failure_fails_rest_of_chain(env):
    r = chain(add.s(1, 1), fail.si("mid"), add.s(1)).apply_async()
    with pytest.raises(ValueError, match="mid"):
        get(r)
    assert r.state == "FAILURE"


def test_chord_header_failure_fails_body(env, rdb):
    key = f"canvas:chord-eb:{new_uid()}"
    body = xsum.s().on_error(counter.si(key))
    r = chord([add.s(1, 1), fail.si("header"), add.s(2, 2)], body).apply_async()
    # r.get() re-raises the header's ValueError first (its parent); the
    # body's own result is the ChordError naming the failed dependency.
    with pytest.raises(ValueError, match="header"):
        get(r)
    body_result = AsyncResult(r.id, app=env.celery)
    with pytest.raises(ChordError, match=r"Dependency .* raised ValueError\('header'\)"):
        get(body_result)
    wait_until(lambda: rdb.get(key) == b"1", TIMEOUT, message="body errback ran")


@pytest.fixture
def mixed(env, py_worker):
    return SimpleNamespace(go=env, py=py_worker(concurrency=2))


def pysig(env, name, *args, queue, immutable=False):
    return env.celery.signature(f"pyinterop.{name}", args=args, queue=queue, immutable=immutable)


def test_mixed_chain_python_go_python(mixed):
    env, pyq = mixed.go, mixed.py.queue
    c = chain(pysig(env, "add", 1, 1, queue=pyq),
              add.s(2).set(queue=env.queue),
              pysig(env, "add", 3, queue=pyq),
              add.s(4).set(queue=env.queue))
    assert get(c.apply_async()) == 11


def test_chord_go_header_python_body(mixed):
    env, pyq = mixed.go, mixed.py.queue
    r = chord([add.s(i, i) for i in range(10)], pysig(env, "xsum", queue=pyq)).apply_async()
    assert get(r) == 90


def test_chord_mixed_header_go_body(mixed):
    # Parts of one chord are returned by a Python and a Go worker; whichever
    # completes it publishes the body once. The body names its queue: the
    # Python worker would route it by its own task_default_queue.
    env, pyq = mixed.go, mixed.py.queue
    header = [pysig(env, "add", i, i, queue=pyq) if i % 2 else add.s(i, i) for i in range(10)]
    r = chord(header, xsum.s().set(queue=env.queue)).apply_async()
    assert get(r) == 90
