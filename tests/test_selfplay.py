"""The self-play loop end to end: a tiny random Qwen2 model with the real Qwen vocabulary, the real
executor and the HF engine; resuming is bit-exact; the smoke preset runs with SmolLM2."""

from __future__ import annotations

import dataclasses
import json
import sys
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from azr.config import SelfPlayConfig, load_config
from azr.executor import Executor, InternalError, Job, RemoteExecutor
from azr.models import tiny_qwen2
from azr.rollout import Completion
from azr.selfplay import Rollout, SelfPlay
from azr.tasks import TASK_ROLES, Role, TaskType, Triplet, role_name
from azr.trainer import Sample
from azr.verify import Check, run_checks

from .scripted import ScriptedEngine, answer, block, completion_logprobs, fenced, task_role

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


REVERSE = "def f(x):\n    return sorted(x)[::-1]"
KNOWN_OUTPUTS = {(REVERSE, "[3, 1, 2]"): "[3, 2, 1]"}


def mixed_policy() -> Callable[[str], str]:
    """A scripted policy of mixed quality: valid, invalid and unformatted proposals, right and wrong
    answers, so that every task-role has rewards that differ and advantages that are not zero."""
    turns: Counter[tuple[Role, TaskType]] = Counter()

    def write(prompt: str) -> str:
        role, task = task_role(prompt)
        turn = turns[(role, task)]
        turns[(role, task)] += 1
        if turn % 3 == 2:
            return "I am not sure what to write here."
        if role is Role.PROPOSE and task is TaskType.INDUCTION:
            inputs = "".join(fenced("input", str(i)) + "\n" for i in range(TINY.induction_inputs))
            return answer(inputs + fenced("message", "it returns what it gets"))
        if role is Role.PROPOSE:
            program = REVERSE if turn % 3 == 0 else "import os\n" + REVERSE
            return answer(fenced("python", program) + "\n" + fenced("input", "[3, 1, 2]"))
        right = turn % 3 == 0
        if task is TaskType.INDUCTION:
            return answer(fenced("python", "def f(a):\n    return a" if right else "def f(a):\n    return None"))
        program, given = block(prompt, "python"), block(prompt, "input" if task is TaskType.DEDUCTION else "output")
        if task is TaskType.DEDUCTION:
            output = KNOWN_OUTPUTS.get((program, given), given)
            return answer(fenced("output", output if right else "'wrong'"))
        return answer(fenced("input", given if right and program != REVERSE else "[1, 2, 3]" if right else "0"))

    return write


def surrogate(model: torch.nn.Module, samples: list[Sample]) -> float:
    """The policy-gradient objective of a step: advantage-weighted log-likelihood of its tokens."""
    total = sum(
        sample.advantage * sum(completion_logprobs(model, sample.prompt_ids, sample.completion_ids, 1.0))
        for sample in samples
    )
    return total / sum(len(sample.completion_ids) for sample in samples)


def test_one_step_trains_on_all_six_task_roles(tmp_path: Path, executor: Executor) -> None:
    policy = tiny_qwen2(seed=0)
    engine = ScriptedEngine(policy, mixed_policy())
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
    run._record(metrics, [])
    logged = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[0])
    assert logged["step"] == 1.0 and "train/loss" in logged
    assert any((tmp_path / "tensorboard").iterdir())


def test_answers_that_call_the_program_score_as_wrong(tmp_path: Path, executor: Executor) -> None:
    """A policy that answers every deduction task with `f(<input>)` (the judge would run it in the
    program's namespace) gets the formatted-but-wrong reward, −0.5, on every sample."""

    def write(prompt: str) -> str:
        role, task = task_role(prompt)
        if (role, task) == (Role.SOLVE, TaskType.DEDUCTION):
            return answer(fenced("output", f"f({block(prompt, 'input')})"))
        return mixed_policy()(prompt)

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
    write = mixed_policy()

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


def completion(text: str) -> Completion:
    return Completion(prompt_ids=(1, 2), token_ids=(3, 4), logprobs=(-1.0, -1.0), text=text, finish_reason="stop")


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
    run._generate_and_check(rollouts, "solve", lambda rollout: Check([slow]), seconds, defaultdict(float))
    assert all(r.completion is not None for r in rollouts)
    assert seconds["verify"] > 0 and seconds["verify_hidden"] > 0, dict(seconds)
    assert seconds["verify_hidden"] <= seconds["verify"] and seconds["generate"] > 0


def test_an_executor_that_fails_every_check_stops_the_run(tmp_path: Path) -> None:
    """A fleet that cannot be reached decides nothing: the step stops with the host's name rather
    than training on rewards nobody judged."""
    policy = tiny_qwen2(seed=0)
    dead = RemoteExecutor("127.0.0.1:9", retries=0)
    run = SelfPlay(
        TINY, tmp_path, policy=policy, engine=ScriptedEngine(policy, mixed_policy()), executor=dead, progress=False
    )
    with pytest.raises(InternalError, match=r"propose phase.*127\.0\.0\.1:9"):
        run.step()


def test_phases_validate_score_and_reward(tmp_path: Path, executor: Executor) -> None:
    """The valid-proposal path, which a random model never reaches: real completions through the
    real executor, and the rewards the paper defines."""
    config = dataclasses.replace(TINY, learnability_samples=4)
    run = SelfPlay(config, tmp_path, executor=executor, progress=False)
    program = "def f(x):\n    return sorted(x)[::-1]"
    long_program = program + "\n" + "\n".join(f"# note {i}: the list is reversed after sorting" for i in range(300))
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
        Rollout(
            Role.PROPOSE,
            TaskType.DEDUCTION,
            "p",
            completion(answer(f"```python\n{long_program}\n```\n```input\n[3, 1, 2]\n```")),
        ),
    ]
    validate(run, proposals)
    valid, forbidden, unformatted, induction, too_long = proposals
    # A task no solver prompt can hold is no task: it is refused, like one that does not run.
    assert too_long.check is not None and too_long.check.outcomes[0].ok
    assert too_long.new_task is None and not too_long.learnability
    assert too_long.rejection == "the task's solver prompt is longer than max_prompt_tokens"
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
    assert too_long.reward == -0.5
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
