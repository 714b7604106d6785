"""Prompts of the six task-roles, as pure functions of a task and its references.

Every prompt is wrapped in the R1 template of the paper: the model is told to think inside
`<think>` tags and answer inside `<answer>` tags, and its turn starts inside `<think>`.
"""

from __future__ import annotations

from collections.abc import Sequence

from azr.tasks import InductionTask, TaskType, Triplet

R1_TEMPLATE = (
    "A conversation between User and Assistant. The user asks a question, and the Assistant solves it. "
    "The assistant first thinks about the reasoning process in the mind and then provides the user with the "
    "answer. The reasoning process and answer are enclosed within <think> </think> and <answer> </answer> "
    "tags, respectively, i.e., <think> reasoning process here </think> <answer> answer here </answer>.\n"
    "User: {question}\nAssistant: <think>"
)

# Named in the proposer prompts so that proposals avoid what the executor refuses.
BANNED_FOR_PROPOSALS = (
    "os, sys, random, time, datetime, calendar, threading, multiprocessing, subprocess, socket, logging, "
    "hashlib, hmac, secrets, uuid, open(), input(), print-only functions"
)

_PROGRAM_RULES = """\
### Program requirements
- The entry point is a function named `f` with at least one parameter, and it returns a value.
- It may define helper functions and classes (nested or at top level) and import from the standard \
library; put imports at the top.
- It must be deterministic: no randomness, clocks, dates, files, network, printing or global state.
- It must finish within 10 seconds on a modern CPU.
- Do not use any of these in any form: {banned}."""

_FORMAT_PROGRAM_AND_INPUT = """\
### Answer format
Inside <answer>, give the program and one input, each in its own fenced block:
```python
def f(words):
    return sorted(set(words), key=len)
```
```input
['absolute', 'zero', 'reasoner']
```
The input is the text of the arguments of `f`, as Python: strings quoted, several arguments separated \
by commas."""

_PROPOSE = {
    TaskType.DEDUCTION: (
        "## Task: design a new Python program and one input for it, so that working out the program's output "
        "for that input takes careful step-by-step reasoning."
    ),
    TaskType.ABDUCTION: (
        "## Task: design a new Python program and one input for it, so that working backwards from the "
        "program's output to an input that produces it takes careful step-by-step reasoning."
    ),
}

_PROPOSE_GOAL = {
    TaskType.DEDUCTION: "difficult to predict the output of, given the input",
    TaskType.ABDUCTION: "difficult to find an input for, given the output",
}


_INDUCTION_EXAMPLE = "```input\n'example', 3\n```\n```message\nDescribe the idea, not the code.\n```"
_OUTPUT_EXAMPLE = "```output\n['a', 1]\n```"
_INPUT_EXAMPLE = "```input\n'hello', [1, 2]\n```"


def r1(question: str) -> str:
    return R1_TEMPLATE.format(question=question)


def _fence(kind: str, text: str) -> str:
    return f"```{kind}\n{text}\n```"


def _with_imports(program: str, imports: str) -> str:
    return f"{imports}\n{program}" if imports else program


def _references(references: Sequence[Triplet]) -> str:
    blocks = []
    for index, triplet in enumerate(references):
        blocks.append(
            f"<snippet_{index}>\n{_fence('python', _with_imports(triplet.program, triplet.imports))}\n"
            f"{_fence('input', triplet.input)}\n{_fence('output', triplet.output)}\n</snippet_{index}>"
        )
    return "\n".join(blocks)


def propose_triplet_prompt(task: TaskType, references: Sequence[Triplet]) -> str:
    """Deduction or abduction proposer: write a new (program, input) unlike the references."""
    if task not in _PROPOSE:
        raise ValueError(f"{task.value} tasks are proposed with propose_induction_prompt")
    question = "\n\n".join(
        [
            _PROPOSE[task],
            _PROGRAM_RULES.format(banned=BANNED_FOR_PROPOSALS),
            _FORMAT_PROGRAM_AND_INPUT,
            "### What makes a good task\n"
            f"- It is {_PROPOSE_GOAL[task]}: state that changes over several steps, branches, loops.\n"
            "- It is clearly different from the reference programs below, not a small variation of one.",
            f"### Reference programs\n{_references(references)}",
            "First plan the program and check that it runs and is deterministic, then answer.",
        ]
    )
    return r1(question)


def propose_induction_prompt(program: str, imports: str, num_inputs: int) -> str:
    """Induction proposer: inputs that reveal what `program` does, and a message hinting at it."""
    question = "\n\n".join(
        [
            f"## Task: write {num_inputs} inputs for the program below, such that from their outputs someone "
            "could work out what the program does, and a short message that helps them without giving the "
            "code away.",
            f"### Program\n{_fence('python', _with_imports(program, imports))}",
            "### Answer format\n"
            f"Inside <answer>, give each input in its own ```input block ({num_inputs} blocks), as the text of "
            "the arguments of `f`, then the message in a ```message block:\n" + _INDUCTION_EXAMPLE,
            "### What makes good inputs\n"
            "- Together they cover the program's different behaviours and edge cases.\n"
            "- Each one runs without error and gives a different output where possible.",
        ]
    )
    return r1(question)


def solve_deduction_prompt(triplet: Triplet) -> str:
    question = "\n\n".join(
        [
            "## Task: work out the output of the program below for the given input.",
            f"### Program\n{_fence('python', _with_imports(triplet.program, triplet.imports))}",
            f"### Input\n{_fence('input', triplet.input)}",
            "### Answer format\nInside <answer>, give the value `f` returns, written as Python "
            "(as `repr` would show it), in an ```output block:\n" + _OUTPUT_EXAMPLE,
        ]
    )
    return r1(question)


def solve_abduction_prompt(triplet: Triplet) -> str:
    question = "\n\n".join(
        [
            "## Task: find an input for which the program below returns the given output.",
            f"### Program\n{_fence('python', _with_imports(triplet.program, triplet.imports))}",
            f"### Output\n{_fence('output', triplet.output)}",
            "### Answer format\nInside <answer>, give the arguments of `f` as Python text (strings quoted, "
            "several arguments separated by commas) in an ```input block:\n" + _INPUT_EXAMPLE,
        ]
    )
    return r1(question)


def solve_induction_prompt(task: InductionTask) -> str:
    pairs = "\n".join(
        f"{_fence(f'input_{i}', given)}\n{_fence(f'output_{i}', result)}"
        for i, (given, result) in enumerate(task.visible())
    )
    question = "\n\n".join(
        [
            "## Task: write the function `f` that turns each of these inputs into its output.",
            f"### Examples\n{pairs}",
            f"### Message\n{_fence('message', task.message)}",
            "### Answer format\nInside <answer>, give the program in a ```python block. It must define a "
            "deterministic function named `f`; it may use helper functions, classes and standard-library "
            "imports. It will also be checked on inputs you have not seen.",
        ]
    )
    return r1(question)


def solve_prompt(task: TaskType, subject: Triplet | InductionTask) -> str:
    """The solver prompt of a task of any type."""
    if isinstance(subject, InductionTask):
        if task is not TaskType.INDUCTION:
            raise ValueError(f"an induction task cannot be solved as a {task.value} task")
        return solve_induction_prompt(subject)
    if task is TaskType.DEDUCTION:
        return solve_deduction_prompt(subject)
    if task is TaskType.ABDUCTION:
        return solve_abduction_prompt(subject)
    raise ValueError("an induction task needs an InductionTask subject")
