"""Shared pytest setup: import celery_view from here; locate the repo root."""
import os
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)


@pytest.fixture(scope="session")
def repo_root():
    return REPO_ROOT
