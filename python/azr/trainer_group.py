"""The policy update on N Ray actors that form one torch.distributed process group (NCCL on GPU,
gloo on CPU), the model sharded with FSDP2.

    group = TrainerGroup.start(config, checkpoint=None, last_checkpoint=lambda: "none yet")
    stats = group.step(samples)     # the same update as Trainer.step(samples) in one process
    group.publish(driver_model)     # the new weights, for the driver's rollout engine
    group.publish(driver_model, fleet, version)   # ... and straight to the rollout replicas
    group.save(path); group.load(path)

A step's sequences are split across ranks balanced by token count; every rank normalises its loss by
the step's global totals (and scales it by the group's size, which FSDP's gradient average divides
out), so the update is the one the single-process trainer makes on the same samples. Ranks run the
same number of micro-batches (the short ones pad with a micro-batch that contributes nothing), so
their collective calls line up. On
GPU, parameters are gathered in bf16 for compute while the master weights, gradients and reductions
stay fp32. A worker that dies stops the run with a `TrainerGroupError` naming it and the last
checkpoint: the others are killed rather than left waiting in a collective.
"""

from __future__ import annotations

import datetime
import functools
import os
import socket
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import torch

from azr.cluster import reserve, start_actors
from azr.config import SelfPlayConfig
from azr.timeline import Span
from azr.trainer import Sample, Totals, TrainConfig, micro_batches
from azr.weight_transport import POLL, BroadcastReceiver, BroadcastSender, TransferAbandoned, Version, abandon

if TYPE_CHECKING:
    from azr.fleet import RolloutFleet

# How long a rank waits in a collective for the others before giving up (a dead rank's peers).
COLLECTIVE_TIMEOUT = datetime.timedelta(minutes=10)
# How many times a version is sent over weight groups formed anew after a replica died in the
# transfer (each death leaves one replica fewer, or one restarted, in the next groups).
PUBLISH_ATTEMPTS = 3


class TrainerGroupError(RuntimeError):
    """A trainer worker failed; the group is stopped."""


def split_by_tokens(samples: Sequence[Sample], ranks: int) -> list[list[Sample]]:
    """The samples in `ranks` parts of nearly equal token counts (longest first, each to the part
    with the fewest tokens so far; ties to the lowest rank), each part in the samples' order."""
    lengths = [len(sample.prompt_ids) + len(sample.completion_ids) for sample in samples]
    load = [0] * ranks
    owner: dict[int, int] = {}
    for index in sorted(range(len(samples)), key=lambda i: -lengths[i]):
        rank = min(range(ranks), key=lambda r: (load[r], r))
        owner[index] = rank
        load[rank] += lengths[index]
    return [[samples[i] for i in range(len(samples)) if owner[i] == rank] for rank in range(ranks)]


class TrainerWorker:
    """One rank of the group (a Ray actor): its shard of the model, optimizer and update."""

    def __init__(self, rank: int, world: int, model: str, seed: int, train: TrainConfig) -> None:
        self.rank, self.world = rank, world
        self.model_name, self.seed, self.train = model, seed, train
        self.trainer: Any = None
        self.sender: Any = None

    def address(self) -> tuple[str, int]:
        """Where rank 0 can be reached, and a free port for the process group."""
        import ray

        with socket.socket() as probe:
            probe.bind(("", 0))
            port = probe.getsockname()[1]
        return ray.util.get_node_ip_address(), port

    def setup(self, master: str, port: int, checkpoint: str | None) -> None:
        import torch.distributed as dist
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

        from azr.checkpoints import WEIGHTS, policy_of
        from azr.models import load_policy
        from azr.trainer import Trainer

        on_gpu = torch.cuda.is_available()
        dist.init_process_group(
            "nccl" if on_gpu else "gloo",
            init_method=f"tcp://{master}:{port}",
            rank=self.rank,
            world_size=self.world,
            timeout=COLLECTIVE_TIMEOUT,
        )
        device = torch.device("cuda", torch.cuda.current_device()) if on_gpu else torch.device("cpu")
        if not on_gpu:
            # Ray gives a one-CPU actor one thread; on a machine shared by the group, share its cores.
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // self.world))
        policy = policy_of(Path(checkpoint)) if checkpoint else load_policy(self.model_name, seed=self.seed)
        model = policy.model.to(device)
        mesh = init_device_mesh(device.type, (self.world,))
        precision = MixedPrecisionPolicy(torch.bfloat16, torch.float32) if on_gpu else MixedPrecisionPolicy()

        def shard(objective: torch.nn.Module) -> None:
            for layer in model.get_decoder().layers:
                fully_shard(layer, mesh=mesh, mp_policy=precision)
            fully_shard(objective, mesh=mesh, mp_policy=precision)

        self.trainer = Trainer(
            model, self.train, shard=shard, ranks=self.world, tokenizer=policy.tokenizer, actor=f"trainer {self.rank}"
        )
        if checkpoint:
            self.trainer.load(Path(checkpoint) / WEIGHTS)

    def step(self, batches: list[list[Sample] | None], totals: Totals) -> dict[str, float]:
        return self.trainer.step_batches(batches, totals)

    def spans(self) -> list[Span]:
        return self.trainer.spans()

    def save(self, path: str) -> None:
        self.trainer.save(path)

    def load(self, path: str) -> None:
        self.trainer.load(path)

    def connect_weights(self, host: str, port: int, receivers: int, epoch: int) -> None:
        """Join the weight transport's groups of `epoch` as this rank's root, with `receivers`
        receivers (the driver, and rollout replicas when they take weights straight from here);
        the driver's store is at host:port."""
        import torch.distributed as dist

        store = dist.TCPStore(host, port, None, False, COLLECTIVE_TIMEOUT, False)
        # Gloo: the driver's engine may share a GPU with rank 0, which NCCL refuses.
        self.sender = BroadcastSender(store, self.rank, self.world, receivers, backend="gloo", epoch=epoch)

    def send_weights(self, version: int) -> None:
        """This rank's shard of every bucket, to the driver (and the replicas in the groups): a
        `sync bucket N` span each."""
        self.sender.send(self.trainer.model, version, self.trainer.timeline, self.trainer.actor)

    def peak_memory(self) -> int:
        """Peak bytes this rank held: CUDA's allocator peak on GPU, else the process's peak RSS."""
        if torch.cuda.is_available():
            return int(torch.cuda.max_memory_allocated())
        import resource

        return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


class TrainerGroup:
    """The driver's handle on the trainer workers; see the module's docstring."""

    def __init__(self, ray: Any, workers: list[Any], group: Any, train: TrainConfig, hint: Callable[[], str]):
        self.ray, self.workers, self.group = ray, workers, group
        self.train = train
        self.last_checkpoint = hint
        self.stopped = False
        # The weight groups: the driver's store, the driver's receiver, the epoch of the groups and
        # the replicas they were formed with (none: the driver alone).
        self.store: Any = None
        self.receiver: BroadcastReceiver | None = None
        self.epoch = 0
        self.members: tuple[tuple[int, str], ...] | None = None
        self.version = 0

    @classmethod
    def start(
        cls, config: SelfPlayConfig, train: TrainConfig, *, checkpoint: Path | None, last_checkpoint: Callable[[], str]
    ) -> TrainerGroup:
        size = config.trainer_workers
        ray, group, gpus = reserve(config, size, f"trainer_workers={size}")
        arguments = [(rank, size, config.model, config.seed, train) for rank in range(size)]
        workers = start_actors(ray, TrainerWorker, group, arguments, gpus=gpus)
        trainers = cls(ray, workers, group, train, last_checkpoint)
        master, port = trainers._call("address", [()] * size)[0]
        trainers._call("setup", [(master, port, str(checkpoint) if checkpoint else None)] * size)
        return trainers

    def step(self, samples: Sequence[Sample]) -> dict[str, float]:
        """One optimizer step on `samples`, across the ranks; the update's statistics."""
        trained = [s for s in samples if s.completion_ids]
        totals = Totals.of(trained)
        budget, packed = self.train.micro_batch_tokens, self.train.sequence_packing
        parts = [micro_batches(part, budget, packed=packed) for part in split_by_tokens(trained, len(self.workers))]
        most = max(len(batches) for batches in parts)
        padded = [[*batches, *[None] * (most - len(batches))] for batches in parts]
        results = self._call("step", [(batches, totals) for batches in padded])
        combined: dict[str, float] = {}
        for stats in results:
            for name, value in stats.items():
                if name == "ratio_max":
                    combined[name] = max(combined.get(name, value), value)
                elif name in ("grad_norm", "tokens", "sequences"):
                    combined[name] = value  # the same on every rank
                else:
                    combined[name] = combined.get(name, 0.0) + value
        combined["trainer_workers"] = float(len(self.workers))
        return combined

    def publish(self, model: torch.nn.Module, fleet: RolloutFleet | None = None, version: int | None = None) -> None:
        """Copy the group's current weights into the driver's `model` and, with a `fleet`, into
        every live rollout replica at the same time, as policy version `version`: every rank sends
        its own shards once, over gloo groups spanning it, the driver and the replicas
        (`azr.weight_transport`); none gathers the model.

        A replica that dies during the transfer breaks it: gloo fails some members' parts and leaves
        others blocked, so the first failure anyone sees (the driver watches every member's call)
        gives the transfer up for all (`azr.weight_transport`); one that dies before it joined the
        groups gives their formation up the same way (the others stop waiting for it). The fleet
        then has one member fewer
        (or one restarted by Ray, in a new process), so the groups are formed again with the
        replicas live then and the version is sent again (at most `PUBLISH_ATTEMPTS` times). A
        failure with the same replicas live stops the group."""
        self.version = self.version + 1 if version is None else version
        for attempt in range(1, PUBLISH_ATTEMPTS + 1):
            members = () if fleet is None else fleet.members()
            received, receiving, failure = self._send(members, fleet)
            if failure is None:
                break
            if fleet is not None:
                fleet.abandon(receiving)
            if fleet is None or attempt == PUBLISH_ATTEMPTS or fleet.members() == members:
                self._fail("send_weights", *failure)
            self.receiver = None  # the groups of this epoch are broken: form them again
        assert received is not None
        received.load_into(model)
        if fleet is not None:
            fleet.received(receiving, received, model)

    def _connect(
        self, members: tuple[tuple[int, str], ...], fleet: RolloutFleet | None
    ) -> tuple[dict[Any, int], tuple[int | None, Exception]] | None:
        """Form the weight groups of a new epoch: every rank, the driver, and the member replicas.
        None once formed; else the replicas' calls and the failure: a member never came (its call
        failed: it died), and the formation was given up for everyone waiting in it."""
        import torch.distributed as dist

        if self.store is None:
            self.store = dist.TCPStore("0.0.0.0", 0, None, True, COLLECTIVE_TIMEOUT, False)
        self.epoch += 1
        ranks, receivers = len(self.workers), 1 + len(members)
        address = self.ray.util.get_node_ip_address()
        joining = {} if fleet is None else fleet.join_weights(members, address, self.store.port, ranks, self.epoch)
        connecting = self._submit("connect_weights", [(address, self.store.port, receivers, self.epoch)] * ranks)
        calls = [*joining, *connecting]
        try:
            self.receiver = BroadcastReceiver(
                self.store, 0, ranks, receivers, "gloo", self.epoch, functools.partial(self._any_failed, calls)
            )
        except TransferAbandoned as error:
            self._watch(calls)
            return joining, self._settle("connect_weights", connecting) or (None, error)
        self._wait("connect_weights", connecting)
        if fleet is not None:
            fleet.joined(joining)
        self.members = members
        return None

    def _send(
        self, members: tuple[tuple[int, str], ...], fleet: RolloutFleet | None
    ) -> tuple[Version | None, dict[Any, int], tuple[int | None, Exception] | None]:
        """One try at sending the version to the driver and `members` (forming their groups first
        when they changed): what the driver received, the members' calls, and the first failure."""
        if self.receiver is None or members != self.members:
            broken = self._connect(members, fleet)
            if broken is not None:
                return None, *broken
        receiving = {} if fleet is None else fleet.receive_weights(members, self.version, self.epoch)
        sending = self._submit("send_weights", [(self.version,)] * len(self.workers))
        calls = [*receiving, *sending]
        received, failure = None, None
        try:
            received = self.receiver.receive(functools.partial(self._any_failed, calls))
        except RuntimeError as error:  # gloo, or a call that failed: a member of the groups went away
            failure = (None, error)
        self._watch(calls)
        return received, receiving, self._settle("send_weights", sending) or failure

    def spans(self) -> list[Span]:
        """Every rank's update spans since the last call."""
        return [span for spans in self._call("spans", [()] * len(self.workers)) for span in spans]

    def save(self, path: str | Path) -> None:
        self._call("save", [(str(path),)] * len(self.workers))

    def load(self, path: str | Path) -> None:
        self._call("load", [(str(path),)] * len(self.workers))

    def peak_memory(self) -> list[int]:
        return self._call("peak_memory", [()] * len(self.workers))

    def shutdown(self) -> None:
        if not self.stopped:
            self.stopped = True
            for worker in self.workers:
                self.ray.kill(worker)
            from ray.util.placement_group import remove_placement_group

            remove_placement_group(self.group)

    def _call(self, method: str, arguments: list[tuple]) -> list[Any]:
        """Call `method` on every worker and wait for all; the first failure stops the group."""
        return self._wait(method, self._submit(method, arguments))

    def _submit(self, method: str, arguments: list[tuple]) -> list[Any]:
        if self.stopped:
            raise TrainerGroupError("the trainer group was stopped after a failure; resume the run to continue")
        return [getattr(worker, method).remote(*args) for worker, args in zip(self.workers, arguments, strict=True)]

    def _wait(self, method: str, futures: list[Any]) -> list[Any]:
        pending = list(futures)
        while pending:
            done, pending = self.ray.wait(pending, num_returns=1)
            try:
                self.ray.get(done[0])
            except Exception as error:  # noqa: BLE001 - reported with the worker's name
                self._fail(method, futures.index(done[0]), error)
        return self.ray.get(futures)

    def _any_failed(self, calls: list[Any]) -> bool:
        """Whether one of `calls` already failed."""
        done = self.ray.wait(calls, num_returns=len(calls), timeout=0)[0]
        return any(self._raised(call) for call in done)

    def _raised(self, call: Any) -> bool:
        """Whether `call` (finished) raised."""
        try:
            self.ray.get(call, timeout=0)
        except Exception:  # noqa: BLE001 - any failure of a member ends the transfer
            return True
        return False

    def _watch(self, calls: list[Any]) -> None:
        """Wait until every member's call of the transfer ended; the first one that failed gives
        the transfer up, so that no other member stays blocked in it (gloo may leave them so)."""
        pending, given_up = list(calls), False
        while pending:
            done, pending = self.ray.wait(pending, num_returns=len(pending), timeout=POLL.total_seconds())
            if not given_up and any(self._raised(call) for call in done):
                abandon(self.store, self.epoch)
                given_up = True

    def _settle(self, method: str, futures: list[Any]) -> tuple[int, Exception] | None:
        """Wait for every call; the first (rank, error) a call raised, if any. A worker that died
        stops the group (the others' errors may be the transfer it broke)."""
        first = None
        for rank, future in enumerate(futures):
            try:
                self.ray.get(future)
            except self.ray.exceptions.RayActorError as error:
                self._fail(method, rank, error)
            except Exception as error:  # noqa: BLE001 - the caller decides
                first = first or (rank, error)
        return first

    def _fail(self, method: str, rank: int | None, error: Exception) -> NoReturn:
        """Stop the group and say why: trainer worker `rank` failed with `error` during `method`
        (`rank` None: the driver's part of it)."""
        self.shutdown()
        dead = isinstance(error, self.ray.exceptions.RayActorError)
        who = (
            "the driver" if rank is None else f"trainer worker {rank} (Ray actor {self.workers[rank]._actor_id.hex()})"
        )
        detail = " ".join(str(error).split())
        detail = detail if len(detail) <= 500 else detail[:500] + "..."
        raise TrainerGroupError(
            f"{who} {'died' if dead else 'failed'} during {method}: {detail}; the group is stopped; the last "
            f"checkpoint is {self.last_checkpoint()} (continue with --resume)"
        ) from None

    def __del__(self) -> None:
        if not getattr(self, "stopped", True):
            try:
                self.shutdown()
            except Exception:  # noqa: BLE001 - Ray may already be gone at interpreter exit
                pass
