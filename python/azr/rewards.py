"""Rewards of Absolute Zero (paper §3.2, Eqs. 4–6): pure functions of what a completion achieved."""

from __future__ import annotations

# The reference code gives −0.5 to a valid proposal that every solver sample solved, or none did;
# the paper gives 0. `proposer_reward(..., extreme=REFERENCE_CODE_EXTREME)` reproduces the code.
PAPER_EXTREME = 0.0
REFERENCE_CODE_EXTREME = -0.5


def solver_reward(correct: bool, formatted: bool) -> float:
    """1 for a correct answer, −0.5 for a well-formatted wrong one, −1 when the format is broken."""
    if not formatted:
        return -1.0
    return 1.0 if correct else -0.5


def proposer_reward(formatted: bool, valid: bool, solve_rate: float | None, *, extreme: float = PAPER_EXTREME) -> float:
    """Learnability reward of a proposed task.

    −1 when the completion is not formatted, −0.5 when it is but the task is not valid (does not
    parse, run, stay deterministic or produce an output), and otherwise `1 − solve_rate` for a task
    the solver sometimes solves, `extreme` (0 in the paper) for one it always or never solves.
    """
    if not formatted:
        return -1.0
    if not valid:
        return -0.5
    if solve_rate is None:
        raise ValueError("a valid proposal needs the solve rate of its solver samples")
    if not 0.0 <= solve_rate <= 1.0:
        raise ValueError(f"solve_rate must be between 0 and 1, got {solve_rate}")
    return 1.0 - solve_rate if 0.0 < solve_rate < 1.0 else extreme
