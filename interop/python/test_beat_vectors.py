"""The committed crontab vectors (beat/testdata/crontab_cases.json) are what
the pinned Celery computes: regenerate them and compare, so a Celery upgrade
or a hand edit cannot leave the Go table test checking stale answers."""
import os

import gen_crontab_cases


def test_crontab_cases_match_pinned_celery():
    with open(gen_crontab_cases.OUT) as f:
        committed = f.read()
    fresh = gen_crontab_cases.render()
    assert fresh == committed, (
        f"{os.path.normpath(gen_crontab_cases.OUT)} differs from what Celery "
        f"{__import__('celery').__version__} computes; regenerate with "
        "`.venv/bin/python interop/python/gen_crontab_cases.py`")
