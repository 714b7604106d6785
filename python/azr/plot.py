"""PNG curves of a run's `metrics.jsonl`: one figure per family of metrics, one line per series."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

FAMILIES = {
    "rewards": "reward/",
    "advantages": "advantage_mean/",
    "valid_proposals": "valid_proposal/",
    "accuracy": "accuracy/",
    "format_errors": "format_error/",
    "lengths": "length/",
    "buffers": "buffer/",
    "seconds": "seconds/",
    "training": "train/",
    "evaluation": "eval/",
}


def read_metrics(run_dir: Path) -> list[dict[str, float]]:
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: is {run_dir} a run directory?")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def plot_run(run_dir: Path, out_dir: Path | None = None) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_metrics(run_dir)
    if not rows:
        raise ValueError(f"{run_dir / 'metrics.jsonl'} has no steps yet")
    out_dir = out_dir or run_dir / "plots"
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for family, prefix in FAMILIES.items():
        series: dict[str, list[tuple[float, float]]] = defaultdict(list)
        for row in rows:
            for name, value in row.items():
                if name.startswith(prefix):
                    series[name[len(prefix) :]].append((row["step"], value))
        if not series:
            continue
        figure, axes = plt.subplots(figsize=(8, 4.5))
        for name, points in sorted(series.items()):
            steps, values = zip(*points, strict=True)
            axes.plot(steps, values, marker="o" if len(points) < 30 else None, label=name)
        axes.set_xlabel("step")
        axes.set_title(f"{family.replace('_', ' ')} ({run_dir.name})")
        axes.grid(alpha=0.3)
        axes.legend(fontsize=7, ncol=2)
        figure.tight_layout()
        path = out_dir / f"{family}.png"
        figure.savefig(path, dpi=110)
        plt.close(figure)
        written.append(path)
    return written
