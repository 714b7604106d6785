"""Where a job's time goes: per-phase timings on outcomes (`Executor(timings=True)`), the
`azr-executor profile` command and its trace, and the service's phase histograms."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from pathlib import Path

from azr.executor import Executor, Job, local_service
from azr.executor.jobs import TIMING_FIELDS

ROOT = Path(__file__).resolve().parents[1]
PHASES = ("queue", "instantiate", "expected", "run", "teardown", "prepare")


def test_outcomes_carry_timings_when_asked() -> None:
    jobs = [Job("def f(a):\n    return a * 2", "21", expected="42"), Job("def f(a):\n    while True: pass", "1")]
    for mode in ("strict", "batch"):
        timed = Executor(workers=1, timeout_s=0.5, mode=mode, timings=True).run(jobs)
        for outcome in timed:
            assert outcome.timings is not None and tuple(outcome.timings) == TIMING_FIELDS
            assert all(outcome.timings[field] >= 0 for field in TIMING_FIELDS)
        fast, endless = (o.timings for o in timed)
        assert fast is not None and endless is not None
        assert fast["expected_s"] > 0 and fast["run_s"] > 0
        assert endless["run_s"] >= 0.5  # the time limit is spent in the guest call
        # The job after the endless one waited for it: its queue time covers that run.
        assert endless["start_us"] >= fast["start_us"]
    assert all(o.timings is None for o in Executor(workers=1).run(jobs[:1]))


def test_the_profile_command_prints_every_phase_and_writes_a_trace(tmp_path: Path) -> None:
    trace = tmp_path / "trace.json"
    command = [sys.executable, "-m", "azr.executor_cli", "profile", "examples/programs.jsonl", "--trace", str(trace)]
    done = subprocess.run([*command, "--timeout", "1"], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    for phase in PHASES:
        assert f"  {phase} " in done.stdout
    assert "\nall " in done.stdout and "\nok " in done.stdout and "\ntimeout " in done.stdout
    events = json.loads(trace.read_text())["traceEvents"]
    slices = [e for e in events if e["ph"] == "X"]
    jobs = [e for e in slices if e["cat"] == "job"]
    assert len(jobs) == sum(1 for line in (ROOT / "examples/programs.jsonl").read_text().splitlines() if line.strip())
    assert all({"name", "ts", "dur", "pid", "tid"} <= set(e) for e in slices)
    # Every phase lies inside its job's slice, on the same worker track.
    for phase in (e for e in slices if e["cat"] == "phase"):
        owner = [j for j in jobs if j["tid"] == phase["tid"] and j["ts"] <= phase["ts"] + 1e-3]
        job = max(owner, key=lambda j: j["ts"])
        assert phase["ts"] + phase["dur"] <= job["ts"] + job["dur"] + 1.0  # µs of float rounding
    assert {e["args"]["name"] for e in events if e["ph"] == "M"} == {f"worker {e['tid']}" for e in jobs}


def test_the_profile_trace_opens_in_perfetto(tmp_path: Path, perfetto_slices) -> None:
    trace = tmp_path / "trace.json"
    command = [sys.executable, "-m", "azr.executor_cli", "profile", "examples/programs.jsonl", "--trace", str(trace)]
    done = subprocess.run([*command, "--timeout", "1"], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    written = [e["name"] for e in json.loads(trace.read_text())["traceEvents"] if e["ph"] == "X"]
    assert sorted(perfetto_slices(trace)) == sorted(written)


def test_the_service_exports_phase_histograms_and_timings_on_request() -> None:
    with local_service("--workers", "1") as (address, _):
        body = {"jobs": [{"program": "def f(a):\n    return a", "input": "1"}]}

        def post(payload: dict) -> dict:
            request = urllib.request.Request(
                f"http://{address}/v1/run", json.dumps(payload).encode(), {"Content-Type": "application/json"}
            )
            with urllib.request.urlopen(request) as answer:
                return json.load(answer)

        assert "timings" not in post(body)["outcomes"][0]
        timed = post({**body, "timings": True})["outcomes"][0]["timings"]
        assert set(timed) == set(TIMING_FIELDS)
        with urllib.request.urlopen(f"http://{address}/metrics") as answer:
            metrics = answer.read().decode()
    for phase in PHASES:
        assert f'azr_job_phase_seconds_count{{phase="{phase}"}} 2' in metrics
