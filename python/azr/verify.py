"""Validation of proposals and scoring of answers, through the executor, one call per phase.

Checks collect jobs from many completions; `run_checks` sends all of them to the executor in one
batch and hands each check back its outcomes.

- A deduction/abduction proposal is valid when its program runs on its input to an `ok` that two
  fresh runs agree on (the paper's determinism check, j = 2); the output becomes the task's answer.
- An induction proposal is valid when the program runs to a deterministic `ok` on every input.
- A deduction answer is correct when the program's result equals it (compared in the program's
  namespace); an abduction answer when the program maps it to the task's output; an induction
  answer (a program) when it maps every hidden input to its output.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from azr.executor import Executor, Job, Outcome, RemoteExecutor
from azr.parsing import InductionProposal, Proposal
from azr.tasks import InductionTask, TaskType, Triplet

DETERMINISM_RUNS = 2


@dataclass
class Check:
    """Jobs whose outcomes decide one thing (a proposal's validity, an answer's correctness)."""

    jobs: list[Job]
    outcomes: list[Outcome] = field(default_factory=list)


def run_checks(
    executor: Executor | RemoteExecutor,
    checks: Sequence[Check],
    progress: Callable[[int, int], None] | bool | None = None,
) -> None:
    """Run the jobs of every check in one executor call and give each check its outcomes."""
    jobs = [job for check in checks for job in check.jobs]
    outcomes = executor.run(jobs, progress=progress) if jobs else []
    position = 0
    for check in checks:
        check.outcomes = outcomes[position : position + len(check.jobs)]
        position += len(check.jobs)


def proposal_check(proposal: Proposal) -> Check:
    return Check([Job(proposal.program, proposal.input, runs=DETERMINISM_RUNS)])


def proposed_triplet(proposal: Proposal, check: Check) -> Triplet | None:
    """The task a valid proposal defines, or None."""
    [outcome] = check.outcomes
    if outcome.status != "ok" or outcome.output is None:
        return None
    return Triplet(proposal.program, proposal.input, outcome.output)


def induction_check(program: str, imports: str, proposal: InductionProposal) -> Check:
    return Check([Job(program, given, imports=imports, runs=DETERMINISM_RUNS) for given in proposal.inputs])


def proposed_induction(
    program: str, imports: str, proposal: InductionProposal, check: Check, num_inputs: int
) -> InductionTask | None:
    """The task a valid induction proposal defines (exactly `num_inputs` distinct inputs that all
    run), or None."""
    if len(proposal.inputs) < num_inputs or len(set(proposal.inputs)) < len(proposal.inputs):
        return None
    if any(o.status != "ok" or o.output is None for o in check.outcomes):
        return None
    outputs = tuple(o.output or "" for o in check.outcomes)
    return InductionTask(program, proposal.inputs[-num_inputs:], outputs[-num_inputs:], proposal.message, imports)


def answer_check(task: TaskType, subject: Triplet | InductionTask, answer: str) -> Check:
    """The jobs that decide whether `answer` solves `subject`."""
    if task is TaskType.DEDUCTION:
        assert isinstance(subject, Triplet)
        return Check([Job(subject.program, subject.input, imports=subject.imports, expected=answer)])
    if task is TaskType.ABDUCTION:
        assert isinstance(subject, Triplet)
        return Check([Job(subject.program, answer, imports=subject.imports, expected=subject.output)])
    assert isinstance(subject, InductionTask)
    return Check([Job(answer, given, imports=subject.imports, expected=result) for given, result in subject.hidden()])


def correct(check: Check) -> bool:
    return bool(check.outcomes) and all(o.status == "ok" and o.matches for o in check.outcomes)
