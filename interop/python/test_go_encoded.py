"""Go -> Celery: messages encoded by the Go protocol package must be read by
Celery's worker code exactly as the Go side says (`expect`).

Runs `go test ./protocol -run '^TestExportEncoded$'` with GOCELERY_EXPORT_DIR
set; that test writes vector-schema files (see celery_view docstring).
"""
import glob
import os
import subprocess

import pytest

from celery_view import (EXPECT_KEYS, check_signature, diff_views,
                         embedded_signatures, load_vector, make_app,
                         worker_view)

MIN_FILES = 5


def export_from_go(repo_root, out):
    """Run the Go exporter; fail (never skip) unless it writes >= MIN_FILES."""
    cmd = ["go", "test", "./protocol", "-run", "^TestExportEncoded$", "-count=1"]
    proc = subprocess.run(cmd, cwd=repo_root, capture_output=True, text=True,
                          env=dict(os.environ, GOCELERY_EXPORT_DIR=str(out)),
                          timeout=600)
    if proc.returncode != 0:
        pytest.fail(f"`{' '.join(cmd)}` failed (exit {proc.returncode}); the Go "
                    f"exporter TestExportEncoded must exist and pass:\n"
                    f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}", pytrace=False)
    if "no tests to run" in proc.stdout:
        pytest.fail("TestExportEncoded not found in ./protocol (`go test` ran no "
                    "test); the Go side must add it and write vector-schema "
                    "*.json files to $GOCELERY_EXPORT_DIR", pytrace=False)
    paths = sorted(glob.glob(os.path.join(out, "*.json")))
    if len(paths) < MIN_FILES:
        pytest.fail(f"Go exporter wrote {len(paths)} *.json file(s) to {out}, "
                    f"need at least {MIN_FILES}", pytrace=False)
    return [load_vector(p) for p in paths]


def test_go_encoded_messages(repo_root, tmp_path):
    # One test over all files (the file list is only known after `go test`),
    # reporting every failing file at once.
    exported = export_from_go(repo_root, tmp_path)
    failures = []
    for vec in exported:
        name = vec.get("name", "?")
        try:
            check_one(vec)
        except Exception as exc:  # noqa: BLE001 - collect and report all
            failures.append(f"{name}: {type(exc).__name__}: {exc}")
    assert not failures, (f"{len(failures)}/{len(exported)} Go-encoded messages "
                          "are not read by Celery as expected:\n"
                          + "\n".join(failures))


def check_one(vec):
    want = vec["expect"]
    assert set(want) == set(EXPECT_KEYS), (
        f"expect keys {sorted(want)} != schema {sorted(EXPECT_KEYS)}")
    app = make_app(protocol=want["protocol"])
    # worker_view builds Celery's Request(message, app=app, task=...) (for v1
    # after the worker's conversion); an exception there fails the message.
    got = worker_view(app, vec["wire"])
    diff = diff_views(want, got)
    assert not diff, "expect differs from Celery's view:\n" + "\n".join(diff)
    for i, sig in enumerate(embedded_signatures(got)):
        check_signature(app, sig, f"embed[{i}]")
