"""Evaluation runs: a model's answers from a rollout engine (or answers given in a file), judged,
as one record per sample and a score per benchmark.

    records = evaluate(engine, executor, items, EvalSettings(samples=1))   # greedy, pass@1
    records = score_predictions(executor, items, predictions("answers.jsonl"))
    scores = results(records)                                               # results.json's content
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from azr.eval.benchmarks import Item
from azr.eval.judging import answer_of, judge
from azr.eval.scoring import benchmark_score, table_averages
from azr.executor import Executor, ExecutorProtocol
from azr.rollout import RolloutEngine, SamplingParams

ProgressCallback = Callable[[int, int], None]


@dataclass(frozen=True)
class EvalSettings:
    samples: int = 1  # per item; pass@k is reported for k = samples
    temperature: float = 0.0  # 0: greedy, as the paper's evaluation
    max_new_tokens: int = 4096

    def __post_init__(self) -> None:
        if self.samples < 1:
            raise ValueError(f"samples must be at least 1, got {self.samples}")
        if self.temperature < 0:
            raise ValueError(f"temperature must not be negative, got {self.temperature}")
        if self.samples > 1 and self.temperature == 0:
            raise ValueError("greedy samples are all the same: give a temperature > 0 with more than one sample")
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be positive, got {self.max_new_tokens}")


@dataclass(frozen=True)
class Record:
    """One judged sample: a line of samples.jsonl."""

    benchmark: str
    id: str
    sample: int
    prompt: str
    completion: str
    answer: str | None
    correct: bool
    reason: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def eval_executor(workers: int | None = None) -> Executor:
    """An executor sized for benchmark programs: tests that build large values (2 GiB, 1 MiB of
    output) and per-test time limits set by the judge on each job."""
    return Executor(workers=workers, timeout_s=10.0, memory_mb=2048, mode="strict", max_output_bytes=1 << 20)


def evaluate(
    engine: RolloutEngine,
    executor: ExecutorProtocol,
    items: Sequence[Item],
    settings: EvalSettings,
    *,
    progress: ProgressCallback | None = None,
    judging_progress: bool = False,
) -> list[Record]:
    """Generate `settings.samples` completions per item with `engine` and judge them."""
    params = SamplingParams(settings.max_new_tokens, settings.temperature)
    asked = [item for item in items for _ in range(settings.samples)]
    completions = [c.text for c in engine.generate([item.prompt for item in asked], params, progress=progress)]
    answers = [answer_of(item, text) for item, text in zip(asked, completions, strict=True)]
    verdicts = judge(executor, asked, answers, progress=judging_progress)
    return [
        Record(item.benchmark, item.id, index % settings.samples, item.prompt, text, answer, v.correct, v.reason)
        for index, (item, text, answer, v) in enumerate(zip(asked, completions, answers, verdicts, strict=True))
    ]


def score_predictions(
    executor: ExecutorProtocol, items: Sequence[Item], rows: Sequence[dict], *, progress: bool = False
) -> list[Record]:
    """Judge answers that already exist (`{"benchmark", "id", "answer"}` rows; several rows for one
    item are its samples). Every item of `items` is scored: one without a prediction is wrong
    ("no prediction"); a prediction for an item not in `items` is an error naming it."""
    known = {(item.benchmark, item.id): item for item in items}
    given: dict[tuple[str, str], list[str | None]] = defaultdict(list)
    for row in rows:
        key = (row["benchmark"], row["id"])
        if key not in known:
            if any(item.benchmark == row["benchmark"] for item in items):
                raise ValueError(f"no item {row['id']!r} in {row['benchmark']} (ids are the data set's own)")
            continue
        answer = row["answer"]
        given[key].append(answer if isinstance(answer, str) else None)
    samples = max((len(answers) for answers in given.values()), default=1)
    uneven = sorted(f"{b}/{i}" for (b, i), answers in given.items() if len(answers) != samples)
    if uneven:
        raise ValueError(f"every item needs the same number of predictions ({samples}); these differ: {uneven[:5]}")
    asked = [item for item in items for _ in range(samples)]
    answers = [
        given[(item.benchmark, item.id)][s] if (item.benchmark, item.id) in given else None
        for item in items
        for s in range(samples)
    ]
    verdicts = judge(executor, asked, answers, progress=progress)
    return [
        Record(
            item.benchmark,
            item.id,
            index % samples,
            item.prompt,
            "",
            answer,
            v.correct,
            v.reason if (item.benchmark, item.id) in given else "no prediction",
        )
        for index, (item, answer, v) in enumerate(zip(asked, answers, verdicts, strict=True))
    ]


def results(records: Sequence[Record]) -> dict[str, Any]:
    """`{benchmark: {"score", "n", "k"[, "pass@k"]}}` in the order first seen, plus `"averages"`."""
    per_item: dict[str, dict[str, list[bool]]] = defaultdict(lambda: defaultdict(list))
    for record in records:
        per_item[record.benchmark][record.id].append(record.correct)
    scores: dict[str, Any] = {name: benchmark_score(list(items.values())) for name, items in per_item.items()}
    scores["averages"] = table_averages(scores)
    return scores
