"""Worker processes: a crash takes down one worker, never the caller, and the pool recovers."""

from __future__ import annotations

import os
import signal
import threading
import time

from azr.executor import Executor, Job

SPIN = "def f(a):\n    while True:\n        pass"


def test_a_killed_worker_fails_its_jobs_and_is_replaced() -> None:
    executor = Executor(workers=1, timeout_s=5.0)
    [pid] = executor.worker_pids
    outcomes: list = []
    running = threading.Thread(target=lambda: outcomes.extend(executor.run([Job(SPIN, "1")])))
    running.start()
    time.sleep(0.5)
    os.kill(pid, signal.SIGKILL)
    running.join(timeout=10)
    assert not running.is_alive()
    [outcome] = outcomes
    assert outcome.status == "internal"
    assert f"pid {pid}" in outcome.error and "exited" in outcome.error
    # The next batch gets a new worker process.
    [after] = executor.run([Job("def f(a):\n    return a", "7")])
    assert (after.status, after.output) == ("ok", "7")
    assert executor.worker_pids != [pid]


def test_workers_exit_with_the_executor() -> None:
    executor = Executor(workers=2)
    pids = executor.worker_pids
    assert len(pids) == 2
    del executor
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(os.path.exists(f"/proc/{pid}") for pid in pids):
        time.sleep(0.05)
    assert not any(os.path.exists(f"/proc/{pid}") for pid in pids)
