"""What a step reports, and where it goes: `step_metrics` (a flat dict per step), `proposal_record`
(one JSON object per proposal) and `RunLog`, which appends them to `metrics.jsonl`,
`proposals.jsonl` and TensorBoard in a run directory."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from azr.parsing import Proposal
from azr.phases import Buffers, Rollout
from azr.tasks import TASK_ROLES, InductionTask, Role, TaskType, Triplet, role_name
from azr.verify import correct


def step_metrics(
    step: int,
    proposals: Sequence[Rollout],
    solutions: Sequence[Rollout],
    learnability: Sequence[Rollout],
    buffers: Buffers,
    update: Mapping[str, float],
    seconds: Mapping[str, float],
    executor: Mapping[str, float],
) -> dict[str, float]:
    """Per task-role: counts, rewards, advantages, format errors, lengths; per task: valid-proposal
    rate, accuracy, learnability accuracy, buffer size; the update's statistics, seconds per phase
    and executor counts. Rollouts the executor could not judge have no reward to show."""
    metrics: dict[str, float] = {"step": float(step)}
    groups: dict[tuple[Role, TaskType], list[Rollout]] = defaultdict(list)
    for rollout in [*proposals, *solutions]:
        if rollout.trained:
            groups[(rollout.role, rollout.task)].append(rollout)
    for task_role in TASK_ROLES:
        members = groups.get(task_role, [])
        name = role_name(task_role)
        metrics[f"count/{name}"] = float(len(members))
        if not members:
            continue
        advantages = [r.advantage for r in members]
        metrics[f"reward/{name}"] = mean([r.reward for r in members])
        metrics[f"advantage_mean/{name}"] = mean(advantages)
        metrics[f"advantage_std/{name}"] = std(advantages)
        metrics[f"format_error/{name}"] = mean([0.0 if r.formatted else 1.0 for r in members])
        metrics[f"length/{name}"] = mean([len(r.completion.token_ids) if r.completion else 0 for r in members])
    for task in TaskType:
        proposed = groups.get((Role.PROPOSE, task), [])
        if proposed:
            metrics[f"valid_proposal/{task.value}"] = mean([1.0 if r.new_task else 0.0 for r in proposed])
        answered = groups.get((Role.SOLVE, task), [])
        if answered:
            metrics[f"accuracy/{task.value}"] = mean([1.0 if r.check and correct(r.check) else 0.0 for r in answered])
        rates = [r.reward for r in learnability if r.task is task and not r.undecided]
        if rates:
            metrics[f"learnability_accuracy/{task.value}"] = mean([1.0 if x > 0 else 0.0 for x in rates])
        metrics[f"buffer/{task.value}"] = float(len(buffers[task]))
    metrics.update({f"train/{k}": v for k, v in update.items()})
    metrics.update({f"seconds/{k}": v for k, v in seconds.items()})
    metrics.update({f"executor/{k}": v for k, v in executor.items()})
    return metrics


def proposal_record(step: int, rollout: Rollout) -> dict[str, Any]:
    """One line of `proposals.jsonl`: the proposal, its verdict and its reward."""
    record: dict[str, Any] = {
        "step": step,
        "task": rollout.task.value,
        "formatted": rollout.formatted,
        "valid": rollout.new_task is not None,
        "reward": rollout.reward if rollout.trained else None,
    }
    if rollout.parsed is not None and not rollout.formatted:
        record["format_error"] = rollout.parsed.reason
    if isinstance(rollout.new_task, Triplet):
        record.update(program=rollout.new_task.program, input=rollout.new_task.input, output=rollout.new_task.output)
    elif isinstance(rollout.new_task, InductionTask):
        record.update(
            program=rollout.new_task.program,
            inputs=list(rollout.new_task.inputs),
            outputs=list(rollout.new_task.outputs),
            message=rollout.new_task.message,
        )
    elif rollout.check is not None and rollout.check.outcomes:
        failed = next((o for o in rollout.check.outcomes if o.status != "ok"), rollout.check.outcomes[0])
        record["invalid"] = rollout.rejection or f"{failed.status}: {failed.error}"
        if rollout.parsed is not None and isinstance(rollout.parsed.value, Proposal):
            record.update(program=rollout.parsed.value.program, input=rollout.parsed.value.input)
    if not rollout.trained:
        record["left_out"] = "the executor could not judge it (internal)"
    if rollout.completion is not None:
        record["completion"] = rollout.completion.text[:2000]
    return record


class RunLog:
    """Appends a run's metrics and proposals to its directory, and to TensorBoard."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self._writer: Any = None

    def write(self, metrics: Mapping[str, float], proposals: Sequence[Rollout]) -> None:
        step = int(metrics["step"])
        with (self.out / "metrics.jsonl").open("a") as sink:
            sink.write(json.dumps(metrics) + "\n")
        with (self.out / "proposals.jsonl").open("a") as sink:
            for rollout in proposals:
                sink.write(json.dumps(proposal_record(step, rollout)) + "\n")
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(str(self.out / "tensorboard"), purge_step=step)
        for name, value in metrics.items():
            if name != "step":
                self._writer.add_scalar(name, value, step)
        self._writer.flush()

    def truncate(self, last_step: int) -> None:
        """Drop lines a resumed run is about to write again."""
        for name in ("metrics.jsonl", "proposals.jsonl", "timeline.jsonl"):
            path = self.out / name
            if path.exists():
                kept = [line for line in path.read_text().splitlines() if json.loads(line)["step"] <= last_step]
                path.write_text("".join(line + "\n" for line in kept))


def mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def std(values: Sequence[float]) -> float:
    if len(values) < 2:
        return 0.0
    average = mean(values)
    return (sum((v - average) ** 2 for v in values) / (len(values) - 1)) ** 0.5
