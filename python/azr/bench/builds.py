"""Two builds of the executor on the same jobs: did a change make it faster or slower?

    git worktree add /tmp/base <commit> && (cd /tmp/base && cargo build --release --bin azr-executor)
    python -m azr.bench.builds --baseline /tmp/base/target/release/azr-executor

Each build's `azr-executor run` gets the same JSON-lines files (the seed programs once each, and the
same programs judged against their own outputs, as solver checks are), in strict and in batch mode,
alternating builds over `--reps` repetitions; the table gives medians and the ratio of this build to
the baseline. Both builds compile their guest on first use (cached), before timing starts.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from azr.bench.executor import default_data_dir, load_workload, runnable, solver_checks
from azr.executor import Executor


def this_build() -> Path:
    """The `azr-executor` of this checkout (cargo's release build)."""
    return Path(__file__).resolve().parents[3] / "target" / "release" / "azr-executor"


def write_jobs(path: Path, jobs: list[dict]) -> None:
    path.write_text("".join(json.dumps(job) + "\n" for job in jobs))


def timed_run(binary: Path, jobs: Path, mode: str, workers: int) -> float:
    started = time.perf_counter()
    command = [str(binary), "run", str(jobs), "-o", "/dev/null", "--mode", mode, "--workers", str(workers)]
    subprocess.run([*command, "--timeout", "10"], check=True, capture_output=True)
    return time.perf_counter() - started


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m azr.bench.builds", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--baseline", type=Path, required=True, help="the other build's azr-executor binary")
    parser.add_argument("--build", type=Path, default=this_build(), help="this build's binary (default: cargo's)")
    parser.add_argument("--data", type=Path, default=default_data_dir(), help="offline data (default ../shared/data)")
    parser.add_argument("--programs", type=int, default=2000, help="most programs to take from the workload")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--reps", type=int, default=5, help="alternating repetitions per build, mode and workload")
    args = parser.parse_args(argv)
    for binary in (args.baseline, args.build):
        if not binary.exists():
            parser.error(f"{binary} does not exist (build it with `cargo build --release --bin azr-executor`)")

    programs, workload = load_workload(args.data, args.programs)
    programs = runnable(Executor(mode="batch", timeout_s=10.0), programs)
    checks = solver_checks(Executor(mode="batch", timeout_s=10.0), programs)
    builds = {"baseline": args.baseline, "this build": args.build}
    rates: dict[tuple[str, str, str], list[float]] = {}
    with tempfile.TemporaryDirectory() as scratch:
        files = {"programs": Path(scratch) / "programs.jsonl", "solver checks": Path(scratch) / "checks.jsonl"}
        write_jobs(files["programs"], [{"program": p, "input": i, "imports": imp} for p, i, imp, _ in programs])
        judged = [{"program": p, "input": i, "imports": imp, "expected": e} for p, i, imp, e in checks]
        write_jobs(files["solver checks"], judged)
        for binary in builds.values():  # compile each guest once, outside the timing
            subprocess.run([str(binary), "info"], check=True, capture_output=True)
        for rep in range(args.reps):
            for mode in ("strict", "batch"):
                for name, path in files.items():
                    for build, binary in builds.items():
                        count = len(programs) if name == "programs" else len(checks)
                        rate = count / timed_run(binary, path, mode, args.workers)
                        rates.setdefault((mode, name, build), []).append(rate)
                        print(f"  rep {rep + 1}: {mode} {name} {build}: {rate:,.0f}/s", file=sys.stderr)
    print(f"Workload: {len(programs)} programs, {workload}; {args.workers} workers; medians of {args.reps} runs.\n")
    print("| mode | jobs | baseline jobs/s | this build jobs/s | this ÷ baseline |")
    print("| --- | --- | ---: | ---: | ---: |")
    for mode in ("strict", "batch"):
        for name in files:
            base = statistics.median(rates[(mode, name, "baseline")])
            new = statistics.median(rates[(mode, name, "this build")])
            print(f"| {mode} | {name} | {base:,.0f} | {new:,.0f} | {new / base:.2f} |")


if __name__ == "__main__":
    main()
