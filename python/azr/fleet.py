"""Rollout replicas: `rollout_replicas=R` Ray actors, each with its own copy of the policy, its own
rollout engine and an executor on its node, behind one `RolloutEngine` the phases call as they call
an engine in the driver.

    fleet = RolloutFleet.start(config)          # R actors, each loading the policy
    fleet.generate(prompts, params, on_completion=ready)
    fleet.generate_and_check(rollouts, params, make_check)   # each checked where it was generated
    fleet.generate_and_check(rollouts, params, make_check, follow_up=more)   # ... and what each
                                                # verdict calls for, dispatched as it comes in
    call = fleet.submit_and_check(rollouts, params, make_check)   # queued, not waited for ...
    fleet.finish(call, on_drained=open_more)    # ... until it is answered; other calls' chunks go
                                                # out meanwhile, and `open_more` may submit one
    fleet.sync_weights(model)                   # every replica samples from `model`'s weights next
    fleet.publish(weights, version)             # ... from its next chunk on, without waiting

Dispatch goes by load, not round-robin: requests are cut into chunks of `generation_batch_size`,
and the next chunk goes to the replica that would finish it first: its outstanding tokens (prompt
plus the most each request may generate) plus the chunk's, over the rate it has been measured to
work at (tokens generated a second, over its recent chunks). A replica held up by long completions
gets less, and so does a slow one (a straggler: a busy node, a slower GPU): once measured, it gets
a chunk only when it would still finish it first. A replica not measured yet (or not for
`RATE_MEMORY_S`) is taken to run at the others' mean rate and holds one chunk until it is.
Completions stream back chunk by chunk, as each finishes. Once nothing is left to dispatch, a chunk
that has run `LATE_AFTER` times as long as chunks usually take (a straggler's, before it is known)
is copied to an idle replica, and the first copy to answer is delivered (the other's answer is
dropped): the call does not wait for the straggler. Calls may overlap: the chunks of every call
submitted and not finished share one queue, and whichever call the driver waits for dispatches and
delivers them all, so the next step's work can fill the replicas a step's longest completions leave
idle (`overlap_steps`; `finish`'s `on_drained` is asked when nothing is left to dispatch). A
replica that dies mid-phase (killed, out of memory) is restarted by Ray; its chunk goes back to the
queue for any replica, the restarted one is given the current weights before it gets work again,
and every prompt is answered exactly once.

Weights travel through Ray's object store by default: one copy put by the driver, read by every
replica. With `weight_transport=broadcast` they go from the trainer ranks straight to the replicas
(`azr.weight_transport`, over gloo): `TrainerGroup.publish(model, fleet, version)` has every rank send
its own shards once to the driver and every live replica together. A replica receives on a thread
of its own (`WEIGHTS_THREAD`) while its chunks generate, and loads the version before its next
chunk. The groups are formed again when a replica's process changed (a restart), and a replica
restarted between syncs gets the version the driver received through the object store. A replica
that restarted unnoticed (between two chunks) answers with no version — its fresh load is none —
so that chunk goes back to the queue and the replica gets the weights first. A replica that dies
during a broadcast fails it: the trainer ranks' sends fail, and the run stops with the trainer
group's error and its last checkpoint (the object store has no such window).

Every set of weights is a policy version; a replica reports the version it sampled each chunk from,
and each completion carries it
(`Completion.version`), so the trainer knows how old every sample is. `publish` makes a version the
latest without waiting: a replica loads it before its next chunk (an actor runs its calls in
order), so new weights reach the replicas mid-phase (`pipeline=async`). With `vllm_check_sync` on,
the trainer's log-probs of a fixed sequence travel with every version, and a replica that loads it
compares its own (`azr.sync_check`): on a mismatch it refuses to generate, and the run stops with
`StaleWeightsError` naming the replica.
"""

from __future__ import annotations

import dataclasses
import os
import threading
import time
import uuid
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
    ProgressCallback,
    SamplingParams,
    check_guides,
)
from azr.sync_check import Probe, StaleWeightsError
from azr.timeline import Span, Timeline
from azr.verify import Check
from azr.weight_transport import TIMEOUT, BroadcastReceiver, IncompleteVersionError, Version

# How many times Ray restarts a replica that died before the fleet gives up on it.
REPLICA_RESTARTS = 3
# Chunks a measured replica holds at once: the one it runs and the next, so it never waits for the
# driver. One until its rate is measured: a straggler must not take two chunks before it is known.
CHUNKS_PER_REPLICA = 2
# How long a replica's measured rate is trusted: after that (it got no work, being slow) it is
# measured again on one chunk, so a replica that was slow for a while is not shunned for good.
RATE_MEMORY_S = 60.0
# Weight of a new measurement in a replica's rate (an exponential moving average).
RATE_SMOOTHING = 0.5
# A running chunk is late once it has run this many times as long as the fleet's chunks usually
# take; with nothing queued, an idle replica then runs a copy of it (a backup), and the first copy
# to answer is the one delivered. Chunks end with their longest completion, so a long-tailed one
# can take a few times the usual; a straggler's take ten.
LATE_AFTER = 3.0
# A backup goes only to a replica this many times as fast as the late chunk's (or when that one is
# not measured yet): between replicas of one speed a copy started later ends later, and would only
# keep its replica from the next call's work.
BACKUP_SPEEDUP = 2.0
# How often the dispatcher looks for late chunks while it waits with nothing queued.
LATE_POLL_S = 0.05
# Weight of a new chunk's duration in a replica's usual chunk duration.
DURATION_SMOOTHING = 0.2
# The replicas' concurrency group for taking weights by broadcast: a thread beside the one that
# generates, so a broadcast does not wait for the chunks a replica holds (nor they for it).
WEIGHTS_THREAD = "weights"


class FleetError(RuntimeError):
    """No replica is left to answer the fleet's prompts."""


class RolloutReplica:
    """One replica (a Ray actor): the policy, a rollout engine over it, and an executor on its node
    that checks what the engine generated before anything travels back."""

    def __init__(self, index: int, config: SelfPlayConfig, threads: int) -> None:
        from azr.models import load_policy

        torch.set_num_threads(threads)
        self.index, self.config = index, config
        from azr.selfplay import local_engine

        self.engine = local_engine(config, load_policy(config.model, seed=config.seed))
        self.executor: Any = None
        # The policy version of its weights; None until the driver gives it one. Its fresh load is no
        # version: a resumed run samples from its own weights, and a replica restarted unnoticed
        # between two chunks must not pass its fresh load off as the version it was given.
        self.version: int | None = None
        self.refusal: str | None = None  # why its weights failed the stale-sync check, if they did
        self.process = uuid.uuid4().hex  # this process: a restarted replica is a new one
        self.receiver: BroadcastReceiver | None = None
        self.epoch = -1  # the receiver's groups'
        # A version received by broadcast (on the weights thread), loaded before the next chunk.
        self.staged: Version | None = None
        self.staging = threading.Lock()
        self.actor, self.timeline = f"replica {index}", Timeline()

    def generate(
        self, seed: int, prompts: list[str], params: SamplingParams, guides: list[str] | None
    ) -> tuple[int, list[Completion]]:
        """The policy version sampled from, and the completions."""
        self._adopt_staged()
        if self.refusal is not None:
            raise StaleWeightsError(self.refusal)
        self.engine.reseed(seed)
        started = time.time()
        completions = self.engine.generate(prompts, params, guides=guides)
        tokens = sum(len(c.token_ids) for c in completions)
        self.timeline.add(self.actor, f"generate {len(prompts)}", started, time.time(), tokens=tokens)
        return self.version, completions

    def generate_and_check(
        self,
        seed: int,
        rollouts: list[Any],
        params: SamplingParams,
        guides: list[str] | None,
        make_check: Callable[[Any], Check | None],
    ) -> tuple[int, list[Checked]]:
        """Generate each rollout's completion, parse it and run its check here: only the policy
        version, the completion, the parse and the verdict go back."""
        from azr.verify import run_checks

        version, completions = self.generate(seed, [r.prompt for r in rollouts], params, guides)
        checks = []
        for rollout, completion in zip(rollouts, completions, strict=True):
            rollout.completion = completion
            check = make_check(rollout)
            if check is not None:
                checks.append(check)
        if checks:
            with self.timeline.span(self.actor, f"verify {len(checks)} checks"):
                run_checks(self._executor(), checks)
        return version, [Checked(r.completion, r.parsed, r.check) for r in rollouts]

    def load_weights(self, weights: Weights, version: int) -> int:
        """Load `version`, and check it against the trainer's probe when one came with it."""
        with self.staging:
            self.staged = None
        with self.timeline.span(self.actor, f"load v{version}"):
            self.engine.load_weights(weights.tensors.items())
        self.version, self.refusal = version, None
        return self.check_weights(version, weights.probe)

    def spans(self) -> list[Span]:
        """Its spans since the last call: chunks generated, checks run, weights received and loaded."""
        return self.timeline.drain()

    def identity(self) -> str:
        """This replica's process, which the weight groups were formed with (or not)."""
        return self.process

    def join_weights(self, host: str, port: int, member: int, members: int, ranks: int, epoch: int) -> None:
        """Join the broadcast groups of `epoch` (on the driver's store at host:port) as receiver
        `member` of `members`; the driver is receiver 0. On the weights thread."""
        import torch.distributed as dist

        store = dist.TCPStore(host, port, None, False, TIMEOUT, False)
        self.receiver = BroadcastReceiver(store, member, ranks, members, backend="gloo", epoch=epoch)
        self.epoch = epoch

    def receive_weights(self, version: int, epoch: int) -> int:
        """Policy version `version`, broadcast by the trainer ranks to the groups of `epoch`, on the
        weights thread while chunks generate: staged only when every part of it arrived
        (`IncompleteVersionError` otherwise), and loaded before the next chunk."""
        if self.receiver is None or self.epoch != epoch:
            raise FleetError(f"rollout replica {self.index} is not in the weight groups of epoch {epoch}")
        with self.timeline.span(self.actor, f"receive v{version}"):
            received = self.receiver.receive()
        received.check()
        if received.manifest.version != version:
            raise IncompleteVersionError(
                f"rollout replica {self.index} was sent version {received.manifest.version}, not {version}"
            )
        with self.staging:
            self.staged = received
        return version

    def _adopt_staged(self) -> None:
        with self.staging:
            staged, self.staged = self.staged, None
        if staged is not None:
            with self.timeline.span(self.actor, f"load v{staged.manifest.version}"):
                self.version, self.refusal = staged.apply(self.engine), None

    def check_weights(self, version: int, probe: Probe | None) -> int:
        """Compare the weights' log-probs of the probe's sequence with the trainer's (when a probe
        is given): on a mismatch this replica refuses to generate until its next weights."""
        self._adopt_staged()
        if probe is not None:
            try:
                probe.check(self.engine.probe_logprobs(probe.token_ids))
            except StaleWeightsError as error:
                self.refusal = f"rollout replica {self.index}, policy version {version}: {error}"
                raise StaleWeightsError(self.refusal) from None
        return version

    def _executor(self) -> Any:
        if self.executor is None:
            from azr.selfplay import make_executor

            replicas = max(1, self.config.rollout_replicas)
            workers = self.config.executor_workers or max(1, (os.cpu_count() or 1) // replicas)
            self.executor = make_executor(dataclasses.replace(self.config, executor_workers=workers))
        return self.executor


@dataclass(frozen=True)
class Weights:
    """One policy version as it travels to the replicas: the tensors, and the trainer's probe of
    them when the stale-sync check is on."""

    tensors: dict[str, torch.Tensor]
    probe: Probe | None = None


@dataclass
class _Latest:
    """The latest policy version and where a replica that lacks it gets it: the object store (put
    by `publish`; on first need when the version came by broadcast, from the bytes the driver
    received — a replica restarted between syncs is not in the broadcast groups)."""

    version: int
    reference: Any = None
    received: Version | None = None
    probe: Probe | None = None

    def weights(self, ray: Any) -> Any:
        if self.reference is None:
            assert self.received is not None
            self.reference = ray.put(Weights(dict(self.received.tensors()), self.probe))
            self.received = None
        return self.reference


@dataclass(frozen=True)
class Checked:
    """What a replica sends back for one rollout: its completion, the parse, the check with outcomes."""

    completion: Completion
    parsed: Any
    check: Check | None


@dataclass
class ReplicaStats:
    """What one replica did: requests answered, tokens generated, seconds busy with them, restarts."""

    requests: int = 0
    tokens: int = 0
    busy_s: float = 0.0
    restarts: int = 0
    backups: int = 0  # copies it ran of another replica's late chunk


@dataclass
class FleetCall:
    """One call's work (`RolloutFleet.submit_and_check`): its prompts, which grow as its verdicts
    call for more, how a replica is asked for a chunk of them, and what is done with each answer."""

    prompts: list[str]
    max_new_tokens: int
    guides: list[str] | None
    ask: Callable[[Any, int, list[int], list[str] | None], Any]
    deliver: Callable[[int, Any, int | None], None]
    progress: ProgressCallback | None
    queued: int = 0  # prompts cut into chunks so far
    unanswered: set[int] = field(default_factory=set)  # keys of its chunks no copy has answered
    done: int = 0  # requests answered

    @property
    def finished(self) -> bool:
        return not self.unanswered


@dataclass
class _Chunk:
    call: FleetCall
    indices: list[int]
    cost: int
    seed: int
    replica: int = -1
    sent: float = 0.0  # time.perf_counter() when dispatched
    backup: bool = False  # a copy of a late chunk; both answer the same `indices`

    @property
    def key(self) -> int:
        """Its first request: the chunks of one call partition its requests, so this names the
        chunk (and its backup copy) within the call."""
        return self.indices[0]


@dataclass
class _Replica:
    actor: Any
    outstanding: int = 0  # estimated tokens of the chunks it holds
    chunks: int = 0
    version: int | None = None  # the weights last sent to it; None: none, or it restarted since
    restarted: bool = False  # died since it last answered (the failures of one death count once)
    alive: bool = True
    rate: float = 0.0  # tokens generated a second over its recent chunks; 0: not measured
    measured: float = -RATE_MEMORY_S  # time.perf_counter() of the last measurement
    busy_until: float = 0.0  # when its last chunk ended: the next queued one starts then
    chunk_s: float = 0.0  # seconds its chunks usually take (an exponential moving average); 0: none yet
    stats: ReplicaStats = field(default_factory=ReplicaStats)

    def trusted(self, now: float) -> bool:
        """Whether its rate was measured recently enough to go by."""
        return self.rate > 0 and now - self.measured < RATE_MEMORY_S

    def measure(self, chunk: _Chunk, tokens: int) -> float:
        """A chunk that generated `tokens` came back: fold its rate into this replica's; returns the
        seconds it ran (from its dispatch, or the end of the chunk before it here, whichever was
        later). Actual tokens, not the chunk's estimated cost: a chunk's time follows what it
        generated, so the rates of replicas given short and long chunks stay comparable."""
        now = time.perf_counter()
        seconds = now - max(chunk.sent, self.busy_until)
        self.busy_until = now
        if seconds > 0 and tokens > 0:
            sample = tokens / seconds
            smoothed = RATE_SMOOTHING * sample + (1 - RATE_SMOOTHING) * self.rate
            self.rate = smoothed if self.trusted(now) else sample
            self.measured = now
        return max(seconds, 0.0)


class RolloutFleet:
    """The driver's side of the replicas; a `RolloutEngine`. See the module's docstring."""

    def __init__(
        self,
        ray: Any,
        actors: list[Any],
        group: Any,
        batch_size: int,
        seed: int,
        probe_ids: tuple[int, ...] | None = None,
    ) -> None:
        self.ray, self.group, self.batch_size = ray, group, batch_size
        self.probe_ids = probe_ids  # the stale-sync check's sequence; None: no check
        self.replicas = [_Replica(actor) for actor in actors]
        # Each chunk is sampled with its own seed, drawn from (seed, chunks so far).
        self.seed, self.draws = seed, 0
        # The latest weights. Replaced whole, so a `publish` from another thread (the updater) is
        # seen whole by the dispatcher.
        self.latest: _Latest | None = None
        # Chunks waiting for a replica, and the ones running (by their Ray reference), of every call
        # not finished: a call's chunks may still run when the driver waits for a later call.
        self.queue: deque[_Chunk] = deque()
        self.running: dict[Any, _Chunk] = {}
        # Copies still running whose twin answered first: their replicas are busy until they end.
        self.abandoned: dict[Any, _Chunk] = {}

    @classmethod
    def start(
        cls, config: SelfPlayConfig, replica: type = RolloutReplica, probe_ids: tuple[int, ...] | None = None
    ) -> RolloutFleet:
        """`config.rollout_replicas` actors of class `replica` (`RolloutReplica`'s constructor); with
        `probe_ids`, every version is checked on every replica (`azr.sync_check`)."""
        count = config.rollout_replicas
        ray, group, gpus = reserve(config, count, f"rollout_replicas={count}", gpus_each=config.rollout_tensor_parallel)
        threads = max(1, (os.cpu_count() or 1) // count)
        arguments = [(index, config, threads) for index in range(count)]
        actors = start_actors(
            ray, replica, group, arguments, gpus=gpus, restarts=REPLICA_RESTARTS, threads={WEIGHTS_THREAD: 1}
        )
        return cls(ray, actors, group, config.generation_batch_size, config.seed, probe_ids)

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

        def ask(actor: Any, seed: int, indices: list[int], chunk_guides: list[str] | None) -> Any:
            return actor.generate.remote(seed, [prompts[i] for i in indices], params, chunk_guides)

        results: list[Completion | None] = [None] * len(prompts)

        def deliver(index: int, completion: Completion, version: int | None) -> None:
            completion = dataclasses.replace(completion, version=version)
            results[index] = completion
            if on_completion is not None:
                on_completion(index, completion)

        guides = None if guides is None else list(guides)
        call = FleetCall(list(prompts), params.max_new_tokens, guides, ask, deliver, progress)
        self._enqueue(call)
        self.finish(call)
        return [r for r in results if r is not None]

    def generate_and_check(
        self,
        rollouts: Sequence[Any],
        params: SamplingParams,
        make_check: Callable[[Any], Check | None],
        **options: Any,
    ) -> None:
        """`submit_and_check` (with its `options`), then `finish`."""
        self.finish(self.submit_and_check(rollouts, params, make_check, **options))

    def submit_and_check(
        self,
        rollouts: Sequence[Any],
        params: SamplingParams,
        make_check: Callable[[Any], Check | None],
        *,
        progress: ProgressCallback | None = None,
        on_completion: CompletionCallback | None = None,
        guide: Callable[[Any], str] | None = None,
        follow_up: Callable[[Any], list[Any]] | None = None,
    ) -> FleetCall:
        """Generate every rollout's completion and check it on the replica that generated it (its
        node's executor); each rollout gets its completion, parse and check with outcomes. As each
        verdict comes in, `follow_up(rollout)` may return more rollouts: they are dispatched in the
        same call (numbered after the ones before them, for `on_completion`), while the others
        still generate. Queued, not waited for: `finish(call)` waits. Its chunks go out, and its
        answers are delivered, whenever the driver waits for any call."""
        work = list(rollouts)
        guides = None if guide is None else [guide(r) for r in work]

        def ask(actor: Any, seed: int, indices: list[int], chunk_guides: list[str] | None) -> Any:
            chunk = [work[i] for i in indices]
            return actor.generate_and_check.remote(seed, chunk, params, chunk_guides, make_check)

        def deliver(index: int, checked: Checked, version: int | None) -> None:
            rollout = work[index]
            rollout.completion = dataclasses.replace(checked.completion, version=version)
            rollout.parsed, rollout.check = checked.parsed, checked.check
            if on_completion is not None:
                on_completion(index, rollout.completion)
            for extra in [] if follow_up is None else follow_up(rollout):
                work.append(extra)
                call.prompts.append(extra.prompt)
                if guide is not None and guides is not None:
                    guides.append(guide(extra))

        call = FleetCall([r.prompt for r in work], params.max_new_tokens, guides, ask, deliver, progress)
        self._enqueue(call)
        return call

    def sync_weights(self, model: torch.nn.Module) -> None:
        """Every live replica samples from `model`'s weights (the next policy version) next, checked
        against its probe when the check is on; waits until all have them."""
        self.publish_model(model, self._next_version())
        self._push()

    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> None:
        """Every live replica samples from these weights (the next policy version) next; waits until
        all have them."""
        self.publish(weights, self._next_version())
        self._push()

    def publish_model(self, model: torch.nn.Module, version: int) -> None:
        """`publish` of `model`'s weights, with the trainer's probe of them when the check is on."""
        probe = None if self.probe_ids is None else Probe.of(model, self.probe_ids)
        self.publish(model.state_dict().items(), version, probe)

    def publish(self, weights: Iterable[tuple[str, torch.Tensor]], version: int, probe: Probe | None = None) -> None:
        """Make these weights policy version `version`, the latest: every replica loads them before
        its next chunk. Returns at once (a chunk already running ends on the weights it began with);
        safe to call while another thread generates."""
        tensors = {name: tensor.detach().cpu() for name, tensor in weights}
        self.latest = _Latest(version, self.ray.put(Weights(tensors, probe)))

    @property
    def version(self) -> int | None:
        """The latest policy version (None before any weights were given)."""
        return None if self.latest is None else self.latest.version

    def _next_version(self) -> int:
        return 0 if self.latest is None else self.latest.version + 1

    def _push(self) -> None:
        """Load the latest version into every live replica now, and wait."""
        assert self.latest is not None
        version, reference = self.latest.version, self.latest.weights(self.ray)
        loading = {}
        for index, replica in enumerate(self.replicas):
            if replica.alive:
                loading[replica.actor.load_weights.remote(reference, version)] = index
        for pending, index in loading.items():
            try:
                self.ray.get(pending)
                self.replicas[index].version = version
            except self.ray.exceptions.RayActorError as error:
                self._failed(index, error)

    # --- broadcast from the trainer ranks (`TrainerGroup.publish`) -------------------------------

    def members(self) -> tuple[tuple[int, str], ...]:
        """The live replicas that take weights straight from the trainer ranks, each with its
        process: when these differ from the ones the groups were formed with, they are formed
        again. Asked of the replicas (a replica restarted since its last chunk is noticed here)."""
        while True:
            asked = {i: self._beside(r.actor.identity).remote() for i, r in enumerate(self.replicas) if r.alive}
            if not asked:
                raise FleetError(f"every rollout replica is gone ({self._describe()})")
            found = []
            for index, pending in asked.items():
                try:
                    found.append((index, self.ray.get(pending)))
                except self.ray.exceptions.RayActorError as error:
                    self._failed(index, error)
            if len(found) == len(asked):
                return tuple(found)

    def join_weights(
        self, members: Sequence[tuple[int, str]], host: str, port: int, ranks: int, epoch: int
    ) -> dict[Any, int]:
        """Every member replica joins the broadcast groups of `epoch` as receiver 1, 2, ... (the
        driver is 0); returns what to give `joined` once the driver and the ranks have joined too
        (or `abandon`, when a member never came)."""
        return {
            self._beside(self.replicas[index].actor.join_weights).remote(
                host, port, member, len(members) + 1, ranks, epoch
            ): index
            for member, (index, _) in enumerate(members, start=1)
        }

    def joined(self, joining: dict[Any, int]) -> None:
        self.ray.get(list(joining))

    def receive_weights(self, members: Sequence[tuple[int, str]], version: int, epoch: int) -> dict[Any, int]:
        """Every member starts receiving `version` (on its weights thread, while its chunks
        generate); returns what to give `received`."""
        return {self._beside(self.replicas[i].actor.receive_weights).remote(version, epoch): i for i, _ in members}

    def received(self, receiving: dict[Any, int], version: Version, model: torch.nn.Module) -> None:
        """Wait until every member has `version` (which the driver received into `model`) staged,
        and make it the latest: each loads it before its next chunk and then, when the check is
        on, compares it with the driver's probe (a mismatch makes that chunk, and the run, fail)."""
        probe = None if self.probe_ids is None else Probe.of(model, self.probe_ids)
        number = version.manifest.version
        for pending, index in receiving.items():
            try:
                self.ray.get(pending)
                self.replicas[index].version = number
                if probe is not None:
                    self.replicas[index].actor.check_weights.remote(number, probe)
            except self.ray.exceptions.RayActorError as error:  # it gets the version from the store when back
                self._failed(index, error)
        self.latest = _Latest(number, received=version, probe=probe)

    def abandon(self, calls: dict[Any, int]) -> None:
        """Wait out the members' calls of a transfer (or a formation of groups) that was given up
        (`TrainerGroup.publish`): a member that died is counted, and Ray restarts it; the others'
        errors were that transfer's."""
        for pending, index in calls.items():
            try:
                self.ray.get(pending)
            except self.ray.exceptions.RayActorError as error:
                self._failed(index, error)
            except self.ray.exceptions.RayTaskError:
                pass

    def state_dict(self) -> dict[str, int]:
        return {"fleet_chunks": self.draws}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.draws = int(state.get("fleet_chunks", 0))

    # --- the rest -------------------------------------------------------------------------------

    def spans(self) -> list[Span]:
        """Every live replica's spans since the last call (asked on their weights threads, so a
        replica still generating answers at once); a replica that died took its own with it."""
        asked = [self._beside(r.actor.spans).remote() for r in self.replicas if r.alive]
        found: list[Span] = []
        for pending in asked:
            try:
                found += self.ray.get(pending)
            except self.ray.exceptions.RayActorError:
                pass
        return found

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

    def finish(self, call: FleetCall, *, on_drained: Callable[[], bool] | None = None) -> None:
        """Keep every replica fed by load (`_dispatch`), copy late chunks to idle replicas once
        nothing is queued (`_back_up`) and hand each chunk's results to its call from whichever copy
        answers first, until every request of `call` (and every follow-up its answers added) is
        answered. The chunks of other calls submitted meanwhile go out and are delivered too: a
        call may outlast the one it was submitted during. `on_drained()` is asked whenever nothing
        is queued, only running chunks left: it may submit more work (and return True), which then
        fills the replicas this call's tail would leave idle. A call that fails leaves nothing
        behind: its chunks leave the queue, and the ones running are dropped when they end."""
        try:
            while not call.finished:
                self._reap()
                while self.queue and self._dispatch():
                    pass
                if not self.queue and on_drained is not None and on_drained():
                    continue
                if not self.queue:
                    self._back_up()
                if not self.running and self.abandoned:  # every replica that could take work runs a dropped copy
                    self.ray.wait(list(self.abandoned), num_returns=1)
                    continue
                if not self.running:
                    raise FleetError(
                        f"every rollout replica is gone ({self._describe()}); {len(self.queue)} chunks unanswered"
                    )
                ready, _ = self.ray.wait(list(self.running), num_returns=1, timeout=None if self.queue else LATE_POLL_S)
                if ready:
                    self._answer(ready[0])
        finally:
            # Once finished, what is left of it are copies whose twin answered first: they keep their
            # replicas busy until they end.
            self.queue = deque(chunk for chunk in self.queue if chunk.call is not call)
            for ref, chunk in list(self.running.items()):
                if chunk.call is call:
                    self.abandoned[ref] = self.running.pop(ref)

    def _enqueue(self, call: FleetCall) -> None:
        """Cut the call's prompts not queued yet into chunks, longest first. Outstanding tokens are
        estimated from characters (about four per token) plus the most a completion may add:
        dispatch needs an order of magnitude, not a tokenizer round trip."""
        costs = {i: len(call.prompts[i]) // 4 + call.max_new_tokens for i in range(call.queued, len(call.prompts))}
        order = sorted(costs, key=lambda i: -costs[i])
        for start in range(0, len(order), self.batch_size):
            batch = order[start : start + self.batch_size]
            chunk = _Chunk(call, batch, sum(costs[i] for i in batch), self._draw())
            self.queue.append(chunk)
            call.unanswered.add(chunk.key)
        call.queued = len(call.prompts)

    def _answer(self, ref: Any) -> None:
        """A running chunk ended: deliver its answers to its call (unless its twin answered first),
        or re-queue it when its replica died (unless another copy of it still runs)."""
        chunk = self.running.pop(ref)
        call, replica = chunk.call, self.replicas[chunk.replica]
        replica.outstanding -= chunk.cost
        replica.chunks -= 1
        failure: Exception | None = None
        try:
            version, answers = self.ray.get(ref)
        except self.ray.exceptions.RayActorError as error:
            failure, version, answers = error, None, None
        if answers is None or (version is None and self.latest is not None):
            # It died, or it restarted since it was given weights (its chunk sampled its fresh load).
            twin_running = any(c.call is call and c.key == chunk.key for c in self.running.values())
            self._lost(chunk, chunk.key in call.unanswered and not twin_running, failure)
            return
        replica.restarted = False
        if chunk.key not in call.unanswered:  # its twin answered first
            self._measured(replica, chunk, answers)
            return
        call.unanswered.discard(chunk.key)
        for index, answer in zip(chunk.indices, answers, strict=True):
            call.deliver(index, answer, version)
        self._enqueue(call)
        replica.stats.requests += len(chunk.indices)
        replica.stats.tokens += self._measured(replica, chunk, answers)
        call.done += len(chunk.indices)
        if call.progress is not None:
            call.progress(call.done, len(call.prompts))

    def _draw(self) -> int:
        self.draws += 1
        return (self.seed * 1_000_003 + self.draws) % 2**31

    def _rates(self, now: float) -> dict[int, float]:
        """Each live replica's rate; one not measured (lately) is taken to run at the others' mean."""
        known = [r.rate for r in self.replicas if r.alive and r.trusted(now)]
        usual = sum(known) / len(known) if known else 1.0
        return {i: r.rate if r.trusted(now) else usual for i, r in enumerate(self.replicas) if r.alive}

    def _dispatch(self) -> bool:
        """Send the next queued chunk to the live replica that would finish it first (outstanding
        tokens and the chunk's, over its rate). False when that replica holds all it may: waiting
        for it beats giving the chunk to a slower one."""
        now = time.perf_counter()
        rates = self._rates(now)
        if not rates:
            return False
        cost = self.queue[0].cost
        index = min(rates, key=lambda i: ((self.replicas[i].outstanding + cost) / rates[i], i))
        replica = self.replicas[index]
        if replica.chunks >= (CHUNKS_PER_REPLICA if replica.trusted(now) else 1):
            return False
        self._send(index, self.queue.popleft())
        return True

    def _back_up(self) -> None:
        """With nothing queued, give the oldest late chunk (running `LATE_AFTER` times as long as
        chunks usually take, with no copy yet, on a replica `BACKUP_SPEEDUP` times slower or not
        measured) to the fastest idle replica, as a backup. Usually: the lower median of the
        replicas' chunk durations, which a straggler does not move."""
        durations = sorted(r.chunk_s for r in self.replicas if r.chunk_s)
        now = time.perf_counter()
        rates = self._rates(now)
        idle = [i for i in rates if self.replicas[i].chunks == 0]
        if not durations or not idle:
            return
        usual = durations[(len(durations) - 1) // 2]
        index = max(idle, key=lambda i: (rates[i], -i))
        copied = {(id(c.call), c.key) for c in self.running.values() if c.backup}

        def worth_copying(chunk: _Chunk) -> bool:
            holder = self.replicas[chunk.replica]
            slower = not holder.trusted(now) or holder.rate * BACKUP_SPEEDUP <= rates[index]
            unanswered = chunk.key in chunk.call.unanswered and (id(chunk.call), chunk.key) not in copied
            return slower and now - chunk.sent > LATE_AFTER * usual and unanswered

        late = [c for c in self.running.values() if worth_copying(c)]
        if not late:
            return
        chunk = min(late, key=lambda c: c.sent)
        self.replicas[index].stats.backups += 1
        self._send(index, _Chunk(chunk.call, chunk.indices, chunk.cost, chunk.seed, backup=True))

    def _send(self, index: int, chunk: _Chunk) -> None:
        """`chunk` to replica `index`, preceded by the latest weights if it lacks them."""
        replica = self.replicas[index]
        latest = self.latest
        if latest is not None and replica.version != latest.version:
            # Not awaited: the actor runs it before the chunk. If it dies meanwhile, the chunk
            # fails too and comes back through `_lost`.
            replica.actor.load_weights.remote(latest.weights(self.ray), latest.version)
            replica.version = latest.version
        chunk.replica, chunk.sent = index, time.perf_counter()
        replica.outstanding += chunk.cost
        replica.chunks += 1
        guides = chunk.call.guides
        chunk_guides = None if guides is None else [guides[i] for i in chunk.indices]
        self.running[chunk.call.ask(replica.actor, chunk.seed, chunk.indices, chunk_guides)] = chunk

    def _measured(self, replica: _Replica, chunk: _Chunk, answers: Sequence[Any]) -> int:
        """Fold a finished chunk into its replica's rate and usual chunk duration; returns the
        tokens it generated."""
        tokens = sum(len((a.completion if isinstance(a, Checked) else a).token_ids) for a in answers)
        seconds = replica.measure(chunk, tokens)
        replica.stats.busy_s += seconds
        smoothed = DURATION_SMOOTHING * seconds + (1 - DURATION_SMOOTHING) * replica.chunk_s
        replica.chunk_s = smoothed if replica.chunk_s else seconds
        return tokens

    def _reap(self) -> None:
        """Abandoned copies that have ended free their replicas (and still measure them)."""
        if not self.abandoned:
            return
        ended, _ = self.ray.wait(list(self.abandoned), num_returns=len(self.abandoned), timeout=0)
        for ref in ended:
            chunk = self.abandoned.pop(ref)
            replica = self.replicas[chunk.replica]
            replica.outstanding -= chunk.cost
            replica.chunks -= 1
            try:
                self._measured(replica, chunk, self.ray.get(ref)[1])
            except self.ray.exceptions.RayActorError as error:
                self._lost(chunk, False, error)
            except self.ray.exceptions.RayTaskError:
                pass  # a dropped copy's failure: its call is over

    def _lost(self, chunk: _Chunk, requeue: bool, error: Exception | None) -> None:
        """A replica failed holding `chunk` (`error`; None: it answered from its fresh load, having
        restarted unnoticed): the chunk goes back to the front of the queue when `requeue` (not
        when it was answered or another copy of it still runs)."""
        self._failed(chunk.replica, error)
        if requeue:
            chunk.replica, chunk.backup = -1, False
            self.queue.appendleft(chunk)

    def _failed(self, index: int, error: Exception | None) -> None:
        """Replica `index` died (`error`) or restarted: Ray restarts it, unless it is gone for good
        (ActorDiedError: out of restarts). A death counts once, however many of its calls fail
        (while it restarts, calls fail as unavailable); a restarted actor holds its fresh load."""
        replica = self.replicas[index]
        gone = isinstance(error, self.ray.exceptions.ActorDiedError)
        if not replica.restarted or gone:
            replica.stats.restarts += 1
        replica.version, replica.restarted = None, True
        replica.alive = not gone and replica.stats.restarts <= REPLICA_RESTARTS

    @staticmethod
    def _beside(method: Any) -> Any:
        """`method` of a replica, called on its weights thread."""
        return method.options(concurrency_group=WEIGHTS_THREAD)

    def _describe(self) -> str:
        return ", ".join(f"replica {i}: {r.stats.restarts} restarts" for i, r in enumerate(self.replicas))

    def __del__(self) -> None:
        try:
            self.shutdown()
        except Exception:  # noqa: BLE001 - Ray may already be gone at interpreter exit
            pass
