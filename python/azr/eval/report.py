"""What an evaluation leaves in its directory, and the comparison of two of them.

DIR/results.json   {benchmark: {"score", "n", "k"[, "pass@k"]}, "averages": {...}, "meta": {...}}
DIR/samples.jsonl  every prompt, completion, extracted answer, verdict and reason
DIR/results.md     the table
DIR/results.png    a bar chart of the scores
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from azr.eval.runner import Record

RESULTS = "results.json"


def write(out: Path, scores: dict[str, Any], records: Sequence[Record], meta: dict[str, Any]) -> list[Path]:
    """Write the four outputs; returns their paths."""
    out.mkdir(parents=True, exist_ok=True)
    results = {**scores, "meta": meta}
    paths = [out / RESULTS, out / "samples.jsonl", out / "results.md", out / "results.png"]
    paths[0].write_text(json.dumps(results, indent=2) + "\n")
    with paths[1].open("w") as samples:
        for record in records:
            samples.write(json.dumps(record.to_json()) + "\n")
    paths[2].write_text(markdown(results))
    chart({meta.get("model", out.name): results}, paths[3])
    return paths


def read(directory: Path) -> dict[str, Any]:
    path = directory / RESULTS
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: is {directory} the --out of an `azr eval`?")
    return json.loads(path.read_text())


def benchmarks_of(results: dict[str, Any]) -> list[str]:
    return [name for name in results if name not in ("averages", "meta")]


def markdown(results: dict[str, Any]) -> str:
    """The scores as a Markdown table: one row per benchmark, then the averages."""
    meta = results.get("meta", {})
    lines = [f"# azr eval: {meta.get('model', '')}".rstrip(), ""]
    if meta:
        lines += [", ".join(f"{k}: {v}" for k, v in meta.items() if k != "model"), ""]
    lines += ["| benchmark | score (%) | items | samples | pass@k (%) |", "| --- | ---: | ---: | ---: | ---: |"]
    for name in benchmarks_of(results):
        row = results[name]
        extra = row.get(f"pass@{row['k']}")
        lines.append(
            f"| {name} | {row['score']:.1f} | {row['n']} | {row['k']} | {'' if extra is None else f'{extra:.1f}'} |"
        )
    for name, average in results.get("averages", {}).items():
        lines.append(f"| **{name} average** ({', '.join(average['over'])}) | {average['score']:.1f} | | | |")
    return "\n".join(lines) + "\n"


def chart(runs: dict[str, dict[str, Any]], path: Path) -> Path:
    """Grouped bars: one group per benchmark (and average), one bar per run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names: list[str] = []
    for results in runs.values():
        for name in [*benchmarks_of(results), *(f"{a} avg" for a in results.get("averages", {}))]:
            if name not in names:
                names.append(name)
    width = 0.8 / max(1, len(runs))
    figure, axes = plt.subplots(figsize=(max(6.0, 0.9 * len(names) + 2), 4.5))
    for position, (label, results) in enumerate(runs.items()):
        values = [_score(results, name) for name in names]
        offsets = [i + (position - (len(runs) - 1) / 2) * width for i in range(len(names))]
        bars = axes.bar(offsets, [v if v is not None else 0.0 for v in values], width, label=label)
        for bar, value in zip(bars, values, strict=True):
            if value is not None:
                axes.annotate(
                    f"{value:.1f}", (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center", fontsize=7
                )
    axes.set_xticks(range(len(names)), names, rotation=30, ha="right")
    axes.set_ylabel("score (%)")
    axes.set_ylim(0, 105)
    axes.grid(axis="y", alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def _score(results: dict[str, Any], name: str) -> float | None:
    if name.endswith(" avg"):
        average = results.get("averages", {}).get(name[: -len(" avg")])
        return None if average is None else average["score"]
    return results[name]["score"] if name in results else None


def compare(a: Path, b: Path, out: Path | None = None) -> tuple[str, Path]:
    """A table of B's scores against A's (the difference in points), and their chart at `out`
    (default: B/compare.png)."""
    first, second = read(a), read(b)
    label_a, label_b = _label(first, a), _label(second, b)
    if label_a == label_b:
        label_a, label_b = str(a), str(b)
    names = [n for n in benchmarks_of(first) if n in second]
    names += [f"{n} avg" for n in first.get("averages", {}) if n in second.get("averages", {})]
    if not names:
        raise ValueError(f"{a} and {b} have no benchmark in common")
    lines = [f"| benchmark | {label_a} | {label_b} | Δ |", "| --- | ---: | ---: | ---: |"]
    for name in names:
        x, y = _score(first, name), _score(second, name)
        assert x is not None and y is not None
        lines.append(f"| {name} | {x:.1f} | {y:.1f} | {y - x:+.1f} |")
    path = chart({label_a: first, label_b: second}, out or b / "compare.png")
    return "\n".join(lines) + "\n", path


def _label(results: dict[str, Any], directory: Path) -> str:
    return str(results.get("meta", {}).get("model") or directory.name)
