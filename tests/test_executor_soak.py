"""100,000 programs through one executor: resident memory stays flat and no outcome differs from
the program's own verdict (a leak or a broken sandbox would show in one or the other)."""

from __future__ import annotations

import pytest
from azr.bench.executor import load_workload, runnable, soak
from azr.executor import Executor

from .conftest import SHARED_DATA

PROGRAMS = 100_000
# Growth allowed after the first 20,000 programs, once pools, caches and allocators are warm.
MAX_GROWTH_MIB = 16


@pytest.mark.slow
def test_resident_memory_stays_flat_over_100k_programs() -> None:
    executor = Executor(mode="batch", timeout_s=10.0)
    programs, _ = load_workload(SHARED_DATA, 2000)
    programs = runnable(executor, programs)
    result = soak(executor, programs, PROGRAMS, chunk=10_000)
    print(f"\nsoak: {result}")
    assert result["unexpected_outcomes"] == 0
    rss = result["rss_mib"]
    assert rss[-1] - rss[1] <= MAX_GROWTH_MIB, rss
