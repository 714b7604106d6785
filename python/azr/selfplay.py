"""The Absolute Zero self-play loop (paper Algorithm 1), one step at a time:

1. propose: deduction and abduction proposers write (program, input) pairs from K reference
   triplets; induction proposers write inputs and a message for a program from the buffer;
2. validate: the executor runs every proposal (two fresh runs each) — valid ones become tasks;
3. solve: solver prompts for this step's tasks (topped up from the buffers), plus n samples per
   new task to estimate how learnable it is; the executor scores every answer;
4. reward and update: proposer rewards from validity and solve rate, solver rewards from
   correctness, Task-Relative REINFORCE++ advantages over the six task-roles, one optimizer step;
5. the new tasks join the buffers; metrics, TensorBoard and checkpoints are written.

Each phase makes one call to the rollout engine or the executor, with all its work.
"""

from __future__ import annotations

import json
import random
import shutil
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from azr import prompts
from azr.advantages import task_relative_advantages
from azr.buffers import TaskBuffer
from azr.config import SelfPlayConfig
from azr.executor import Executor, ExecutorProtocol, InternalError, RemoteExecutor
from azr.models import Policy, load_policy
from azr.parsing import InductionProposal, Parsed, Proposal, parse_induction_proposal, parse_proposal, parse_solution
from azr.rewards import proposer_reward, solver_reward
from azr.rollout import Completion, HFEngine, RolloutEngine, SamplingParams
from azr.tasks import (
    IDENTITY_INDUCTION,
    IDENTITY_TRIPLET,
    TASK_ROLES,
    InductionTask,
    Role,
    TaskType,
    Triplet,
    role_name,
)
from azr.trainer import Sample, TrainConfig, Trainer
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
    run_checks,
    undecided,
)

TRIPLET_TASKS = (TaskType.DEDUCTION, TaskType.ABDUCTION)


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


def make_engine(config: SelfPlayConfig, policy: Policy) -> RolloutEngine:
    from azr.rollout_vllm import VLLMEngine, default_tolerance, vllm_supports

    choice = config.rollout_engine
    if choice == "auto":
        choice = "vllm" if vllm_supports(policy.model) else "hf"
    if choice == "hf":
        return HFEngine(policy.model, policy.tokenizer, config.generation_batch_size)

    return VLLMEngine.from_model(
        policy.model,
        policy.tokenizer,
        seed=config.seed,
        max_model_len=config.max_prompt_tokens + config.max_response_tokens,
        gpu_memory_utilization=config.vllm_gpu_memory_utilization,
        sleep_level=config.vllm_sleep_level,
        sync_tolerance=default_tolerance(policy.model) if config.vllm_check_sync else None,
    )


def make_executor(config: SelfPlayConfig) -> ExecutorProtocol:
    """The executor fleet named by `executor_urls`, else one on this machine's cores."""
    urls = [url.strip() for url in config.executor_urls.split(",") if url.strip()]
    if not urls:
        return Executor(
            workers=config.executor_workers or None,
            timeout_s=config.executor_timeout_s,
            memory_mb=config.executor_memory_mb,
            mode=config.executor_mode,
        )
    token = None
    if config.executor_token_file:
        token = Path(config.executor_token_file).read_text().strip()
    # Generous: a batch may wait behind others in the hosts' queues.
    return RemoteExecutor(urls, token=token, timeout_s=max(600.0, 10 * config.executor_timeout_s))


class SelfPlay:
    """State of a run: the policy, its engine and trainer, the buffers, the step and the RNG."""

    def __init__(
        self,
        config: SelfPlayConfig,
        out_dir: str | Path,
        *,
        policy: Policy | None = None,
        executor: ExecutorProtocol | None = None,
        engine: RolloutEngine | None = None,
        progress: bool = True,
    ) -> None:
        self.config = config
        self.out = Path(out_dir)
        self.out.mkdir(parents=True, exist_ok=True)
        self.progress = progress
        self.device = torch.device(
            "cuda"
            if config.device == "auto" and torch.cuda.is_available()
            else "cpu"
            if config.device == "auto"
            else config.device
        )
        self.policy = policy or load_policy(config.model, seed=config.seed)
        self.policy.model.to(self.device)
        if self.policy.tokenizer.pad_token_id is None:
            self.policy.tokenizer.pad_token = self.policy.tokenizer.eos_token
        reference = None
        if config.kl_coef > 0:
            reference = load_policy(config.model, seed=config.seed).model.to(self.device).eval()
            reference.requires_grad_(False)
        self.trainer = Trainer(self.policy.model, _train_config(config), reference)
        self.engine = engine or make_engine(config, self.policy)
        self.executor = executor or make_executor(config)
        self.sampling = SamplingParams(config.max_response_tokens, config.temperature, config.top_p)
        self.rng = random.Random(config.seed)
        self.step_index = 0
        self.buffers: dict[TaskType, TaskBuffer] = {
            task: TaskBuffer(Triplet, config.buffer_capacity, config.buffer_eviction) for task in TRIPLET_TASKS
        }
        self.buffers[TaskType.INDUCTION] = TaskBuffer(InductionTask, config.buffer_capacity, config.buffer_eviction)
        seeds = self._validated(_seed_triplets(config.seed_file))
        for task in TRIPLET_TASKS:
            self.buffers[task].add([IDENTITY_TRIPLET, *seeds], -1, self.rng)
        self.buffers[TaskType.INDUCTION].add([IDENTITY_INDUCTION], -1, self.rng)
        self._writer = None

    def _validated(self, seeds: list[Triplet]) -> list[Triplet]:
        """The seed triplets that are valid tasks here, as proposals are validated (an input that is
        not data, a program that fails or is nondeterministic is dropped), with the output this
        executor gives: it is the one solvers' answers are judged against."""
        if not seeds:
            return []
        proposals = [Proposal("\n".join(filter(None, (seed.imports, seed.program))), seed.input) for seed in seeds]
        checks = [proposal_check(proposal) for proposal in proposals]
        run_checks(self.executor, checks, progress=self.progress)
        valid = []
        for seed, proposal, check in zip(seeds, proposals, checks, strict=True):
            task = proposed_triplet(proposal, check)
            if task is not None:
                valid.append(Triplet(seed.program, seed.input, task.output, seed.imports))
        if len(valid) < len(seeds):
            print(f"azr: {len(seeds) - len(valid)} of {len(seeds)} seed triplets are not valid tasks here; dropped")
        return valid

    # ------------------------------------------------------------------------------------------
    # One step

    def step(self) -> dict[str, float]:
        self.step_index += 1
        seconds: dict[str, float] = defaultdict(float)
        executor: dict[str, float] = defaultdict(float)
        started = time.perf_counter()
        torch.manual_seed(self.rng.getrandbits(63))

        # Each phase streams: a completion's checks go to the executor as soon as it is generated.
        proposals = self._proposer_rollouts()
        self._generate_and_check(proposals, "propose", self._proposal_check, seconds, executor)
        self._add_new_tasks(proposals)
        solutions = self._solver_rollouts(proposals)
        learnability = [r for p in proposals for r in p.learnability]
        self._generate_and_check(solutions + learnability, "solve", self._answer_check, seconds, executor)
        self._reward(proposals, solutions, learnability)
        trained = [r for r in proposals + solutions if r.trained]
        self._advantages(trained)
        with _timer(seconds, "train"):
            update = self.trainer.step([_sample(r) for r in trained])
        self.engine.sync_weights(self.policy.model)
        for task in TaskType:
            self.buffers[task].add(
                [p.new_task for p in proposals if p.task is task and p.new_task], self.step_index, self.rng
            )
        seconds["step"] = time.perf_counter() - started
        metrics = self._metrics(proposals, solutions, learnability, update, seconds)
        metrics.update({f"executor/{k}": v for k, v in executor.items()})
        self._record(metrics, proposals)
        return metrics

    def _proposer_rollouts(self) -> list[Rollout]:
        rollouts = []
        for task in TRIPLET_TASKS:
            for _ in range(self.config.batch_size):
                references = self.buffers[task].sample(self.config.references, self.rng)
                prompt = prompts.propose_triplet_prompt(task, references)
                while len(references) > 1 and self._too_long(prompt):
                    references = references[:-1]
                    prompt = prompts.propose_triplet_prompt(task, references)
                rollouts.append(Rollout(Role.PROPOSE, task, prompt))
        programs = self.buffers[TaskType.DEDUCTION].tasks() + self.buffers[TaskType.ABDUCTION].tasks()
        for _ in range(self.config.batch_size):
            subject = self.rng.choice(programs)
            prompt = prompts.propose_induction_prompt(subject.program, subject.imports, self.config.induction_inputs)
            rollouts.append(Rollout(Role.PROPOSE, TaskType.INDUCTION, prompt, subject=subject))
        return [r for r in rollouts if not self._too_long(r.prompt)]

    def _proposal_check(self, rollout: Rollout) -> Check | None:
        """Parse a proposal; the check that validates it, when it is well formed."""
        assert rollout.completion is not None
        if rollout.task is TaskType.INDUCTION:
            rollout.parsed = parse_induction_proposal(rollout.completion.text, self.config.induction_inputs)
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

    def _add_new_tasks(self, proposals: list[Rollout]) -> None:
        """The tasks that valid proposals define, with their learnability rollouts."""
        checked = [r for r in proposals if r.check is not None]
        for rollout in checked:
            assert rollout.check is not None and rollout.parsed is not None
            if rollout.task is TaskType.INDUCTION:
                subject = rollout.subject
                assert isinstance(subject, Triplet) and isinstance(rollout.parsed.value, InductionProposal)
                rollout.new_task = proposed_induction(
                    subject.program, subject.imports, rollout.parsed.value, rollout.check, self.config.induction_inputs
                )
            else:
                assert isinstance(rollout.parsed.value, Proposal)
                rollout.new_task = proposed_triplet(rollout.parsed.value, rollout.check)
            if rollout.new_task is None:
                continue
            prompt = self._solve_prompt(rollout.task, rollout.new_task)
            if self._too_long(prompt):
                # No solver could be asked: the task is of no use, like one that does not run.
                rollout.new_task = None
                rollout.rejection = "the task's solver prompt is longer than max_prompt_tokens"
                continue
            rollout.learnability = [
                Rollout(Role.SOLVE, rollout.task, prompt, subject=rollout.new_task, trained=False)
                for _ in range(self.config.learnability_samples)
            ]

    def _solver_rollouts(self, proposals: list[Rollout]) -> list[Rollout]:
        """B solver tasks per type: this step's new tasks first, then tasks from the buffer."""
        rollouts = []
        for task in TaskType:
            fresh = [p.new_task for p in proposals if p.task is task and p.new_task is not None]
            self.rng.shuffle(fresh)
            chosen = fresh[: self.config.batch_size]
            attempts = 0
            while len(chosen) < self.config.batch_size and attempts < 4 * self.config.batch_size:
                chosen.append(self.buffers[task].choose(self.rng))
                attempts += 1
            for subject in chosen:
                prompt = self._solve_prompt(task, subject)
                if not self._too_long(prompt):
                    rollouts.append(Rollout(Role.SOLVE, task, prompt, subject=subject))
        return rollouts

    def _answer_check(self, rollout: Rollout) -> Check | None:
        """Parse an answer; the check that scores it, when it is well formed."""
        assert rollout.completion is not None and rollout.subject is not None
        rollout.parsed = parse_solution(rollout.task, rollout.completion.text)
        if rollout.formatted:
            assert isinstance(rollout.parsed.value, str)
            rollout.check = answer_check(rollout.task, rollout.subject, rollout.parsed.value)
        return rollout.check

    def _reward(self, proposals: list[Rollout], solutions: list[Rollout], learnability: list[Rollout]) -> None:
        """Rewards from the verdicts. A rollout the executor could not judge gets none and is left
        out of the update; a proposal's solve rate counts only the samples that were judged."""
        for rollout in solutions + learnability:
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
            rollout.reward = proposer_reward(
                rollout.formatted, rollout.new_task is not None, solve_rate, extreme=self.config.extreme_proposer_reward
            )

    def _advantages(self, trained: list[Rollout]) -> None:
        token_counts = None
        if self.config.advantage_statistics == "token":
            token_counts = [len(r.completion.token_ids) if r.completion else 0 for r in trained]
        advantages = task_relative_advantages(
            [r.reward for r in trained], [(r.role, r.task) for r in trained], token_counts=token_counts
        )
        for rollout, advantage in zip(trained, advantages, strict=True):
            rollout.advantage = advantage

    # ------------------------------------------------------------------------------------------
    # Helpers

    def _solve_prompt(self, task: TaskType, subject: Triplet | InductionTask) -> str:
        if task is TaskType.DEDUCTION:
            assert isinstance(subject, Triplet)
            return prompts.solve_deduction_prompt(subject)
        if task is TaskType.ABDUCTION:
            assert isinstance(subject, Triplet)
            return prompts.solve_abduction_prompt(subject)
        assert isinstance(subject, InductionTask)
        return prompts.solve_induction_prompt(subject)

    def _too_long(self, prompt: str) -> bool:
        return len(self.policy.tokenizer(prompt, add_special_tokens=False)["input_ids"]) > self.config.max_prompt_tokens

    def _generate_and_check(
        self,
        rollouts: list[Rollout],
        phase: str,
        make_check: Callable[[Rollout], Check | None],
        seconds: dict[str, float],
        executor: dict[str, float],
    ) -> None:
        """Generate every rollout of a phase in one engine call, handing each completion's check to
        the executor as soon as it is ready; the phase ends when the last outcome is in. Checks the
        executor failed on are run once more; those that fail again stay undecided (counted in
        `executor/internal`), and a phase where every check failed stops the run."""
        if not rollouts:
            return
        stream = CheckStream(self.executor)

        def ready(index: int, completion: Completion) -> None:
            rollout = rollouts[index]
            rollout.completion = completion
            check = make_check(rollout)
            if check is not None:
                stream.submit([check])

        started = time.perf_counter()
        try:
            self.engine.generate(
                [r.prompt for r in rollouts], self.sampling, progress=self._bar(phase), on_completion=ready
            )
        finally:
            seconds["generate"] += time.perf_counter() - started
            timing = stream.finish()
        missing = [r for r in rollouts if r.completion is None]
        if missing:
            raise RuntimeError(f"the rollout engine did not hand over {len(missing)} of {len(rollouts)} completions")
        seconds["execute"] += timing.waited_s
        seconds["verify"] += timing.verify_s
        seconds["verify_hidden"] += timing.hidden_s
        checks = [r.check for r in rollouts if r.check is not None]
        with _timer(seconds, "execute"):
            retried, failed = rerun_undecided(self.executor, checks)
        executor["internal_retried"] += retried
        executor["internal"] += failed
        if checks and failed == len(checks):
            first = next(o for c in checks for o in c.outcomes if o.internal)
            raise InternalError(
                f"the executor failed on all {failed} checks of the {phase} phase, twice; the last error: {first.error}"
            )

    def _bar(self, what: str) -> Callable[[int, int], None] | None:
        if not self.progress:
            return None
        bar: tqdm | None = None

        def update(done: int, total: int) -> None:
            nonlocal bar
            if bar is None:
                bar = tqdm(total=total, desc=f"step {self.step_index}: {what}", unit="seq", leave=False)
            bar.update(done - bar.n)
            if done >= total:
                bar.close()

        return update

    # ------------------------------------------------------------------------------------------
    # Metrics, samples, checkpoints

    def _metrics(
        self,
        proposals: list[Rollout],
        solutions: list[Rollout],
        learnability: list[Rollout],
        update: dict[str, float],
        seconds: dict[str, float],
    ) -> dict[str, float]:
        metrics: dict[str, float] = {"step": float(self.step_index)}
        groups: dict[tuple[Role, TaskType], list[Rollout]] = defaultdict(list)
        for rollout in proposals + solutions:
            if rollout.trained:  # what the executor could not judge has no reward to show
                groups[(rollout.role, rollout.task)].append(rollout)
        for task_role in TASK_ROLES:
            members = groups.get(task_role, [])
            name = role_name(task_role)
            metrics[f"count/{name}"] = float(len(members))
            if not members:
                continue
            rewards = [r.reward for r in members]
            advantages = [r.advantage for r in members]
            metrics[f"reward/{name}"] = _mean(rewards)
            metrics[f"advantage_mean/{name}"] = _mean(advantages)
            metrics[f"advantage_std/{name}"] = _std(advantages)
            metrics[f"format_error/{name}"] = _mean([0.0 if r.formatted else 1.0 for r in members])
            metrics[f"length/{name}"] = _mean([len(r.completion.token_ids) if r.completion else 0 for r in members])
        for task in TaskType:
            proposed = groups.get((Role.PROPOSE, task), [])
            if proposed:
                metrics[f"valid_proposal/{task.value}"] = _mean([1.0 if r.new_task else 0.0 for r in proposed])
            answered = groups.get((Role.SOLVE, task), [])
            if answered:
                metrics[f"accuracy/{task.value}"] = _mean(
                    [1.0 if r.check and correct(r.check) else 0.0 for r in answered]
                )
            rates = [r.reward for r in learnability if r.task is task and not r.undecided]
            if rates:
                metrics[f"learnability_accuracy/{task.value}"] = _mean([1.0 if x > 0 else 0.0 for x in rates])
            metrics[f"buffer/{task.value}"] = float(len(self.buffers[task]))
        metrics.update({f"train/{k}": v for k, v in update.items()})
        metrics.update({f"seconds/{k}": v for k, v in seconds.items()})
        return metrics

    def _record(self, metrics: dict[str, float], proposals: list[Rollout]) -> None:
        with (self.out / "metrics.jsonl").open("a") as sink:
            sink.write(json.dumps(metrics) + "\n")
        with (self.out / "proposals.jsonl").open("a") as sink:
            for rollout in proposals:
                sink.write(json.dumps(_proposal_record(self.step_index, rollout)) + "\n")
        writer = self._tensorboard()
        for name, value in metrics.items():
            if name != "step":
                writer.add_scalar(name, value, self.step_index)
        writer.flush()

    def _tensorboard(self) -> Any:
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(str(self.out / "tensorboard"), purge_step=self.step_index)
        return self._writer

    def run(self, steps: int, on_step: Callable[[dict[str, float]], None] | None = None) -> None:
        """Run until `steps` steps are done in total, checkpointing as configured."""
        while self.step_index < steps:
            metrics = self.step()
            if on_step is not None:
                on_step(metrics)
            if self.step_index % self.config.checkpoint_every == 0 or self.step_index == steps:
                self.save_checkpoint()

    def save_checkpoint(self) -> Path:
        root = self.out / "checkpoints"
        target = root / f"step-{self.step_index:06d}"
        partial = root / f".partial-step-{self.step_index:06d}"
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        self.policy.model.save_pretrained(partial)
        self.policy.tokenizer.save_pretrained(partial)
        torch.save(self.trainer.optimizer.state_dict(), partial / "optimizer.pt")
        state = {
            "step": self.step_index,
            "rng": _jsonable_rng(self.rng.getstate()),
            "buffers": {task.value: buffer.to_json() for task, buffer in self.buffers.items()},
            "engine": self.engine.state_dict(),
            "config": self.config.to_json(),
        }
        (partial / "state.json").write_text(json.dumps(state))
        shutil.rmtree(target, ignore_errors=True)
        partial.rename(target)
        (root / "latest").write_text(target.name)
        kept = sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith("step-"))
        for old in kept[: -self.config.keep_checkpoints]:
            shutil.rmtree(old)
        return target

    @classmethod
    def resume(cls, config: SelfPlayConfig, out_dir: str | Path, **kwargs: Any) -> SelfPlay:
        """A run restored from the latest checkpoint in `out_dir`, ready for its next step."""
        out = Path(out_dir)
        latest = out / "checkpoints" / "latest"
        if not latest.exists():
            raise FileNotFoundError(f"no checkpoint to resume from in {out / 'checkpoints'}")
        checkpoint = out / "checkpoints" / latest.read_text().strip()
        state = json.loads((checkpoint / "state.json").read_text())
        policy = load_policy(str(checkpoint), dtype=torch.float32)
        run = cls(config, out, policy=policy, **kwargs)
        run.trainer.optimizer.load_state_dict(torch.load(checkpoint / "optimizer.pt", weights_only=True))
        run.step_index = state["step"]
        run.rng.setstate(_rng_from_json(state["rng"]))
        run.buffers = {TaskType(name): TaskBuffer.from_json(data) for name, data in state["buffers"].items()}
        run.engine.load_state_dict(state.get("engine", {}))
        _truncate_log(out / "metrics.jsonl", run.step_index)
        _truncate_log(out / "proposals.jsonl", run.step_index)
        return run


def _train_config(config: SelfPlayConfig) -> TrainConfig:
    return TrainConfig(
        lr=config.lr,
        weight_decay=config.weight_decay,
        grad_clip=config.grad_clip,
        clip_low=config.clip_low,
        clip_high=config.clip_high,
        entropy_coef=config.entropy_coef,
        temperature=config.temperature,
        aggregation=config.loss_aggregation,
        micro_batch_tokens=config.micro_batch_tokens,
        gradient_checkpointing=config.gradient_checkpointing,
        kl_coef=config.kl_coef,
        tis_cap=config.tis_cap,
    )


def _sample(rollout: Rollout) -> Sample:
    assert rollout.completion is not None
    return Sample(
        rollout.completion.prompt_ids, rollout.completion.token_ids, rollout.completion.logprobs, rollout.advantage
    )


def _seed_triplets(path: str) -> list[Triplet]:
    if not path:
        return []
    triplets = []
    for line in Path(path).read_text().splitlines():
        if line.strip():
            row = json.loads(line)
            imports = row.get("imports") or ""
            imports = "\n".join(imports) if isinstance(imports, list) else imports
            triplets.append(Triplet(row["snippet"], row["input"], row["output"], imports))
    return triplets


def _proposal_record(step: int, rollout: Rollout) -> dict[str, Any]:
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


def _truncate_log(path: Path, last_step: int) -> None:
    """Drop lines a resumed run is about to write again."""
    if path.exists():
        kept = [line for line in path.read_text().splitlines() if json.loads(line)["step"] <= last_step]
        path.write_text("".join(line + "\n" for line in kept))


def _jsonable_rng(state: Any) -> Any:
    return [state[0], list(state[1]), state[2]]


def _rng_from_json(state: Any) -> Any:
    return (state[0], tuple(state[1]), state[2])


@contextmanager
def _timer(seconds: dict[str, float], phase: str) -> Iterator[None]:
    started = time.perf_counter()
    try:
        yield
    finally:
        seconds[phase] += time.perf_counter() - started


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def _std(values: Sequence[float]) -> float:
    if len(values) < 2:
        return 0.0
    mean = _mean(values)
    return (sum((v - mean) ** 2 for v in values) / (len(values) - 1)) ** 0.5
