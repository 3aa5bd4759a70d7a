"""Shared pytest fixtures: the location of ``../shared`` (golden fixtures of the official code) and seeding."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
TEST_THREADS = min(2, torch.get_num_threads())
"""Every test starts with this many torch threads, whatever an earlier test set (results in fp32 depend on it)."""


def shared_root() -> Path:
    """``$REPRO_SHARED`` if set, else ``../shared`` beside the repository."""
    return Path(os.environ.get("REPRO_SHARED", REPO_ROOT.parent / "shared"))


@pytest.fixture
def official_fixtures_dir() -> Path:
    """Directory of the official code's golden outputs; skips the test when it is absent."""
    path = shared_root() / "fixtures" / "official"
    if not path.is_dir():
        pytest.skip(f"official fixtures not found at {path} (set REPRO_SHARED to the shared/ directory)")
    return path


@pytest.fixture(autouse=True)
def _deterministic_torch():
    torch.manual_seed(0)
    torch.set_num_threads(TEST_THREADS)
    yield
