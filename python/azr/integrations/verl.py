"""veRL's custom reward function: `compute_score(data_source, solution_str, ground_truth, extra_info)`,
and `compute_score_batch` for its batch reward manager. `ground_truth` holds the tests (any format
`CodeTests.parse` reads: stdin/stdout `{"inputs", "outputs"}` as veRL's code data stores them, or
assert lines), as a dict or its JSON text.

    # veRL config
    custom_reward_function:
      path: <site-packages>/azr/integrations/verl.py
      name: compute_score            # or compute_score_batch with reward_model.reward_manager=batch

Programs run on this machine's cores, or on the executor fleet named by `AZR_EXECUTOR_URLS`
(comma-separated, with the token in `AZR_EXECUTOR_TOKEN_FILE`); `AZR_PARTIAL_CREDIT=1` scores the
share of tests passed instead of all-or-nothing.
"""

from __future__ import annotations

import os
from functools import cache
from pathlib import Path
from typing import Any

from azr.executor import Executor, ExecutorProtocol, RemoteExecutor
from azr.integrations.code_tests import extract_code, run_tests


@cache
def default_executor() -> ExecutorProtocol:
    urls = [u.strip() for u in os.environ.get("AZR_EXECUTOR_URLS", "").split(",") if u.strip()]
    if not urls:
        return Executor(timeout_s=10.0)
    token_file = os.environ.get("AZR_EXECUTOR_TOKEN_FILE")
    return RemoteExecutor(urls, token=Path(token_file).read_text().strip() if token_file else None)


def compute_score(
    data_source: str, solution_str: str, ground_truth: Any, extra_info: Any = None, *, return_details: bool = False
) -> float | dict[str, Any]:
    """The score of one completion; with `return_details`, a dict with the score, the tests passed
    and the reason (veRL logs the dict's entries)."""
    [score] = compute_score_batch(
        [data_source], [solution_str], [ground_truth], [extra_info], return_details=return_details
    )
    return score


def compute_score_batch(
    data_sources: list[str],
    solution_strs: list[str],
    ground_truths: list[Any],
    extra_infos: list[Any] | None = None,
    *,
    return_details: bool = False,
) -> list[float] | list[dict[str, Any]]:
    """Scores of a batch of completions, with one executor call."""
    partial = os.environ.get("AZR_PARTIAL_CREDIT", "") not in ("", "0")
    results = run_tests(default_executor(), [extract_code(s) for s in solution_strs], ground_truths)
    if not return_details:
        return [r.score(partial) for r in results]
    return [{"score": r.score(partial), "passed": r.passed, "total": r.total, "reason": r.reason} for r in results]
