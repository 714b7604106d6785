"""A reward function for TRL's `GRPOTrainer`: code in each completion, run against the tests in a
dataset column, in the sandbox, one executor call per batch.

    from azr.integrations.trl import code_tests_reward
    trainer = GRPOTrainer(model, reward_funcs=[code_tests_reward(tests_column="tests")], ...)

TRL passes the dataset's columns to reward functions as keyword arguments (lists, one value per
completion); completions are strings or, for conversational data, lists of messages.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from azr.executor import Executor, ExecutorProtocol
from azr.integrations.code_tests import TestResult, extract_code, run_tests


def code_tests_reward(
    executor: ExecutorProtocol | None = None,
    *,
    tests_column: str = "tests",
    partial_credit: bool = False,
    timeout_s: float = 10.0,
    details: list[TestResult] | None = None,
) -> Callable[..., list[float]]:
    """A TRL reward function: 1.0 when the completion's last Python block passes all its tests
    (with `partial_credit`, the share of tests passed), else 0.0. `executor`: a local `Executor`
    (default: all cores) or a `RemoteExecutor` fleet. `details`, when given, receives each call's
    per-sample results (passed, total, reason)."""
    runner = executor or Executor(timeout_s=timeout_s)

    def reward(completions: list[Any], **columns: Any) -> list[float]:
        if tests_column not in columns:
            raise KeyError(f"the dataset has no {tests_column!r} column (columns: {sorted(columns)})")
        texts = [c if isinstance(c, str) else c[-1]["content"] for c in completions]
        results = run_tests(runner, [extract_code(t) for t in texts], columns[tests_column], timeout_s=timeout_s)
        if details is not None:
            details.extend(results)
        return [r.score(partial_credit) for r in results]

    reward.__name__ = f"azr_{tests_column}_reward"
    return reward
