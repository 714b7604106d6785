"""The Absolute Zero self-play loop (paper Algorithm 1), one step at a time:

1. propose: deduction and abduction proposers write (program, input) pairs from K reference
   triplets; induction proposers write inputs and a message for a program from the buffer;
2. validate: the executor runs every proposal (two fresh runs each) — valid ones become tasks;
3. solve: solver prompts for this step's tasks (topped up from the buffers), plus n samples per
   new task to estimate how learnable it is; the executor scores every answer;
4. reward and update: proposer rewards from validity and solve rate, solver rewards from
   correctness, Task-Relative REINFORCE++ advantages over the six task-roles, one optimizer step;
5. the new tasks join the buffers; metrics, TensorBoard and checkpoints are written.

Each phase makes one call to the rollout engine or the executor, with all its work. The phases are
functions over plain records (`azr.phases`); this module drives them in one process, and holds the
run's state; metrics go through `azr.metrics`, checkpoints through `azr.checkpoints`.
"""

from __future__ import annotations

import json
import random
import time
from collections import defaultdict, deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_for
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from azr import checkpoints, phases
from azr.buffers import TaskBuffer
from azr.config import SelfPlayConfig
from azr.eval.benchmarks import load as load_benchmark
from azr.eval.benchmarks import resolve
from azr.eval.runner import EvalSettings, eval_executor
from azr.eval.runner import evaluate as run_eval
from azr.eval.runner import results as eval_results
from azr.executor import Executor, ExecutorProtocol, RemoteExecutor
from azr.executor.progress import bar_callback
from azr.guided import task_role_regex
from azr.metrics import RunLog, step_metrics
from azr.models import Policy, load_policy
from azr.parsing import Proposal
from azr.phases import TRIPLET_TASKS, PhaseTimes, Rollout, StepSettings
from azr.rollout import HFEngine, RolloutEngine, SamplingParams
from azr.tasks import IDENTITY_INDUCTION, IDENTITY_TRIPLET, InductionTask, TaskType, Triplet, role_name
from azr.timeline import Timeline, idle_metrics, write_step
from azr.trainer import Sample, TrainConfig, Trainer
from azr.trainer_group import TrainerGroup
from azr.verify import Check, proposal_check, proposed_triplet, run_checks

if TYPE_CHECKING:
    from azr.rollout_vllm import VLLMEngine

__all__ = ["Rollout", "SelfPlay", "make_engine", "make_executor"]


def make_engine(config: SelfPlayConfig, policy: Policy) -> RolloutEngine:
    """The run's engine: the rollout fleet with `rollout_replicas`, else an engine in this process."""
    if config.rollout_replicas:
        from azr.fleet import RolloutFleet
        from azr.sync_check import probe_ids

        fleet = RolloutFleet.start(config, probe_ids=probe_ids(policy.tokenizer) if config.vllm_check_sync else None)
        fleet.sync_weights(policy.model)  # a resumed run's weights, not the replicas' fresh load
        return fleet
    return local_engine(config, policy)


def local_engine(config: SelfPlayConfig, policy: Policy) -> HFEngine | VLLMEngine:
    """An engine over `policy` in this process (the driver's, or a rollout replica's):
    `rollout_engine`, where `auto` is vLLM when it is installed and supports the model."""
    from azr.rollout_vllm import VLLMEngine, default_tolerance, vllm_supports

    choice = config.rollout_engine
    if choice == "auto":
        choice = "vllm" if vllm_supports(policy.model) else "hf"
        if choice == "hf" and config.rollout_tensor_parallel > 1:
            raise ValueError(
                f"rollout_tensor_parallel={config.rollout_tensor_parallel} needs the vLLM engine, and vLLM is not "
                f"installed or cannot run {config.model} (attention heads of 64+ dimensions)"
            )
    if choice == "hf":
        return HFEngine(policy.model, policy.tokenizer, config.generation_batch_size)

    return VLLMEngine.from_model(
        policy.model,
        policy.tokenizer,
        seed=config.seed,
        tensor_parallel_size=config.rollout_tensor_parallel,
        max_model_len=config.max_prompt_tokens + config.max_response_tokens,
        gpu_memory_utilization=config.vllm_gpu_memory_utilization,
        sleep_level=config.vllm_sleep_level,
        sync_tolerance=default_tolerance(policy.model) if config.vllm_check_sync else None,
    )


@dataclass
class Batch:
    """A step's training samples, their task-roles, and the policy version that generated each."""

    samples: list[Sample]
    roles: list[str]
    versions: list[int]


@dataclass
class OpenedStep:
    """A step's draws before it generates: its seed, proposals and solver plan, the rollouts that
    open it (the proposals and the buffer tasks no proposal can displace) and, when it opened
    during the step before (`overlap_steps`), its round already on the replicas."""

    seed: int
    proposals: list[Rollout]
    plan: phases.SolverPlan
    rollouts: list[Rollout]
    round: phases.ReplicaRound | None = None


@dataclass
class Update:
    """What one optimizer step reports: its statistics, each sample's (task-role, version lag), and
    its seconds (`train`, and `sync` where it published the weights itself)."""

    stats: dict[str, float]
    lags: list[tuple[str, int]]
    times: PhaseTimes


class StalenessError(RuntimeError):
    """A sample older than `max_staleness` policy versions reached the update (a scheduling bug)."""


def lag_metrics(lags: Sequence[tuple[str, int]]) -> dict[str, float]:
    """`lag/<task-role>`: mean policy versions between a sample's and the one its update started
    from; `lag/max` over all of them."""
    by_role: dict[str, list[int]] = defaultdict(list)
    for role, lag in lags:
        by_role[role].append(lag)
    metrics = {f"lag/{role}": sum(values) / len(values) for role, values in sorted(by_role.items())}
    if lags:
        metrics["lag/max"] = float(max(lag for _, lag in lags))
    return metrics


def fleet_metrics(engine: RolloutEngine) -> dict[str, float]:
    """Per rollout replica, what it did this step (requests, tokens, tokens a second while busy,
    deaths so far); nothing for an engine in this process."""
    take = getattr(engine, "take_stats", None)
    if take is None:
        return {}
    metrics = {}
    for index, stats in enumerate(take()):
        metrics[f"rollout/replica{index}_requests"] = float(stats.requests)
        metrics[f"rollout/replica{index}_tokens"] = float(stats.tokens)
        metrics[f"rollout/replica{index}_tokens_per_s"] = stats.tokens / stats.busy_s if stats.busy_s else 0.0
        metrics[f"rollout/replica{index}_restarts"] = float(stats.restarts)
        metrics[f"rollout/replica{index}_backups"] = float(stats.backups)
    return metrics


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
    """A run in one process: the policy, its engine and trainer, the buffers, the step and the RNG.

    `step()` is the paper's Algorithm 1, phase after phase (`azr.phases`); `run(steps)` repeats it
    and checkpoints; `SelfPlay.resume(config, out)` continues a run from its latest checkpoint.
    """

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
        self.trainer = make_trainer(config, self.policy, reference, last_checkpoint=self.last_checkpoint)
        self.engine = engine or make_engine(config, self.policy)
        self.executor = executor or make_executor(config)
        if config.overlap_steps and not hasattr(self.engine, "submit_and_check"):
            raise ValueError(
                "overlap_steps needs the rollout fleet as the engine (rollout_replicas >= 1): it opens a step on "
                "the replicas while the last one finishes there"
            )
        self.sampling = SamplingParams(config.max_response_tokens, config.temperature, config.top_p)
        # How a completion is checked; it travels to the rollout replicas, so it holds no part of the run.
        self.check = partial(phases.check_rollout, induction_inputs=config.induction_inputs)
        self.settings = StepSettings(
            config.batch_size, config.references, config.induction_inputs, config.learnability_samples
        )
        self.rng = random.Random(config.seed)
        self.step_index = 0
        self.buffers: dict[TaskType, TaskBuffer] = {
            task: TaskBuffer(Triplet, config.buffer_capacity, config.buffer_eviction) for task in TRIPLET_TASKS
        }
        self.buffers[TaskType.INDUCTION] = TaskBuffer(InductionTask, config.buffer_capacity, config.buffer_eviction)
        seeds = validated_seeds(self.executor, read_seeds(config.seed_file), progress=progress)
        for task in TRIPLET_TASKS:
            self.buffers[task].add([IDENTITY_TRIPLET, *seeds], -1, self.rng)
        self.buffers[TaskType.INDUCTION].add([IDENTITY_INDUCTION], -1, self.rng)
        self.log = RunLog(self.out)
        self.timeline = Timeline()
        # Policy versions published to the engine (one per update); one-step-off, the last step's
        # samples waiting for their update; async, the updates submitted and not yet reported. Updates
        # run one at a time, in order, in this thread pool.
        self.version = 0
        self.pending: Batch | None = None
        self.in_flight: deque[Future[Update]] = deque()
        self.next_step: OpenedStep | None = None  # overlap_steps: opened during the step before
        self._updater = ThreadPoolExecutor(1, thread_name_prefix="azr-update")
        # Loaded now, so that a missing benchmark file stops the run before its first step.
        self.eval_items = (
            [
                item
                for name in resolve(config.eval_benchmarks)
                for item in load_benchmark(
                    name, Path(config.eval_data) if config.eval_data else None, config.eval_limit or None
                )
            ]
            if config.eval_every
            else []
        )
        self._eval_executor: ExecutorProtocol | None = None

    def step(self, *, drain: bool = False) -> dict[str, float]:
        """One self-play step; returns its metrics (also written to the run directory).

        With `pipeline=one-step-off` the update of the last step's samples runs while this step
        generates, and this step's samples wait for the next one. With `pipeline=async` this step's
        samples go to the update queue and the next step starts at once, unless `max_staleness`
        updates are still queued or running (then it waits for the oldest). `drain=True` (a
        checkpoint is due) trains everything pending by the end of this step, so a checkpoint holds
        no pending work."""
        self.step_index += 1
        times = PhaseTimes()
        started = time.perf_counter()
        opened, self.next_step = self.next_step or self._open_step(), None
        torch.manual_seed(opened.seed)
        background = self._update_in_background(times) if self.pending is not None else None
        if self.config.pipeline == "async":
            self._make_room(times)

        # Propose; each proposal's verdict settles what follows it (its task's solver and
        # learnability samples, or a buffer task in its place), generated without waiting for the
        # other proposals; buffer tasks no proposal can displace start with the proposals. With
        # overlap_steps the next step opens during this one's tail.
        proposals, plan = opened.proposals, opened.plan
        overlap = partial(self._open_next_step, opened) if self.config.overlap_steps and not drain else None
        self.generate_and_check(
            opened.round or opened.rollouts, "rollout", self.check, times, follow_up=plan.follow_up, on_drained=overlap
        )
        solutions = plan.solutions()
        learnability = [r for p in proposals for r in p.learnability]
        # Reward and advantages; the new tasks join the buffers (unless the next step, opened
        # during this one, took them already).
        phases.assign_rewards(proposals, solutions, learnability, self.config.extreme_proposer_reward)
        trained = [r for r in proposals + solutions if r.trained]
        phases.assign_advantages(trained, self.config.advantage_statistics)
        if self.next_step is None:
            self._add_new_tasks(proposals)
        batch = Batch(
            phases.training_samples(trained),
            [role_name((r.role, r.task)) for r in trained],
            [self._version_of(r) for r in trained],
        )

        # One optimizer step, and the engine samples from the new weights.
        updates: list[Update] = []
        if background is not None:
            updates.append(background.result())
            self._sync(times)
        if self.config.pipeline == "async":
            self.in_flight.append(self._updater.submit(self._train_and_publish, batch))
            updates += self._finished_updates(times, wait=drain)
        elif self.config.pipeline == "sync" or drain:
            updates.append(self._train(batch, times))
            self._sync(times)
        else:
            self.pending = batch

        evaluation = {}
        if self.config.eval_every and self.step_index % self.config.eval_every == 0:
            with timer(times.seconds, "eval", self.timeline):
                evaluation = self.evaluate()

        times.seconds["step"] = time.perf_counter() - started
        update = updates[-1].stats if updates else {}
        metrics = step_metrics(
            self.step_index, proposals, solutions, learnability, self.buffers, update, times.seconds, times.executor
        )
        metrics.update(lag_metrics([lag for u in updates for lag in u.lags]))
        if self.config.pipeline == "async":
            metrics["pipeline/updates"] = float(len(updates))
            metrics["pipeline/in_flight"] = float(len(self.in_flight))
            metrics["pipeline/opened_early"] = float(opened.round is not None)
        metrics.update(evaluation)
        metrics.update(fleet_metrics(self.engine))
        self.timeline.extend(self.trainer.spans())
        replica_spans = getattr(self.engine, "spans", None)  # rollout replicas record their own
        if replica_spans is not None:
            self.timeline.extend(replica_spans())
        spans = self.timeline.drain()
        metrics.update(idle_metrics(spans))
        self.log.write(metrics, proposals)
        write_step(self.out / "timeline.jsonl", self.step_index, spans)
        return metrics

    def _open_step(self) -> OpenedStep:
        """The next step's seed, proposals and solver plan, drawn from the run's RNG and buffers."""
        seed = self.rng.getrandbits(63)
        proposals = phases.proposer_rollouts(self.buffers, self.settings, self.rng, self.fits)
        plan = phases.SolverPlan(proposals, self.buffers, self.settings, self.rng, self.fits)
        return OpenedStep(seed, proposals, plan, proposals + plan.opening())

    def _open_next_step(self, current: OpenedStep) -> bool:
        """overlap_steps: asked by the fleet while this step waits with nothing left to dispatch.
        Once every proposal of this step has its verdict (so no more of its work is to come) and
        at most `max_staleness - 1` updates are unfinished, the next step opens: this step's new
        tasks join the buffers, and the next step's proposals and opening solver tasks go to the
        replicas this step's tail leaves idle. Its samples then train after this step's update and
        the ones unfinished now, so none is more than `max_staleness` versions old. True when it
        opened the step."""
        if self.next_step is not None or current.plan.unsettled:
            return False
        if sum(not future.done() for future in self.in_flight) >= self.config.max_staleness:
            return False
        with self.timeline.span("driver", f"open step {self.step_index + 1}"):
            self._add_new_tasks(current.proposals)
            opened = self._open_step()
            opened.round = phases.start_on_replicas(
                self.engine,
                opened.rollouts,
                self.sampling,
                self.check,
                phase="rollout",
                progress=bar_callback(f"step {self.step_index + 1}: rollout") if self.progress else None,
                guide=self.guide if self.config.guided_format else None,
                timeline=self.timeline,
                follow_up=opened.plan.follow_up,
            )
        self.next_step = opened
        return True

    def _add_new_tasks(self, proposals: list[Rollout]) -> None:
        for task, tasks in phases.new_tasks(proposals).items():
            self.buffers[task].add(tasks, self.step_index, self.rng)

    def _version_of(self, rollout: Rollout) -> int:
        """The policy version a rollout was sampled from: its replica's, else the engine's here."""
        assert rollout.completion is not None
        version = rollout.completion.version
        return self.version if version is None else version

    def _train(self, batch: Batch, times: PhaseTimes) -> Update:
        """One optimizer step on `batch` and its new weights in the driver's model, with each
        sample's version lag (policy versions between the one that generated it and the one the
        update starts from). Async, a sample more than `max_staleness` versions old is refused."""
        lags = [self.version - version for version in batch.versions]
        limit = self.config.max_staleness
        if self.config.pipeline == "async" and max(lags, default=0) > limit:
            raise StalenessError(
                f"the update from policy version {self.version} was given a sample {max(lags)} versions old "
                f"(max_staleness={limit})"
            )
        with timer(times.seconds, "train", self.timeline):
            stats = self.trainer.step(batch.samples)
            if not self._broadcast:  # else the weights leave the ranks at the sync, for everyone at once
                self.trainer.publish(self.policy.model)
        return Update(stats, list(zip(batch.roles, lags, strict=True)), times)

    @property
    def _broadcast(self) -> bool:
        return self.config.weight_transport == "broadcast"

    def _train_and_publish(self, batch: Batch) -> Update:
        """Async: train `batch` in the updater thread, then make the weights the fleet's next
        version, which each replica loads before its next chunk (the engine does not wait; by
        broadcast, this thread waits until every replica has received them)."""
        update = self._train(batch, PhaseTimes())
        with timer(update.times.seconds, "sync", self.timeline):
            self._send_weights(wait=False)
        return update

    def _send_weights(self, *, wait: bool) -> None:
        """The update's weights become the engine's next policy version: by broadcast, from the
        trainer ranks to the driver's model and every replica at once; else from the driver's model,
        waiting until the engine has them (`wait`) or not (the fleet's replicas load them before
        their next chunks)."""
        version = self.version + 1
        if self._broadcast:
            assert isinstance(self.trainer, TrainerGroup)
            self.trainer.publish(self.policy.model, self.engine, version)  # type: ignore[arg-type]
        elif wait:
            self.engine.sync_weights(self.policy.model)
        else:
            self.engine.publish_model(self.policy.model, version)  # type: ignore[attr-defined]
        self.version = version

    def _make_room(self, times: PhaseTimes) -> None:
        """Async: wait until at most `max_staleness` updates are queued or running. This step's
        samples are sampled from a version at least as new as every update finished now, and train
        after the ones in flight, so none is more than `max_staleness` versions old when trained."""
        running = [future for future in self.in_flight if not future.done()]
        excess = len(running) - self.config.max_staleness
        if excess > 0:
            with timer(times.seconds, "wait_staleness", self.timeline):
                wait_for(running[:excess])

    def _finished_updates(self, times: PhaseTimes, *, wait: bool) -> list[Update]:
        """Async: the updates finished since the last step (all of them, waiting, when `wait`),
        their seconds added to this step's."""
        if wait:
            with timer(times.seconds, "drain", self.timeline):
                wait_for(list(self.in_flight))
        finished = []
        while self.in_flight and self.in_flight[0].done():
            update = self.in_flight.popleft().result()
            for phase, seconds in update.times.seconds.items():
                times.seconds[phase] += seconds
            finished.append(update)
        return finished

    def _update_in_background(self, times: PhaseTimes) -> Future[Update]:
        """Train the pending batch in a thread while this step generates (one-step-off)."""
        batch, self.pending = self.pending, None
        assert batch is not None
        return self._updater.submit(self._train, batch, times)

    def _sync(self, times: PhaseTimes) -> None:
        """The engine samples from the driver's model's weights, a new policy version."""
        with timer(times.seconds, "sync", self.timeline):
            self._send_weights(wait=True)

    def evaluate(self) -> dict[str, float]:
        """The current policy on the run's evaluation benchmarks, greedy: `eval/<benchmark>` scores
        (and the Table-1 averages as `eval/<group>_avg`); every judged sample goes to
        `eval/step-NNNNNN.jsonl` in the run directory."""
        if self._eval_executor is None:
            self._eval_executor = eval_executor(self.config.executor_workers or None)
        settings = EvalSettings(max_new_tokens=self.config.max_response_tokens)
        records = run_eval(self.engine, self._eval_executor, self.eval_items, settings, progress=self._bar("eval"))
        (self.out / "eval").mkdir(exist_ok=True)
        with (self.out / "eval" / f"step-{self.step_index:06d}.jsonl").open("w") as samples:
            for record in records:
                samples.write(json.dumps(record.to_json()) + "\n")
        scores = eval_results(records)
        averages = scores.pop("averages")
        metrics = {f"eval/{name}": score["score"] for name, score in scores.items()}
        metrics.update({f"eval/{name}_avg": average["score"] for name, average in averages.items()})
        return metrics

    def fits(self, prompt: str) -> bool:
        """Whether a prompt fits `max_prompt_tokens`."""
        tokens = self.policy.tokenizer(prompt, add_special_tokens=False)["input_ids"]
        return len(tokens) <= self.config.max_prompt_tokens

    def generate_and_check(
        self,
        rollouts: list[Rollout] | phases.ReplicaRound,
        phase: str,
        make_check: Callable[[Rollout], Check | None],
        times: PhaseTimes,
        follow_up: Callable[[Rollout], list[Rollout]] | None = None,
        on_drained: Callable[[], bool] | None = None,
    ) -> None:
        with self.timeline.span("driver", phase):
            phases.generate_and_check(
                self.engine,
                self.executor,
                rollouts,
                self.sampling,
                make_check,
                times,
                phase=phase,
                progress=self._bar(phase),
                guide=self.guide if self.config.guided_format else None,
                timeline=self.timeline,
                follow_up=follow_up,
                on_drained=on_drained,
            )

    def guide(self, rollout: Rollout) -> str:
        """The format grammar of a rollout's task-role."""
        config = self.config
        return task_role_regex(rollout.role, rollout.task, config.induction_inputs, config.max_response_tokens)

    def _bar(self, what: str) -> Callable[[int, int], None] | None:
        return bar_callback(f"step {self.step_index}: {what}") if self.progress else None

    def run(self, steps: int, on_step: Callable[[dict[str, float]], None] | None = None) -> None:
        """Run until `steps` steps are done in total, checkpointing as configured."""
        while self.step_index < steps:
            due = (self.step_index + 1) % self.config.checkpoint_every == 0 or self.step_index + 1 == steps
            metrics = self.step(drain=due)
            if on_step is not None:
                on_step(metrics)
            if due:
                self.save_checkpoint()

    def last_checkpoint(self) -> str:
        try:
            return str(checkpoints.find(self.out))
        except FileNotFoundError:
            return "none yet"

    def save_checkpoint(self) -> Path:
        state = checkpoints.RunState(self.step_index, self.rng, self.buffers, self.engine.state_dict())
        return checkpoints.save(
            self.out,
            state,
            self.config.to_json(),
            self.policy.model.config,
            self.policy.tokenizer,
            self.trainer.save,
            self.config.keep_checkpoints,
        )

    @classmethod
    def resume(cls, config: SelfPlayConfig, out_dir: str | Path, **kwargs: Any) -> SelfPlay:
        """A run restored from the latest checkpoint in `out_dir`, ready for its next step."""
        checkpoint = checkpoints.find(Path(out_dir))
        run = cls(config, out_dir, policy=checkpoints.policy_of(checkpoint), **kwargs)
        run.trainer.load(checkpoint / checkpoints.WEIGHTS)
        state = checkpoints.read_state(checkpoint)
        run.step_index, run.rng, run.buffers = state.step, state.rng, state.buffers
        run.engine.load_state_dict(state.engine)
        run.log.truncate(run.step_index)
        return run


def make_trainer(
    config: SelfPlayConfig, policy: Policy, reference: torch.nn.Module | None, *, last_checkpoint: Callable[[], str]
) -> Trainer | TrainerGroup:
    """The update in this process (`trainer_workers=0`), or on a group of Ray trainer workers."""
    if not config.trainer_workers:
        return Trainer(policy.model, train_config(config), reference, tokenizer=policy.tokenizer)

    return TrainerGroup.start(config, train_config(config), checkpoint=None, last_checkpoint=last_checkpoint)


def train_config(config: SelfPlayConfig) -> TrainConfig:
    """The trainer's settings from the run's (one mapping, so the trainer stays usable alone)."""
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
        sequence_packing=config.sequence_packing,
        gradient_checkpointing=config.gradient_checkpointing,
        kl_coef=config.kl_coef,
        tis_cap=config.tis_cap,
    )


def read_seeds(path: str) -> list[Triplet]:
    """AZR-format seed triplets (`snippet`, `input`, `output`, `imports`), one JSON object a line."""
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


def validated_seeds(executor: ExecutorProtocol, seeds: list[Triplet], *, progress: bool = False) -> list[Triplet]:
    """The seed triplets that are valid tasks here, as proposals are validated (an input that is not
    data, a program that fails or is nondeterministic is dropped), with the output this executor
    gives: it is the one solvers' answers are judged against."""
    if not seeds:
        return []
    proposals = [Proposal("\n".join(filter(None, (seed.imports, seed.program))), seed.input) for seed in seeds]
    checks = [proposal_check(proposal) for proposal in proposals]
    run_checks(executor, checks, progress=progress)
    valid = []
    for seed, proposal, check in zip(seeds, proposals, checks, strict=True):
        task = proposed_triplet(proposal, check)
        if task is not None:
            valid.append(Triplet(seed.program, seed.input, task.output, seed.imports))
    if len(valid) < len(seeds):
        print(f"azr: {len(seeds) - len(valid)} of {len(seeds)} seed triplets are not valid tasks here; dropped")
    return valid


@contextmanager
def timer(seconds: dict[str, float], phase: str, timeline: Timeline) -> Iterator[None]:
    """Time a phase of the step into its metrics and, as a driver span, into its timeline."""
    started, wall = time.perf_counter(), time.time()
    try:
        yield
    finally:
        seconds[phase] += time.perf_counter() - started
        timeline.add("driver", phase, wall, time.time())
