"""Weight transport: how a new policy version gets from the trainer ranks to the rollout engines.

    sender = BroadcastSender(store, trainer_rank, trainer_ranks, replicas, bucket_bytes=...)   # trainer side
    receiver = BroadcastReceiver(store, replica, trainer_ranks, replicas)                      # replica side
    sender.send(model, version=7)        # every trainer rank, at the same time
    receiver.receive().apply(engine)     # every replica: raises unless all of version 7 arrived

Three transports, one contract:

- `colocated`: the engine shares the trainer's process and reads its tensors in memory
  (`engine.sync_weights(model)`, the single-machine path);
- `broadcast`: a torch.distributed group per trainer rank spanning that rank and every replica (gloo on
  CPU, NCCL on GPU), made from a `Store` and kept apart from the trainers' own process group; groups
  of a new `epoch` (on the same store) replace the old ones when the members change (a restarted
  replica is a new process that must join). When one member's part of a transfer fails (a replica
  died: gloo then leaves some of the others blocked, not failed), it gives the epoch's transfer up
  on the store, and every member blocked in it stops within `POLL` (`TransferAbandoned`): the
  driver forms the groups again;
- `disk`: safetensors files under a directory every node can read, for clusters without a shared fabric.

Weights travel as a *version*: a `Manifest` (each tensor's name, shape and dtype, grouped into buckets of
about `bucket_bytes`) and, for every bucket, one part per trainer rank. With a sharded trainer (FSDP2)
each rank sends its own dim-0 shard of every tensor, so no rank gathers the model and the sending is
spread over all of them; the receiver joins the shards (`torch.chunk`'s split, FSDP2's). Every part
carries (version, bucket, rank) in a header, and a version ends with an end marker; `Version.apply`
refuses a version with any part missing or duplicated, naming it: an engine never samples from a
half-synced model.
"""

from __future__ import annotations

import datetime
import json
import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import torch
import torch.distributed as dist

from azr.timeline import Timeline

# Default bucket size: large enough that per-message latency is amortised, small enough that a bucket's
# staging copy is a small fraction of memory (veRL and slime use 0.5-1 GiB on GPU).
BUCKET_BYTES = 256 << 20
TIMEOUT = datetime.timedelta(minutes=10)
# How often a member blocked in a transfer looks whether the transfer was given up.
POLL = datetime.timedelta(milliseconds=200)
# A part's header: version, bucket (-1 ends the version), sending rank, payload bytes.
_HEADER = 4
_END = -1


class IncompleteVersionError(RuntimeError):
    """A weight version was applied with parts missing, repeated or mismatched."""


class TransferAbandoned(RuntimeError):
    """Another member of the weight groups gave this epoch's transfer up (it failed there)."""


class WeightSink(Protocol):
    """An engine that can take named tensors (a whole model's worth) as its new weights."""

    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> None: ...


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[int, ...]
    dtype: str  # torch dtype name without "torch."

    @property
    def torch_dtype(self) -> torch.dtype:
        return getattr(torch, self.dtype)

    def rows(self, shards: int) -> list[int]:
        """The dim-0 rows of each shard: `torch.chunk`'s split, empty shards last (FSDP2's layout)."""
        if not self.shape:
            return [1] + [0] * (shards - 1)
        per = -(-self.shape[0] // shards)
        return [max(0, min(per, self.shape[0] - rank * per)) for rank in range(shards)]

    def shard_bytes(self, rank: int, shards: int) -> int:
        row = int(torch.Size(self.shape[1:]).numel()) if self.shape else 1
        return self.rows(shards)[rank] * row * self.torch_dtype.itemsize


@dataclass(frozen=True)
class Manifest:
    """One version's layout: which tensors, in which buckets, sent by how many trainer ranks."""

    version: int
    buckets: tuple[tuple[TensorSpec, ...], ...]
    shards: int

    def part_bytes(self, bucket: int, rank: int) -> int:
        return sum(spec.shard_bytes(rank, self.shards) for spec in self.buckets[bucket])

    def to_json(self) -> str:
        buckets = [[[s.name, list(s.shape), s.dtype] for s in bucket] for bucket in self.buckets]
        return json.dumps({"version": self.version, "shards": self.shards, "buckets": buckets})

    @classmethod
    def from_json(cls, text: str) -> Manifest:
        data = json.loads(text)
        buckets = tuple(tuple(TensorSpec(n, tuple(s), d) for n, s, d in bucket) for bucket in data["buckets"])
        return cls(int(data["version"]), buckets, int(data["shards"]))


def plan(state: dict[str, torch.Tensor], version: int, shards: int, bucket_bytes: int = BUCKET_BYTES) -> Manifest:
    """A state dict's tensors in order, cut into buckets of at most `bucket_bytes` (a tensor
    larger than that is a bucket of its own)."""
    if bucket_bytes < 1:
        raise ValueError(f"bucket_bytes must be positive, got {bucket_bytes}")
    buckets: list[tuple[TensorSpec, ...]] = []
    current: list[TensorSpec] = []
    size = 0
    for name, tensor in state.items():
        spec = TensorSpec(name, tuple(tensor.shape), str(tensor.dtype).removeprefix("torch."))
        nbytes = tensor.numel() * tensor.element_size()
        if current and size + nbytes > bucket_bytes:
            buckets.append(tuple(current))
            current, size = [], 0
        current.append(spec)
        size += nbytes
    if current:
        buckets.append(tuple(current))
    return Manifest(version, tuple(buckets), shards)


def local_shard(tensor: torch.Tensor, rank: int, shards: int) -> torch.Tensor:
    """This rank's dim-0 shard of a parameter: a DTensor's local part, or the matching rows of a
    whole tensor (one trainer rank, or a replicated one)."""
    if hasattr(tensor, "to_local"):
        return tensor.to_local().detach()
    if tensor.dim() == 0:
        return tensor.detach() if rank == 0 else tensor.detach().reshape(-1)[:0]
    chunks = tensor.detach().chunk(shards)  # the split `TensorSpec.rows` describes; empty chunks last
    return chunks[rank] if rank < len(chunks) else tensor.detach()[:0]


def pack(state: dict[str, torch.Tensor], manifest: Manifest, bucket: int, rank: int) -> torch.Tensor:
    """This rank's part of a bucket: its shards of the bucket's tensors, as bytes, in manifest order."""
    pieces = []
    for spec in manifest.buckets[bucket]:
        shard = local_shard(state[spec.name], rank, manifest.shards).contiguous()
        expected = spec.shard_bytes(rank, manifest.shards)
        if shard.numel() * shard.element_size() != expected:
            raise ValueError(
                f"{spec.name}: rank {rank} holds {tuple(shard.shape)}, not the dim-0 shard {expected} bytes long "
                f"that the manifest's split of {spec.shape} over {manifest.shards} ranks gives"
            )
        pieces.append(shard.cpu().reshape(-1).view(torch.uint8))
    return torch.cat(pieces) if pieces else torch.empty(0, dtype=torch.uint8)


@dataclass
class Version:
    """The parts of one version received so far; `apply` loads it into an engine when whole."""

    manifest: Manifest
    parts: dict[tuple[int, int], torch.Tensor] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def add(self, version: int, bucket: int, rank: int, payload: torch.Tensor) -> None:
        if version != self.manifest.version:
            self.problems.append(f"a part of version {version} arrived during version {self.manifest.version}")
        elif not (0 <= bucket < len(self.manifest.buckets) and 0 <= rank < self.manifest.shards):
            self.problems.append(f"bucket {bucket} from rank {rank} is not in the manifest")
        elif (bucket, rank) in self.parts:
            self.problems.append(f"bucket {bucket} from rank {rank} arrived twice")
        elif payload.numel() != self.manifest.part_bytes(bucket, rank):
            self.problems.append(
                f"bucket {bucket} from rank {rank} has {payload.numel()} bytes, the manifest says "
                f"{self.manifest.part_bytes(bucket, rank)}"
            )
        else:
            self.parts[(bucket, rank)] = payload

    def missing(self) -> list[tuple[int, int]]:
        return [
            (bucket, rank)
            for bucket in range(len(self.manifest.buckets))
            for rank in range(self.manifest.shards)
            if (bucket, rank) not in self.parts
        ]

    def check(self) -> None:
        """Raise `IncompleteVersionError` unless every part arrived once, as the manifest says."""
        problems = list(self.problems)
        for bucket, rank in self.missing():
            names = [spec.name for spec in self.manifest.buckets[bucket]]
            shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
            problems.append(f"bucket {bucket} ({shown}) never arrived from trainer rank {rank}")
        if problems:
            raise IncompleteVersionError(
                f"weight version {self.manifest.version} is incomplete, so it was not loaded: " + "; ".join(problems)
            )

    def tensors(self) -> Iterator[tuple[str, torch.Tensor]]:
        """The whole tensors, each joined from its shards (call `check` first)."""
        for bucket, specs in enumerate(self.manifest.buckets):
            offsets = [0] * self.manifest.shards
            for spec in specs:
                shards = []
                for rank in range(self.manifest.shards):
                    size = spec.shard_bytes(rank, self.manifest.shards)
                    raw = self.parts[(bucket, rank)][offsets[rank] : offsets[rank] + size]
                    offsets[rank] += size
                    shards.append(raw.view(spec.torch_dtype))
                yield spec.name, torch.cat(shards).reshape(spec.shape)

    def apply(self, engine: WeightSink) -> int:
        """Load the version into `engine`; returns its number."""
        self.check()
        engine.load_weights(self.tensors())
        return self.manifest.version

    def load_into(self, model: torch.nn.Module) -> int:
        """Load the version into a model in this process; returns its number."""
        self.check()
        load_named(model, self.tensors())
        return self.manifest.version


def _header(version: int, bucket: int, rank: int, nbytes: int) -> torch.Tensor:
    return torch.tensor([version, bucket, rank, nbytes], dtype=torch.int64)


# Groups whose transfer was given up with an operation still pending: dropping one would wait for
# that operation (gloo joins its threads), until its peer's process ends or TIMEOUT passes.
_ABANDONED: list[dist.ProcessGroup] = []


class _Group:
    """A process group of its own over `store`, kept apart from the default group the trainer ranks
    already form: `name` among the groups of `epoch`. `backend`: "nccl", "gloo", or "auto" (NCCL
    when CUDA is here). Gloo is the choice when two members share a GPU (the driver's engine and
    trainer rank 0), which NCCL refuses."""

    def __init__(
        self,
        store: dist.Store,
        epoch: int,
        name: str,
        rank: int,
        size: int,
        backend: str,
        failed: Callable[[], bool] | None = None,
    ) -> None:
        if backend not in ("auto", "nccl", "gloo"):
            raise ValueError(f"backend must be auto, nccl or gloo, got {backend!r}")
        nccl = backend == "nccl" or (backend == "auto" and torch.cuda.is_available())
        prefixed = dist.PrefixStore(f"azr-weights/{epoch}/{name}", store)
        self.store, self.epoch = store, epoch
        self._arrive(prefixed, rank, size, failed)
        if nccl:
            self.device: torch.device | None = torch.device("cuda", torch.cuda.current_device())
            self.group = dist.ProcessGroupNCCL(prefixed, rank, size)
        else:
            self.device = None
            self.group = dist.ProcessGroupGloo(prefixed, rank, size, TIMEOUT)

    def _arrive(self, prefixed: dist.Store, rank: int, size: int, failed: Callable[[], bool] | None) -> None:
        """Wait until every member has come to form the group. The backend's own rendezvous cannot be
        stopped: a member that died before it came would hold the others there until TIMEOUT. Here
        they stop when the epoch was given up or `failed()` says so (`TransferAbandoned`)."""
        prefixed.set(f"arrived/{rank}", "1")
        everyone = [f"arrived/{member}" for member in range(size)]
        deadline = time.monotonic() + TIMEOUT.total_seconds()
        while not prefixed.check(everyone):
            self._stop_if_given_up(failed)
            if time.monotonic() > deadline:
                absent = [member for member, key in enumerate(everyone) if not prefixed.check([key])]
                raise TimeoutError(f"weight group members {absent} never came (epoch {self.epoch})")
            time.sleep(POLL.total_seconds())

    def _stop_if_given_up(self, failed: Callable[[], bool] | None) -> None:
        if self.store.check([_abandoned_key(self.epoch)]) or (failed is not None and failed()):
            abandon(self.store, self.epoch)
            raise TransferAbandoned(f"the weight transfer of epoch {self.epoch} was given up")

    def broadcast(self, tensor: torch.Tensor, failed: Callable[[], bool] | None = None) -> None:
        """Member 0's `tensor` into every member's (a CPU tensor; staged through the GPU for NCCL).
        While it waits, it stops when the epoch's transfer was given up or `failed()` says so."""
        options = dist.BroadcastOptions()
        options.rootRank = 0
        if self.device is None:
            self._wait(self.group.broadcast([tensor], options), failed)
            return
        staged = tensor.to(self.device)
        self.group.broadcast([staged], options).wait()
        tensor.copy_(staged.cpu())

    def _wait(self, work: dist.Work, failed: Callable[[], bool] | None) -> None:
        while True:
            try:
                work.wait(POLL)
                return
            except RuntimeError:  # not finished within POLL, or failed
                if work.is_completed():  # (it may have finished since): its own result
                    try:
                        work.wait()
                        return
                    except RuntimeError:  # it failed here: the members it leaves blocked must stop too
                        self.abandon()
                        raise
            try:
                self._stop_if_given_up(failed)
            except TransferAbandoned:
                _ABANDONED.append(self.group)  # its operation is pending: dropping it would block
                raise

    def abandon(self) -> None:
        """Give this epoch's transfer up, for every member (this one's operation may be pending)."""
        abandon(self.store, self.epoch)
        _ABANDONED.append(self.group)


def abandon(store: dist.Store, epoch: int) -> None:
    """Give the transfer over the groups of `epoch` up: every member blocked in it stops."""
    store.set(_abandoned_key(epoch), "1")


def _abandoned_key(epoch: int) -> str:
    return f"azr-weights/{epoch}/abandoned"


class BroadcastSender:
    """A trainer rank's side of `broadcast`: group `rank` is this rank (its root) and the replicas."""

    def __init__(
        self,
        store: dist.Store,
        rank: int,
        ranks: int,
        replicas: int,
        bucket_bytes: int = BUCKET_BYTES,
        backend: str = "auto",
        epoch: int = 0,
    ):
        if not 0 <= rank < ranks:
            raise ValueError(f"trainer rank {rank} is not in 0..{ranks - 1}")
        self.rank, self.ranks, self.bucket_bytes = rank, ranks, bucket_bytes
        self.group = _Group(store, epoch, f"trainer-{rank}", 0, replicas + 1, backend)

    def messages(self, state: dict[str, torch.Tensor], manifest: Manifest) -> Iterator[tuple[int, torch.Tensor]]:
        """(bucket, payload) for every bucket of this rank's part, then the end marker."""
        for bucket in range(len(manifest.buckets)):
            yield bucket, pack(state, manifest, bucket, self.rank)
        yield _END, torch.empty(0, dtype=torch.uint8)

    def send(self, model: torch.nn.Module, version: int, timeline: Timeline | None = None, actor: str = "") -> Manifest:
        """Send `model` as `version` (every trainer rank calls this at the same time); with a
        `timeline`, a span for each bucket (packing it and its broadcast) as `actor`."""
        state = model.state_dict()
        manifest = plan(state, version, self.ranks, self.bucket_bytes)
        if self.rank == 0:
            text = torch.frombuffer(bytearray(manifest.to_json().encode()), dtype=torch.uint8)
            self.group.broadcast(_header(version, _END, 0, text.numel()))
            self.group.broadcast(text)
        started = time.time()
        for bucket, payload in self.messages(state, manifest):
            self.group.broadcast(_header(version, bucket, self.rank, payload.numel()))
            if bucket != _END:
                self.group.broadcast(payload)
                if timeline is not None:
                    ended = time.time()
                    timeline.add(actor, f"sync bucket {bucket}", started, ended, version=version, bytes=payload.numel())
                    started = ended
        return manifest


class BroadcastReceiver:
    """A replica's side of `broadcast`: member `replica + 1` of every trainer rank's group."""

    def __init__(
        self,
        store: dist.Store,
        replica: int,
        ranks: int,
        replicas: int,
        backend: str = "auto",
        epoch: int = 0,
        failed: Callable[[], bool] | None = None,
    ):
        """`failed()`, asked while the groups form: whether a member will never come (see `receive`)."""
        if not 0 <= replica < replicas:
            raise ValueError(f"replica {replica} is not in 0..{replicas - 1}")
        self.groups = [
            _Group(store, epoch, f"trainer-{rank}", replica + 1, replicas + 1, backend, failed) for rank in range(ranks)
        ]

    def receive(self, failed: Callable[[], bool] | None = None) -> Version:
        """The next version, as it arrived: the manifest from trainer rank 0, then each rank's parts until
        its end marker. `Version.apply` checks it. `failed()`, asked while it waits: whether another
        member failed where the store cannot tell (the driver watches the others' calls)."""
        header = torch.empty(_HEADER, dtype=torch.int64)
        self.groups[0].broadcast(header, failed)
        text = torch.empty(int(header[3]), dtype=torch.uint8)
        self.groups[0].broadcast(text, failed)
        received = Version(Manifest.from_json(bytes(text.numpy()).decode()))
        for group in self.groups:
            while True:
                group.broadcast(header, failed)
                version, bucket, rank, nbytes = (int(x) for x in header)
                if bucket == _END:
                    break
                payload = torch.empty(nbytes, dtype=torch.uint8)
                group.broadcast(payload, failed)
                received.add(version, bucket, rank, payload)
        return received


class DiskSender:
    """A trainer rank's side of `disk`: each part a file, the manifest written last (atomically)."""

    def __init__(self, directory: str | Path, rank: int, ranks: int, bucket_bytes: int = BUCKET_BYTES):
        self.directory, self.rank, self.ranks, self.bucket_bytes = Path(directory), rank, ranks, bucket_bytes

    def send(self, model: torch.nn.Module, version: int) -> Manifest:
        from safetensors.torch import save_file

        state = model.state_dict()
        manifest = plan(state, version, self.ranks, self.bucket_bytes)
        folder = self.directory / f"v{version:08d}"
        folder.mkdir(parents=True, exist_ok=True)
        for bucket in range(len(manifest.buckets)):
            save_file({"part": pack(state, manifest, bucket, self.rank)}, folder / f"b{bucket:05d}-r{self.rank:04d}")
        if self.rank == 0:
            temporary = folder / "manifest.json.tmp"
            temporary.write_text(manifest.to_json())
            os.replace(temporary, folder / "manifest.json")
        return manifest


class DiskReceiver:
    """A replica's side of `disk`: reads the newest version whose manifest has been written."""

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)

    def latest(self) -> int | None:
        versions = [int(p.parent.name[1:]) for p in self.directory.glob("v*/manifest.json")]
        return max(versions, default=None)

    def receive(self, version: int | None = None) -> Version:
        from safetensors.torch import load_file

        version = self.latest() if version is None else version
        if version is None:
            raise FileNotFoundError(f"no weight version under {self.directory} has a manifest yet")
        folder = self.directory / f"v{version:08d}"
        received = Version(Manifest.from_json((folder / "manifest.json").read_text()))
        for bucket in range(len(received.manifest.buckets)):
            for rank in range(received.manifest.shards):
                path = folder / f"b{bucket:05d}-r{rank:04d}"
                if path.exists():
                    received.add(version, bucket, rank, load_file(path)["part"])
        return received


def load_named(model: torch.nn.Module, weights: Iterable[tuple[str, torch.Tensor]]) -> None:
    """Copy named tensors into `model` (an in-process engine's `load_weights`): every name must be one of
    the model's, and every one of the model's must come."""
    state = model.state_dict()
    seen: set[str] = set()
    with torch.no_grad():
        for name, tensor in weights:
            if name not in state:
                raise KeyError(f"{name} is not a tensor of the engine's model")
            state[name].copy_(tensor)
            seen.add(name)
    absent: Sequence[str] = sorted(set(state) - seen)
    if absent:
        raise IncompleteVersionError(f"the weights left {len(absent)} tensors unset, e.g. {absent[:3]}")
