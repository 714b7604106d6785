"""The sandboxed executor and the judge: run model-written Python programs safely and fast, and
decide whether an answer is right.

    from azr.executor import Executor, Job
    ex = Executor(workers=None, timeout_s=5.0, memory_mb=256, mode="strict")
    [o] = ex.run([Job(program="def f(a):\\n    return a", input="'Hello world'", runs=2)])
    o.status, o.output          # ('ok', "'Hello world'")
    ex.equal("[1, 2]", "[1,2]")  # True

`Executor` runs the sandboxes on this machine, `RemoteExecutor` on `azr-executor serve` hosts; both
implement `ExecutorProtocol`. Errors of the executor itself derive from `ExecutorError`.
"""

from azr._executor import (
    CancelledError,
    ExecutorError,
    GuestError,
    InternalError,
    InvalidJobError,
    RemoteExecutorError,
)
from azr.executor.jobs import MODES, POLICIES, STATUSES, Job, Mode, Outcome, Policy, Status
from azr.executor.local import ISOLATIONS, Executor, Isolation
from azr.executor.progress import ProgressCallback
from azr.executor.protocol import ExecutorProtocol
from azr.executor.remote import RemoteExecutor, local_service

__all__ = [
    "ISOLATIONS",
    "MODES",
    "POLICIES",
    "STATUSES",
    "CancelledError",
    "Executor",
    "ExecutorError",
    "ExecutorProtocol",
    "GuestError",
    "InternalError",
    "InvalidJobError",
    "Isolation",
    "Job",
    "Mode",
    "Outcome",
    "Policy",
    "ProgressCallback",
    "RemoteExecutor",
    "RemoteExecutorError",
    "Status",
    "local_service",
]
