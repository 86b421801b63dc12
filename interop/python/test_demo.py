"""The zero-setup demo's promise: while `gocelery demo --keep-running` runs,
an unchanged Python Celery app can use its embedded Redis-protocol broker
and read the Go worker's results."""
import os
import re
import signal
import subprocess
import time

import pytest
from celery import Celery


@pytest.fixture
def demo(repo_root, tmp_path):
    binary = tmp_path / "gocelery"
    subprocess.run(["go", "build", "-o", str(binary), "./cmd/gocelery"], cwd=repo_root, check=True, timeout=300)
    out = open(tmp_path / "demo.out", "w+")
    proc = subprocess.Popen([str(binary), "demo", "--keep-running"], cwd=repo_root,
                            stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        text = ""
        while "Running until interrupted" not in text:
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"demo did not come up (exit {proc.poll()}):\n{text}")
            time.sleep(0.1)
            out.seek(0)
            text = out.read()
        m = re.search(r'Celery\(broker="(redis://[^"]+)", backend="(redis://[^"]+)"\)', text)
        assert m, text
        yield m.group(1), m.group(2), text
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
        out.close()


def test_python_celery_uses_the_embedded_broker(demo):
    broker, backend, text = demo
    assert "7 of 7 tasks ended as expected" in text
    app = Celery("demo-client", broker=broker, backend=backend)
    try:
        r = app.send_task("interop.add", (2, 3), queue="demo")
        assert r.get(timeout=15) == 5
        assert r.state == "SUCCESS"
        f = app.send_task("interop.fail", ("from python",), queue="demo")
        with pytest.raises(ValueError, match="from python"):
            f.get(timeout=15)
    finally:
        app.close()
