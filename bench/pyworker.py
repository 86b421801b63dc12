"""Python side of the bench: fills a queue with interop.add tasks, and is
the Celery app of the Python prefork worker that drains it for comparison.

    python pyworker.py fill QUEUE N         # publish N interop.add(i, i) with send_task
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


if __name__ == "__main__":
    if sys.argv[1] == "fill":
        fill(sys.argv[2], int(sys.argv[3]))
