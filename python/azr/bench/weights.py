"""Weight sync to the rollout replicas: Ray's object store against a broadcast from the trainer ranks.

    python -m azr.bench.weights                       # SmolLM2-135M, 2 trainer workers, 1 and 2 replicas
    python -m azr.bench.weights --model tiny-qwen2 --replicas 1 2 4 --syncs 5

Both transports start from the trainer group's weights and end with every replica holding them,
loaded into its engine:

- `object-store` (`weight_transport=object-store`): every rank sends its shards to the driver's
  model (`TrainerGroup.publish`), the driver puts one copy in the object store, every replica reads
  and loads it (`RolloutFleet.sync_weights`);
- `broadcast` (`weight_transport=broadcast`): every rank sends its shards once, over gloo groups
  spanning it, the driver and the replicas (`TrainerGroup.publish(model, fleet, version)`); each
  replica joins them into the model and loads it.

The first sync of each (the groups forming, first allocations) is not timed; then `--syncs` of each,
alternating, in one process. The table: seconds a sync, the bytes the receivers took a second
(the model's bytes times the receivers: the replicas, and the driver for both), and broadcast's time
over the object store's. On one machine both move bytes through memory and loopback; across nodes
the object store's copies all leave from the driver's node, the broadcast's from every rank's.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from collections.abc import Sequence

import torch

from azr.config import SelfPlayConfig, load_config
from azr.fleet import RolloutFleet
from azr.models import load_policy
from azr.trainer_group import TrainerGroup


def measure(config: SelfPlayConfig, model: torch.nn.Module, syncs: int) -> dict[str, list[float]]:
    """Seconds of each sync of each transport, on a fleet and trainer group started for `config`."""
    from azr.selfplay import train_config

    fleet = RolloutFleet.start(config)
    trainers = TrainerGroup.start(config, train_config(config), checkpoint=None, last_checkpoint=lambda: "none")

    def by_object_store() -> None:
        trainers.publish(model)
        fleet.sync_weights(model)

    def by_broadcast() -> None:
        version = (fleet.version or 0) + 1
        trainers.publish(model, fleet, version)
        # Received and staged: each replica loads it before its next call (as before a chunk).
        fleet.ray.get([r.actor.check_weights.remote(version, None) for r in fleet.replicas])

    transports = {"object-store": by_object_store, "broadcast": by_broadcast}
    times: dict[str, list[float]] = {name: [] for name in transports}
    try:
        for sync in transports.values():  # untimed: the groups form, first allocations
            sync()
        for _ in range(syncs):
            for name, sync in transports.items():
                started = time.perf_counter()
                sync()
                times[name].append(time.perf_counter() - started)
    finally:
        trainers.shutdown()
        fleet.shutdown()
    return times


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m azr.bench.weights", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="smollm2-135m-instruct", help="model name or directory")
    parser.add_argument("--trainer-workers", type=int, default=2, help="trainer ranks sending (default 2)")
    parser.add_argument("--replicas", type=int, nargs="+", default=[1, 2], help="rollout replica counts to measure")
    parser.add_argument("--syncs", type=int, default=3, help="timed syncs of each transport, after one untimed")
    args = parser.parse_args(argv)
    if args.trainer_workers < 1 or args.syncs < 1 or min(args.replicas) < 1:
        parser.error("--trainer-workers, --syncs and every --replicas must be at least 1")

    model = load_policy(args.model).model
    size = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    print(
        f"Weight sync of {args.model} ({size / 1e6:,.0f} MB) from {args.trainer_workers} trainer ranks to the "
        f"driver and the replicas; mean of {args.syncs} syncs after an untimed one.\n"
    )
    rows = []
    for replicas in args.replicas:
        config = dataclasses.replace(
            load_config("smoke"),
            model=args.model,
            trainer_workers=args.trainer_workers,
            rollout_replicas=replicas,
            weight_transport="broadcast",
            # The transports' cost, not an engine's: replicas load into the HF engine (a plain copy).
            rollout_engine="hf",
        )
        times = measure(config, model, args.syncs)
        means = {name: sum(values) / len(values) for name, values in times.items()}
        for name, seconds in means.items():
            rows.append((replicas, name, seconds, size * (replicas + 1) / seconds, seconds / means["object-store"]))
            print(f"  {replicas} replicas, {name}: {seconds:.3f} s/sync", file=sys.stderr)
    print("| replicas | transport | s/sync | received GB/s | ÷ object store |")
    print("| ---: | --- | ---: | ---: | ---: |")
    for replicas, name, seconds, rate, ratio in rows:
        print(f"| {replicas} | {name} | {seconds:.3f} | {rate / 1e9:.2f} | {ratio:.2f} |")


if __name__ == "__main__":
    main()
