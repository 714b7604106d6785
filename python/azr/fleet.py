"""Rollout replicas: `rollout_replicas=R` Ray actors, each with its own copy of the policy, its own
rollout engine and an executor on its node, behind one `RolloutEngine` the phases call as they call
an engine in the driver.

    fleet = RolloutFleet.start(config)          # R actors, each loading the policy
    fleet.generate(prompts, params, on_completion=ready)
    fleet.generate_and_check(rollouts, params, make_check)   # each checked where it was generated
    fleet.sync_weights(model)                   # every replica samples from `model`'s weights next

Dispatch goes by load, not round-robin: requests are cut into chunks of `generation_batch_size`,
and the next chunk goes to the replica with the fewest outstanding tokens (prompt plus the most it
may generate), so a replica held up by long completions gets less. Completions stream back chunk by
chunk, as each finishes. A replica that dies mid-phase (killed, out of memory) is restarted by
Ray; its chunk goes back to the queue for any replica, the restarted one is given the current
weights before it gets work again, and every prompt is answered exactly once.

Weights travel through Ray's object store: one copy put by the driver, read by every replica (the
broadcast transport of `azr.weight_transport`, from the trainer ranks straight to the replicas, is
the path for large models and is not wired here yet).
"""

from __future__ import annotations

import dataclasses
import os
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from azr.cluster import reserve, start_actors
from azr.config import SelfPlayConfig
from azr.rollout import (
    Completion,
    CompletionCallback,
    HFEngine,
    ProgressCallback,
    SamplingParams,
    check_guides,
)
from azr.verify import Check

# How many times Ray restarts a replica that died before the fleet gives up on it.
REPLICA_RESTARTS = 3
# Chunks a replica holds at once: the one it runs and the next, so it never waits for the driver.
CHUNKS_PER_REPLICA = 2


class FleetError(RuntimeError):
    """No replica is left to answer the fleet's prompts."""


class RolloutReplica:
    """One replica (a Ray actor): the policy, a rollout engine over it, and an executor on its node
    that checks what the engine generated before anything travels back."""

    def __init__(self, index: int, config: SelfPlayConfig, threads: int) -> None:
        from azr.models import load_policy

        torch.set_num_threads(threads)
        self.index, self.config = index, config
        policy = load_policy(config.model, seed=config.seed)
        self.engine = HFEngine(policy.model, policy.tokenizer, config.generation_batch_size)
        self.executor: Any = None

    def generate(
        self, seed: int, prompts: list[str], params: SamplingParams, guides: list[str] | None
    ) -> list[Completion]:
        torch.manual_seed(seed)
        return self.engine.generate(prompts, params, guides=guides)

    def generate_and_check(
        self,
        seed: int,
        rollouts: list[Any],
        params: SamplingParams,
        guides: list[str] | None,
        make_check: Callable[[Any], Check | None],
    ) -> list[Checked]:
        """Generate each rollout's completion, parse it and run its check here: only the completion,
        the parse and the verdict go back."""
        from azr.verify import run_checks

        completions = self.generate(seed, [r.prompt for r in rollouts], params, guides)
        checks = []
        for rollout, completion in zip(rollouts, completions, strict=True):
            rollout.completion = completion
            check = make_check(rollout)
            if check is not None:
                checks.append(check)
        if checks:
            run_checks(self._executor(), checks)
        return [Checked(r.completion, r.parsed, r.check) for r in rollouts]

    def load_weights(self, weights: dict[str, torch.Tensor]) -> int:
        self.engine.load_weights(weights.items())
        return self.index

    def _executor(self) -> Any:
        if self.executor is None:
            from azr.selfplay import make_executor

            replicas = max(1, self.config.rollout_replicas)
            workers = self.config.executor_workers or max(1, (os.cpu_count() or 1) // replicas)
            self.executor = make_executor(dataclasses.replace(self.config, executor_workers=workers))
        return self.executor


@dataclass(frozen=True)
class Checked:
    """What a replica sends back for one rollout: its completion, the parse, the check with outcomes."""

    completion: Completion
    parsed: Any
    check: Check | None


@dataclass
class ReplicaStats:
    """What one replica did: requests answered, tokens generated, restarts."""

    requests: int = 0
    tokens: int = 0
    restarts: int = 0


@dataclass
class _Chunk:
    indices: list[int]
    cost: int
    seed: int
    replica: int = -1


@dataclass
class _Replica:
    actor: Any
    outstanding: int = 0  # estimated tokens of the chunks it holds
    chunks: int = 0
    stale: bool = False  # restarted since the last weights it was given
    alive: bool = True
    stats: ReplicaStats = field(default_factory=ReplicaStats)


class RolloutFleet:
    """The driver's side of the replicas; a `RolloutEngine`. See the module's docstring."""

    def __init__(self, ray: Any, actors: list[Any], group: Any, batch_size: int, seed: int) -> None:
        self.ray, self.group, self.batch_size = ray, group, batch_size
        self.replicas = [_Replica(actor) for actor in actors]
        # Each chunk is sampled with its own seed, drawn from (seed, chunks so far).
        self.seed, self.draws = seed, 0
        self.weights: Any = None  # the object-store reference of the latest weights

    @classmethod
    def start(cls, config: SelfPlayConfig) -> RolloutFleet:
        count = config.rollout_replicas
        ray, group, gpus = reserve(config, count, f"rollout_replicas={count}")
        threads = max(1, (os.cpu_count() or 1) // count)
        arguments = [(index, config, threads) for index in range(count)]
        actors = start_actors(ray, RolloutReplica, group, arguments, gpus=gpus, restarts=REPLICA_RESTARTS)
        return cls(ray, actors, group, config.generation_batch_size, config.seed)

    # --- RolloutEngine --------------------------------------------------------------------------

    def generate(
        self,
        prompts: Sequence[str],
        params: SamplingParams,
        *,
        progress: ProgressCallback | None = None,
        on_completion: CompletionCallback | None = None,
        guides: Sequence[str] | None = None,
    ) -> list[Completion]:
        check_guides(prompts, guides)

        def call(actor: Any, seed: int, indices: list[int], chunk_guides: list[str] | None) -> Any:
            return actor.generate.remote(seed, [prompts[i] for i in indices], params, chunk_guides)

        results: list[Completion | None] = [None] * len(prompts)

        def deliver(index: int, completion: Completion) -> Completion:
            results[index] = completion
            if on_completion is not None:
                on_completion(index, completion)
            return completion

        self._run(list(prompts), params.max_new_tokens, guides, call, deliver, progress)
        return [r for r in results if r is not None]

    def generate_and_check(
        self,
        rollouts: Sequence[Any],
        params: SamplingParams,
        make_check: Callable[[Any], Check | None],
        *,
        progress: ProgressCallback | None = None,
        on_completion: CompletionCallback | None = None,
        guides: Sequence[str] | None = None,
    ) -> None:
        """Generate every rollout's completion and check it on the replica that generated it (its
        node's executor); each rollout gets its completion, parse and check with outcomes."""
        prompts = [r.prompt for r in rollouts]
        check_guides(prompts, guides)

        def call(actor: Any, seed: int, indices: list[int], chunk_guides: list[str] | None) -> Any:
            chunk = [rollouts[i] for i in indices]
            return actor.generate_and_check.remote(seed, chunk, params, chunk_guides, make_check)

        def deliver(index: int, checked: Checked) -> Completion:
            rollout = rollouts[index]
            rollout.completion, rollout.parsed, rollout.check = checked.completion, checked.parsed, checked.check
            if on_completion is not None:
                on_completion(index, checked.completion)
            return checked.completion

        self._run(prompts, params.max_new_tokens, guides, call, deliver, progress)

    def sync_weights(self, model: torch.nn.Module) -> None:
        self.load_weights(model.state_dict().items())

    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> None:
        """Every live replica samples from these weights next; waits until all have them."""
        self.weights = self.ray.put({name: tensor.detach().cpu() for name, tensor in weights})
        loading = {}
        for index, replica in enumerate(self.replicas):
            if replica.alive:
                loading[replica.actor.load_weights.remote(self.weights)] = index
        for reference, index in loading.items():
            try:
                self.ray.get(reference)
                self.replicas[index].stale = False
            except self.ray.exceptions.RayActorError:
                self._died(index)

    def state_dict(self) -> dict[str, int]:
        return {"fleet_chunks": self.draws}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.draws = int(state.get("fleet_chunks", 0))

    # --- the rest -------------------------------------------------------------------------------

    def take_stats(self) -> list[ReplicaStats]:
        """What each replica did since the last call."""
        taken = [replica.stats for replica in self.replicas]
        for replica, stats in zip(self.replicas, taken, strict=True):
            # Deaths stay counted: they decide when a replica is given up.
            replica.stats = ReplicaStats(restarts=stats.restarts)
        return taken

    def shutdown(self) -> None:
        for replica in self.replicas:
            self.ray.kill(replica.actor)
        from ray.util.placement_group import remove_placement_group

        remove_placement_group(self.group)

    def _run(
        self,
        prompts: list[str],
        max_new_tokens: int,
        guides: Sequence[str] | None,
        call: Callable[[Any, int, list[int], list[str] | None], Any],
        deliver: Callable[[int, Any], Completion],
        progress: ProgressCallback | None,
    ) -> None:
        """Cut the prompts into chunks, keep every replica fed by load (`_dispatch`), hand each
        finished chunk's results to `deliver`, and re-queue the chunks of a replica that died."""
        if not prompts:
            return
        # Outstanding tokens are estimated from characters (about four per token) plus the most a
        # completion may add: dispatch needs an order of magnitude, not a tokenizer round trip.
        costs = [len(prompt) // 4 + max_new_tokens for prompt in prompts]
        order = sorted(range(len(prompts)), key=lambda i: -costs[i])
        batches = [order[start : start + self.batch_size] for start in range(0, len(order), self.batch_size)]
        queue = deque(_Chunk(batch, sum(costs[i] for i in batch), self._draw()) for batch in batches)
        running: dict[Any, _Chunk] = {}
        done = 0
        while queue or running:
            while queue and self._dispatch(queue, running, guides, call):
                pass
            if not running:
                raise FleetError(f"every rollout replica is gone ({self._describe()}); {len(queue)} chunks unanswered")
            [ready], _ = self.ray.wait(list(running), num_returns=1)
            chunk = running.pop(ready)
            replica = self.replicas[chunk.replica]
            replica.outstanding -= chunk.cost
            replica.chunks -= 1
            try:
                answers = self.ray.get(ready)
            except self.ray.exceptions.RayActorError:
                self._lost(chunk, queue)
                continue
            replica.stats.requests += len(chunk.indices)
            for index, answer in zip(chunk.indices, answers, strict=True):
                replica.stats.tokens += len(deliver(index, answer).token_ids)
            done += len(chunk.indices)
            if progress is not None:
                progress(done, len(prompts))

    def _draw(self) -> int:
        self.draws += 1
        return (self.seed * 1_000_003 + self.draws) % 2**31

    def _dispatch(
        self,
        queue: deque[_Chunk],
        running: dict[Any, _Chunk],
        guides: Sequence[str] | None,
        call: Callable[[Any, int, list[int], list[str] | None], Any],
    ) -> bool:
        """Send the next chunk to the live replica with the fewest outstanding tokens among those
        holding fewer than `CHUNKS_PER_REPLICA`; False when none can take it."""
        free = [i for i, r in enumerate(self.replicas) if r.alive and r.chunks < CHUNKS_PER_REPLICA]
        if not free:
            return False
        index = min(free, key=lambda i: (self.replicas[i].outstanding, i))
        replica = self.replicas[index]
        if replica.stale and not self._refresh(index):
            return True  # it is gone for good; look again
        chunk = queue.popleft()
        chunk.replica = index
        replica.outstanding += chunk.cost
        replica.chunks += 1
        chunk_guides = None if guides is None else [guides[i] for i in chunk.indices]
        running[call(replica.actor, chunk.seed, chunk.indices, chunk_guides)] = chunk
        return True

    def _lost(self, chunk: _Chunk, queue: deque[_Chunk]) -> None:
        """A replica died holding `chunk`: the chunk goes back to the front of the queue."""
        replica = self.replicas[chunk.replica]
        if not replica.stale:  # its other chunk fails too; one death, counted once
            self._died(chunk.replica)
        chunk.replica = -1
        queue.appendleft(chunk)

    def _died(self, index: int) -> None:
        replica = self.replicas[index]
        replica.stale = True
        replica.stats.restarts += 1
        replica.alive = replica.stats.restarts <= REPLICA_RESTARTS

    def _refresh(self, index: int) -> bool:
        """Give a restarted replica the current weights; False if it is dead for good."""
        replica = self.replicas[index]
        while replica.alive:
            try:
                if self.weights is not None:
                    self.ray.get(replica.actor.load_weights.remote(self.weights))
                replica.stale = False
                return True
            except self.ray.exceptions.RayActorError:
                self._died(index)
        return False

    def _describe(self) -> str:
        return ", ".join(f"replica {i}: {r.stats.restarts} restarts" for i, r in enumerate(self.replicas))

    def __del__(self) -> None:
        try:
            self.shutdown()
        except Exception:  # noqa: BLE001 - Ray may already be gone at interpreter exit
            pass
