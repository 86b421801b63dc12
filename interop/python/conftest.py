"""Shared pytest setup: import celery_view from here; locate the repo root.

Also the fixtures of the live interop tests (real RabbitMQ, real Redis, the
Go worker binary and Python Celery workers as subprocesses):

- ``goworker_bin``: builds ./interop/goworker once per session;
- ``go_worker``: factory starting Go workers (unique queue, waits for
  ``msg="worker ready"``, SIGTERM then SIGKILL at teardown);
- ``py_worker``: factory starting ``celery -A pyinterop worker``;
- ``flask_app``: factory for flaskapp.create_app (Celery apps closed at
  teardown);
- ``rdb``: Redis client on the tests' DB; ``redis_prefix``: unique key prefix,
  keys deleted at teardown;
- ``amqp_queues``: queue names to delete at teardown (workers declare them).

Every worker's log is attached to the test: when a test fails, the tail of
each of its workers' logs is added to the failure report.
"""
import os
import signal
import subprocess
import sys
import time
import uuid
import warnings

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)

BROKER_URL = os.environ.get("INTEROP_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672//")
REDIS_HOST = os.environ.get("INTEROP_REDIS_HOST", "127.0.0.1")
REDIS_PORT = int(os.environ.get("INTEROP_REDIS_PORT", "6379"))
REDIS_DB = int(os.environ.get("INTEROP_REDIS_DB", "2"))
BACKEND_URL = f"redis://{REDIS_HOST}:{REDIS_PORT}/{REDIS_DB}"

READY_TIMEOUT = 30.0    # seconds for a worker to report ready
STOP_TIMEOUT = 15.0     # warm shutdown grace before SIGKILL
LOG_TAIL_LINES = 60


@pytest.fixture(scope="session")
def repo_root():
    return REPO_ROOT


def new_uid():
    return uuid.uuid4().hex[:12]


def wait_until(predicate, timeout, interval=0.02, message="condition"):
    """Polls predicate until it returns a truthy value (returned) or fails
    the test after timeout seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {message}", pytrace=False)
        time.sleep(interval)


def log_tail(path, lines=LOG_TAIL_LINES):
    try:
        with open(path, "r", errors="replace") as f:
            return "".join(f.readlines()[-lines:])
    except OSError as exc:
        return f"<no log: {exc}>"


def attach_log(node, label, path):
    """Registers a worker log on a test item (see pytest_runtest_makereport)."""
    logs = getattr(node, "_interop_logs", None)
    if logs is None:
        logs = node._interop_logs = []
    if (label, path) not in logs:
        logs.append((label, path))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.failed and rep.when in ("setup", "call"):
        for label, path in getattr(item, "_interop_logs", []):
            rep.sections.append((f"{label}: last {LOG_TAIL_LINES} lines of {path}",
                                 log_tail(path)))


# --- processes ------------------------------------------------------------

class Proc:
    """A worker subprocess whose stdout+stderr go to a log file."""

    kind = "worker"

    def __init__(self, cmd, log_path, ready_marker, env=None, cwd=None, label=None):
        self.cmd = [str(c) for c in cmd]
        self.log_path = str(log_path)
        self.ready_marker = ready_marker
        self.label = label or self.kind
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.cmd, stdout=self._log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, env=env, cwd=cwd,
                                     start_new_session=True)
        self.started_at = time.monotonic()

    @property
    def pid(self):
        return self.proc.pid

    def alive(self):
        return self.proc.poll() is None

    def log(self):
        with open(self.log_path, "r", errors="replace") as f:
            return f.read()

    def tail(self, lines=LOG_TAIL_LINES):
        return log_tail(self.log_path, lines)

    def wait_ready(self, timeout=READY_TIMEOUT):
        deadline = time.monotonic() + timeout
        while True:
            if self.ready_marker in self.log():
                return self
            rc = self.proc.poll()
            if rc is not None:
                raise RuntimeError(f"{self.label} exited with {rc} before ready; "
                                   f"command: {' '.join(self.cmd)}\n--- log tail:\n{self.tail()}")
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"{self.label} not ready after {timeout}s (no "
                                   f"{self.ready_marker!r} in its log); command: "
                                   f"{' '.join(self.cmd)}\n--- log tail:\n{self.tail()}")
            time.sleep(0.05)

    def signal(self, sig):
        if self.alive():
            self.proc.send_signal(sig)

    def kill(self):
        """SIGKILL (kill -9) and reap."""
        if self.alive():
            self.proc.kill()
        self.proc.wait(timeout=10)
        self._log.close()

    def stop(self, timeout=STOP_TIMEOUT):
        """Warm shutdown (SIGTERM), then SIGKILL after timeout. Returns the
        exit code, or None if it had to be killed."""
        if not self.alive():
            self._log.close()
            return self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            warnings.warn(f"{self.label} (pid {self.pid}) ignored SIGTERM for {timeout}s; "
                          f"SIGKILLed. Log tail:\n{self.tail(20)}")
            self.kill()
            return None
        finally:
            self._log.close()


class GoWorker(Proc):
    kind = "go worker"

    def __init__(self, binary, queues, log_path, hostname, concurrency=4, flags=(),
                 backend_url=BACKEND_URL, broker_url=BROKER_URL):
        self.queues = list(queues)
        self.queue = self.queues[0]
        self.hostname = hostname
        cmd = [binary, "--broker", broker_url, "--result-backend", backend_url,
               "-Q", ",".join(self.queues), "-c", str(concurrency), "-n", hostname,
               *flags]
        super().__init__(cmd, log_path, 'msg="worker ready"',
                         label=f"go worker {hostname}")


class PyWorker(Proc):
    kind = "python worker"

    def __init__(self, queue, log_path, hostname, concurrency=2, pool="prefork",
                 backend_url=BACKEND_URL, broker_url=BROKER_URL, extra=()):
        self.queue = queue
        self.queues = [queue]
        self.hostname = hostname
        env = dict(os.environ, PYINTEROP_BROKER=broker_url, PYINTEROP_BACKEND=backend_url,
                   PYINTEROP_QUEUE=queue, PYTHONPATH=HERE, PYTHONUNBUFFERED="1")
        celery = os.path.join(os.path.dirname(sys.executable), "celery")
        if not os.path.exists(celery):
            celery = os.path.join(REPO_ROOT, ".venv", "bin", "celery")
        cmd = [celery, "-A", "pyinterop", "worker", "-P", pool, "-c", str(concurrency),
               "-Q", queue, "-n", hostname, "-l", "info",
               "--without-gossip", "--without-mingle", "--without-heartbeat", *extra]
        super().__init__(cmd, log_path, f"{hostname} ready.", env=env, cwd=HERE,
                         label=f"python worker {hostname}")

    def stop(self, timeout=2.0):
        """Warm shutdown, then (Celery's warm shutdown of an idle worker
        takes 6-10 s: its consumer loop polls with a long timeout) cold
        shutdown with SIGQUIT, then SIGKILL. Used at teardown, when the
        worker has nothing left to do."""
        if not self.alive():
            self._log.close()
            return self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        for sig, wait in ((signal.SIGQUIT, timeout), (signal.SIGKILL, 5.0)):
            try:
                return self.proc.wait(timeout=wait)
            except subprocess.TimeoutExpired:
                self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=10)
        finally:
            self._log.close()


@pytest.fixture(scope="session")
def goworker_bin(repo_root, tmp_path_factory):
    """Builds the Go worker once per session."""
    out = tmp_path_factory.mktemp("gobin") / "goworker"
    cmd = ["go", "build", "-o", str(out), "./interop/goworker"]
    try:
        proc = subprocess.run(cmd, cwd=repo_root, capture_output=True, text=True, timeout=600)
    except subprocess.TimeoutExpired:
        pytest.fail("`go build ./interop/goworker` took more than 600 s", pytrace=False)
    if proc.returncode != 0:
        pytest.fail(f"`{' '.join(cmd)}` failed (exit {proc.returncode}):\n"
                    f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}", pytrace=False)
    return str(out)


class QueueJanitor:
    """Deletes the named queues (and the exchanges Celery declares under the
    same names) at teardown."""

    def __init__(self):
        self.names = []

    def track(self, *names):
        for n in names:
            if n not in self.names:
                self.names.append(n)
        return names[0] if len(names) == 1 else names

    def track_worker_queues(self, queue):
        # The Go worker dead-letters to <queue>.unregistered / .malformed.
        self.track(queue, f"{queue}.unregistered", f"{queue}.malformed")

    def cleanup(self):
        delete_queues(self.names)


def delete_queues(names):
    from kombu import Connection

    if not names:
        return
    try:
        with Connection(BROKER_URL, connect_timeout=5) as conn:
            for n in names:
                ch = conn.channel()
                try:
                    ch.queue_delete(queue=n)
                except Exception:  # noqa: BLE001 - not declared: nothing to delete
                    pass
                try:
                    ch.close()
                except Exception:  # noqa: BLE001
                    pass
                ch = conn.channel()
                try:
                    ch.exchange_delete(exchange=n)
                except Exception:  # noqa: BLE001
                    pass
                try:
                    ch.close()
                except Exception:  # noqa: BLE001
                    pass
    except Exception as exc:  # noqa: BLE001 - cleanup must not mask the test result
        warnings.warn(f"could not delete queues {names}: {exc}")


def message_count(name):
    """Messages ready in queue name (passive declare), None if it does not
    exist. On Redis a queue is a list, which does not exist when empty, so
    there a missing queue counts 0."""
    from amqp.exceptions import ChannelError, NotFound
    from kombu import Connection

    with Connection(BROKER_URL, connect_timeout=5) as conn:
        ch = conn.channel()
        try:
            return ch.queue_declare(queue=name, passive=True).message_count
        except NotFound:
            return None
        except ChannelError:
            if BROKER_URL.startswith("redis"):
                return 0
            raise


@pytest.fixture
def amqp_queues():
    janitor = QueueJanitor()
    yield janitor
    janitor.cleanup()


def _start_go(goworker_bin, log_dir, node, queues=None, concurrency=4, flags=(),
              name=None, wait=True, prefix="q"):
    uid = new_uid()
    if queues is None:
        queues = [f"{prefix}_{uid}"]
    elif isinstance(queues, str):
        queues = [queues]
    hostname = name or f"go-{uid}@interop"
    log_path = os.path.join(str(log_dir), f"goworker-{uid}.log")
    w = GoWorker(goworker_bin, queues, log_path, hostname, concurrency=concurrency,
                 flags=flags)
    if node is not None:
        attach_log(node, w.label, log_path)
    if wait:
        try:
            w.wait_ready()
        except RuntimeError as exc:
            pytest.fail(str(exc), pytrace=False)
    return w


@pytest.fixture
def go_worker(goworker_bin, tmp_path, request, amqp_queues):
    """Factory: go_worker(queues=None, concurrency=4, flags=(), name=None,
    wait=True) starts a Go worker (unique queue "q_<uid>" unless queues are
    given) and waits until it consumes. Stopped (SIGTERM, then SIGKILL) at
    teardown; its queues are deleted."""
    workers = []

    def start(queues=None, concurrency=4, flags=(), name=None, wait=True, prefix="q"):
        w = _start_go(goworker_bin, tmp_path, request.node, queues, concurrency, flags,
                      name, wait=False, prefix=prefix)
        workers.append(w)
        for q in w.queues:
            amqp_queues.track_worker_queues(q)
        if wait:
            try:
                w.wait_ready()
            except RuntimeError as exc:
                pytest.fail(str(exc), pytrace=False)
        return w

    yield start
    for w in workers:
        w.stop()


@pytest.fixture
def py_worker(tmp_path, request, amqp_queues):
    """Factory: py_worker(queue=None, concurrency=2, pool="prefork") starts
    `celery -A pyinterop worker` on a unique queue and waits for its
    "ready." log line. (Prefork, Celery's default pool, also stops quickly:
    the solo/threads pools take ~10 s to warm-shut-down.)"""
    workers = []

    def start(queue=None, concurrency=2, pool="prefork", name=None, prefix="py"):
        uid = new_uid()
        queue = queue or f"{prefix}_{uid}"
        hostname = name or f"py-{uid}@interop"
        log_path = os.path.join(str(tmp_path), f"pyworker-{uid}.log")
        w = PyWorker(queue, log_path, hostname, concurrency=concurrency, pool=pool)
        workers.append(w)
        attach_log(request.node, w.label, log_path)
        amqp_queues.track(queue)
        try:
            w.wait_ready()
        except RuntimeError as exc:
            pytest.fail(str(exc), pytrace=False)
        return w

    yield start
    for w in workers:
        w.stop()


def close_celery(celery_app):
    try:
        celery_app.close()
    except Exception:  # noqa: BLE001
        pass
    try:
        celery_app.backend.client.connection_pool.disconnect()
    except Exception:  # noqa: BLE001
        pass


@pytest.fixture
def flask_app(amqp_queues):
    """Factory: flask_app(queue, **celery_conf) -> flaskapp.create_app(...)
    on the test broker and result backend; Celery apps closed at teardown."""
    import flaskapp

    apps = []

    def make(queue, task_namespace="interop", **conf):
        amqp_queues.track(queue)
        app = flaskapp.create_app(BROKER_URL, BACKEND_URL, queue,
                                  task_namespace=task_namespace, **conf)
        apps.append(app)
        return app

    yield make
    for app in apps:
        close_celery(app.extensions["celery"])


@pytest.fixture(scope="session")
def rdb():
    import redis

    client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=REDIS_DB,
                         socket_timeout=10, socket_connect_timeout=5)
    client.ping()
    yield client
    client.close()


@pytest.fixture
def redis_prefix(rdb):
    """A unique key prefix; matching keys are deleted at teardown."""
    prefix = f"interop:{new_uid()}:"
    yield prefix
    keys = list(rdb.scan_iter(match=prefix + "*", count=1000))
    for i in range(0, len(keys), 500):
        rdb.delete(*keys[i:i + 500])
