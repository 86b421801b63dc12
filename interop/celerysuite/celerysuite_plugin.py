"""pytest plugin that runs Celery's own integration suite (t/integration,
unchanged) against the Go worker or, as the reference, Celery's own worker.

CELERYSUITE_WORKER=go starts the Go worker binary (CELERYSUITE_GOWORKER) on
the suite's broker (TEST_BROKER), result backend (TEST_BACKEND) and queue
("celery") in place of celery.contrib.pytest's embedded session worker;
CELERYSUITE_WORKER=python (the default) leaves Celery's worker in place.

Both runs keep the suite's Redis helper (tasks.get_redis_connection) on the
result backend's database (CELERYSUITE_REDIS_DB, 15), not Redis' DB 0, so the
suite shares nothing with the other tests on this Redis. Upstream runs it the
same way: its backend and its helper share one database.
"""

import os
import signal
import subprocess
import tempfile
import time
from contextlib import contextmanager

import pytest

WORKER = os.environ.get('CELERYSUITE_WORKER', 'python')
REDIS_DB = int(os.environ.get('CELERYSUITE_REDIS_DB', '15'))

# Tests the Go worker cannot be asked to pass, each with why: every reason
# is about Python itself (state inside the Python worker process, signals
# the Python worker sends to its own process, pickled payloads).
GO_SKIPS_PREFIX = 'Python-only: '
SUCCESSFUL_REQUESTS = ("waits for the task id in celery.worker.state.successful_requests, "
                       "a set in the Python worker process' own memory")
TASK_RECEIVED = ("asserts that a receiver connected in the test process hears task_received, "
                 "which the Python worker sends inside its own process")
GO_SKIPS = {
    'test_tasks.py::test_tasks::test_send_task_without_ignore_result_uses_task_ignore_result': SUCCESSFUL_REQUESTS,
    'test_tasks.py::test_tasks::test_send_task_without_ignore_result_stores_result': SUCCESSFUL_REQUESTS,
    'test_tasks.py::test_task_redis_result_backend::test_retry_preserves_ignore_result_true': SUCCESSFUL_REQUESTS,
    'test_tasks.py::test_task_redis_result_backend::test_retry_preserves_ignore_result_false': SUCCESSFUL_REQUESTS,
    'test_tasks.py::test_signal_bound_method_receivers::test_each_instance_receives': TASK_RECEIVED,
    'test_tasks.py::test_signal_bound_method_receivers::test_disconnect_leaves_other_instance_connected': TASK_RECEIVED,
    'test_tasks.py::test_signal_bound_method_receivers::test_other_instance_receives_after_garbage_collection':
        TASK_RECEIVED,
    'test_tasks.py::test_task_replacement::test_replaced_task_nesting_level_0': TASK_RECEIVED,
    'test_tasks.py::test_task_replacement::test_replaced_task_nesting_level_1': TASK_RECEIVED,
    'test_tasks.py::test_task_replacement::test_replaced_task_nesting_chain': TASK_RECEIVED,
    'test_canvas.py::test_stamping_mechanism::test_linking_stamped_sig': TASK_RECEIVED,
    'test_canvas.py::test_stamping_mechanism::test_err_linking_stamped_sig': TASK_RECEIVED,
    'test_canvas.py::test_stamping_mechanism::test_task_received_has_access_to_stamps': TASK_RECEIVED,
}


def _patch_redis_helper():
    import t.integration.tasks as suite_tasks

    def get_redis_connection():
        from redis import StrictRedis
        host = os.environ.get('REDIS_HOST', 'localhost')
        port = os.environ.get('REDIS_PORT', 6379)
        return StrictRedis(host=host, port=port, db=REDIS_DB, socket_timeout=None)

    suite_tasks.get_redis_connection = get_redis_connection


# Now, at plugin import: the suite's conftest imports the helper by name,
# and pytest loads it before pytest_configure.
_patch_redis_helper()


def pytest_configure(config):
    if WORKER == 'go':
        import celery.contrib.testing.worker as testing_worker
        testing_worker.start_worker = start_go_worker


def pytest_collection_modifyitems(config, items):
    if WORKER != 'go':
        return
    for item in items:
        key = item.nodeid.split('/')[-1]
        base = key.split('[')[0]
        reason = GO_SKIPS.get(key) or GO_SKIPS.get(base)
        if reason:
            item.add_marker(pytest.mark.skip(reason=GO_SKIPS_PREFIX + reason))


class GoWorker:
    """What the session fixture yields for the Go worker: its process."""

    def __init__(self, proc, hostname, logfile):
        self.proc = proc
        self.hostname = hostname
        self.logfile = logfile


@contextmanager
def start_go_worker(app, concurrency=1, pool='solo', loglevel=None, logfile=None,
                    perform_ping_check=True, ping_task_timeout=10.0,
                    shutdown_timeout=10.0, **kwargs):
    """celery.contrib.testing.worker.start_worker for the Go worker binary.

    The session fixture calls it with the suite's app; the Go worker gets
    the same broker, backend and queues as Celery's worker would.
    """
    from celery.contrib.testing.worker import test_worker_starting, test_worker_stopped
    from celery.result import allow_join_result

    binary = os.environ['CELERYSUITE_GOWORKER']
    hostname = f'gocelery-suite-{os.getpid()}@localhost'
    queues = sorted(q for q in app.amqp.queues) or ['celery']
    conf = app.conf
    cmd = [
        binary,
        '--broker', conf.broker_url,
        '--result-backend', conf.result_backend,
        '-Q', ','.join(queues),
        '--hostname', hostname,
        '-c', str(int(os.environ.get('CELERYSUITE_GO_CONCURRENCY', concurrency))),
        '--loglevel', os.environ.get('CELERYSUITE_GO_LOGLEVEL', 'info'),
        '--shutdown-timeout', '5s',
    ]
    if conf.result_extended:
        cmd.append('--result-extended')
    logpath = os.environ.get('CELERYSUITE_GO_LOG') or tempfile.mktemp(prefix='goworker-', suffix='.log')
    log = open(logpath, 'ab')
    test_worker_starting.send(sender=app)
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    w = GoWorker(proc, hostname, logpath)
    try:
        if perform_ping_check:
            from celery.contrib.testing.tasks import ping
            deadline = time.monotonic() + 30
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f'Go worker exited with {proc.returncode}; log: {logpath}')
                try:
                    with allow_join_result():
                        assert ping.delay().get(timeout=ping_task_timeout) == 'pong'
                    break
                except Exception:
                    if time.monotonic() > deadline:
                        raise
        yield w
    finally:
        test_worker_stopped.send(sender=app, worker=w)
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=shutdown_timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log.close()

