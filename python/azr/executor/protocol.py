"""`ExecutorProtocol`: what every executor offers (the local `Executor`, the `RemoteExecutor` of a
service fleet), and what the judge and the self-play loop rely on."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol, runtime_checkable

from azr.executor.jobs import Job, Outcome
from azr.executor.progress import ProgressCallback


@runtime_checkable
class ExecutorProtocol(Protocol):
    def run(self, jobs: Iterable[Job], *, progress: ProgressCallback | bool | None = None) -> list[Outcome]:
        """Outcomes in job order. A job the executor could not run has status `internal`."""
        ...

    def equal(self, a: str, b: str) -> bool:
        """Value equality of two texts, as the judge compares them."""
        ...

    def equal_many(self, pairs: Iterable[tuple[str, str]]) -> list[bool]: ...
