"""Type stubs of `azr._executor`, the Rust core of the executor (`rust/executor/src/python.rs`).
Use it through `azr.executor`; this module moves tuples and holds no Python-side checks."""

from collections.abc import Callable, Sequence
from typing import Final

__version__: Final[str]
GUEST_SHA256: Final[str]
WASMTIME_VERSION: Final[str]
STATUSES: Final[tuple[str, ...]]
MODES: Final[tuple[str, ...]]
POLICIES: Final[tuple[str, ...]]
MAX_RUNS: Final[int]
MAX_WORKERS: Final[int]
DEFAULT_GROUP_SIZE: Final[int]
DEFAULT_WORKERS: Final[int]
MIN_MEMORY_MB: Final[int]
MAX_MEMORY_MB: Final[int]
MAX_TEXT_BYTES: Final[int]

class ExecutorError(RuntimeError):
    """Base of the executor's own errors (a program's failure is an outcome, never an exception)."""

class InvalidJobError(ExecutorError, ValueError):
    """A job or a setting the executor cannot accept."""

class GuestError(ExecutorError):
    """The sandbox guest could not be prepared."""

class InternalError(ExecutorError):
    """The executor's machinery failed (workers gone, a comparison it could not make)."""

class CancelledError(ExecutorError):
    """A batch was stopped before all its jobs finished."""

class RemoteExecutorError(ExecutorError):
    """A batch could not be run on any executor service host."""

# (program, input, imports, expected, runs, policy, timeout_s, script)
JobTuple = tuple[str, str, str, str | None, int, str, float | None, bool]
# (start_us, worker, queue_s, instantiate_s, expected_s, run_s, teardown_s, prepare_s)
TimingsTuple = tuple[int, int, float, float, float, float, float, float]
# (status, output, error, elapsed_s, matches, exit_code, stderr, timings)
OutcomeTuple = tuple[str, str | None, str | None, float, bool | None, int | None, str | None, TimingsTuple | None]

class NativeExecutor:
    def __init__(
        self,
        *,
        workers: int,
        timeout_s: float,
        memory_mb: int,
        mode: str,
        max_output_bytes: int,
        group_size: int,
        worker_command: Sequence[str] | None,
        memo_mb: int,
    ) -> None: ...
    def run(
        self, jobs: Sequence[JobTuple], progress: Callable[[int, int], object] | None = None
    ) -> list[OutcomeTuple]: ...
    def equal(self, pairs: Sequence[tuple[str, str]]) -> list[bool]: ...
    def memo_stats(self) -> tuple[int, int, int, int]: ...
    @property
    def workers(self) -> int: ...
    @property
    def worker_pids(self) -> list[int]: ...

def cli_main(argv: Sequence[str]) -> int: ...
