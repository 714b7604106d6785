"""The phases of one self-play step (paper Algorithm 1), as functions over plain records.

    proposals = proposer_rollouts(buffers, settings, rng, fits)        # propose
    plan = SolverPlan(proposals, buffers, settings, rng, fits)         # the solver tasks to come
    generate_and_check(engine, executor, proposals + plan.opening(), sampling,
                       check_rollout_of(k), follow_up=plan.follow_up)   # validate, solve, score
    solutions = plan.solutions()
    assign_rewards(proposals, solutions, learnability, extreme)         # reward
    assign_advantages(trained, statistics)                              # advantages
    trainer.step(training_samples(trained)); engine.sync_weights(...)  # update, sync

The propose and solve phases are one call with no barrier between them: a proposal's verdict
settles what follows from it (`SolverPlan.follow_up`: a valid proposal's learnability samples and
its solver task, or a solver task from the buffer in its place), and on rollout replicas those are
generated while the other proposals still are; solver tasks from the buffer that no proposal can
displace start with the proposals.

A `Rollout` records one generated sequence and everything that decides its reward. Only
`generate_and_check` touches the engine and the executor; everything else is a pure function of its
arguments (and of `rng`), testable without a model. `azr.selfplay` drives these phases in one
process; a distributed driver calls the same functions.
"""

from __future__ import annotations

import random
import time
from collections import defaultdict, deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from azr import prompts
from azr.advantages import task_relative_advantages
from azr.buffers import TaskBuffer
from azr.executor import ExecutorProtocol, InternalError
from azr.parsing import InductionProposal, Parsed, Proposal, parse_induction_proposal, parse_proposal, parse_solution
from azr.rewards import proposer_reward, solver_reward
from azr.rollout import Completion, ProgressCallback, RolloutEngine, SamplingParams
from azr.tasks import InductionTask, Role, TaskType, Triplet
from azr.timeline import Timeline
from azr.trainer import Sample
from azr.verify import (
    Check,
    CheckStream,
    answer_check,
    correct,
    induction_check,
    proposal_check,
    proposed_induction,
    proposed_triplet,
    rerun_undecided,
    undecided,
)

TRIPLET_TASKS = (TaskType.DEDUCTION, TaskType.ABDUCTION)
# Whether a prompt fits the prompt budget (`max_prompt_tokens` under the policy's tokenizer).
PromptFits = Callable[[str], bool]
Buffers = Mapping[TaskType, TaskBuffer]


@dataclass(frozen=True)
class StepSettings:
    """What the phases need of the configuration."""

    batch_size: int
    references: int
    induction_inputs: int
    learnability_samples: int


@dataclass
class Rollout:
    """One generated sequence of the step and what decided its reward."""

    role: Role
    task: TaskType
    prompt: str
    completion: Completion | None = None
    parsed: Parsed | None = None
    subject: Triplet | InductionTask | None = None  # the task solved, or the program an induction proposal uses
    check: Check | None = None
    new_task: Triplet | InductionTask | None = None  # a valid proposal's task
    rejection: str | None = None  # why a proposal that ran is still not a task
    learnability: list[Rollout] = field(default_factory=list)
    reward: float = 0.0
    advantage: float = 0.0
    trained: bool = True

    @property
    def formatted(self) -> bool:
        return self.parsed is not None and self.parsed.formatted

    @property
    def undecided(self) -> bool:
        """The executor failed on this rollout's check (even when re-run): it gets no reward."""
        return self.check is not None and undecided(self.check)


# --- propose ---------------------------------------------------------------------------------


def proposer_rollouts(buffers: Buffers, settings: StepSettings, rng: random.Random, fits: PromptFits) -> list[Rollout]:
    """B proposer prompts per task type: deduction and abduction proposers get K reference
    triplets (fewer when the prompt would not fit), induction proposers a program from the buffer."""
    rollouts = []
    for task in TRIPLET_TASKS:
        for _ in range(settings.batch_size):
            references = buffers[task].sample(settings.references, rng)
            prompt = prompts.propose_triplet_prompt(task, references)
            while len(references) > 1 and not fits(prompt):
                references = references[:-1]
                prompt = prompts.propose_triplet_prompt(task, references)
            rollouts.append(Rollout(Role.PROPOSE, task, prompt))
    programs = buffers[TaskType.DEDUCTION].tasks() + buffers[TaskType.ABDUCTION].tasks()
    for _ in range(settings.batch_size):
        subject = rng.choice(programs)
        prompt = prompts.propose_induction_prompt(subject.program, subject.imports, settings.induction_inputs)
        rollouts.append(Rollout(Role.PROPOSE, TaskType.INDUCTION, prompt, subject=subject))
    return [r for r in rollouts if fits(r.prompt)]


def check_proposal(rollout: Rollout, induction_inputs: int) -> Check | None:
    """Parse a proposal; the check that validates it, when it is well formed."""
    assert rollout.completion is not None
    if rollout.task is TaskType.INDUCTION:
        rollout.parsed = parse_induction_proposal(rollout.completion.text, induction_inputs)
        if rollout.formatted:
            subject = rollout.subject
            assert isinstance(subject, Triplet) and isinstance(rollout.parsed.value, InductionProposal)
            rollout.check = induction_check(subject.program, subject.imports, rollout.parsed.value)
    else:
        rollout.parsed = parse_proposal(rollout.completion.text)
        if rollout.formatted:
            assert isinstance(rollout.parsed.value, Proposal)
            rollout.check = proposal_check(rollout.parsed.value)
    return rollout.check


def check_rollout(rollout: Rollout, induction_inputs: int) -> Check | None:
    """The check of any rollout of the step: a proposal's validation or an answer's scoring."""
    return check_proposal(rollout, induction_inputs) if rollout.role is Role.PROPOSE else check_answer(rollout)


# --- validate --------------------------------------------------------------------------------


def accept_proposal(rollout: Rollout, settings: StepSettings, fits: PromptFits) -> None:
    """The task a checked proposal defines (`new_task`, when valid), with its learnability
    rollouts: n solver samples whose solve rate decides the proposer's reward. A task whose solver
    prompt would not fit is of no use, like one that does not run (`rejection` says so)."""
    if rollout.check is None:
        return
    assert rollout.parsed is not None
    if rollout.task is TaskType.INDUCTION:
        subject = rollout.subject
        assert isinstance(subject, Triplet) and isinstance(rollout.parsed.value, InductionProposal)
        rollout.new_task = proposed_induction(
            subject.program, subject.imports, rollout.parsed.value, rollout.check, settings.induction_inputs
        )
    else:
        assert isinstance(rollout.parsed.value, Proposal)
        rollout.new_task = proposed_triplet(rollout.parsed.value, rollout.check)
    if rollout.new_task is None:
        return
    prompt = prompts.solve_prompt(rollout.task, rollout.new_task)
    if not fits(prompt):
        rollout.new_task = None
        rollout.rejection = "the task's solver prompt is longer than max_prompt_tokens"
        return
    rollout.learnability = [
        Rollout(Role.SOLVE, rollout.task, prompt, subject=rollout.new_task, trained=False)
        for _ in range(settings.learnability_samples)
    ]


def new_tasks(proposals: Sequence[Rollout]) -> dict[TaskType, list[Triplet | InductionTask]]:
    """The step's valid tasks by type, for the buffers."""
    return {task: [p.new_task for p in proposals if p.task is task and p.new_task] for task in TaskType}


# --- solve -----------------------------------------------------------------------------------


class SolverPlan:
    """The step's solver tasks, settled proposal by proposal: each task type gets `batch_size` of
    them, this step's new tasks first (the paper's rule), topped up from the buffer. Each proposal
    holds a place for the task it may bring (a type has at most `batch_size` proposals); a place
    that no proposal holds, or whose proposal brought no task, goes to the next of `batch_size`
    buffer tasks drawn when the plan is made. A solver prompt that would not fit is dropped, as the
    place's task is of no use. The plan is the only state the step's follow-ups share."""

    def __init__(
        self,
        proposals: Sequence[Rollout],
        buffers: Buffers,
        settings: StepSettings,
        rng: random.Random,
        fits: PromptFits,
    ) -> None:
        self.settings, self.fits = settings, fits
        self.drawn = {task: deque(buffers[task].choose(rng) for _ in range(settings.batch_size)) for task in TaskType}
        self.place = {id(p): index for index, p in enumerate(proposals)}
        self.held = {task: sum(p.task is task for p in proposals) for task in TaskType}
        # (task type, 0 for a new task / 1 from the buffer, order): `solutions` is in this order
        # whatever order the verdicts came in.
        self.planned: list[tuple[tuple[int, int, int], Rollout]] = []
        self.from_buffer = 0
        self.unsettled = len(proposals)  # proposals whose verdict has not been followed up yet

    def opening(self) -> list[Rollout]:
        """The buffer's solver tasks for the places no proposal holds: they can start at once."""
        return [
            r
            for task in TaskType
            for _ in range(self.settings.batch_size - self.held[task])
            for r in self._buffer(task)
        ]

    def follow_up(self, rollout: Rollout) -> list[Rollout]:
        """What a rollout's verdict calls for: for a proposal, its task and learnability samples
        when it is valid, else a task from the buffer in its place; nothing for an answer."""
        if rollout.role is not Role.PROPOSE:
            return []
        self.unsettled -= 1
        accept_proposal(rollout, self.settings, self.fits)
        if rollout.new_task is None:
            return self._buffer(rollout.task)
        solver = Rollout(
            Role.SOLVE, rollout.task, prompts.solve_prompt(rollout.task, rollout.new_task), subject=rollout.new_task
        )
        self.planned.append(((list(TaskType).index(rollout.task), 0, self.place[id(rollout)]), solver))
        return [solver, *rollout.learnability]

    def solutions(self) -> list[Rollout]:
        """The solver rollouts planned so far, new tasks first within each type."""
        return [rollout for _, rollout in sorted(self.planned, key=lambda planned: planned[0])]

    def _buffer(self, task: TaskType) -> list[Rollout]:
        subject = self.drawn[task].popleft()
        prompt = prompts.solve_prompt(task, subject)
        if not self.fits(prompt):
            return []
        self.from_buffer += 1
        rollout = Rollout(Role.SOLVE, task, prompt, subject=subject)
        self.planned.append(((list(TaskType).index(task), 1, self.from_buffer), rollout))
        return [rollout]


def check_answer(rollout: Rollout) -> Check | None:
    """Parse an answer; the check that scores it, when it is well formed."""
    assert rollout.completion is not None and rollout.subject is not None
    rollout.parsed = parse_solution(rollout.task, rollout.completion.text)
    if rollout.formatted:
        assert isinstance(rollout.parsed.value, str)
        rollout.check = answer_check(rollout.task, rollout.subject, rollout.parsed.value)
    return rollout.check


# --- generate and check (the phases' only I/O) -----------------------------------------------


@dataclass
class PhaseTimes:
    """Seconds and executor counts of a step, accumulated over its phases."""

    seconds: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    executor: dict[str, float] = field(default_factory=lambda: defaultdict(float))


@dataclass
class ReplicaRound:
    """A round submitted to rollout replicas (`start_on_replicas`) and not waited for yet: its
    rollouts, those with the follow-ups their verdicts added so far (numbered as the engine numbers
    them), the ids of the rollouts followed up, and the fleet's call."""

    rollouts: list[Rollout]
    work: list[Rollout]
    followed: set[int]
    call: Any


def generate_and_check(
    engine: RolloutEngine,
    executor: ExecutorProtocol,
    rollouts: Sequence[Rollout] | ReplicaRound,
    sampling: SamplingParams,
    make_check: Callable[[Rollout], Check | None],
    times: PhaseTimes,
    *,
    phase: str,
    progress: ProgressCallback | None = None,
    guide: Callable[[Rollout], str] | None = None,
    timeline: Timeline | None = None,
    follow_up: Callable[[Rollout], list[Rollout]] | None = None,
    on_drained: Callable[[], bool] | None = None,
) -> list[Rollout]:
    """Generate every rollout (each constrained to `guide(rollout)`, its format grammar, when
    given), handing each completion's check to the executor as soon as it is ready — or, with
    rollout replicas, checking it on the replica that generated it. `follow_up(rollout)` returns
    the rollouts a rollout's verdict calls for; they are generated and checked too, and their own
    follow-ups, until none is left: on rollout replicas as each verdict comes in, while the rest
    still generate; on an engine here, in a next round (its generate call takes a fixed batch).
    `rollouts` may be a round already started on the replicas (`start_on_replicas`, with the same
    `follow_up`): its first round is then waited for. `on_drained`: `RolloutFleet.finish`'s.
    Returns every rollout generated, follow-ups included. Checks the executor failed on are run
    once more; those that fail again stay undecided (counted in `executor/internal`), and a round
    where every check failed stops the run."""
    generated: list[Rollout] = []
    started = rollouts if isinstance(rollouts, ReplicaRound) else None
    pending = list(rollouts if started is None else started.rollouts)
    while pending:
        if started is None and hasattr(engine, "submit_and_check"):
            started = start_on_replicas(
                engine,
                pending,
                sampling,
                make_check,
                phase=phase,
                progress=progress,
                guide=guide,
                timeline=timeline,
                follow_up=follow_up,
                numbered_from=len(generated),
            )
        if started is not None:
            streamed, followed = finish_on_replicas(engine, started, times, on_drained)
            started = None
        else:
            streamed, followed = _generate_here(
                engine, executor, pending, sampling, make_check, times, progress, guide, timeline, phase, len(generated)
            )
        done = pending + streamed
        _settle(executor, done, times, phase)
        generated += done
        # The follow-ups not streamed (an engine here, or a verdict that came in undecided and was
        # just re-run) make the next round.
        pending = [] if follow_up is None else [x for r in done if id(r) not in followed for x in follow_up(r)]
    return generated


def start_on_replicas(
    fleet: Any,
    rollouts: Sequence[Rollout],
    sampling: SamplingParams,
    make_check: Callable[[Rollout], Check | None],
    *,
    phase: str,
    progress: ProgressCallback | None = None,
    guide: Callable[[Rollout], str] | None = None,
    timeline: Timeline | None = None,
    follow_up: Callable[[Rollout], list[Rollout]] | None = None,
    numbered_from: int = 0,
) -> ReplicaRound:
    """Submit a round to the rollout replicas (`azr.fleet`), which check what they generate on their
    own nodes; the follow-ups of each rollout whose verdict comes in decided join it. Its chunks
    go out whenever the driver waits on the fleet, this round's or another's."""
    work = list(rollouts)
    followed: set[int] = set()

    def stream(rollout: Rollout) -> list[Rollout]:
        if follow_up is None or rollout.undecided:
            return []
        followed.add(id(rollout))
        extra = follow_up(rollout)
        work.extend(extra)
        return extra

    span = _request_spans(work, phase, timeline, numbered_from)
    call = fleet.submit_and_check(
        rollouts, sampling, make_check, progress=progress, on_completion=span, guide=guide, follow_up=stream
    )
    return ReplicaRound(list(rollouts), work, followed, call)


def finish_on_replicas(
    fleet: Any, started: ReplicaRound, times: PhaseTimes, on_drained: Callable[[], bool] | None = None
) -> tuple[list[Rollout], set[int]]:
    """Wait for a round on the replicas: returns the follow-ups it streamed, and the ids of the
    rollouts they follow."""
    waiting = time.perf_counter()
    try:
        fleet.finish(started.call, on_drained=on_drained)
    finally:
        times.seconds["generate"] += time.perf_counter() - waiting
    times.executor["checked_on_replicas"] += sum(1 for r in started.work if r.check is not None)
    return started.work[len(started.rollouts) :], started.followed


def _request_spans(
    work: list[Rollout], phase: str, timeline: Timeline | None, numbered_from: int
) -> Callable[[int, Completion], None]:
    """Records each request's span in the timeline, from now (the engine call) to its completion."""
    submitted = time.time()

    def span(index: int, completion: Completion) -> None:
        if timeline is not None:
            name = f"{work[index].role.value} {numbered_from + index}"
            timeline.add("engine", name, submitted, time.time(), tokens=len(completion.token_ids), phase=phase)

    return span


def _generate_here(
    engine: RolloutEngine,
    executor: ExecutorProtocol,
    rollouts: list[Rollout],
    sampling: SamplingParams,
    make_check: Callable[[Rollout], Check | None],
    times: PhaseTimes,
    progress: ProgressCallback | None,
    guide: Callable[[Rollout], str] | None,
    timeline: Timeline | None,
    phase: str,
    numbered_from: int,
) -> tuple[list[Rollout], set[int]]:
    """One call of an engine in this process over `rollouts`, each completion's check streamed to
    the executor as it is ready; its follow-ups wait for the next round (none streamed)."""
    seconds = times.seconds
    span = _request_spans(rollouts, phase, timeline, numbered_from)
    stream_checks = CheckStream(executor, timeline)

    def ready(index: int, completion: Completion) -> None:
        rollout = rollouts[index]
        rollout.completion = completion
        span(index, completion)
        check = make_check(rollout)
        if check is not None:
            stream_checks.submit([check])

    guides = None if guide is None else [guide(r) for r in rollouts]
    started = time.perf_counter()
    try:
        engine.generate([r.prompt for r in rollouts], sampling, progress=progress, on_completion=ready, guides=guides)
    finally:
        seconds["generate"] += time.perf_counter() - started
        timing = stream_checks.finish()
    seconds["verify"] += timing.verify_s
    seconds["verify_hidden"] += timing.hidden_s
    seconds["execute"] += timing.waited_s
    return [], set()


def _settle(executor: ExecutorProtocol, rollouts: list[Rollout], times: PhaseTimes, phase: str) -> None:
    """Every rollout of a round has its completion; its checks the executor failed on are run once
    more (and the run stops when it failed on every one of them)."""
    missing = [r for r in rollouts if r.completion is None]
    if missing:
        raise RuntimeError(f"the rollout engine did not hand over {len(missing)} of {len(rollouts)} completions")
    checks = [r.check for r in rollouts if r.check is not None]
    rerun_started = time.perf_counter()
    retried, failed = rerun_undecided(executor, checks)
    times.seconds["execute"] += time.perf_counter() - rerun_started
    times.executor["internal_retried"] += retried
    times.executor["internal"] += failed
    if checks and failed == len(checks):
        first = next(o for c in checks for o in c.outcomes if o.internal)
        raise InternalError(
            f"the executor failed on all {failed} checks of the {phase} phase, twice; the last error: {first.error}"
        )


# --- reward, advantages, samples -------------------------------------------------------------


def assign_rewards(
    proposals: Sequence[Rollout], solutions: Sequence[Rollout], learnability: Sequence[Rollout], extreme: float
) -> None:
    """Rewards from the verdicts (paper Eqs. 4–6). A rollout the executor could not judge gets none
    and is left out of the update; a proposal's solve rate counts only the samples that were judged."""
    for rollout in [*solutions, *learnability]:
        if rollout.undecided:
            rollout.trained = False
            continue
        rollout.reward = solver_reward(rollout.check is not None and correct(rollout.check), rollout.formatted)
    for rollout in proposals:
        judged = [r for r in rollout.learnability if not r.undecided]
        if rollout.undecided or (rollout.new_task is not None and not judged):
            rollout.trained = False
            continue
        solve_rate = None
        if rollout.new_task is not None:
            solve_rate = sum(r.check is not None and correct(r.check) for r in judged) / len(judged)
        rollout.reward = proposer_reward(rollout.formatted, rollout.new_task is not None, solve_rate, extreme=extreme)


def assign_advantages(trained: Sequence[Rollout], statistics: str) -> None:
    """Task-Relative REINFORCE++: rewards normalised within each of the six task-roles, by
    sequence or (`statistics="token"`, as the reference code) token-weighted."""
    token_counts = None
    if statistics == "token":
        token_counts = [len(r.completion.token_ids) if r.completion else 0 for r in trained]
    advantages = task_relative_advantages(
        [r.reward for r in trained], [(r.role, r.task) for r in trained], token_counts=token_counts
    )
    for rollout, advantage in zip(trained, advantages, strict=True):
        rollout.advantage = advantage


def training_samples(trained: Sequence[Rollout]) -> list[Sample]:
    samples = []
    for rollout in trained:
        completion = rollout.completion
        assert completion is not None
        c = completion
        samples.append(Sample(c.prompt_ids, c.token_ids, c.logprobs, rollout.advantage, c.guide))
    return samples
