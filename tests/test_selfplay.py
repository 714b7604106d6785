"""The self-play loop end to end: a tiny random Qwen2 model with the real Qwen vocabulary, the real
executor and the HF engine; resuming is bit-exact; the smoke preset runs with SmolLM2."""

from __future__ import annotations

import dataclasses
import json
from collections import defaultdict
from pathlib import Path

import pytest
import torch
from azr.config import SelfPlayConfig, load_config
from azr.executor import Executor, Job, RemoteExecutor, RemoteExecutorError
from azr.rollout import Completion
from azr.selfplay import Rollout, SelfPlay
from azr.tasks import TASK_ROLES, Role, TaskType, Triplet, role_name
from azr.verify import Check, CheckStream, run_checks

IDENTITY = Triplet("def f(a):\n    return a", "1", "1")
TINY = dataclasses.replace(
    load_config("smoke"),
    model="tiny-qwen2",
    max_response_tokens=24,
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


def test_one_step_trains_on_all_six_task_roles(tmp_path: Path, executor: Executor) -> None:
    run = SelfPlay(TINY, tmp_path, executor=executor, progress=False)
    before = [p.detach().clone() for p in run.policy.model.parameters()]
    metrics = run.step()
    for task_role in TASK_ROLES:
        assert metrics[f"count/{role_name(task_role)}"] >= 1, task_role
        assert f"reward/{role_name(task_role)}" in metrics
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
        "advantage_std/propose/abduction",
    ):
        assert name in metrics, name
    assert torch.isfinite(torch.tensor(metrics["train/loss"]))
    assert any(not torch.equal(a, b) for a, b in zip(before, run.policy.model.parameters(), strict=True))
    run._record(metrics, [])
    logged = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[0])
    assert logged["step"] == 1.0 and "train/loss" in logged
    assert any((tmp_path / "tensorboard").iterdir())


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


def completion(text: str) -> Completion:
    return Completion(prompt_ids=(1, 2), token_ids=(3, 4), logprobs=(-1.0, -1.0), text=text, finish_reason="stop")


def answer(body: str) -> str:
    return f"thinking</think>\n<answer>{body}</answer>"


def validate(run: SelfPlay, proposals: list[Rollout]) -> None:
    run_checks(run.executor, [check for r in proposals if (check := run._proposal_check(r)) is not None])
    run._add_new_tasks(proposals)


def score(run: SelfPlay, solutions: list[Rollout]) -> None:
    run_checks(run.executor, [check for r in solutions if (check := run._answer_check(r)) is not None])


def test_verification_streams_behind_generation(tmp_path: Path, executor: Executor) -> None:
    """Checks of early completions run while later ones are generated (the HF engine hands over a
    batch at a time), and the step's metrics say how much verification was hidden."""
    config = dataclasses.replace(TINY, generation_batch_size=2, max_response_tokens=16)
    run = SelfPlay(config, tmp_path, executor=executor, progress=False)
    rollouts = [Rollout(Role.SOLVE, TaskType.DEDUCTION, f"Task {i}:", subject=IDENTITY) for i in range(8)]
    slow = Job("def f(n):\n    return sum(i * i for i in range(n))", "3 * 10**5")
    seconds: dict[str, float] = defaultdict(float)
    run._generate_and_check(rollouts, "solve", lambda rollout: Check([slow]), seconds)
    assert all(r.completion is not None for r in rollouts)
    assert seconds["verify"] > 0 and seconds["verify_hidden"] > 0, dict(seconds)
    assert seconds["verify_hidden"] <= seconds["verify"] and seconds["generate"] > 0


def test_a_failing_executor_fails_the_phase() -> None:
    stream = CheckStream(RemoteExecutor("127.0.0.1:9", retries=0))
    stream.submit([Check([Job("def f(a):\n    return a", "1")])])
    with pytest.raises(RemoteExecutorError, match=r"127\.0\.0\.1:9"):
        stream.finish()


def test_phases_validate_score_and_reward(tmp_path: Path, executor: Executor) -> None:
    """The valid-proposal path, which a random model never reaches: real completions through the
    real executor, and the rewards the paper defines."""
    config = dataclasses.replace(TINY, learnability_samples=4)
    run = SelfPlay(config, tmp_path, executor=executor, progress=False)
    program = "def f(x):\n    return sorted(x)[::-1]"
    proposals = [
        Rollout(
            Role.PROPOSE,
            TaskType.DEDUCTION,
            "p",
            completion(answer(f"```python\n{program}\n```\n```input\n[3, 1, 2]\n```")),
        ),
        Rollout(
            Role.PROPOSE,
            TaskType.ABDUCTION,
            "p",
            completion(answer("```python\nimport os\ndef f(x):\n    return x\n```\n```input\n1\n```")),
        ),
        Rollout(Role.PROPOSE, TaskType.DEDUCTION, "p", completion("no format at all")),
        Rollout(
            Role.PROPOSE,
            TaskType.INDUCTION,
            "p",
            completion(answer("".join(f"```input\n{i}\n```\n" for i in range(4)) + "```message\nnegates\n```")),
            subject=Triplet("def f(x):\n    return -x", "1", "-1"),
        ),
    ]
    validate(run, proposals)
    valid, forbidden, unformatted, induction = proposals
    assert valid.new_task == Triplet(program, "[3, 1, 2]", "[3, 2, 1]")
    assert forbidden.formatted and forbidden.new_task is None
    assert not unformatted.formatted and unformatted.check is None
    assert induction.new_task is not None and induction.new_task.outputs == ("0", "-1", "-2", "-3")
    assert len(valid.learnability) == 4 and all(not r.trained for r in valid.learnability)
    # Two of the four solver samples are right.
    for rollout, text in zip(valid.learnability, ["[3, 2, 1]", "[1, 2, 3]", "[3,2,1]", "oops"], strict=True):
        rollout.completion = completion(answer(f"```output\n{text}\n```"))
    for rollout in induction.learnability:
        rollout.completion = completion(answer("```python\ndef f(x):\n    return -x\n```"))
    learnability = valid.learnability + induction.learnability
    score(run, learnability)
    run._reward(proposals, [], learnability)
    assert valid.reward == pytest.approx(0.5)  # 1 − solve rate 2/4
    assert forbidden.reward == -0.5
    assert unformatted.reward == -1.0
    assert induction.reward == 0.0  # always solved: the paper gives 0
    assert [r.reward for r in valid.learnability] == [1.0, -0.5, 1.0, -0.5]
    # A solver's own abduction: any input that maps to the output is right.
    solver = Rollout(
        Role.SOLVE, TaskType.ABDUCTION, "p", completion(answer("```input\n[2, 3, 1]\n```")), subject=valid.new_task
    )
    score(run, [solver])
    run._reward([], [solver], [])
    assert solver.reward == 1.0


@pytest.mark.slow
def test_smoke_preset_runs_one_step_with_smollm2(tmp_path: Path, executor: Executor) -> None:
    run = SelfPlay(load_config("smoke"), tmp_path, executor=executor, progress=False)
    run.run(1)
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 1 and torch.isfinite(torch.tensor(rows[0]["train/loss"]))
    assert (tmp_path / "checkpoints" / "step-000001" / "model.safetensors").exists()
    proposals = [json.loads(line) for line in (tmp_path / "proposals.jsonl").read_text().splitlines()]
    assert len(proposals) == 3 * run.config.batch_size
