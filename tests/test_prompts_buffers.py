"""Prompts are pure functions of their task; buffers are bounded and serialisable."""

from __future__ import annotations

import json
import random

import pytest
from azr import prompts
from azr.buffers import TaskBuffer
from azr.tasks import IDENTITY_INDUCTION, IDENTITY_TRIPLET, InductionTask, TaskType, Triplet


def triplet(i: int) -> Triplet:
    return Triplet(f"def f(a):\n    return a + {i}", str(i), str(2 * i))


def test_prompts_follow_the_r1_template_and_show_the_task() -> None:
    references = [triplet(1), triplet(2)]
    prompt = prompts.propose_triplet_prompt(TaskType.DEDUCTION, references)
    assert prompt.startswith("A conversation between User and Assistant.")
    assert prompt.endswith("Assistant: <think>")
    assert "<snippet_0>" in prompt and "<snippet_1>" in prompt and "return a + 2" in prompt
    assert prompt == prompts.propose_triplet_prompt(TaskType.DEDUCTION, references)
    assert prompt != prompts.propose_triplet_prompt(TaskType.ABDUCTION, references)
    with pytest.raises(ValueError, match="propose_induction_prompt"):
        prompts.propose_triplet_prompt(TaskType.INDUCTION, references)


def test_solver_prompts_hide_what_must_be_found() -> None:
    t = Triplet("def f(a):\n    return sorted(a)", "[3, 1]", "[1, 3]")
    deduction = prompts.solve_deduction_prompt(t)
    assert "[3, 1]" in deduction and "```output\n[1, 3]" not in deduction
    abduction = prompts.solve_abduction_prompt(t)
    assert "[1, 3]" in abduction and "```input\n[3, 1]" not in abduction
    task = InductionTask("def f(a):\n    return a", ("1", "2", "3", "4"), ("1", "2", "3", "4"), "identity")
    induction = prompts.solve_induction_prompt(task)
    assert "```input_0\n1" in induction and "```input_1\n2" in induction
    assert "3" not in induction.split("### Examples")[1].split("### Message")[0]  # hidden pairs stay hidden
    assert "return a" not in induction


def test_induction_proposer_prompt() -> None:
    prompt = prompts.propose_induction_prompt("def f(x):\n    return -x", "import math", 10)
    assert "import math\ndef f(x):" in prompt and "10 inputs" in prompt


def test_induction_task_split() -> None:
    assert IDENTITY_INDUCTION.visible() == list(
        zip(IDENTITY_INDUCTION.inputs[:3], IDENTITY_INDUCTION.outputs[:3], strict=True)
    )
    assert len(IDENTITY_INDUCTION.hidden()) == 3
    with pytest.raises(ValueError, match="3 inputs but 2 outputs"):
        InductionTask("p", ("1", "2", "3"), ("1", "2"), "m")


@pytest.mark.parametrize(
    ("eviction", "kept"),
    [("oldest-out", [2, 3, 4]), ("newest-out", [0, 1, 2])],
)
def test_buffer_eviction(eviction: str, kept: list[int]) -> None:
    buffer = TaskBuffer(Triplet, capacity=3, eviction=eviction)
    rng = random.Random(0)
    buffer.add([triplet(i) for i in range(5)], step=1, rng=rng)
    assert [t.input for t in buffer.tasks()] == [str(i) for i in kept]


def test_random_eviction_keeps_the_capacity() -> None:
    buffer = TaskBuffer(Triplet, capacity=4, eviction="random")
    buffer.add([triplet(i) for i in range(50)], step=0, rng=random.Random(1))
    assert len(buffer) == 4 and buffer.tasks()[-1] == triplet(49)


def test_buffer_sampling_and_round_trip() -> None:
    buffer = TaskBuffer(Triplet, capacity=10)
    rng = random.Random(0)
    buffer.add([IDENTITY_TRIPLET, *[triplet(i) for i in range(5)]], step=-1, rng=rng)
    sample = buffer.sample(4, rng)
    assert len(sample) == 4 and len(set(sample)) == 4
    assert len(buffer.sample(100, rng)) == 6
    restored = TaskBuffer.from_json(json.loads(json.dumps(buffer.to_json())))
    assert restored.tasks() == buffer.tasks() and restored.capacity == 10
    induction = TaskBuffer(InductionTask, capacity=2)
    induction.add([IDENTITY_INDUCTION], step=3, rng=rng)
    assert TaskBuffer.from_json(json.loads(json.dumps(induction.to_json()))).tasks() == [IDENTITY_INDUCTION]


def test_buffer_refuses_bad_input() -> None:
    with pytest.raises(ValueError, match="capacity"):
        TaskBuffer(Triplet, capacity=0)
    with pytest.raises(ValueError, match="eviction"):
        TaskBuffer(Triplet, capacity=1, eviction="lifo")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="holds Triplet"):
        TaskBuffer(Triplet, capacity=1).add([IDENTITY_INDUCTION], step=0, rng=random.Random(0))  # type: ignore[list-item]
    with pytest.raises(LookupError):
        TaskBuffer(Triplet, capacity=1).choose(random.Random(0))
