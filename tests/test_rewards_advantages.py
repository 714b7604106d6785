"""Rewards (paper Eqs. 4–6) and Task-Relative REINFORCE++ advantages."""

from __future__ import annotations

import math
import statistics

import pytest
from azr.advantages import task_relative_advantages
from azr.rewards import REFERENCE_CODE_EXTREME, proposer_reward, solver_reward


def test_solver_reward() -> None:
    assert solver_reward(correct=True, formatted=True) == 1.0
    assert solver_reward(correct=False, formatted=True) == -0.5
    assert solver_reward(correct=False, formatted=False) == -1.0
    assert solver_reward(correct=True, formatted=False) == -1.0


@pytest.mark.parametrize(
    ("formatted", "valid", "solve_rate", "paper", "reference"),
    [
        (False, False, None, -1.0, -1.0),
        (True, False, None, -0.5, -0.5),
        (True, True, 0.25, 0.75, 0.75),
        (True, True, 0.5, 0.5, 0.5),
        (True, True, 0.0, 0.0, -0.5),
        (True, True, 1.0, 0.0, -0.5),
    ],
)
def test_proposer_reward(
    formatted: bool, valid: bool, solve_rate: float | None, paper: float, reference: float
) -> None:
    assert proposer_reward(formatted, valid, solve_rate) == paper
    assert proposer_reward(formatted, valid, solve_rate, extreme=REFERENCE_CODE_EXTREME) == reference


def test_proposer_reward_refuses_nonsense() -> None:
    with pytest.raises(ValueError, match="needs the solve rate"):
        proposer_reward(True, True, None)
    with pytest.raises(ValueError, match="between 0 and 1"):
        proposer_reward(True, True, 1.5)


def test_advantages_are_normalised_within_each_group() -> None:
    rewards = [1.0, -0.5, -0.5, 0.75, 0.0, 3.0]
    groups = ["solve", "solve", "solve", "propose", "propose", "alone"]
    advantages = task_relative_advantages(rewards, groups)
    solve = rewards[:3]
    expected = [(r - statistics.mean(solve)) / (statistics.stdev(solve) + 1e-6) for r in solve]
    assert advantages[:3] == pytest.approx(expected)
    assert advantages[3:5] == pytest.approx([1 / math.sqrt(2), -1 / math.sqrt(2)], rel=1e-5)
    assert advantages[5] == 0.0  # a group of one
    assert sum(advantages[:3]) == pytest.approx(0.0, abs=1e-9)


def test_equal_rewards_give_zero_advantages() -> None:
    assert task_relative_advantages([-1.0, -1.0, -1.0], [0, 0, 0]) == [0.0, 0.0, 0.0]


def test_groups_may_be_any_hashable_and_interleaved() -> None:
    rewards = [1.0, 0.0, 1.0, 0.0]
    groups = [("solve", "deduction"), ("propose", "deduction"), ("solve", "deduction"), ("propose", "deduction")]
    assert task_relative_advantages(rewards, groups) == [0.0, 0.0, 0.0, 0.0]


def test_token_weighted_statistics_follow_the_reference_code() -> None:
    rewards, groups, lengths = [1.0, 0.0], ["g", "g"], [3, 1]
    # Token-weighted: the first reward counts three times, so the mean is 0.75.
    tokens = [1.0, 1.0, 1.0, 0.0]
    std = statistics.stdev(tokens)
    advantages = task_relative_advantages(rewards, groups, token_counts=lengths)
    assert advantages == pytest.approx([(1 - 0.75) / (std + 1e-6), (0 - 0.75) / (std + 1e-6)])
    assert advantages != task_relative_advantages(rewards, groups)


def test_mismatched_lengths_are_refused() -> None:
    with pytest.raises(ValueError, match="2 rewards but 1 groups"):
        task_relative_advantages([1.0, 2.0], ["a"])
    with pytest.raises(ValueError, match="token counts"):
        task_relative_advantages([1.0, 2.0], ["a", "a"], token_counts=[1])
