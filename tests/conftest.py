"""Shared fixtures: scenarios are the real shipped configs, shrunk (never test-only configs)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
# Built models and feature caches are shared by the whole session, never the user's.
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fedsilo-cache")


@pytest.fixture(scope="session")
def flower_identity():
    """Flower messages need a task identity; a simulation sets one, unit tests set this."""
    from fedsilo.flower_compat import set_task_identity

    set_task_identity(task_id=1, run_id=1, node_id=0)
