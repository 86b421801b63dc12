"""Python side of the bench: fills a queue with interop.add tasks, and is
the Celery app of the Python prefork worker that drains it for comparison.

    python pyworker.py fill QUEUE N         # publish N interop.add(i, i) with send_task
    python pyworker.py pubrate QUEUE N      # the same, timed; prints "<rate> <rate with confirms>"
    celery -A pyworker worker -Q QUEUE ...  # BENCH_BACKEND set: store results
"""
import os
import sys
import time

from celery import Celery

broker = os.environ.get("BENCH_BROKER", "amqp://guest:guest@127.0.0.1:5672//")
backend = os.environ.get("BENCH_BACKEND") or None
app = Celery("bench", broker=broker, backend=backend)
app.conf.update(
    task_ignore_result=backend is None,
    worker_hijack_root_logger=False,
    worker_redirect_stdouts=False,
    broker_connection_retry_on_startup=True,
)


@app.task(name="interop.add")
def add(x, y):
    return x + y


def fill(queue, n):
    start = time.perf_counter()
    with app.producer_or_acquire() as producer:
        for i in range(n):
            app.send_task("interop.add", (i, i), queue=queue, producer=producer,
                          ignore_result=backend is None)
    took = time.perf_counter() - start
    print(f"filled {n} in {took:.2f}s ({n / took:.0f}/s)", file=sys.stderr)


def pubrate(queue, n):
    """send_task's rate once connected, interpreter start excluded: first
    with Celery's defaults (py-amqp without publisher confirms), then with
    broker_transport_options confirm_publish=True, as the Go producer does."""
    rates = []
    for confirm in (False, True):
        papp = Celery("bench", broker=broker, backend=None)
        papp.conf.update(task_ignore_result=True,
                         broker_transport_options={"confirm_publish": confirm})
        with papp.producer_or_acquire() as producer:
            papp.send_task("interop.add", (0, 0), queue=queue, producer=producer)  # connect, declare
            start = time.perf_counter()
            for i in range(n):
                papp.send_task("interop.add", (i, i), queue=queue, producer=producer)
            rates.append(n / (time.perf_counter() - start))
        papp.close()
    print(f"{rates[0]:.0f} {rates[1]:.0f}")


if __name__ == "__main__":
    if sys.argv[1] == "fill":
        fill(sys.argv[2], int(sys.argv[3]))
    elif sys.argv[1] == "pubrate":
        pubrate(sys.argv[2], int(sys.argv[3]))
