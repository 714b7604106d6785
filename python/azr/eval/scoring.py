"""Scores from verdicts: pass@1 and the unbiased pass@k estimator per benchmark, and the averages of
the paper's Table 1 (code average, math average, and their mean). Pure functions over plain lists.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

# The columns of the paper's Table 1 that each average is taken over. The paper reports HumanEval+;
# plain HumanEval stands in for it when only that was evaluated.
CODE_AVERAGE = ("humaneval+", "mbpp+", "livecodebench")
MATH_AVERAGE = ("aime24", "aime25", "amc23", "math500", "minerva", "olympiadbench")


def pass_at_k(n: int, c: int, k: int) -> float:
    """The probability that at least one of `k` samples drawn without replacement from `n`, of which
    `c` are correct, is correct: 1 - C(n-c, k) / C(n, k) (Chen et al., 2021), computed as a product
    so that large `n` does not overflow."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass@k needs 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    return 1.0 - math.prod(1.0 - k / i for i in range(n - c + 1, n + 1))


def benchmark_score(correct: Sequence[Sequence[bool]]) -> dict[str, Any]:
    """`{"score", "n", "k"}` for one benchmark from each item's per-sample verdicts: the score is
    pass@1 in percent (the mean over samples, which is the unbiased pass@1); with k > 1 samples per
    item, `"pass@k"` too."""
    if not correct:
        raise ValueError("no items to score")
    k = len(correct[0])
    if k < 1 or any(len(samples) != k for samples in correct):
        raise ValueError("every item needs the same number of samples (at least one)")
    score: dict[str, Any] = {
        "score": 100.0 * sum(pass_at_k(k, sum(s), 1) for s in correct) / len(correct),
        "n": len(correct),
        "k": k,
    }
    if k > 1:
        score[f"pass@{k}"] = 100.0 * sum(pass_at_k(k, sum(s), k) for s in correct) / len(correct)
    return score


def table_averages(scores: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """The code, math and overall averages as Table 1 computes them: the code average over
    HumanEval+, MBPP+ and LiveCodeBench, the math average over the six math sets, the overall
    average the mean of those two. Each lists the benchmarks it was taken over (those evaluated)."""
    code = [b for b in CODE_AVERAGE if b in scores]
    if "humaneval+" not in scores and "humaneval" in scores:
        code.insert(0, "humaneval")
    averages: dict[str, dict[str, Any]] = {}
    for name, members in (("code", code), ("math", [b for b in MATH_AVERAGE if b in scores])):
        if members:
            averages[name] = {"score": sum(scores[b]["score"] for b in members) / len(members), "over": members}
    if averages:
        parts = list(averages)
        averages["overall"] = {"score": sum(averages[p]["score"] for p in parts) / len(parts), "over": parts}
    return averages
