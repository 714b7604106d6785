"""Weight transport: versions are loaded whole or not at all; shards from several trainer ranks join
into the trainer's tensors; over gloo, an FSDP2-sharded trainer's update reaches every replica."""

from __future__ import annotations

import datetime
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from azr.models import tiny_qwen2
from azr.rollout import HFEngine
from azr.trainer import Sample
from azr.weight_transport import (
    BroadcastReceiver,
    BroadcastSender,
    DiskReceiver,
    DiskSender,
    IncompleteVersionError,
    TensorSpec,
    TransferAbandoned,
    Version,
    pack,
    plan,
)

PROBE = [3, 17, 42, 99, 7, 256, 1000, 5, 64, 12]


def logprobs(model: torch.nn.Module) -> torch.Tensor:
    with torch.no_grad():
        logits = model(torch.tensor([PROBE])).logits[0, :-1].float()
    return torch.log_softmax(logits, -1).gather(-1, torch.tensor(PROBE[1:])[:, None]).squeeze(-1)


def state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}


def test_shard_rows_follow_torch_chunk() -> None:
    for rows in (1, 2, 5, 7, 64):
        for shards in (1, 2, 3, 4):
            expected = [len(c) for c in torch.arange(rows).chunk(shards)]
            expected += [0] * (shards - len(expected))
            assert TensorSpec("w", (rows, 3), "float32").rows(shards) == expected


@pytest.mark.parametrize("shards", [1, 2, 3])
def test_parts_from_every_rank_join_into_the_model(shards: int) -> None:
    source = tiny_qwen2(seed=1).model
    weights = state(source)
    manifest = plan(weights, version=4, shards=shards, bucket_bytes=200_000)
    assert len(manifest.buckets) > 3  # several buckets, so their order and offsets are exercised
    received = Version(manifest)
    for bucket in range(len(manifest.buckets)):
        for rank in reversed(range(shards)):  # arrival order does not matter
            received.add(4, bucket, rank, pack(weights, manifest, bucket, rank))
    engine = HFEngine(tiny_qwen2(seed=2).model, tiny_qwen2(seed=2).tokenizer)
    assert received.apply(engine) == 4
    for name, tensor in engine.model.state_dict().items():
        assert torch.equal(tensor, weights[name]), name


def test_a_version_with_a_part_missing_repeated_or_foreign_is_refused_and_not_loaded() -> None:
    weights = state(tiny_qwen2(seed=1).model)
    manifest = plan(weights, version=2, shards=2, bucket_bytes=200_000)
    target = tiny_qwen2(seed=2)
    engine = HFEngine(target.model, target.tokenizer)
    before = state(target.model)

    def parts(skip: tuple[int, int] | None = None) -> Version:
        version = Version(manifest)
        for bucket in range(len(manifest.buckets)):
            for rank in range(2):
                if (bucket, rank) != skip:
                    version.add(2, bucket, rank, pack(weights, manifest, bucket, rank))
        return version

    with pytest.raises(IncompleteVersionError, match=r"version 2 .*bucket 1 \(.*\) never arrived from trainer rank 1"):
        parts(skip=(1, 1)).apply(engine)
    repeated = parts()
    repeated.add(2, 0, 0, pack(weights, manifest, 0, 0))
    with pytest.raises(IncompleteVersionError, match="bucket 0 from rank 0 arrived twice"):
        repeated.apply(engine)
    foreign = parts(skip=(0, 0))
    foreign.add(1, 0, 0, pack(weights, manifest, 0, 0))
    with pytest.raises(IncompleteVersionError, match="a part of version 1 arrived during version 2"):
        foreign.apply(engine)
    truncated = parts(skip=(0, 0))
    truncated.add(2, 0, 0, pack(weights, manifest, 0, 0)[:-4])
    with pytest.raises(IncompleteVersionError, match="bucket 0 from rank 0 has"):
        truncated.apply(engine)
    assert all(torch.equal(tensor, before[name]) for name, tensor in target.model.state_dict().items())


def test_disk_transport_loads_the_newest_whole_version(tmp_path: Path) -> None:
    receiver = DiskReceiver(tmp_path)
    with pytest.raises(FileNotFoundError, match="no weight version"):
        receiver.receive()
    old, new = tiny_qwen2(seed=1).model, tiny_qwen2(seed=3).model
    for rank in (1, 0):  # rank 0 writes the manifest, last
        DiskSender(tmp_path, rank, 2, bucket_bytes=300_000).send(old, version=1)
        DiskSender(tmp_path, rank, 2, bucket_bytes=300_000).send(new, version=2)
    target = tiny_qwen2(seed=2)
    engine = HFEngine(target.model, target.tokenizer)
    assert receiver.latest() == 2 and receiver.receive().apply(engine) == 2
    torch.testing.assert_close(logprobs(target.model), logprobs(new), rtol=0, atol=0)
    next(tmp_path.glob("v00000001/b00002-r0001")).unlink()
    with pytest.raises(IncompleteVersionError, match=r"bucket 2 .* never arrived from trainer rank 1"):
        receiver.receive(1).apply(engine)
    torch.testing.assert_close(logprobs(target.model), logprobs(new), rtol=0, atol=0)


# --- broadcast over gloo: 2 FSDP2 trainer ranks and 2 replicas, each its own process -----------------

TRAINERS, REPLICAS = 2, 2


def _samples() -> list[Sample]:
    generator = torch.Generator().manual_seed(0)
    return [
        Sample(
            tuple(torch.randint(0, 1000, (8,), generator=generator).tolist()),
            tuple(torch.randint(0, 1000, (6,), generator=generator).tolist()),
            tuple([-7.0] * 6),
            advantage,
        )
        for advantage in (1.0, -1.0, 0.5, -0.5)
    ]


def _trainer(rank: int, ports: tuple[int, int], results: mp.Queue) -> None:
    import torch.distributed as dist
    from azr.trainer import Totals, TrainConfig, Trainer, micro_batches
    from azr.trainer_group import split_by_tokens
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{ports[0]}", rank=rank, world_size=TRAINERS)
    store = dist.TCPStore("127.0.0.1", ports[1], None, rank == 0, datetime.timedelta(minutes=2), False)
    sender = BroadcastSender(store, rank, TRAINERS, REPLICAS, bucket_bytes=300_000)
    model = tiny_qwen2(seed=1).model
    mesh = init_device_mesh("cpu", (TRAINERS,))

    def shard(objective: torch.nn.Module) -> None:
        for layer in model.get_decoder().layers:
            fully_shard(layer, mesh=mesh)
        fully_shard(objective, mesh=mesh)

    trainer = Trainer(model, TrainConfig(lr=1e-2, gradient_checkpointing=False), shard=shard, ranks=TRAINERS)
    samples = _samples()
    trainer.step_batches(micro_batches(split_by_tokens(samples, TRAINERS)[rank], 4096), Totals.of(samples))
    manifest = sender.send(model, version=1)
    whole = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True))
    if rank == 0:
        reference = tiny_qwen2(seed=1).model
        reference.load_state_dict(whole)
        results.put(("trainer", logprobs(reference).tolist(), len(manifest.buckets)))
    if rank == 1:  # version 2 with one of this rank's buckets left out
        original = sender.messages
        sender.messages = lambda state, manifest: (m for m in original(state, manifest) if m[0] != 1)
    sender.send(model, version=2)
    dist.barrier()
    dist.destroy_process_group()


def _replica(replica: int, ports: tuple[int, int], results: mp.Queue) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    store = dist.TCPStore("127.0.0.1", ports[1], None, False, datetime.timedelta(minutes=2), False)
    receiver = BroadcastReceiver(store, replica, TRAINERS, REPLICAS)
    policy = tiny_qwen2(seed=5 + replica)  # weights unlike the trainer's until a version arrives
    engine = HFEngine(policy.model, policy.tokenizer)
    version = receiver.receive().apply(engine)
    synced = logprobs(policy.model)
    try:
        receiver.receive().apply(engine)
        error = ""
    except IncompleteVersionError as refused:
        error = str(refused)
    # Plain lists: a tensor put on the queue would be shared through a file descriptor of this process.
    results.put((f"replica {replica}", synced.tolist(), version, error, logprobs(policy.model).tolist()))


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_broadcast_sync_over_gloo_from_a_sharded_trainer_reaches_every_replica() -> None:
    context = mp.get_context("spawn")
    results = context.Queue()
    ports = (_free_port(), _free_port())
    processes = [context.Process(target=_trainer, args=(rank, ports, results)) for rank in range(TRAINERS)]
    processes += [context.Process(target=_replica, args=(replica, ports, results)) for replica in range(REPLICAS)]
    for process in processes:
        process.start()
    got = {}
    for _ in range(1 + REPLICAS):
        item = results.get(timeout=300)
        got[item[0]] = item[1:]
    for process in processes:
        process.join(timeout=60)
        assert process.exitcode == 0
    trained, buckets = torch.tensor(got["trainer"][0]), got["trainer"][1]
    assert buckets > 2
    untrained = logprobs(tiny_qwen2(seed=1).model)
    assert not torch.allclose(trained, untrained)  # the update moved the weights
    for replica in range(REPLICAS):
        synced, version, error, after = got[f"replica {replica}"]
        synced, after = torch.tensor(synced), torch.tensor(after)
        assert version == 1
        torch.testing.assert_close(synced, trained, rtol=0, atol=1e-6)
        assert "version 2 is incomplete" in error and "bucket 1" in error and "trainer rank 1" in error
        torch.testing.assert_close(after, synced, rtol=0, atol=0)  # the refused version changed nothing


def test_a_member_that_never_comes_gives_the_formation_up_for_everyone() -> None:
    """Gloo's rendezvous would hold the members who came until its timeout (10 minutes) when one
    died before it came. Here the member that knows (the driver, whose `failed()` watches the
    others' calls) gives the epoch up, and a member still waiting stops too."""
    import torch.distributed as dist

    store = dist.TCPStore("127.0.0.1", 0, None, True, datetime.timedelta(minutes=1), False)
    with pytest.raises(TransferAbandoned, match="epoch 3"):
        BroadcastReceiver(store, 0, ranks=1, replicas=3, backend="gloo", epoch=3, failed=lambda: True)
    with pytest.raises(TransferAbandoned, match="epoch 3"):  # replica 1 came; replica 2 never will
        BroadcastReceiver(store, 1, ranks=1, replicas=3, backend="gloo", epoch=3)
