"""Redis behind Sentinel, broker and result backend: the Go worker next to
Celery 5.7 prefork in the same run, figures side by side.

The rig (scripts/ha.sh, started here through scripts/services.sh and
stopped at the end): master "gocelery-ha" on 26390, one replica on 26391,
three sentinels on 26479-26481; the data nodes refuse writes without a
replica (min-replicas-to-write 1), which is what keeps a demoted master
from taking writes the resync would throw away.

For each worker: 600 late-ack interop counter tasks sent from Python
(Celery's own producer, through the sentinels) while the worker drains,
and mid-run either SENTINEL FAILOVER or kill -9 of the master (restarted
as a supervisor would once the sentinels named a new one). Each task
INCRs one key on the shared Redis (6379, not the rig), so sent / lost /
ran twice are counted on a server nobody kills. Python's AsyncResult reads
the Go worker's results through the same sentinels.
"""
import os
import signal
import subprocess
import time
import uuid

import pytest
import redis

from conftest import REDIS_DB, REDIS_HOST, REDIS_PORT, GoWorker, PyWorker
from interop_helpers import CounterLoad

MASTER = "gocelery-ha"
SENTINELS = [("127.0.0.1", p) for p in (26479, 26480, 26481)]
BROKER = ";".join(f"sentinel://{h}:{p}/3" for h, p in SENTINELS)
BACKEND = ";".join(f"sentinel://{h}:{p}/4" for h, p in SENTINELS)
OPTIONS = {"master_name": MASTER}
COUNTERS = f"redis://{REDIS_HOST}:{REDIS_PORT}/{REDIS_DB}"
HA_DIR = os.environ.get("HA_DIR", "/tmp/gocelery-ha")
N = 600
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FIGURES = []


def services(cmd):
    subprocess.run([os.path.join(ROOT, "scripts", "services.sh"), cmd], check=True,
                   capture_output=True, timeout=120)


@pytest.fixture(scope="module")
def rig():
    services("sentinel-up")
    yield
    services("sentinel-down")
    if FIGURES:
        print("\n[sentinel] worker        event              sent  not-run  ran-twice  "
              "send-errors  resumed-after")
        for f in FIGURES:
            print(f"[sentinel] {f['worker']:<13} {f['event']:<17} {f['sent']:>5} {f['lost']:>8} "
                  f"{f['twice']:>10} {f['send_errors']:>12}  {f['resumed']:>6.1f} s")


def master_port():
    s = redis.Redis(*SENTINELS[0], socket_timeout=2)
    try:
        return int(s.sentinel_get_master_addr_by_name(MASTER)[1])
    finally:
        s.close()


def wait_new_master(old, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if master_port() != old:
                return
        except redis.RedisError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"the sentinels named no new master within {timeout}s")


def celery_app():
    from celery import Celery
    app = Celery("sentinel-sender", broker=BROKER, backend=BACKEND, set_as_current=False)
    app.conf.broker_transport_options = OPTIONS
    app.conf.result_backend_transport_options = OPTIONS
    return app


def start_worker(kind, goworker_bin, tmp_path, queue):
    name = f"{kind}-{queue}@sentinel"
    log = str(tmp_path / f"{kind}-{queue}.log")
    if kind == "go":
        os.environ["INTEROP_COUNTER_REDIS"] = COUNTERS
        try:
            return GoWorker(goworker_bin, [queue], log, name, concurrency=8, broker_url=BROKER,
                            backend_url=BACKEND,
                            # A pop whose reply the switch cut is left in
                            # unacked: a short visibility timeout brings it
                            # back within the run (the worker keeps its own
                            # deliveries alive, so nothing else comes back).
                            flags=["--acks-late", "--visibility-timeout", "10s", "--restore-interval", "1s",
                                   "--broker-transport-option", f"master_name={MASTER}",
                                   "--result-backend-transport-option", f"master_name={MASTER}"]
                            ).wait_ready()
        finally:
            del os.environ["INTEROP_COUNTER_REDIS"]
    env = {"PYINTEROP_TRANSPORT_OPTIONS": '{"master_name": "%s"}' % MASTER,
           "PYINTEROP_BACKEND_TRANSPORT_OPTIONS": '{"master_name": "%s"}' % MASTER,
           "PYINTEROP_ACKS_LATE": "1", "PYINTEROP_COUNTER_REDIS": COUNTERS}
    os.environ.update(env)
    try:
        return PyWorker(queue, log, name, concurrency=4, broker_url=BROKER,
                        backend_url=BACKEND).wait_ready()
    finally:
        for k in env:
            del os.environ[k]


def scenario(kind, event, goworker_bin, tmp_path, rdb, prefix):
    slug = "failover" if event == "SENTINEL FAILOVER" else "kill9"
    queue = f"sentinel_{kind}_{slug}_{uuid.uuid4().hex[:6]}"
    task = "interop.counter" if kind == "go" else "pyinterop.counter"
    keys = [f"{prefix}{queue}:{i}" for i in range(N)]
    worker = start_worker(kind, goworker_bin, tmp_path, queue)
    app = celery_app()
    results = []

    def send_one(k):
        r = app.send_task(task, (k,), queue=queue, retry=False)
        if len(results) < N // 100 and int(k.rsplit(":", 1)[1]) % 100 == 0:
            results.append(r)

    load = CounterLoad(rdb, keys, send_one, pause=0.003).start()
    try:
        load.wait_ran(N // 3, 60, f"{kind} worker made no progress:\n{worker.tail()}")
        old = master_port()
        at = time.monotonic()
        if event == "SENTINEL FAILOVER":
            redis.Redis(*SENTINELS[0]).execute_command("SENTINEL", "FAILOVER", MASTER)
            wait_new_master(old)
        else:
            with open(f"{HA_DIR}/redis-{old}/pid") as f:
                os.kill(int(f.read()), signal.SIGKILL)
            wait_new_master(old)
            services("sentinel-revive")
        # Celery's worker may never come back: give it the Go worker's
        # budget, not more, and report what it did.
        resumed = load.resumed_after(at, load.ran(), 20)
        fig = {"worker": "Go" if kind == "go" else "Celery 5.7", "event": event,
               **load.finish(40, 30 if resumed is not None else 5),
               "resumed": resumed if resumed is not None else float("nan")}
        FIGURES.append(fig)
        print(f"\n[sentinel] {fig}")
        if kind == "go":
            # Python's AsyncResult reads the Go worker's results through the
            # same sentinels, also those stored after the switch.
            for r in results:
                assert r.get(timeout=30) >= 1
        return fig, worker
    finally:
        load.stop.set()
        t0 = time.monotonic()
        worker.stop()
        app.close()
        print(f"[sentinel] {kind} teardown {time.monotonic() - t0:.1f} s")


@pytest.mark.parametrize("kind", ["go", "celery"])
def test_sentinel_failover_under_load(rig, kind, goworker_bin, tmp_path, rdb, redis_prefix):
    fig, w = scenario(kind, "SENTINEL FAILOVER", goworker_bin, tmp_path, rdb, redis_prefix)
    if kind == "go":
        assert fig["sent"] == N
        assert fig["lost"] == 0, f"lost {fig['lost']} tasks across SENTINEL FAILOVER:\n{w.tail()}"
        assert fig["resumed"] < 30, "the worker did not follow the new master"


@pytest.mark.parametrize("kind", ["go", "celery"])
def test_sentinel_kill9_master_under_load(rig, kind, goworker_bin, tmp_path, rdb, redis_prefix):
    fig, w = scenario(kind, "kill -9 master", goworker_bin, tmp_path, rdb, redis_prefix)
    if kind == "go":
        # Asynchronous replication: what the dead master had not passed on
        # is gone; the figure is reported, the worker must keep running.
        assert fig["resumed"] < 30, f"the worker did not follow the new master:\n{w.tail()}"
        assert fig["lost"] <= 100, f"lost {fig['lost']} tasks: more than a replication lag's worth"
