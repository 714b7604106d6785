"""Where a step's time goes: spans from every actor, and the Chrome/Perfetto trace made of them.

Each actor records spans (`driver` phases, `engine` requests, `executor` check batches, `trainer R`
micro-batches, the weight `sync`) on the wall clock, so spans from other processes line up; the run
keeps one line of spans per step in `timeline.jsonl`, and `azr profile RUN --step N` writes the step as
a trace file for https://ui.perfetto.dev or chrome://tracing (docs/profiling.md says how to read it).
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Span:
    actor: str
    name: str
    start: float  # seconds since the epoch
    seconds: float
    args: dict[str, float | str] = field(default_factory=dict)

    def to_list(self) -> list:
        return [self.actor, self.name, self.start, self.seconds, self.args]

    @classmethod
    def from_list(cls, item: Sequence) -> Span:
        actor, name, start, seconds, args = item
        return cls(actor, name, float(start), float(seconds), dict(args))


class Timeline:
    """Spans recorded during a step, from any thread of one process."""

    def __init__(self) -> None:
        self._spans: list[Span] = []
        self._lock = threading.Lock()

    def add(self, actor: str, name: str, start: float, end: float, **args: float | str) -> None:
        with self._lock:
            self._spans.append(Span(actor, name, start, end - start, args))

    def extend(self, spans: Sequence[Span]) -> None:
        with self._lock:
            self._spans.extend(spans)

    @contextlib.contextmanager
    def span(self, actor: str, name: str, **args: float | str) -> Iterator[None]:
        start = time.time()
        try:
            yield
        finally:
            self.add(actor, name, start, time.time(), **args)

    def drain(self) -> list[Span]:
        """The spans recorded since the last drain."""
        with self._lock:
            spans, self._spans = self._spans, []
        return spans


def write_step(path: Path, step: int, spans: Sequence[Span]) -> None:
    with path.open("a") as sink:
        sink.write(json.dumps({"step": step, "spans": [s.to_list() for s in spans]}) + "\n")


def read_step(path: Path, step: int | None = None) -> tuple[int, list[Span]]:
    """A step's spans from a run's `timeline.jsonl` (the last step when `step` is None)."""
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: is this a run directory (azr selfplay --out)?")
    lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    if not lines:
        raise ValueError(f"{path} holds no step yet")
    chosen = lines[-1] if step is None else next((line for line in lines if line["step"] == step), None)
    if chosen is None:
        steps = sorted(line["step"] for line in lines)
        raise ValueError(f"step {step} is not in {path} (it has steps {steps[0]}..{steps[-1]})")
    return int(chosen["step"]), [Span.from_list(item) for item in chosen["spans"]]


def lanes(spans: Sequence[Span]) -> list[int]:
    """A lane for each span such that spans of one lane never overlap (concurrent requests of one
    engine stack instead of hiding each other): earliest start first, the lowest free lane."""
    ends: list[float] = []
    result = [0] * len(spans)
    for index in sorted(range(len(spans)), key=lambda i: (spans[i].start, -spans[i].seconds)):
        span = spans[index]
        lane = next((k for k, end in enumerate(ends) if end <= span.start), len(ends))
        if lane == len(ends):
            ends.append(0.0)
        ends[lane] = span.start + span.seconds
        result[index] = lane
    return result


def chrome_trace(spans: Sequence[Span], step: int) -> dict:
    """The Trace Event Format (complete events, microseconds from the step's first span): a process
    per actor, a thread per lane."""
    origin = min((s.start for s in spans), default=0.0)
    actors = sorted({s.actor for s in spans}, key=lambda a: (a != "driver", a))
    events: list[dict] = []
    for pid, actor in enumerate(actors, start=1):
        own = [s for s in spans if s.actor == actor]
        events.append({"ph": "M", "name": "process_name", "pid": pid, "tid": 0, "args": {"name": actor}})
        for span, lane in zip(own, lanes(own), strict=True):
            events.append(
                {
                    "ph": "X",
                    "name": span.name,
                    "cat": actor.split()[0],
                    "pid": pid,
                    "tid": lane,
                    "ts": (span.start - origin) * 1e6,
                    "dur": span.seconds * 1e6,
                    "args": span.args,
                }
            )
    return {"traceEvents": events, "displayTimeUnit": "ms", "otherData": {"step": step}}


def busy(spans: Sequence[Span]) -> dict[str, tuple[float, float]]:
    """Per actor: (seconds with at least one span open, the step's wall seconds)."""
    if not spans:
        return {}
    wall = max(s.start + s.seconds for s in spans) - min(s.start for s in spans)
    result = {}
    for actor in sorted({s.actor for s in spans}):
        covered, reach = 0.0, float("-inf")
        for span in sorted((s for s in spans if s.actor == actor), key=lambda s: s.start):
            end = span.start + span.seconds
            covered += max(0.0, end - max(span.start, reach))
            reach = max(reach, end)
        result[actor] = (covered, wall)
    return result


def idle_metrics(spans: Sequence[Span]) -> dict[str, float]:
    """Per actor group (an actor's name without its number: `trainer 0` and `trainer 1` are
    `trainer`), the seconds its actors had no span open over the step (the wall from the step's
    first span to its last), the mean over the group's actors: `seconds/idle/<group>` (a timing,
    like the other `seconds/` metrics; over `seconds/step` it is the fraction idle)."""
    times = busy(spans)
    if not times:
        return {}
    wall = next(iter(times.values()))[1]
    by_group: dict[str, list[float]] = {}
    for actor, (covered, _) in times.items():
        by_group.setdefault(actor.split()[0], []).append(wall - covered)
    return {f"seconds/idle/{group}": sum(idles) / len(idles) for group, idles in sorted(by_group.items())}
