"""The timeline's pure parts: lanes keep concurrent spans apart, busy time counts overlaps once, a
step is read back as written, and the trace is the Trace Event Format."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from azr.timeline import Span, busy, chrome_trace, idle_metrics, lanes, read_step, write_step


def test_concurrent_spans_get_separate_lanes_and_reuse_free_ones() -> None:
    spans = [Span("engine", "a", 0.0, 4.0), Span("engine", "b", 1.0, 1.0), Span("engine", "c", 2.5, 1.0)]
    assert lanes(spans) == [0, 1, 1]  # b ended at 2.0, so c takes its lane
    assert lanes([Span("x", "a", 0.0, 1.0), Span("x", "b", 1.0, 1.0)]) == [0, 0]


def test_busy_time_counts_overlapping_spans_once() -> None:
    spans = [Span("engine", "a", 10.0, 4.0), Span("engine", "b", 11.0, 1.0), Span("driver", "step", 10.0, 8.0)]
    assert busy(spans) == {"driver": (8.0, 8.0), "engine": (4.0, 8.0)}


def test_idle_time_is_per_actor_group_the_mean_over_its_actors() -> None:
    spans = [
        Span("driver", "rollout", 10.0, 8.0),
        Span("trainer 0", "micro-batch 0", 12.0, 2.0),
        Span("trainer 1", "micro-batch 0", 12.0, 6.0),
        Span("trainer 1", "optimizer step", 13.0, 1.0),  # inside the micro-batch: counted once
        Span("replica 0", "generate 4", 10.0, 4.0),
    ]
    assert idle_metrics(spans) == {
        "seconds/idle/driver": 0.0,
        "seconds/idle/replica": 4.0,
        "seconds/idle/trainer": 4.0,  # (6 + 2) / 2 of 8 seconds
    }
    assert idle_metrics([]) == {}


def test_a_step_reads_back_as_written(tmp_path: Path) -> None:
    path = tmp_path / "timeline.jsonl"
    with pytest.raises(FileNotFoundError, match="run directory"):
        read_step(path)
    first = [Span("driver", "propose", 1.5, 2.0, {"n": 3.0})]
    second = [Span("trainer 1", "micro-batch 0", 4.0, 0.5, {"tokens": 10.0})]
    write_step(path, 1, first)
    write_step(path, 2, second)
    assert read_step(path) == (2, second) and read_step(path, 1) == (1, first)
    with pytest.raises(ValueError, match=r"step 7 is not in .* steps 1\.\.2"):
        read_step(path, 7)


def test_a_step_trace_opens_in_perfetto(tmp_path: Path, perfetto_slices) -> None:
    spans = [
        Span("driver", "rollout", 100.0, 3.0),
        Span("replica 0", "generate 8", 100.1, 1.5, {"tokens": 812}),
        Span("replica 1", "generate 8", 100.2, 2.5, {"tokens": 990}),
        Span("replica 0", "verify 8 checks", 101.6, 0.1),
        Span("trainer 1", "sync bucket 0", 103.1, 0.2, {"version": 2, "bytes": 1 << 20}),
    ]
    path = tmp_path / "trace.json"
    path.write_text(json.dumps(chrome_trace(spans, 2)))
    assert sorted(perfetto_slices(path)) == sorted(s.name for s in spans)


def test_the_trace_has_a_process_per_actor_and_microsecond_slices() -> None:
    spans = [
        Span("trainer 0", "micro-batch 0", 101.0, 0.25),
        Span("driver", "train", 100.0, 2.0),
        Span("engine", "propose 0", 100.5, 1.0),
        Span("engine", "propose 1", 100.5, 0.5),
    ]
    trace = json.loads(json.dumps(chrome_trace(spans, 3)))
    names = {e["pid"]: e["args"]["name"] for e in trace["traceEvents"] if e["ph"] == "M"}
    assert names == {1: "driver", 2: "engine", 3: "trainer 0"}
    slices = {e["name"]: e for e in trace["traceEvents"] if e["ph"] == "X"}
    assert slices["train"]["ts"] == 0 and slices["train"]["dur"] == 2e6
    assert slices["micro-batch 0"]["ts"] == 1e6 and slices["micro-batch 0"]["cat"] == "trainer"
    assert {slices["propose 0"]["tid"], slices["propose 1"]["tid"]} == {0, 1}
    assert trace["otherData"] == {"step": 3}
