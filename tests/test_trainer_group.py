"""The policy update on a group of Ray trainer workers (FSDP2 over gloo on CPU, a local Ray with
logical CPUs over-committed): the same update as one process, checkpoints that any number of
workers read, and failures that stop the run instead of hanging it."""

from __future__ import annotations

import dataclasses
import random
import subprocess
import sys
import threading
import time

import pytest
import torch

pytest.importorskip("ray", reason='Ray is not installed (pip install -e ".[cluster]")')

from azr.config import SelfPlayConfig, load_config
from azr.executor import Executor
from azr.models import tiny_qwen2
from azr.selfplay import SelfPlay
from azr.timeline import read_step
from azr.trainer import Sample, TrainConfig, Trainer
from azr.trainer_group import TrainerGroup, TrainerGroupError, split_by_tokens

from .scripted import ScriptedEngine, mixed_policy

CONFIG = dataclasses.replace(load_config("smoke"), model="tiny-qwen2", seed=3, trainer_workers=2, lr=1e-3)
TRAIN = TrainConfig(lr=1e-3, micro_batch_tokens=64, gradient_checkpointing=True, entropy_coef=0.01)


def samples(seed: int = 0, count: int = 9) -> list[Sample]:
    rng = random.Random(seed)
    result = []
    for _ in range(count):
        prompt = tuple(rng.randrange(150_000) for _ in range(rng.randint(3, 20)))
        completion = tuple(rng.randrange(150_000) for _ in range(rng.randint(1, 15)))
        old = tuple(-rng.uniform(8, 14) for _ in completion)
        result.append(Sample(prompt, completion, old, rng.uniform(-1.5, 1.5)))
    return result


def group(config: SelfPlayConfig = CONFIG, **kwargs) -> TrainerGroup:
    return TrainerGroup.start(config, TRAIN, checkpoint=None, last_checkpoint=lambda: "none yet", **kwargs)


def test_splits_are_balanced_by_tokens_and_keep_order() -> None:
    batch = samples(count=20)
    parts = split_by_tokens(batch, 3)
    assert sorted(s for part in parts for s in map(batch.index, part)) == list(range(20))
    assert all(list(map(batch.index, part)) == sorted(map(batch.index, part)) for part in parts)
    loads = [sum(len(s.prompt_ids) + len(s.completion_ids) for s in part) for part in parts]
    longest = max(len(s.prompt_ids) + len(s.completion_ids) for s in batch)
    assert max(loads) - min(loads) <= longest
    assert split_by_tokens(batch[:1], 3)[1:] == [[], []]


@pytest.mark.parametrize("aggregation", ["token", "sequence"])
def test_two_workers_make_the_single_process_update(aggregation: str) -> None:
    train = dataclasses.replace(TRAIN, aggregation=aggregation)
    single = tiny_qwen2(seed=3)
    expected = Trainer(single.model, train).step(samples())
    trainers = TrainerGroup.start(CONFIG, train, checkpoint=None, last_checkpoint=lambda: "none yet")
    try:
        stats = trainers.step(samples())
        updated = tiny_qwen2(seed=99).model
        trainers.publish(updated)
    finally:
        trainers.shutdown()
    for name, value in expected.items():
        assert stats[name] == pytest.approx(value, rel=1e-4, abs=1e-6), name
    whole = torch.cat([p.detach().flatten() for p in single.model.parameters()])
    sharded = torch.cat([p.detach().flatten() for p in updated.parameters()])
    assert float((whole - sharded).norm() / whole.norm()) <= 1e-5
    # Per tensor, a little looser. The key biases get gradients at the level of rounding noise
    # (attention ignores a shift of the keys), below Adam's eps, so Adam's first step moves them by
    # lr·g/eps: a small fraction of a real step whose value depends on the order of summation (up to
    # 1.3e-6 with lr 1e-3 on one host, 1e-6 on others). Bounded at 1% of a real step.
    for (name, a), b in zip(single.model.named_parameters(), updated.parameters(), strict=True):
        if name.endswith("k_proj.bias"):
            assert float((a - b).abs().max()) <= TRAIN.lr * 1e-2, name
        else:
            assert float((a - b).norm() / a.norm()) <= 1e-4, name


def parameters(model: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.parameters()]


def assert_close_update(a: list[torch.Tensor], b: list[torch.Tensor]) -> None:
    whole, other = torch.cat([x.flatten() for x in a]), torch.cat([x.flatten() for x in b])
    assert float((whole - other).norm() / whole.norm()) <= 1e-5


def test_checkpoints_move_between_world_sizes(tmp_path) -> None:
    """Saved by one process, resumed by two, and back: the loaded weights are the saved ones exactly,
    and the next step is the one an uninterrupted trainer makes."""
    single = Trainer(tiny_qwen2(seed=3).model, TRAIN)
    single.step(samples(1))
    single.save(tmp_path / "one")
    trainers = group()
    try:
        trainers.load(tmp_path / "one")  # 1 → 2
        loaded = tiny_qwen2(seed=99).model
        trainers.publish(loaded)
        assert all(torch.equal(a, b) for a, b in zip(parameters(single.model), parameters(loaded), strict=True))
        trainers.step(samples(2))
        trainers.save(tmp_path / "two")
        trainers.publish(loaded)
    finally:
        trainers.shutdown()
    single.step(samples(2))
    assert_close_update(parameters(single.model), parameters(loaded))
    back = Trainer(tiny_qwen2(seed=99).model, TRAIN)
    back.load(tmp_path / "two")  # 2 → 1
    assert all(torch.equal(a, b) for a, b in zip(parameters(loaded), parameters(back.model), strict=True))
    back.step(samples(3))
    single.step(samples(3))
    assert_close_update(parameters(single.model), parameters(back.model))


def test_a_killed_worker_stops_the_step_with_its_name_and_the_last_checkpoint() -> None:
    import ray

    heavy = [
        Sample(tuple(range(1, 150)), tuple(range(200, 300)), tuple([-10.0] * 100), 1.0 if i % 2 else -1.0)
        for i in range(60)
    ]
    trainers = TrainerGroup.start(CONFIG, TRAIN, checkpoint=None, last_checkpoint=lambda: "runs/x/checkpoints/step-7")
    victim = trainers.workers[1]
    killer = threading.Timer(1.0, lambda: ray.kill(victim))
    started = time.monotonic()
    killer.start()
    with pytest.raises(TrainerGroupError, match=r"(?s)trainer worker 1 \(Ray actor \w+\) died during step.*step-7"):
        trainers.step(heavy)
    assert time.monotonic() - started < 60
    with pytest.raises(TrainerGroupError, match="stopped"):
        trainers.step(heavy)


def test_without_ray_more_trainer_workers_is_a_clear_error() -> None:
    script = (
        "import sys; sys.modules['ray'] = None\nfrom azr.cluster import require_ray\nrequire_ray('trainer_workers=2')\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode != 0
    assert 'trainer_workers=2 needs Ray, which is not installed: pip install -e ".[cluster]"' in result.stderr


def selfplay_step(out, trainer_workers: int) -> dict[str, float]:
    config = dataclasses.replace(
        load_config("smoke"),
        model="tiny-qwen2",
        lr=1e-3,
        max_response_tokens=24,
        guided_format=False,
        trainer_workers=trainer_workers,
    )
    policy = tiny_qwen2(seed=0)
    engine = ScriptedEngine(policy, mixed_policy(config.induction_inputs))
    run = SelfPlay(config, out, policy=policy, engine=engine, executor=Executor(timeout_s=5.0), progress=False)
    try:
        metrics = run.step()
        run.save_checkpoint()
    finally:
        if isinstance(run.trainer, TrainerGroup):
            run.trainer.shutdown()
    return {name: value for name, value in metrics.items() if not name.startswith("seconds/")}


def test_a_self_play_step_on_trainer_workers_matches_the_in_process_one(tmp_path) -> None:
    """The distributed driver with one worker gives the in-process driver's numbers for the same
    seed, and with two the same metrics (the update across two ranks is the same update)."""
    local = selfplay_step(tmp_path / "local", 0)
    one = selfplay_step(tmp_path / "one", 1)
    two = selfplay_step(tmp_path / "two", 2)
    assert one.pop("train/trainer_workers") == 1.0 and two.pop("train/trainer_workers") == 2.0
    assert one.keys() == local.keys() == two.keys()
    # Each rank's micro-batches are in the driver's timeline of the step.
    _, spans = read_step(tmp_path / "two" / "timeline.jsonl")
    assert {"trainer 0", "trainer 1"} <= {span.actor for span in spans if span.name.startswith("micro-batch")}
    for name, value in local.items():
        assert one[name] == pytest.approx(value, rel=1e-5, abs=1e-7), name
        assert two[name] == pytest.approx(value, rel=1e-4, abs=1e-6), name
    # A checkpoint written by two workers is read by one process.
    exported = SelfPlay.resume(
        dataclasses.replace(load_config("smoke"), model="tiny-qwen2"), tmp_path / "two", executor=Executor(workers=1)
    )
    assert exported.step_index == 1
