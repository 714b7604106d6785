"""The sandboxed executor: run model-written Python programs safely and fast.

Every program runs in a fresh WebAssembly-isolated CPython (strict mode) or in a sandbox shared by
a group of jobs, each in a fresh namespace (batch mode). The heavy lifting is in Rust
(`azr._executor`); this module is the typed, checked Python face of it::

    from azr.executor import Executor, Job
    ex = Executor(workers=None, timeout_s=5.0, memory_mb=256, mode="strict")
    [o] = ex.run([Job(program="def f(a):\\n    return a", input="'Hello world'", runs=2)])
    o.status, o.output          # ('ok', "'Hello world'")
    ex.equal("[1, 2]", "[1,2]")  # True
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Literal, get_args

from azr import _executor

Status = Literal["ok", "error", "syntax", "forbidden", "timeout", "memory", "output_limit", "nondeterministic"]
STATUSES: tuple[Status, ...] = get_args(Status)
Mode = Literal["strict", "batch"]
MODES: tuple[Mode, ...] = get_args(Mode)
Isolation = Literal["process", "thread"]
ISOLATIONS: tuple[Isolation, ...] = get_args(Isolation)
# How the executor starts a worker process: this interpreter running the package's own CLI.
WORKER_COMMAND = [sys.executable, "-m", "azr.executor_cli", "worker"]
ProgressCallback = Callable[[int, int], None]


@dataclass(frozen=True)
class Job:
    """One program to run: `f(<input>)` after executing `imports` and `program`.

    `input` is Python argument text exactly as AZR uses it (`"'Lab', 'retest'"`). With `runs=j`
    the job runs `j` times in separate sandboxes and is `nondeterministic` unless all agree.
    With `expected`, the result is also compared by `==` with that expression, evaluated in the
    program's namespace, and `Outcome.matches` says whether they are equal.
    """

    program: str
    input: str
    runs: int = 1
    imports: str | Sequence[str] = ""
    expected: str | None = None

    def __post_init__(self) -> None:
        for name in ("program", "input"):
            value = getattr(self, name)
            if not isinstance(value, str):
                raise TypeError(f"Job.{name} must be a str, not {type(value).__name__}")
        if not isinstance(self.runs, int) or isinstance(self.runs, bool):
            raise TypeError(f"Job.runs must be an int, not {type(self.runs).__name__}")
        if not 1 <= self.runs <= _executor.MAX_RUNS:
            raise ValueError(f"Job.runs must be between 1 and {_executor.MAX_RUNS}, got {self.runs}")
        if self.expected is not None and not isinstance(self.expected, str):
            raise TypeError(f"Job.expected must be a str or None, not {type(self.expected).__name__}")
        if not isinstance(self.imports, str):
            lines = list(self.imports)
            if not all(isinstance(line, str) for line in lines):
                raise TypeError("Job.imports must be a str or a sequence of str")
            object.__setattr__(self, "imports", "\n".join(lines))


@dataclass(frozen=True)
class Outcome:
    """The verdict on one job. `output` is `repr(f(<input>))` when `status == "ok"`."""

    status: Status
    output: str | None
    error: str | None
    elapsed_s: float
    matches: bool | None = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"


class Executor:
    """A pool of sandbox workers. Construct once and reuse: the workers stay up between calls.

    `mode="strict"` runs every run of every job in a fresh sandbox; `mode="batch"` lets one
    sandbox run a group of jobs, each in a fresh namespace (faster; see the README for what it
    shares). `isolation="process"` runs the sandboxes in worker processes (they scale better over
    cores, and a crash stays there); `"thread"` runs them in threads of this process.
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
        group_size: int = 64,
        isolation: Isolation = "process",
    ) -> None:
        if workers is None:
            workers = _executor.DEFAULT_WORKERS
        _check_int("workers", workers, 1, _executor.MAX_WORKERS)
        if not isinstance(timeout_s, (int, float)) or isinstance(timeout_s, bool):
            raise TypeError(f"timeout_s must be a number, not {type(timeout_s).__name__}")
        _check_int("memory_mb", memory_mb, 64, 4096)
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if isolation not in ISOLATIONS:
            raise ValueError(f"isolation must be one of {ISOLATIONS}, got {isolation!r}")
        _check_int("max_output_bytes", max_output_bytes, 1, 2**32 - 1)
        _check_int("group_size", group_size, 1, 1 << 20)
        self.workers = workers
        self.timeout_s = float(timeout_s)
        self.memory_mb = memory_mb
        self.mode: Mode = mode
        self.isolation: Isolation = isolation
        self.max_output_bytes = max_output_bytes
        self._native = _executor.NativeExecutor(
            workers=workers,
            timeout_s=self.timeout_s,
            memory_mb=memory_mb,
            mode=mode,
            max_output_bytes=max_output_bytes,
            group_size=group_size,
            worker_command=WORKER_COMMAND if isolation == "process" else None,
        )

    @property
    def worker_pids(self) -> list[int]:
        """Process ids of the worker processes (empty with `isolation="thread"`)."""
        return list(self._native.worker_pids)

    def run(self, jobs: Iterable[Job], *, progress: ProgressCallback | bool | None = None) -> list[Outcome]:
        """Run `jobs` (all of them in parallel across the workers); outcomes come back in job order.

        `progress=True` draws a bar on stderr; a callable is called as `progress(done, total)`.
        """
        jobs = checked_jobs(jobs)
        callback, close = _progress_callback(progress, len(jobs))
        try:
            raw = self._native.run([(j.program, j.input, j.imports, j.expected, j.runs) for j in jobs], callback)
        finally:
            close()
        return [
            Outcome(status=status, output=output, error=error, elapsed_s=elapsed, matches=matches)
            for status, output, error, elapsed, matches in raw
        ]

    def equal(self, a: str, b: str) -> bool:
        """AZR value equality of two repr texts (`eval(a) == eval(b)`), evaluated in a sandbox.

        Texts that are not Python expressions (`<Foo object at 0x..>`) are compared as text.
        """
        return self.equal_many([(a, b)])[0]

    def equal_many(self, pairs: Iterable[tuple[str, str]]) -> list[bool]:
        return self._native.equal(checked_pairs(pairs))

    def __repr__(self) -> str:
        return (
            f"Executor(workers={self.workers}, timeout_s={self.timeout_s}, memory_mb={self.memory_mb}, "
            f"mode={self.mode!r}, isolation={self.isolation!r})"
        )


def checked_jobs(jobs: Iterable[Job]) -> list[Job]:
    """`jobs` as a list, or a `TypeError` naming the first element that is not a `Job`."""
    jobs = list(jobs)
    for index, job in enumerate(jobs):
        if not isinstance(job, Job):
            raise TypeError(f"jobs[{index}] is a {type(job).__name__}; expected azr.executor.Job")
    return jobs


def checked_pairs(pairs: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """`pairs` as a list, or a `TypeError` naming the first one that is not a tuple of two str."""
    pairs = list(pairs)
    for index, pair in enumerate(pairs):
        if not (isinstance(pair, tuple) and len(pair) == 2 and all(isinstance(x, str) for x in pair)):
            raise TypeError(f"pairs[{index}] must be a tuple of two str")
    return pairs


def _check_int(name: str, value: object, low: int, high: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    if not low <= value <= high:
        raise ValueError(f"{name} must be between {low} and {high}, got {value}")


def _progress_callback(
    progress: ProgressCallback | bool | None, total: int
) -> tuple[ProgressCallback | None, Callable[[], None]]:
    if progress is None or progress is False:
        return None, lambda: None
    if callable(progress):
        return progress, lambda: None
    from tqdm import tqdm

    bar = tqdm(total=total, unit="job", file=sys.stderr, dynamic_ncols=True, leave=False)

    def update(done: int, _total: int) -> None:
        bar.update(done - bar.n)

    return update, bar.close


# The same API over `azr-executor serve` hosts (defined in azr.remote, which builds on the types above).
from azr.remote import RemoteExecutor, RemoteExecutorError  # noqa: E402

__all__ = ["STATUSES", "Executor", "Job", "Outcome", "RemoteExecutor", "RemoteExecutorError"]
