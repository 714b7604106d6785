"""Ray, the cluster's scheduler: an optional dependency (`pip install -e ".[cluster]"`).

`ray_address=""` starts a Ray of its own for the run (on this machine, with logical CPUs
over-committed so that small tests fit on two cores); `"auto"` joins the cluster `ray start` made;
anything else is the address of a head node. Actors are placed through placement groups.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from azr.config import SelfPlayConfig

INSTALL_HINT = 'pip install -e ".[cluster]"  (or: pip install "ray>=2.50")'
# Logical CPUs of a Ray started for the run, at least: enough for trainer workers and rollout
# replicas side by side in small runs and tests (they are scheduling tokens, not cores).
LOCAL_LOGICAL_CPUS = 6


def actors_needed(trainer_workers: int, rollout_replicas: int) -> int:
    """Logical CPUs a run's actors take (one each), plus one for the driver's own tasks."""
    return trainer_workers + rollout_replicas + 1


def require_ray(why: str) -> Any:
    """The `ray` module, or a clear error saying what needs it and how to install it."""
    try:
        import ray
    except ImportError:
        raise RuntimeError(f"{why} needs Ray, which is not installed: {INSTALL_HINT}") from None
    return ray


def connect(address: str, *, logical_cpus: int, why: str) -> Any:
    """Ray, started or joined as `address` says (once per process)."""
    ray = require_ray(why)
    if not ray.is_initialized():
        # Token authentication is for shared clusters; a Ray started for one run is local to it.
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
        if address:
            ray.init(address=address, log_to_driver=True)
        else:
            cpus = max(logical_cpus, os.cpu_count() or 1, LOCAL_LOGICAL_CPUS)
            ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=True)
    return ray


def placement(ray: Any, bundles: int, *, gpus: int, cpus: float = 1.0) -> Any:
    """A placement group of `bundles` bundles (one per actor), packed onto as few nodes as fit."""
    from ray.util.placement_group import placement_group

    resources = {"CPU": cpus, **({"GPU": gpus} if gpus else {})}
    total = ray.cluster_resources()
    for name, amount in resources.items():
        if total.get(name, 0) < amount * bundles:
            raise RuntimeError(
                f"the Ray cluster has {total.get(name, 0):g} {name} in all; {bundles} actors need "
                f"{amount * bundles:g} (start Ray with more, or ask for fewer workers or replicas)"
            )
    group = placement_group([dict(resources) for _ in range(bundles)], strategy="PACK")
    ray.get(group.ready(), timeout=600)
    return group


def reserve(config: SelfPlayConfig, count: int, why: str, *, gpus_each: int = 1) -> tuple[Any, Any, int]:
    """For `count` actors of a run: Ray (started or joined as `ray_address` says), a placement group
    of `count` bundles, and the GPUs per bundle (`gpus_each`, unless the run is on CPU or the cluster
    lacks them)."""
    ray = connect(
        config.ray_address, logical_cpus=actors_needed(config.trainer_workers, config.rollout_replicas), why=why
    )
    on_gpus = config.device != "cpu" and ray.cluster_resources().get("GPU", 0) >= count * gpus_each
    gpus = gpus_each if on_gpus else 0
    return ray, placement(ray, count, gpus=gpus), gpus


def start_actors(
    ray: Any,
    actor_class: type,
    group: Any,
    arguments: list[tuple],
    *,
    gpus: int,
    restarts: int = 0,
    threads: dict[str, int] | None = None,
) -> list:
    """One actor of `actor_class` on each bundle of `group` (bundle i gets `arguments[i]`), a CPU
    and `gpus` GPUs each; Ray restarts one that dies up to `restarts` times. `threads`: Ray
    concurrency groups (name: threads), whose calls run beside the actor's others."""
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    remote = ray.remote(concurrency_groups=threads)(actor_class) if threads else ray.remote(actor_class)
    return [
        remote.options(
            num_cpus=1,
            num_gpus=gpus,
            max_restarts=restarts,
            scheduling_strategy=PlacementGroupSchedulingStrategy(placement_group=group, placement_group_bundle_index=i),
            runtime_env={"env_vars": {"TOKENIZERS_PARALLELISM": "false"}},
        ).remote(*args)
        for i, args in enumerate(arguments)
    ]
