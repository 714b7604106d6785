"""Shared fixtures: real executors (no mocks), and the offline data sets beside the checkout."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from azr.executor import Executor

ROOT = Path(__file__).resolve().parents[1]
# The data sets live outside the project (`../shared/data`), never in it; AZR_SHARED_DATA overrides.
SHARED_DATA = Path(os.environ.get("AZR_SHARED_DATA", ROOT.parent / "shared" / "data"))


def shared_data(relative: str) -> Path:
    """A file of the offline data sets, or a skip that says where it was looked for."""
    path = SHARED_DATA / relative
    if not path.exists():
        pytest.skip(f"offline data set not found at {path} (set AZR_SHARED_DATA to its folder)")
    return path


@pytest.fixture(scope="session")
def strict() -> Executor:
    return Executor(timeout_s=2.0, mode="strict")


@pytest.fixture(scope="session")
def batch() -> Executor:
    return Executor(timeout_s=2.0, mode="batch")


@pytest.fixture(scope="session")
def threaded() -> Executor:
    return Executor(timeout_s=2.0, mode="strict", isolation="thread")
