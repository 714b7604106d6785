"""The benchmark commands run end to end on a small workload (their numbers are recorded in
docs/benchmarks.md from full runs; here they only have to work and print their tables)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from .conftest import SHARED_DATA


def bench(module: str, *args: str, data: bool = True) -> str:
    command = [sys.executable, "-m", module, *(["--data", str(SHARED_DATA)] if data else []), *args]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


@pytest.mark.slow
def test_executor_benchmark_prints_every_workload() -> None:
    out = bench("azr.bench.executor", "--programs", "40", "--reps", "1", "--subprocess-programs", "2", "--skip-compile")
    assert out.count("| azr strict |") >= 2 and "| azr batch |" in out
    rates = json.loads(out.strip().splitlines()[-1])["rates"]
    assert any("solver checks" in workload for workload in rates)
    assert "| azr strict, memo |" in out and set(rates["traffic"]) >= {"azr strict", "azr strict, memo", "azr batch"}
    # The induction workload needs the seed files; without them the shipped sample stands in.
    assert any("induction" in workload for workload in rates) == (SHARED_DATA / "azr_seed").exists()


@pytest.mark.slow
def test_service_benchmark_compares_the_two_paths() -> None:
    out = bench(
        "azr.bench.service", "--programs", "40", "--batch", "8", "--reps", "1", "--seconds", "1", "--mode", "strict"
    )
    assert "| `RemoteExecutor` → service |" in out and "| 2x capacity |" in out


@pytest.mark.slow
def test_trainer_benchmark_compares_the_update_in_one_process_and_on_workers() -> None:
    pytest.importorskip("ray", reason='Ray is not installed (pip install -e ".[cluster]")')
    command = [sys.executable, "-m", "azr.bench.trainer", "--model", "tiny-qwen2", "--workers", "2"]
    command += ["--sequences", "4", "--prompt-tokens", "16", "--completion-tokens", "8", "--steps", "1"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "| in this process |" in result.stdout and "| 2 Ray worker(s), FSDP2 |" in result.stdout


@pytest.mark.slow
def test_rollout_benchmark_compares_the_engines() -> None:
    pytest.importorskip("vllm")
    out = bench("azr.bench.rollout", "--prompts", "2", "--max-new-tokens", "8", "--skip-step", data=False)
    assert "| hf |" in out and "| vllm |" in out
    assert json.loads(out.strip().splitlines()[-1])["vllm_over_hf"] > 0


@pytest.mark.slow
def test_guided_benchmark_gives_the_overhead_of_each_engine() -> None:
    # The tiny model: what is measured is the same code on any model, and vLLM's guided decoding
    # is checked in tests/test_rollout_vllm.py (SmolLM2 on both engines took 6 minutes here).
    out = bench("azr.bench.guided", "--model", "tiny-qwen2", "--prompts", "3", "--reps", "1", data=False)
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["hf/guided_over_free"] > 0 and "| hf | guided |" in out
    # Guided completions are all formatted.
    assert all(line.endswith("| 100% |") for line in out.splitlines() if "| guided |" in line)


@pytest.mark.slow
def test_cluster_benchmark_compares_the_schedules() -> None:
    pytest.importorskip("ray", reason='Ray is not installed (pip install -e ".[cluster]")')
    args = ["--replicas", "1", "2", "--batch", "3", "--steps", "1", "--update-s", "0", "--token-ms", "0.01"]
    out = bench("azr.bench.cluster", *args, data=False)
    rows = (
        "| fleet |",
        "| fleet, async (max_staleness=2) |",
        "| fleet, async (max_staleness=2), steps overlapped |",
        "| fleet, 2 phases |",
        "| round-robin |",
        "| reference (9 barriers) |",
    )
    for row in (*rows, "| scheduler cost per request"):
        assert row in out, out
    results = json.loads(out.strip().splitlines()[-1])["results"]
    assert {(r["schedule"], r["replicas"]) for r in results} >= {("fleet", 1), ("fleet", 2)}
    assert all(r["step_s"] > 0 and 0 <= r["idle"] < 1 for r in results)


@pytest.mark.slow
def test_weights_benchmark_times_both_transports() -> None:
    pytest.importorskip("ray", reason='Ray is not installed (pip install -e ".[cluster]")')
    out = bench("azr.bench.weights", "--model", "tiny-qwen2", "--replicas", "1", "--syncs", "1", data=False)
    assert "| 1 | object-store |" in out and "| 1 | broadcast |" in out
