"""Task buffers: the valid tasks proposed so far, from which proposers draw references and solvers
draw tasks.

A buffer is bounded. When it is full, the eviction policy decides what goes:
- `"oldest-out"` (default): the oldest tasks are dropped, so the buffer follows the current policy;
- `"newest-out"`: new tasks are dropped once full, as the reference code does (it keeps the first
  16,384 tasks for ever);
- `"random"`: a uniformly chosen task makes room.
Seed tasks are ordinary entries: they age out like any other.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any, Generic, Literal, TypeVar

from azr.tasks import InductionTask, Triplet

Eviction = Literal["oldest-out", "newest-out", "random"]
EVICTIONS: tuple[Eviction, ...] = ("oldest-out", "newest-out", "random")
T = TypeVar("T", Triplet, InductionTask)


@dataclass(frozen=True)
class Entry(Generic[T]):
    task: T
    step: int  # the step that proposed it (−1 for seeds)


class TaskBuffer(Generic[T]):
    def __init__(self, kind: type[T], capacity: int, eviction: Eviction = "oldest-out") -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be positive, got {capacity}")
        if eviction not in EVICTIONS:
            raise ValueError(f"eviction must be one of {EVICTIONS}, got {eviction!r}")
        self.kind = kind
        self.capacity = capacity
        self.eviction: Eviction = eviction
        self.entries: list[Entry[T]] = []

    def __len__(self) -> int:
        return len(self.entries)

    def add(self, tasks: Iterable[T], step: int, rng: random.Random) -> int:
        """Add tasks proposed at `step`; returns how many were kept."""
        kept = 0
        for task in tasks:
            if not isinstance(task, self.kind):
                raise TypeError(f"this buffer holds {self.kind.__name__}, not {type(task).__name__}")
            if len(self.entries) >= self.capacity:
                if self.eviction == "newest-out":
                    continue
                del self.entries[0 if self.eviction == "oldest-out" else rng.randrange(len(self.entries))]
            self.entries.append(Entry(task, step))
            kept += 1
        return kept

    def sample(self, k: int, rng: random.Random) -> list[T]:
        """Up to `k` distinct tasks, uniformly."""
        return [entry.task for entry in rng.sample(self.entries, min(k, len(self.entries)))]

    def choose(self, rng: random.Random) -> T:
        if not self.entries:
            raise LookupError("the buffer is empty")
        return rng.choice(self.entries).task

    def tasks(self) -> list[T]:
        return [entry.task for entry in self.entries]

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind.__name__,
            "capacity": self.capacity,
            "eviction": self.eviction,
            "entries": [{"step": e.step, "task": asdict(e.task)} for e in self.entries],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TaskBuffer:
        kinds = {"Triplet": Triplet, "InductionTask": InductionTask}
        kind = kinds[data["kind"]]
        buffer = cls(kind, data["capacity"], data["eviction"])
        for entry in data["entries"]:
            fields = dict(entry["task"])
            if kind is InductionTask:
                fields["inputs"], fields["outputs"] = tuple(fields["inputs"]), tuple(fields["outputs"])
            buffer.entries.append(Entry(kind(**fields), entry["step"]))
        return buffer
