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


@pytest.fixture(scope="session")
def perfetto_slices():
    """Load a trace file in Perfetto's trace processor (the `perfetto` package, as the Perfetto UI
    reads it) and return its slices' names, failing on any error the import recorded. The package
    fetches its `trace_processor_shell` binary from Google's storage on first use; where that
    cannot be reached, set AZR_TRACE_PROCESSOR to a local copy of the binary, or the tests that
    need it skip, saying so."""
    processor = pytest.importorskip("perfetto.trace_processor", reason='perfetto is not installed (".[dev]")')
    config = processor.TraceProcessorConfig(bin_path=os.environ.get("AZR_TRACE_PROCESSOR"))

    def slices(path: Path) -> list[str]:
        with processor.TraceProcessor(trace=str(path), config=config) as loaded:
            errors = [
                f"{row.name}: {row.value}"
                for row in loaded.query("select name, value from stats where severity in ('error', 'data_loss')")
                if row.value
            ]
            assert not errors, f"the trace processor found errors in {path}: {errors}"
            return [row.name for row in loaded.query("select name from slice")]

    try:
        processor.TraceProcessor(trace=None, config=config).close()
    except Exception as error:  # noqa: BLE001 - whatever kept the binary away, say it and skip
        pytest.skip(
            f"Perfetto's trace_processor_shell is not available ({type(error).__name__}: {error}); "
            "set AZR_TRACE_PROCESSOR to a local binary"
        )
    return slices
