"""Task-Relative REINFORCE++ advantages (paper §3.3.5): each reward is normalised against the other
rewards of its task-role (6 groups: propose/solve × deduction/abduction/induction)."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Hashable, Sequence


def task_relative_advantages(
    rewards: Sequence[float],
    groups: Sequence[Hashable],
    eps: float = 1e-6,
    *,
    token_counts: Sequence[int] | None = None,
) -> list[float]:
    """`(r - mean) / (std + eps)` within each group, with the unbiased (n − 1) standard deviation.

    A group of one gets 0. With `token_counts`, the group statistics are token-weighted as in the
    reference code (each reward counts once per response token, so longer answers weigh more);
    by default each sequence counts once, as in the paper.
    """
    if len(rewards) != len(groups):
        raise ValueError(f"{len(rewards)} rewards but {len(groups)} groups")
    if token_counts is not None and len(token_counts) != len(rewards):
        raise ValueError(f"{len(rewards)} rewards but {len(token_counts)} token counts")
    weights = [1] * len(rewards) if token_counts is None else list(token_counts)
    if any(w < 0 for w in weights):
        raise ValueError("token counts must be non-negative")
    members: dict[Hashable, list[int]] = defaultdict(list)
    for index, group in enumerate(groups):
        members[group].append(index)
    advantages = [0.0] * len(rewards)
    for indices in members.values():
        total = sum(weights[i] for i in indices)
        if len(indices) < 2 or total < 2:
            continue
        mean = sum(weights[i] * rewards[i] for i in indices) / total
        variance = sum(weights[i] * (rewards[i] - mean) ** 2 for i in indices) / (total - 1)
        std = math.sqrt(variance)
        for i in indices:
            advantages[i] = (rewards[i] - mean) / (std + eps)
    return advantages
