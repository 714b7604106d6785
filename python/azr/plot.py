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


# What `azr plot --compare` draws: one panel per family, every run on each.
COMPARED = {"valid proposals": "valid_proposal/", "solver accuracy": "accuracy/", "reward": "reward/"}


def trailing_mean(values: list[float], window: int) -> list[float]:
    """Each value replaced by the mean of it and the `window - 1` before it (fewer at the start)."""
    if window < 1:
        raise ValueError(f"the smoothing window must be at least 1 step, got {window}")
    return [sum(values[max(0, i - window + 1) : i + 1]) / (i + 1 - max(0, i - window + 1)) for i in range(len(values))]


def plot_compare(run_dirs: list[Path], out: Path, smooth: int = 1) -> Path:
    """One figure of valid-proposal rate and solver accuracy per task and reward per task-role, with
    every run on each panel: a colour per series, a line style per run; `smooth` > 1 draws each
    series' trailing mean over that many steps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if len(run_dirs) < 2:
        raise ValueError("--compare needs at least two run directories")
    runs = {run_dir: read_metrics(run_dir) for run_dir in run_dirs}
    empty = [str(run_dir) for run_dir, rows in runs.items() if not rows]
    if empty:
        raise ValueError(f"no steps yet in {', '.join(empty)}")
    styles = ["-", "--", ":", "-."]
    figure, panels = plt.subplots(1, len(COMPARED), figsize=(6 * len(COMPARED), 4.5))
    for axes, (title, prefix) in zip(panels, COMPARED.items(), strict=True):
        names = sorted({name for rows in runs.values() for row in rows for name in row if name.startswith(prefix)})
        colours = {name: f"C{index}" for index, name in enumerate(names)}
        for index, (run_dir, rows) in enumerate(runs.items()):
            for name in names:
                points = [(row["step"], row[name]) for row in rows if name in row]
                if points:
                    steps, values = zip(*points, strict=True)
                    label = f"{name[len(prefix) :]} ({run_dir.name})"
                    values = trailing_mean(list(values), smooth)
                    axes.plot(steps, values, styles[index % len(styles)], color=colours[name], label=label)
        axes.set_title(title if smooth == 1 else f"{title} (mean of the last {smooth} steps)")
        axes.set_xlabel("step")
        axes.grid(alpha=0.3)
        axes.legend(fontsize=6, ncol=2)
    figure.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=110)
    plt.close(figure)
    return out
