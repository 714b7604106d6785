"""`Executor`: the sandbox workers of this machine.

Every program runs in a fresh WebAssembly-isolated CPython (strict mode) or in a sandbox shared by
a group of jobs, each in a fresh namespace (batch mode). The heavy lifting is in Rust
(`azr._executor`); this is its typed, checked Python face.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Sequence
from typing import Literal, get_args

from azr import _executor
from azr.executor.jobs import MODES, TIMING_FIELDS, Job, Mode, Outcome, checked_jobs, checked_pairs
from azr.executor.progress import ProgressCallback, progress_callback

Isolation = Literal["process", "thread"]
ISOLATIONS: tuple[Isolation, ...] = get_args(Isolation)
# How the executor starts a worker process: this interpreter running the package's own CLI.
WORKER_COMMAND = [sys.executable, "-m", "azr.executor_cli", "worker"]


class Executor:
    """A pool of sandbox workers. Construct once and reuse: the workers stay up between calls.

    `mode="strict"` runs every run of every job in a fresh sandbox; `mode="batch"` lets one
    sandbox run a group of jobs, each in a fresh namespace (faster; see the README for what it
    shares): at most `group_size` jobs, fewer once jobs were measured to be slow (a group holds
    about a second of work). `isolation="process"` runs the sandboxes in worker processes (they scale better over
    cores, and a crash stays there); `"thread"` runs them in threads of this process.
    `worker_command` is how a worker process is started (default: this interpreter running
    `azr.executor_cli worker`); prefix it to run workers under `nice`, `taskset` or a cgroup.
    `timings=True` fills `Outcome.timings`: where each job's time went, per phase (README, Profiling).
    `memo_mb` (strict mode) keeps that many MiB of settled results: a job whose runs already
    happened — a solver check of a program validation ran — is answered without running it again,
    its expected value still read and compared; `0` runs every job (README, The memo).
    The first executor of a machine compiles the sandbox guest (about 15 s, then cached).
    """

    def __init__(
        self,
        workers: int | None = None,
        timeout_s: float = 5.0,
        memory_mb: int = 256,
        mode: Mode = "strict",
        *,
        max_output_bytes: int = 1 << 16,
        group_size: int = _executor.DEFAULT_GROUP_SIZE,
        isolation: Isolation = "process",
        worker_command: Sequence[str] | None = None,
        timings: bool = False,
        memo_mb: int = 64,
    ) -> None:
        if workers is None:
            workers = _executor.DEFAULT_WORKERS
        _check_int("workers", workers, 1, _executor.MAX_WORKERS)
        if not isinstance(timeout_s, (int, float)) or isinstance(timeout_s, bool):
            raise TypeError(f"timeout_s must be a number, not {type(timeout_s).__name__}")
        _check_int("memory_mb", memory_mb, _executor.MIN_MEMORY_MB, _executor.MAX_MEMORY_MB)
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if isolation not in ISOLATIONS:
            raise ValueError(f"isolation must be one of {ISOLATIONS}, got {isolation!r}")
        _check_int("max_output_bytes", max_output_bytes, 1, 2**32 - 1)
        _check_int("group_size", group_size, 1, 1 << 20)
        _check_int("memo_mb", memo_mb, 0, 1 << 20)
        if worker_command is not None:
            worker_command = list(worker_command)
            if not worker_command or not all(isinstance(part, str) for part in worker_command):
                raise TypeError("worker_command must be a non-empty sequence of str")
            if isolation != "process":
                raise ValueError("worker_command needs isolation='process'")
        self.workers = workers
        self.timeout_s = float(timeout_s)
        self.memory_mb = memory_mb
        self.mode: Mode = mode
        self.isolation: Isolation = isolation
        self.max_output_bytes = max_output_bytes
        self.timings = bool(timings)
        self._native = _executor.NativeExecutor(
            workers=workers,
            timeout_s=self.timeout_s,
            memory_mb=memory_mb,
            mode=mode,
            max_output_bytes=max_output_bytes,
            group_size=group_size,
            worker_command=(worker_command or WORKER_COMMAND) if isolation == "process" else None,
            memo_mb=memo_mb,
        )

    def memo_stats(self) -> dict[str, int]:
        """How the strict-mode memo has served: jobs answered from it (`hits`), results kept
        (`entries`, `bytes`) and its budget (`budget_bytes`); all zero without a memo."""
        return dict(zip(("hits", "entries", "bytes", "budget_bytes"), self._native.memo_stats(), strict=True))

    @property
    def worker_pids(self) -> list[int]:
        """Process ids of the worker processes (empty with `isolation="thread"`)."""
        return list(self._native.worker_pids)

    def run(self, jobs: Iterable[Job], *, progress: ProgressCallback | bool | None = None) -> list[Outcome]:
        """Run `jobs` (all of them in parallel across the workers); outcomes come back in job order.

        `progress=True` draws a bar on stderr; a callable is called as `progress(done, total)`.
        A worker that dies takes its jobs with it: they come back `internal`, and the worker is
        replaced.
        """
        jobs = checked_jobs(jobs)
        callback, close = progress_callback(progress, len(jobs))
        try:
            raw = self._native.run(
                [(j.program, j.input, j.imports, j.expected, j.runs, j.policy, j.timeout_s, j.script) for j in jobs],
                callback,
            )
        finally:
            close()
        return [Outcome(*fields[:7], timings=_timings(fields[7]) if self.timings else None) for fields in raw]

    def equal(self, a: str, b: str) -> bool:
        """Value equality of two texts, as the judge compares an answer with a result: data by
        exact types and contents (`"{'b': 1, 'a': 2}"` equals `"{'a': 2, 'b': 1}"`, `"1"` does
        not equal `"1.0"`), anything else by its text. Raises `InternalError` when the executor
        cannot decide."""
        return self.equal_many([(a, b)])[0]

    def equal_many(self, pairs: Iterable[tuple[str, str]]) -> list[bool]:
        return self._native.equal(checked_pairs(pairs))

    def __repr__(self) -> str:
        return (
            f"Executor(workers={self.workers}, timeout_s={self.timeout_s}, memory_mb={self.memory_mb}, "
            f"mode={self.mode!r}, isolation={self.isolation!r})"
        )


def _check_int(name: str, value: object, low: int, high: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    if not low <= value <= high:
        raise ValueError(f"{name} must be between {low} and {high}, got {value}")


def _timings(fields: tuple | None) -> dict[str, float] | None:
    return None if fields is None else dict(zip(TIMING_FIELDS, fields, strict=True))
