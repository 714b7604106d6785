"""100,000 programs through one executor: resident memory stays flat and no outcome differs from
the program's own verdict (a leak or a broken sandbox would show in one or the other)."""

from __future__ import annotations

import json

import pytest
from azr.bench.executor import load_workload, runnable, soak
from azr.executor import Executor

from .conftest import SHARED_DATA

PROGRAMS = 100_000
# Growth allowed after the first 20,000 programs, once pools, caches and allocators are warm.
MAX_GROWTH_MIB = 16
# Outcomes where the machinery gave no verdict (`internal`: a worker process or an instance lost)
# are never rewards, so they cannot make a verdict wrong; they are reported, and must stay rare.
# Every other difference from a program's own verdict is a wrong verdict, and none is allowed.
MAX_INTERNAL = PROGRAMS // 1000


@pytest.mark.slow
def test_resident_memory_stays_flat_over_100k_programs() -> None:
    executor = Executor(mode="batch", timeout_s=10.0)
    programs, _ = load_workload(SHARED_DATA, 2000)
    programs = runnable(executor, programs)
    result = soak(executor, programs, PROGRAMS, chunk=10_000)
    print(f"\nsoak: {json.dumps(result, indent=1)}")
    unexpected = result["unexpected"]
    wrong = {key: seen for key, seen in unexpected.items() if "-> internal" not in key}
    internal = sum(seen["count"] for key, seen in unexpected.items() if key not in wrong)
    assert not wrong, json.dumps(wrong, indent=1)
    assert internal <= MAX_INTERNAL, json.dumps(unexpected, indent=1)
    rss = result["rss_mib"]
    assert rss[-1] - rss[1] <= MAX_GROWTH_MIB, rss
