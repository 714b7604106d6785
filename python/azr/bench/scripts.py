"""Script-mode benchmark: stdin/stdout test programs (MBPP+'s canonical solutions, each reading its
task's base inputs as JSON lines from stdin and printing each result) through the executor's Python
API, through the service's SandboxFusion endpoint (`POST /run_code`, with SandboxFusion's own client
when it is installed), and through one `python -c` subprocess per script — what SandboxFusion does
inside its container, minus the container. Scripts per second, the ratios, and whether every method
printed the same.

    python -m azr.bench.scripts                  # ../shared/data/eval/mbppplus.jsonl
    python -m azr.bench.scripts --limit 100 --workers 2
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from azr.bench.executor import default_data_dir
from azr.executor import Executor, Job, local_service

READER = (
    "\nimport json as _json, sys as _sys\nfor _line in _sys.stdin:\n    print(repr({entry}(*_json.loads(_line))))\n"
)


def scripts(data: Path, limit: int | None) -> list[tuple[str, str]]:
    """(program, stdin) per MBPP+ task whose base inputs are JSON (no complex numbers)."""
    found = []
    for line in (data / "mbppplus.jsonl").read_text().splitlines():
        row = json.loads(line)
        if "cmath" in row["canonical_solution"]:
            continue
        program = row["canonical_solution"] + READER.format(entry=row["entry_point"])
        found.append((program, "".join(json.dumps(arguments) + "\n" for arguments in row["base_input"])))
    return found[:limit] if limit else found


def through_api(items: list[tuple[str, str]], workers: int) -> list[str | None]:
    outcomes = Executor(workers=workers, timeout_s=10.0).run([Job(p, s, script=True) for p, s in items])
    return [o.output if o.status == "ok" and o.exit_code == 0 else None for o in outcomes]


def through_sandbox_fusion(items: list[tuple[str, str]], workers: int, endpoint: str) -> list[str | None]:
    try:
        from sandbox_fusion import RunCodeRequest, run_code

        def one(item: tuple[str, str]) -> str | None:
            request = RunCodeRequest(code=item[0], stdin=item[1], language="python")
            response = run_code(request, endpoint=endpoint, max_attempts=3)
            return response.run_result.stdout if response.status == "Success" else None

    except ImportError:  # the same request, without SandboxFusion's client
        import urllib.request

        def one(item: tuple[str, str]) -> str | None:
            body = json.dumps({"code": item[0], "stdin": item[1], "language": "python"}).encode()
            request = urllib.request.Request(f"{endpoint}/run_code", body, {"Content-Type": "application/json"})
            with urllib.request.urlopen(request) as answer:
                response = json.load(answer)
            return response["run_result"]["stdout"] if response["status"] == "Success" else None

    with ThreadPoolExecutor(4 * workers) as threads:
        return list(threads.map(one, items))


def through_subprocesses(items: list[tuple[str, str]], workers: int) -> list[str | None]:
    def one(item: tuple[str, str]) -> str | None:
        done = subprocess.run(
            [sys.executable, "-c", item[0]], input=item[1], capture_output=True, text=True, timeout=10
        )
        return done.stdout if done.returncode == 0 else None

    with ThreadPoolExecutor(workers) as threads:
        return list(threads.map(one, items))


def timed(method: Callable[[], list[str | None]]) -> tuple[float, list[str | None]]:
    started = time.perf_counter()
    outputs = method()
    return time.perf_counter() - started, outputs


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m azr.bench.scripts", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=default_data_dir() / "eval", help="holds mbppplus.jsonl")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--limit", type=int, default=0, help="the first N scripts (default: all)")
    args = parser.parse_args(argv)
    items = scripts(args.data, args.limit or None)
    through_api(items[:4], args.workers)  # compile the guest and start the workers before timing
    results = {"Python API (script jobs)": timed(lambda: through_api(items, args.workers))}
    with local_service("--workers", str(args.workers), "--max-queue", "4096") as (address, _):
        results["SandboxFusion endpoint (POST /run_code)"] = timed(
            lambda: through_sandbox_fusion(items, args.workers, f"http://{address}")
        )
    results["python -c per script (unsandboxed)"] = timed(lambda: through_subprocesses(items, args.workers))
    baseline_seconds, baseline = results["python -c per script (unsandboxed)"]
    print(f"{len(items)} scripts (MBPP+ canonical solutions over their base inputs); {args.workers} workers\n")
    print("| method | seconds | scripts/s | × subprocess | same stdout as subprocess |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name, (seconds, outputs) in results.items():
        same = sum(a == b for a, b in zip(outputs, baseline, strict=True)) / len(items)
        print(
            f"| {name} | {seconds:.1f} | {len(items) / seconds:,.0f} | {baseline_seconds / seconds:.2f} | {same:.1%} |"
        )


if __name__ == "__main__":
    main()
