"""What the executor takes and gives back: `Job`, `Outcome` and their statuses.

The statuses, modes and limits come from the Rust core (`azr._executor`), which defines them once
for the Python API, the command line and the service.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal, get_args

from azr import _executor

Status = Literal[
    "ok", "error", "syntax", "forbidden", "timeout", "memory", "output_limit", "nondeterministic", "internal"
]
STATUSES: tuple[Status, ...] = _executor.STATUSES
Mode = Literal["strict", "batch"]
MODES: tuple[Mode, ...] = _executor.MODES
Policy = Literal["selfplay", "evaluation"]
POLICIES: tuple[Policy, ...] = _executor.POLICIES
if (
    set(get_args(Status)) != set(STATUSES)
    or set(get_args(Mode)) != set(MODES)
    or set(get_args(Policy)) != set(POLICIES)
):  # pragma: no cover
    raise ImportError("azr._executor was built from other sources than azr.executor: rebuild it (make build)")


@dataclass(frozen=True)
class Job:
    """One program to run: `f(*args, **kwargs)` after executing `imports` and `program`, where the
    arguments are read from `input` as data (`"'Lab', [1, 2], key=3"`; the grammar is in the README).

    With `runs=j` the job runs `j` times in separate sandboxes and is `nondeterministic` unless all
    agree. With `expected`, the result is judged against that text and `Outcome.matches` says
    whether they are equal: as data when the result is built-in data (exact types, sets and dicts
    in any order), by repr text when it is not. Neither text is ever evaluated in the program's
    namespace. `policy="evaluation"` also lets the program import what benchmark solutions do
    (`sys`, `random`, `hashlib`, `time`, `datetime`, `calendar`); the sandbox is the same.
    `timeout_s` is this job's time limit instead of the executor's (a benchmark's per-test limit).

    `script=True` runs `program` as a whole program (`__main__`) with `input` as its standard input,
    as a process would run: no `f`, no policy layer (the WebAssembly sandbox is the boundary: no
    files, network, environment or real clock), always in a fresh instance. `Outcome.output` is then
    its standard output, with `stderr` and `exit_code` (0; 1 for an uncaught exception, whose
    traceback is on stderr; `sys.exit(n)`'s n); status `ok` means it finished.
    """

    program: str
    input: str
    runs: int = 1
    imports: str | Sequence[str] = ""
    expected: str | None = None
    policy: Policy = "selfplay"
    timeout_s: float | None = None
    script: bool = False

    def __post_init__(self) -> None:
        for name in ("program", "input"):
            value = getattr(self, name)
            if not isinstance(value, str):
                raise TypeError(f"Job.{name} must be a str, not {type(value).__name__}")
        if not isinstance(self.runs, int) or isinstance(self.runs, bool):
            raise TypeError(f"Job.runs must be an int, not {type(self.runs).__name__}")
        if not 1 <= self.runs <= _executor.MAX_RUNS:
            raise ValueError(f"Job.runs must be between 1 and {_executor.MAX_RUNS}, got {self.runs}")
        if self.policy not in POLICIES:
            raise ValueError(f"Job.policy must be one of {POLICIES}, got {self.policy!r}")
        if self.timeout_s is not None and not (
            isinstance(self.timeout_s, (int, float))
            and not isinstance(self.timeout_s, bool)
            and 0 < self.timeout_s <= 3600
        ):
            raise ValueError(f"Job.timeout_s must be a number of seconds in (0, 3600], got {self.timeout_s!r}")
        if self.script and self.expected is not None:
            raise ValueError("a script job takes no expected value (compare its stdout yourself)")
        if self.expected is not None and not isinstance(self.expected, str):
            raise TypeError(f"Job.expected must be a str or None, not {type(self.expected).__name__}")
        if not isinstance(self.imports, str):
            lines = list(self.imports)
            if not all(isinstance(line, str) for line in lines):
                raise TypeError("Job.imports must be a str or a sequence of str")
            object.__setattr__(self, "imports", "\n".join(lines))


@dataclass(frozen=True)
class Outcome:
    """The verdict on one job. `output` is `repr` of the result when `status == "ok"`.

    `internal` means the executor failed (a worker died, the service was unreachable): it says
    nothing about the program, and must never become a reward.
    """

    status: Status
    output: str | None
    error: str | None
    elapsed_s: float
    matches: bool | None = None
    # Script mode: the exit code of a script that finished, and its standard error.
    exit_code: int | None = None
    stderr: str | None = None
    # With `Executor(timings=True)`: where the job's time went (`TIMING_FIELDS`), measured on the host.
    timings: dict[str, float] | None = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def internal(self) -> bool:
        return self.status == "internal"


# The keys of `Outcome.timings`: when and where the job started, then seconds per phase.
TIMING_FIELDS = ("start_us", "worker", "queue_s", "instantiate_s", "expected_s", "run_s", "teardown_s", "prepare_s")


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
