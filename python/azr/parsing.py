"""Parsing model completions: the R1 format (`<think>…</think><answer>…</answer>`) and the fenced
blocks inside the answer. Pure functions; malformed text is classified, never raised.

A completion is what the model generated after the prompt, which ends inside `<think>`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from azr.tasks import TaskType

# The format, in one place: the parser reads it, and `azr.guided` builds the decoding grammar that
# makes a model write it.
THINK_END = "</think>"
ANSWER_OPEN, ANSWER_CLOSE = "<answer>", "</answer>"
FENCE = "```"
# The fenced blocks each kind of answer holds, in the order the prompts ask for them.
PROPOSAL_BLOCKS = ("python", "input")
INDUCTION_INPUT_BLOCK, INDUCTION_MESSAGE_BLOCK = "input", "message"
SOLUTION_BLOCK = {TaskType.DEDUCTION: "output", TaskType.ABDUCTION: "input", TaskType.INDUCTION: "python"}

# The whole completion (with the prompt's opening `<think>`) must start with a think block followed by
# an answer block, as the reference's format check (`re.match`) requires; text after it is ignored.
_R1 = re.compile(rf"<think>.*?{THINK_END}\s*{ANSWER_OPEN}.*?{ANSWER_CLOSE}", re.DOTALL)
_ANSWER = re.compile(rf"{ANSWER_OPEN}(.*?){ANSWER_CLOSE}", re.DOTALL)
_FENCE = re.compile(rf"{FENCE}[ \t]*([A-Za-z_][\w]*)?[ \t]*\n(.*?){FENCE}", re.DOTALL)
_PYTHON_TAGS = {"python", "py", "python3", None}

# Longer answers are not parsed further: no valid program or value needs this much text.
MAX_ANSWER_CHARS = 1 << 16


@dataclass(frozen=True)
class Answer:
    """The answer of a completion: `text` is None when the R1 format is broken."""

    text: str | None
    reason: str | None = None

    @property
    def formatted(self) -> bool:
        return self.text is not None


def normalize(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n")


def extract_answer(completion: str) -> Answer:
    """The content of the last complete `<answer>` block of a well-formatted completion."""
    text = "<think>" + normalize(completion)
    if not _R1.match(text):
        if THINK_END not in text:
            return Answer(None, f"the thinking is never closed with {THINK_END}")
        if ANSWER_OPEN not in text:
            return Answer(None, "no <answer> block")
        return Answer(None, "the <answer> block is not closed, or is not right after </think>")
    answers = _ANSWER.findall(text)
    answer = answers[-1].strip()
    if len(answer) > MAX_ANSWER_CHARS:
        return Answer(None, f"the answer is longer than {MAX_ANSWER_CHARS} characters")
    return Answer(answer)


def fenced_blocks(text: str) -> list[tuple[str | None, str]]:
    """(tag, body) of every fenced code block, in order; a block without a tag has tag None."""
    return [(tag.lower() if tag else None, body.strip("\n")) for tag, body in _FENCE.findall(normalize(text))]


def last_block(text: str, tags: set[str | None]) -> str | None:
    bodies = [body for tag, body in fenced_blocks(text) if tag in tags]
    return bodies[-1] if bodies else None


def extract_code(completion: str) -> str | None:
    """The last Python (or untagged) fenced block of a completion, or None."""
    return last_block(completion, {"python", "py", "python3", None})


@dataclass(frozen=True)
class Proposal:
    """A deduction/abduction proposal: a program and one input."""

    program: str
    input: str


@dataclass(frozen=True)
class InductionProposal:
    inputs: tuple[str, ...]
    message: str


@dataclass(frozen=True)
class Parsed:
    """What a completion contained. `value` is None when the completion is not formatted: the R1
    format is broken or the answer lacks the block(s) the task needs."""

    value: str | Proposal | InductionProposal | None
    reason: str | None = None

    @property
    def formatted(self) -> bool:
        return self.value is not None


def parse_proposal(completion: str) -> Parsed:
    """A deduction or abduction proposal: the last ```python block and the last ```input block."""
    answer = extract_answer(completion)
    if answer.text is None:
        return Parsed(None, answer.reason)
    program_tag, input_tag = PROPOSAL_BLOCKS
    program = last_block(answer.text, _PYTHON_TAGS - {None} | {program_tag})
    given = last_block(answer.text, {input_tag})
    if program is None or not program.strip():
        return Parsed(None, "no ```python block in the answer")
    if given is None or not given.strip():
        return Parsed(None, "no ```input block in the answer")
    return Parsed(Proposal(program.strip("\n"), given.strip()))


def parse_induction_proposal(completion: str, num_inputs: int) -> Parsed:
    """Inputs for an induction task (the last `num_inputs` ```input blocks) and a ```message block."""
    answer = extract_answer(completion)
    if answer.text is None:
        return Parsed(None, answer.reason)
    blocks = fenced_blocks(answer.text)
    inputs = [body.strip() for tag, body in blocks if tag == INDUCTION_INPUT_BLOCK and body.strip()]
    message = last_block(answer.text, {INDUCTION_MESSAGE_BLOCK})
    if not inputs:
        return Parsed(None, "no ```input block in the answer")
    if message is None or not message.strip():
        return Parsed(None, "no ```message block in the answer")
    return Parsed(InductionProposal(tuple(inputs[-num_inputs:]), message.strip()))


_SOLUTION_TAGS = {
    TaskType.DEDUCTION: {SOLUTION_BLOCK[TaskType.DEDUCTION]},
    TaskType.ABDUCTION: {SOLUTION_BLOCK[TaskType.ABDUCTION]},
    TaskType.INDUCTION: _PYTHON_TAGS | {SOLUTION_BLOCK[TaskType.INDUCTION]},
}


def parse_solution(task: TaskType, completion: str) -> Parsed:
    """A solver's answer: the predicted output (deduction), input (abduction) or program (induction).

    Without the expected fenced block, a deduction or abduction answer is the answer text itself
    (as in the reference); an induction answer needs a code block.
    """
    answer = extract_answer(completion)
    if answer.text is None:
        return Parsed(None, answer.reason)
    value = last_block(answer.text, _SOLUTION_TAGS[task])
    if value is None and task is not TaskType.INDUCTION and "```" not in answer.text:
        value = answer.text
    if value is None or not value.strip():
        return Parsed(None, f"no answer for the {task.value} task")
    return Parsed(value.strip("\n") if task is TaskType.INDUCTION else value.strip())
