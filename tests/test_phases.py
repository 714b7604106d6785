"""The phases of a step as functions over plain records (`azr.phases`), without a model: prompts
from buffers, validation, scoring and rewards through the real executor, and verification streamed
behind generation."""

from __future__ import annotations

import random
from functools import partial

import pytest
from azr.buffers import TaskBuffer
from azr.executor import Executor, Job
from azr.models import tiny_qwen2
from azr.phases import (
    PhaseTimes,
    Rollout,
    SolverPlan,
    StepSettings,
    accept_proposal,
    assign_advantages,
    assign_rewards,
    check_answer,
    check_proposal,
    check_rollout,
    generate_and_check,
    new_tasks,
    proposer_rollouts,
)
from azr.rollout import Completion, HFEngine, SamplingParams
from azr.tasks import IDENTITY_INDUCTION, IDENTITY_TRIPLET, InductionTask, Role, TaskType, Triplet
from azr.verify import Check, run_checks

from .scripted import answer

SETTINGS = StepSettings(batch_size=3, references=2, induction_inputs=4, learnability_samples=4)
IDENTITY = Triplet("def f(a):\n    return a", "1", "1")


def fits(prompt: str) -> bool:
    """A prompt budget in characters, standing in for the tokenizer's."""
    return len(prompt) < 6000


@pytest.fixture(scope="module")
def executor() -> Executor:
    return Executor(timeout_s=5.0)


def completion(text: str) -> Completion:
    return Completion(prompt_ids=(1, 2), token_ids=(3, 4), logprobs=(-1.0, -1.0), text=text, finish_reason="stop")


def validate(executor: Executor, proposals: list[Rollout]) -> None:
    check = partial(check_proposal, induction_inputs=SETTINGS.induction_inputs)
    run_checks(executor, [c for r in proposals if (c := check(r)) is not None])
    for proposal in proposals:
        accept_proposal(proposal, SETTINGS, fits)


def score(executor: Executor, solutions: list[Rollout]) -> None:
    run_checks(executor, [c for r in solutions if (c := check_answer(r)) is not None])


def buffers() -> dict[TaskType, TaskBuffer]:
    rng = random.Random(0)
    found: dict[TaskType, TaskBuffer] = {}
    for task in (TaskType.DEDUCTION, TaskType.ABDUCTION):
        found[task] = TaskBuffer(Triplet, 100, "oldest-out")
        found[task].add([IDENTITY_TRIPLET, Triplet("def f(a):\n    return -a", "2", "-2")], -1, rng)
    found[TaskType.INDUCTION] = TaskBuffer(InductionTask, 100, "oldest-out")
    found[TaskType.INDUCTION].add([IDENTITY_INDUCTION], -1, rng)
    return found


def test_prompts_come_from_the_buffers() -> None:
    pool = buffers()
    proposals = proposer_rollouts(pool, SETTINGS, random.Random(1), fits)
    assert [(r.role, r.task) for r in proposals] == [(Role.PROPOSE, t) for t in TaskType for _ in range(3)]
    assert all(isinstance(r.subject, Triplet) for r in proposals if r.task is TaskType.INDUCTION)
    # Prompts that would not fit lose references first, and are dropped when even one is too many.
    assert proposer_rollouts(pool, SETTINGS, random.Random(1), lambda prompt: False) == []


def test_each_verdict_settles_what_follows_it_and_new_tasks_come_first(executor: Executor) -> None:
    """The solver plan: B solver tasks per type, this step's new tasks first, the rest from the
    buffer; a proposal's follow-ups are known from its own verdict, in whatever order they come."""
    pool = buffers()
    proposals = proposer_rollouts(pool, SETTINGS, random.Random(1), fits)
    del proposals[2]  # two deduction proposals: the third deduction place is the buffer's at once
    plan = SolverPlan(proposals, pool, SETTINGS, random.Random(1), fits)
    opening = plan.opening()
    assert [(r.role, r.task, r.trained) for r in opening] == [(Role.SOLVE, TaskType.DEDUCTION, True)]
    assert opening[0].subject in pool[TaskType.DEDUCTION].tasks()

    program = "def f(a):\n    return a * 3"
    proposals[0].completion = completion("no program here")
    proposals[1].completion = completion(answer(f"```python\n{program}\n```\n```input\n2\n```"))
    checks = [c for r in proposals[:2] if (c := check_rollout(r, SETTINGS.induction_inputs)) is not None]
    run_checks(executor, checks)
    valid = plan.follow_up(proposals[1])  # the later proposal's verdict came first
    assert [(r.task, r.trained) for r in valid] == [(TaskType.DEDUCTION, True)] + [(TaskType.DEDUCTION, False)] * 4
    assert valid[1:] == proposals[1].learnability
    new_task = proposals[1].new_task
    assert isinstance(new_task, Triplet) and (new_task.program, new_task.output) == (program, "6")
    assert all(r.subject == new_task for r in valid)
    [instead] = plan.follow_up(proposals[0])  # not formatted: a task from the buffer in its place
    assert instead.subject in pool[TaskType.DEDUCTION].tasks() and proposals[0].new_task is None
    assert plan.follow_up(valid[0]) == []  # an answer's verdict calls for nothing

    deduction = [r for r in plan.solutions() if r.task is TaskType.DEDUCTION]
    assert [r.subject for r in deduction] == [new_task, opening[0].subject, instead.subject]
    assert new_tasks(proposals)[TaskType.DEDUCTION] == [new_task]


def test_advantages_are_normalised_within_each_task_role() -> None:
    rollouts = [Rollout(Role.SOLVE, TaskType.DEDUCTION, "p", reward=r) for r in (1.0, -0.5)]
    rollouts += [Rollout(Role.PROPOSE, TaskType.DEDUCTION, "p", reward=r) for r in (0.5, 0.5)]
    assign_advantages(rollouts, "sequence")
    assert rollouts[0].advantage > 0 > rollouts[1].advantage
    assert rollouts[0].advantage == pytest.approx(-rollouts[1].advantage)
    assert rollouts[2].advantage == rollouts[3].advantage == 0.0


def test_verification_streams_behind_generation(executor: Executor) -> None:
    """Checks of early completions run while later ones are generated (the HF engine hands over a
    batch at a time), and the phase's times say how much verification was hidden."""
    policy = tiny_qwen2(seed=0)
    engine = HFEngine(policy.model, policy.tokenizer, batch_size=2)
    rollouts = [Rollout(Role.SOLVE, TaskType.DEDUCTION, f"Task {i}:", subject=IDENTITY) for i in range(8)]
    slow = Job("def f(n):\n    return sum(i * i for i in range(n))", "3 * 10**5")
    times = PhaseTimes()
    generate_and_check(
        engine, executor, rollouts, SamplingParams(16), lambda rollout: Check([slow]), times, phase="solve"
    )
    seconds = times.seconds
    assert all(r.completion is not None for r in rollouts)
    assert seconds["verify"] > 0 and seconds["verify_hidden"] > 0, dict(seconds)
    assert seconds["verify_hidden"] <= seconds["verify"] and seconds["generate"] > 0
    assert times.executor["internal"] == 0


def test_follow_ups_are_generated_and_checked_in_the_same_call(executor: Executor) -> None:
    """With an engine here, what the verdicts call for is a next round of the same call; the call
    returns every rollout it generated, each checked."""
    policy = tiny_qwen2(seed=0)
    engine = HFEngine(policy.model, policy.tokenizer, batch_size=4)
    first = [Rollout(Role.SOLVE, TaskType.DEDUCTION, f"Task {i}:", subject=IDENTITY) for i in range(3)]

    def follow_up(rollout: Rollout) -> list[Rollout]:
        if not any(rollout is r for r in first):
            return []
        return [Rollout(Role.SOLVE, TaskType.DEDUCTION, rollout.prompt + " again", subject=IDENTITY)]

    def make_check(rollout: Rollout) -> Check:
        rollout.check = Check([Job("def f(a):\n    return a", "1")])
        return rollout.check

    times = PhaseTimes()
    generated = generate_and_check(
        engine, executor, first, SamplingParams(8), make_check, times, phase="rollout", follow_up=follow_up
    )
    assert generated[:3] == first and [r.prompt for r in generated[3:]] == [f"Task {i}: again" for i in range(3)]
    assert all(r.completion is not None and r.check is not None and r.check.outcomes for r in generated)
    assert times.executor["internal"] == 0


def test_validate_score_and_reward(executor: Executor) -> None:
    """The valid-proposal path, which a random model never reaches: written completions through the
    real executor, and the rewards the paper defines."""
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
    validate(executor, proposals)
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
    score(executor, learnability)
    assign_rewards(proposals, [], learnability, extreme=0.0)
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
    score(executor, [solver])
    assign_rewards([], [solver], [], extreme=0.0)
    assert solver.reward == 1.0
