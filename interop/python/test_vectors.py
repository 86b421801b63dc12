"""Guards the generator: every committed vector's `expect` must be exactly
what Celery's worker code derives from its `wire` today."""
import glob
import os

import pytest

from celery_view import (EXPECT_KEYS, check_signature, diff_views,
                         embedded_signatures, load_vector, make_app,
                         worker_view)
from conftest import REPO_ROOT

VECTOR_DIR = os.path.join(REPO_ROOT, "protocol", "testdata", "vectors")
PATHS = sorted(glob.glob(os.path.join(VECTOR_DIR, "*.json")))


def test_vectors_exist():
    # Guards against an empty parametrisation silently passing.
    assert len(PATHS) >= 30, f"expected the generated vectors in {VECTOR_DIR}"


@pytest.mark.parametrize("path", PATHS, ids=[os.path.basename(p)[:-5] for p in PATHS])
def test_vector_matches_celery(path):
    vec = load_vector(path)
    assert vec["name"] == os.path.basename(path)[:-5]
    assert tuple(vec["expect"]) == EXPECT_KEYS
    app = make_app(protocol=vec["expect"]["protocol"])
    got = worker_view(app, vec["wire"])
    diff = diff_views(vec["expect"], got)
    assert not diff, "expect differs from Celery's view:\n" + "\n".join(diff)
    for i, sig in enumerate(embedded_signatures(got)):
        check_signature(app, sig, f"embed[{i}]")
