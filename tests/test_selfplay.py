"""The self-play loop end to end: a tiny random Qwen2 model with the real Qwen vocabulary, the real
executor and the HF engine; resuming is bit-exact; the smoke preset runs with SmolLM2."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from azr.cli import main
from azr.config import SelfPlayConfig, load_config
from azr.executor import Executor, InternalError, RemoteExecutor
from azr.models import load_policy, tiny_qwen2
from azr.selfplay import SelfPlay
from azr.tasks import TASK_ROLES, Role, TaskType, Triplet, role_name
from azr.timeline import read_step
from azr.trainer import Sample

from .scripted import REVERSE, ScriptedEngine, answer, block, completion_logprobs, fenced, mixed_policy, task_role

IDENTITY = Triplet("def f(a):\n    return a", "1", "1")
TINY = dataclasses.replace(
    load_config("smoke"),
    model="tiny-qwen2",
    max_response_tokens=24,
    # The scripted engine writes its own text; guided runs are tested with real engines below.
    guided_format=False,
    generation_batch_size=8,
    learnability_samples=2,
    lr=1e-3,
    steps=2,
)


@pytest.fixture(scope="module")
def executor() -> Executor:
    return Executor(timeout_s=5.0, mode="batch")


def run_steps(out: Path, executor: Executor, steps: int, config: SelfPlayConfig = TINY) -> SelfPlay:
    run = SelfPlay(config, out, executor=executor, progress=False)
    run.run(steps)
    return run


def surrogate(model: torch.nn.Module, samples: list[Sample]) -> float:
    """The policy-gradient objective of a step: advantage-weighted log-likelihood of its tokens."""
    total = sum(
        sample.advantage * sum(completion_logprobs(model, sample.prompt_ids, sample.completion_ids, 1.0))
        for sample in samples
    )
    return total / sum(len(sample.completion_ids) for sample in samples)


def test_one_step_trains_on_all_six_task_roles(tmp_path: Path, executor: Executor) -> None:
    policy = tiny_qwen2(seed=0)
    engine = ScriptedEngine(policy, mixed_policy(TINY.induction_inputs))
    run = SelfPlay(TINY, tmp_path, policy=policy, engine=engine, executor=executor, progress=False)
    trained: list[Sample] = []
    update = run.trainer.step
    run.trainer.step = lambda samples: (trained.extend(samples), update(samples))[1]
    metrics = run.step()
    for group in TASK_ROLES:
        name = role_name(group)
        assert metrics[f"count/{name}"] >= 1, name
        # Rewards differ within every task-role, so every one of the six baselines is exercised.
        assert metrics[f"advantage_std/{name}"] > 0, (name, metrics)
    for name in (
        "train/loss",
        "train/grad_norm",
        "seconds/generate",
        "seconds/execute",
        "seconds/train",
        "buffer/deduction",
        "valid_proposal/induction",
        "accuracy/abduction",
        "format_error/propose/deduction",
        "length/solve/induction",
    ):
        assert name in metrics, name
    assert 0 < metrics["valid_proposal/deduction"] < 1 and 0 < metrics["accuracy/deduction"] < 1
    assert metrics["executor/internal"] == 0
    # The update raised the objective it descends on: the advantage-weighted log-likelihood.
    assert any(sample.advantage != 0 for sample in trained)
    before = surrogate(tiny_qwen2(seed=0).model, trained)
    assert surrogate(policy.model, trained) > before
    logged = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[0])
    assert logged == json.loads(json.dumps(metrics))
    assert any((tmp_path / "tensorboard").iterdir())
    # The step's timeline: a span per request, per check batch and per micro-batch, inside the driver's
    # phases; `azr profile` writes it as a trace.
    step, spans = read_step(tmp_path / "timeline.jsonl")
    assert step == 1
    # Each actor group's idle seconds over the step, from the same spans.
    for group in ("driver", "engine", "executor", "trainer"):
        assert 0 <= metrics[f"seconds/idle/{group}"] <= metrics["seconds/step"] + 1e-3
    assert metrics["seconds/idle/executor"] > metrics["seconds/idle/driver"]
    names = {(s.actor, s.name) for s in spans}
    assert {("driver", p) for p in ("rollout", "train", "sync")} <= names
    requests = [s for s in spans if s.actor == "engine"]
    # One span per request: every trained rollout's, and the learnability samples' too.
    assert len({s.name for s in requests}) == len(requests)
    assert len(requests) > sum(int(v) for k, v in metrics.items() if k.startswith("count/"))
    assert any(s.actor == "executor" for s in spans) and any(s.name.startswith("micro-batch") for s in spans)
    phases = [s for s in spans if s.actor == "driver"]
    for span in (s for s in spans if s.actor != "driver"):
        assert any(
            p.start - 1e-3 <= span.start and span.start + span.seconds <= p.start + p.seconds + 1e-3 for p in phases
        ), span
    assert {s.name.split()[0] for s in requests} == {"propose", "solve"}
    with pytest.raises(SystemExit) as done:
        main(["profile", str(tmp_path), "--out", str(tmp_path / "trace.json")])
    assert done.value.code == 0
    trace = json.loads((tmp_path / "trace.json").read_text())["traceEvents"]
    assert len([e for e in trace if e["ph"] == "X"]) == len(spans)
    assert {e["args"]["name"] for e in trace if e["ph"] == "M"} == {"driver", "engine", "executor", "trainer"}


def test_answers_that_call_the_program_score_as_wrong(tmp_path: Path, executor: Executor) -> None:
    """A policy that answers every deduction task with `f(<input>)` (the judge would run it in the
    program's namespace) gets the formatted-but-wrong reward, −0.5, on every sample."""

    def write(prompt: str) -> str:
        role, task = task_role(prompt)
        if (role, task) == (Role.SOLVE, TaskType.DEDUCTION):
            return answer(fenced("output", f"f({block(prompt, 'input')})"))
        return mixed_policy(TINY.induction_inputs)(prompt)

    policy = tiny_qwen2(seed=0)
    run = SelfPlay(
        TINY, tmp_path, policy=policy, engine=ScriptedEngine(policy, write), executor=executor, progress=False
    )
    metrics = run.step()
    assert metrics["count/solve/deduction"] >= TINY.batch_size
    assert metrics["format_error/solve/deduction"] == 0 and metrics["accuracy/deduction"] == 0
    assert metrics["reward/solve/deduction"] == -0.5 and metrics["advantage_std/solve/deduction"] == 0
    assert metrics["learnability_accuracy/deduction"] == 0


def test_a_dead_worker_leaves_its_samples_out(tmp_path: Path) -> None:
    """A worker that dies on a job (twice: the check is re-run once) gives `internal` outcomes: the
    sample is left out of the update with no reward, the step completes, the metric counts it."""
    dying = Executor(
        workers=2, timeout_s=5.0, worker_command=[sys.executable, str(Path(__file__).parent / "dying_worker.py")]
    )
    write = mixed_policy(TINY.induction_inputs)

    def kill_one_proposal(prompt: str) -> str:
        role, task = task_role(prompt)
        if (role, task) == (Role.PROPOSE, TaskType.ABDUCTION):
            program = REVERSE + "  # this job kills its worker"
            return answer(fenced("python", program) + "\n" + fenced("input", "[5, 4]"))
        return write(prompt)

    policy = tiny_qwen2(seed=0)
    engine = ScriptedEngine(policy, kill_one_proposal)
    run = SelfPlay(TINY, tmp_path, policy=policy, engine=engine, executor=dying, progress=False)
    metrics = run.step()
    run.save_checkpoint()
    assert torch.isfinite(torch.tensor(metrics["train/loss"]))
    left_out = [row for row in map(json.loads, (tmp_path / "proposals.jsonl").open()) if "left_out" in row]
    assert len(left_out) == TINY.batch_size and all(row["task"] == "abduction" for row in left_out)
    assert all(row["reward"] is None and not row["valid"] for row in left_out)
    assert metrics["executor/internal"] >= len(left_out)
    assert metrics["executor/internal_retried"] >= metrics["executor/internal"]
    assert metrics["count/propose/abduction"] == 0  # nothing of it reached the update
    assert metrics["count/propose/deduction"] == TINY.batch_size


def test_resume_is_bit_exact(tmp_path: Path, executor: Executor) -> None:
    straight = run_steps(tmp_path / "straight", executor, 2)
    run_steps(tmp_path / "split", executor, 1)
    resumed = SelfPlay.resume(TINY, tmp_path / "split", executor=executor, progress=False)
    assert resumed.step_index == 1
    resumed.run(2)
    for a, b in zip(straight.policy.model.parameters(), resumed.policy.model.parameters(), strict=True):
        assert torch.equal(a, b)

    def without_timings(path: Path) -> list[dict]:
        rows = [json.loads(line) for line in (path / "metrics.jsonl").read_text().splitlines()]
        return [{k: v for k, v in row.items() if not k.startswith("seconds/")} for row in rows]

    assert without_timings(tmp_path / "split") == without_timings(tmp_path / "straight")
    assert [b.tasks() for b in resumed.buffers.values()] == [b.tasks() for b in straight.buffers.values()]
    assert sorted(p.name for p in (tmp_path / "split" / "checkpoints").iterdir()) == [
        "latest",
        "step-000001",
        "step-000002",
    ]
    # `azr export` turns a checkpoint into a Hugging Face model with the trained weights.
    exported = tmp_path / "exported"
    result = subprocess.run(
        [sys.executable, "-m", "azr.cli", "export", str(tmp_path / "split"), "--step", "2", "--to", str(exported)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    reloaded = load_policy(str(exported)).model
    for a, b in zip(straight.policy.model.state_dict().values(), reloaded.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    missing = subprocess.run(
        [sys.executable, "-m", "azr.cli", "export", str(tmp_path / "split"), "--step", "7", "--to", str(exported)],
        capture_output=True,
        text=True,
    )
    assert missing.returncode == 2 and "no checkpoint of step 7" in missing.stderr


def test_an_executor_that_fails_every_check_stops_the_run(tmp_path: Path) -> None:
    """A fleet that cannot be reached decides nothing: the step stops with the host's name rather
    than training on rewards nobody judged."""
    policy = tiny_qwen2(seed=0)
    dead = RemoteExecutor("127.0.0.1:9", retries=0)
    run = SelfPlay(
        TINY,
        tmp_path,
        policy=policy,
        engine=ScriptedEngine(policy, mixed_policy(TINY.induction_inputs)),
        executor=dead,
        progress=False,
    )
    with pytest.raises(InternalError, match=r"rollout phase.*127\.0\.0\.1:9"):
        run.step()


@pytest.mark.slow
def test_smoke_preset_runs_one_step_with_smollm2(tmp_path: Path, executor: Executor) -> None:
    run = SelfPlay(load_config("smoke"), tmp_path, executor=executor, progress=False)
    run.run(1)
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 1 and torch.isfinite(torch.tensor(rows[0]["train/loss"]))
    checkpoint = tmp_path / "checkpoints" / "step-000001"
    assert (checkpoint / "weights" / ".metadata").exists() and (checkpoint / "model" / "config.json").exists()
    proposals = [json.loads(line) for line in (tmp_path / "proposals.jsonl").read_text().splitlines()]
    assert len(proposals) == 3 * run.config.batch_size
    # The preset guides decoding: every completion of every task-role is formatted.
    errors = {name: value for name, value in rows[0].items() if name.startswith("format_error/")}
    assert len(errors) == 6 and not any(errors.values()), errors
