"""Parsing completions: the R1 format and the fenced blocks, with the edge cases models produce."""

from __future__ import annotations

from azr.parsing import (
    MAX_ANSWER_CHARS,
    InductionProposal,
    Proposal,
    extract_answer,
    parse_induction_proposal,
    parse_proposal,
    parse_solution,
)
from azr.tasks import TaskType

PROGRAM = "def f(a):\n    return a * 2"


def completion(answer: str, thinking: str = "let me think") -> str:
    # The prompt ends with "<think>": completions start inside the thinking.
    return f"{thinking}</think>\n<answer>{answer}</answer>"


def test_well_formed_answer() -> None:
    assert extract_answer(completion("42")).text == "42"
    assert extract_answer(" </think> <answer> x </answer> trailing text").text == "x"


def test_broken_formats_are_classified_not_raised() -> None:
    assert extract_answer("no tags at all").reason == "the thinking is never closed with </think>"
    assert extract_answer("thought</think> and then nothing").reason == "no <answer> block"
    assert not extract_answer("thought</think><answer>never closed").formatted
    assert not extract_answer("<answer>1</answer></think>").formatted
    assert not extract_answer("").formatted


def test_two_answers_take_the_last() -> None:
    assert extract_answer("t</think><answer>1</answer> again <answer>2</answer>").text == "2"


def test_windows_newlines() -> None:
    text = "t</think>\r\n<answer>\r\n```python\r\ndef f(a):\r\n    return a\r\n```\r\n```input\r\n3\r\n```\r\n</answer>"
    parsed = parse_proposal(text)
    assert parsed.value == Proposal("def f(a):\n    return a", "3")


def test_proposal_needs_a_program_and_an_input() -> None:
    good = parse_proposal(completion(f"```python\n{PROGRAM}\n```\n```input\n'x', 2\n```"))
    assert good.value == Proposal(PROGRAM, "'x', 2")
    assert parse_proposal(completion("```input\n1\n```")).reason == "no ```python block in the answer"
    assert parse_proposal(completion(f"```python\n{PROGRAM}\n```")).reason == "no ```input block in the answer"
    assert parse_proposal(completion("```python\n\n```\n```input\n1\n```")).reason == "no ```python block in the answer"
    # A program without `f` is formatted; the executor finds it invalid.
    assert parse_proposal(completion("```python\ndef g(a):\n    return a\n```\n```input\n1\n```")).formatted


def test_proposal_takes_the_last_blocks() -> None:
    answer = "```python\ndef f(a): return 1\n```\n```input\n1\n```\n```py\ndef f(a): return 2\n```\n```input\n2\n```"
    assert parse_proposal(completion(answer)).value == Proposal("def f(a): return 2", "2")


def test_induction_proposal() -> None:
    inputs = "".join(f"```input\n{i}\n```\n" for i in range(12))
    parsed = parse_induction_proposal(completion(inputs + "```message\ndoubles it\n```"), num_inputs=10)
    assert parsed.value == InductionProposal(tuple(str(i) for i in range(2, 12)), "doubles it")
    assert parse_induction_proposal(completion(inputs), 10).reason == "no ```message block in the answer"
    assert parse_induction_proposal(completion("```message\nm\n```"), 10).reason == "no ```input block in the answer"
    few = parse_induction_proposal(completion("```input\n1\n```\n```message\nm\n```"), 10)
    assert few.formatted and len(few.value.inputs) == 1  # too few inputs: formatted but not a valid task


def test_solutions_by_task() -> None:
    assert parse_solution(TaskType.DEDUCTION, completion("```output\n[1, 2]\n```")).value == "[1, 2]"
    assert parse_solution(TaskType.ABDUCTION, completion("```input\n'a', 3\n```")).value == "'a', 3"
    assert parse_solution(TaskType.INDUCTION, completion(f"```python\n{PROGRAM}\n```")).value == PROGRAM
    # Without a block, a deduction or abduction answer is the answer text itself.
    assert parse_solution(TaskType.DEDUCTION, completion(" 42 ")).value == "42"
    # An induction answer needs code; code without `f` is formatted but will be wrong.
    assert not parse_solution(TaskType.INDUCTION, completion("it doubles")).formatted
    assert parse_solution(TaskType.INDUCTION, completion("```python\nx = 1\n```")).formatted


def test_empty_and_huge_answers() -> None:
    assert parse_solution(TaskType.DEDUCTION, completion("")).reason == "no answer for the deduction task"
    assert (
        parse_solution(TaskType.DEDUCTION, completion("```output\n\n```")).reason == "no answer for the deduction task"
    )
    huge = parse_solution(TaskType.DEDUCTION, completion("x" * (MAX_ANSWER_CHARS + 1)))
    assert not huge.formatted and "longer than" in huge.reason
