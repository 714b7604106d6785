"""The tasks of Absolute Zero: three task types over Python (program, input, output) triplets, each
proposed and solved by the same model."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class TaskType(str, Enum):
    DEDUCTION = "deduction"  # program + input → output
    ABDUCTION = "abduction"  # program + output → an input
    INDUCTION = "induction"  # input/output pairs + message → program


class Role(str, Enum):
    PROPOSE = "propose"
    SOLVE = "solve"


TaskRole = tuple[Role, TaskType]
TASK_ROLES: tuple[TaskRole, ...] = tuple((role, task) for role in Role for task in TaskType)


def role_name(task_role: TaskRole) -> str:
    """`propose/deduction` etc., the name used in metrics."""
    role, task = task_role
    return f"{role.value}/{task.value}"


@dataclass(frozen=True)
class Triplet:
    """A deduction/abduction task: `repr(f(<input>))` of `program` is `output`."""

    program: str
    input: str
    output: str
    imports: str = ""


@dataclass(frozen=True)
class InductionTask:
    """An induction task: a program, the outputs of several inputs, and a message about it. The
    solver sees the first half of the pairs and must write a program that also fits the rest."""

    program: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    message: str
    imports: str = ""

    def __post_init__(self) -> None:
        if len(self.inputs) != len(self.outputs):
            raise ValueError(f"{len(self.inputs)} inputs but {len(self.outputs)} outputs")
        if len(self.inputs) < 2:
            raise ValueError("an induction task needs at least two input/output pairs")

    @property
    def split(self) -> int:
        return len(self.inputs) // 2

    def visible(self) -> list[tuple[str, str]]:
        return list(zip(self.inputs[: self.split], self.outputs[: self.split], strict=True))

    def hidden(self) -> list[tuple[str, str]]:
        return list(zip(self.inputs[self.split :], self.outputs[self.split :], strict=True))


IDENTITY_PROGRAM = "def f(a):\n    return a"
# The zero triplet every run starts from (paper §3.3.1).
IDENTITY_TRIPLET = Triplet(IDENTITY_PROGRAM, "'Hello world'", "'Hello world'")
_IDENTITY_VALUES = (
    "'Hello world'",
    "1",
    "{'a': 1, 'b': 2}",
    "(1.1, 1.2, 1.3)",
    "'[[1, 0, 0], [0, 0, 0], [0, 0, 0]]'",
    "1001101100010001",
)
IDENTITY_INDUCTION = InductionTask(
    IDENTITY_PROGRAM, _IDENTITY_VALUES, _IDENTITY_VALUES, "Write a function that returns whatever you input"
)
