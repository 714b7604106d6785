"""Validation of proposals and scoring of answers, through the executor, one call per phase.

Checks collect jobs from many completions; `run_checks` sends all of them to the executor in one
batch and hands each check back its outcomes.

- A deduction/abduction proposal is valid when its input is data and its program runs on it to an
  `ok` that two fresh runs agree on (the paper's determinism check, j = 2); the output becomes the
  task's answer.
- An induction proposal is valid when the program runs to a deterministic `ok` on every input.
- A deduction answer is correct when it is data equal to the program's result (or, for a result
  that is not data, exactly its repr); an abduction answer when it is data that the program maps
  to the task's output; an induction answer (a program) when it maps every hidden input to its
  output. Answers are never evaluated, let alone in the program's namespace: see the judge's
  grammar and comparison in the README.
- A check whose jobs the executor failed on (`internal`) decides nothing: `undecided` says so, and
  the caller re-runs it or leaves its sample out.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from azr.executor import ExecutorProtocol, Job, Outcome
from azr.parsing import InductionProposal, Proposal
from azr.tasks import InductionTask, TaskType, Triplet
from azr.timeline import Timeline

DETERMINISM_RUNS = 2


@dataclass
class Check:
    """Jobs whose outcomes decide one thing (a proposal's validity, an answer's correctness)."""

    jobs: list[Job]
    outcomes: list[Outcome] = field(default_factory=list)


def run_checks(
    executor: ExecutorProtocol,
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


@dataclass
class VerifyTiming:
    verify_s: float  # the executor busy with this phase's checks
    hidden_s: float  # of which while the engine was still generating
    waited_s: float  # from the end of generation to the last outcome


class CheckStream:
    """Checks submitted while generation goes on, run by the executor in a background thread.

    Whatever has been submitted when the executor becomes free goes in its next call (the GIL is
    released while it runs), so verification of early completions hides behind the generation of
    later ones. `finish()` marks the end of generation, waits for every outcome and says how much
    of the verification was hidden.
    """

    def __init__(self, executor: ExecutorProtocol, timeline: Timeline | None = None) -> None:
        self.executor = executor
        self.timeline = timeline
        self._pending: queue.SimpleQueue[Check | None] = queue.SimpleQueue()
        self._busy: list[tuple[float, float]] = []
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._serve, name="azr-check-stream", daemon=True)
        self._thread.start()

    def submit(self, checks: Sequence[Check]) -> None:
        for check in checks:
            self._pending.put(check)

    def _serve(self) -> None:
        closed = False
        while not closed:
            batch = [self._pending.get()]
            while True:
                try:
                    batch.append(self._pending.get_nowait())
                except queue.Empty:
                    break
            closed = batch[-1] is None
            checks = [check for check in batch if check is not None]
            if not checks or self._error is not None:
                continue
            started, wall = time.perf_counter(), time.time()
            try:
                run_checks(self.executor, checks)
            except Exception as error:  # noqa: BLE001 - handed to the caller by finish()
                self._error = error
            self._busy.append((started, time.perf_counter()))
            if self.timeline is not None:
                jobs = sum(len(check.jobs) for check in checks)
                self.timeline.add("executor", f"verify {len(checks)} checks", wall, time.time(), jobs=jobs)

    def finish(self) -> VerifyTiming:
        generated = time.perf_counter()
        self._pending.put(None)
        self._thread.join()
        if self._error is not None:
            raise self._error
        verify = sum(end - start for start, end in self._busy)
        hidden = sum(max(0.0, min(end, generated) - start) for start, end in self._busy)
        last = max((end for _, end in self._busy), default=generated)
        return VerifyTiming(verify, hidden, max(0.0, last - generated))


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


def undecided(check: Check) -> bool:
    """Whether the executor failed on one of the check's jobs, so that the check says nothing
    about the completion (and must never become a reward)."""
    return any(o.internal for o in check.outcomes)


def rerun_undecided(executor: ExecutorProtocol, checks: Sequence[Check]) -> tuple[int, int]:
    """Run once more every check the executor failed on. Returns how many were re-run and how
    many failed again (those stay undecided)."""
    failed = [check for check in checks if undecided(check)]
    if failed:
        run_checks(executor, failed)
    return len(failed), sum(undecided(check) for check in failed)
