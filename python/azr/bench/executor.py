"""Executor benchmark: the same AZR-style programs through the sandbox (strict and batch) and
through the unsafe baselines, in one run, with ratios.

    python -m azr.bench.executor                 # the seed programs of ../shared/data, else the sample
    python -m azr.bench.executor --workload traffic   # AZR's own traffic: validate, then check 8 answers
    python -m azr.bench.executor --soak 100000   # plus resident memory over 100,000 programs

Baselines: `exec` in this process (no isolation: the upper bound), a warm process pool that
`exec`s each program like the reference implementation's executor, and one `python -c`
subprocess per program. Methods alternate over `--reps` repetitions and the median is reported,
because a shared 2-core machine is noisy.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import multiprocessing
import os
import subprocess
import sys
import tempfile
import time
import warnings
from collections import Counter, OrderedDict, deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from azr.bench.sample import sample_programs
from azr.executor import Executor, Job

# Names the reprs of built-in values use, for the reference-style comparison of the baselines.
REPR_NAMES = {"inf": math.inf, "nan": math.nan, "Counter": Counter, "OrderedDict": OrderedDict, "deque": deque}
# (program, input, imports, expected): with `expected`, the result is judged against that answer.
Program = tuple[str, str, str, str | None]


@dataclass
class Measurement:
    method: str
    programs: int
    seconds: float
    latencies: list[float]

    @property
    def rate(self) -> float:
        return self.programs / self.seconds

    def percentile(self, q: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def default_data_dir() -> Path:
    return Path(os.environ.get("AZR_SHARED_DATA", Path.cwd().parent / "shared" / "data"))


def load_workload(data_dir: Path, limit: int) -> tuple[list[Program], str]:
    """Deduction/abduction seed programs when the offline data is there, else the shipped sample."""
    seeds = sorted((data_dir / "azr_seed").glob("*_seed_io.jsonl"))
    seeds = [path for path in seeds if "code_f" not in path.name]
    if not seeds:
        return [(p, i, "", None) for p, i in sample_programs()], "the shipped sample (python/azr/bench/sample.py)"
    programs = []
    for path in seeds:
        for row in map(json.loads, path.open()):
            programs.append((row["snippet"], row["input"], "\n".join(row.get("imports") or ()), None))
    return programs[:limit], f"AZR seed programs from {data_dir / 'azr_seed'}"


def load_induction_workload(data_dir: Path, limit: int) -> list[Program]:
    """Induction seeds: each program with all its inputs, in order, the way AZR checks them."""
    programs = []
    for path in sorted((data_dir / "azr_seed").glob("*_code_f_seed_io.jsonl")):
        for row in map(json.loads, path.open()):
            imports = "\n".join(row.get("imports") or ())
            programs += [(row["snippet"], arguments, imports, None) for arguments in row["inputs"]]
    return programs[:limit]


def runnable(executor: Executor, programs: list[Program]) -> list[Program]:
    """The valid AZR tasks among `programs`: those the sandbox runs to an `ok` that two runs agree
    on (all methods then run the same set, and a repeated run must give the same verdict)."""
    outcomes = executor.run([Job(p, i, imports=imp, runs=2) for p, i, imp, _ in programs])
    return [program for program, outcome in zip(programs, outcomes, strict=True) if outcome.ok]


def solver_checks(executor: Executor, programs: list[Program]) -> list[Program]:
    """Each program judged against its own output, as a correct solver answer is: what a
    deduction check costs, the judge included."""
    outcomes = executor.run([Job(p, i, imports=imp) for p, i, imp, _ in programs])
    return [(p, i, imp, o.output) for (p, i, imp, _), o in zip(programs, outcomes, strict=True) if o.ok]


# A program's solver answers in the traffic workload: four right (its output), four wrong.
WRONG_ANSWERS = ("None", "0", "''", "[]")
TRAFFIC_ANSWERS = 8


def traffic_answers(output: str) -> list[str]:
    return [output] * (TRAFFIC_ANSWERS - len(WRONG_ANSWERS)) + [a for a in WRONG_ANSWERS if a != output]


def traffic_tasks(checks: list[Program]) -> list[Program]:
    """AZR's traffic as the baselines run it: each program twice (validation), then once per answer."""
    tasks = []
    for program, arguments, imports, output in checks:
        assert output is not None
        tasks += [(program, arguments, imports, None)] * 2
        tasks += [(program, arguments, imports, answer) for answer in traffic_answers(output)]
    return tasks


def measure_traffic(name: str, executor: Executor, checks: list[Program]) -> Measurement:
    """AZR's own traffic through `executor`: each program validated (`runs=2`) in one call, as a
    step's proposals are, then checked against its solver answers in the next. Counted in
    executions: two per validation, one per check."""
    validations = [Job(p, i, imports=imp, runs=2) for p, i, imp, _ in checks]
    answers = [traffic_answers(output or "") for *_, output in checks]
    solves = [
        Job(p, i, imports=imp, expected=a) for (p, i, imp, _), some in zip(checks, answers, strict=True) for a in some
    ]
    started = time.perf_counter()
    validated = executor.run(validations)
    judged = executor.run(solves)
    seconds = time.perf_counter() - started
    right = [a == output for (*_, output), some in zip(checks, answers, strict=True) for a in some]
    failed = [o for o in validated if not o.ok] + [o for o, r in zip(judged, right, strict=True) if o.matches != r]
    if failed:
        raise RuntimeError(f"{name}: {len(failed)} jobs gave the wrong verdict, e.g. {failed[0]}")
    executions = 2 * len(validations) + len(solves)
    return Measurement(name, executions, seconds, [o.elapsed_s for o in validated + judged])


def measure_executor(name: str, executor: Executor, programs: list[Program]) -> Measurement:
    jobs = [Job(p, i, imports=imp, expected=expected) for p, i, imp, expected in programs]
    started = time.perf_counter()
    outcomes = executor.run(jobs)
    seconds = time.perf_counter() - started
    failed = [o for o, job in zip(outcomes, jobs, strict=True) if not o.ok or (job.expected and not o.matches)]
    if failed:
        raise RuntimeError(f"{name}: {len(failed)} programs failed, e.g. {failed[0]}")
    return Measurement(name, len(jobs), seconds, [o.elapsed_s for o in outcomes])


class _Discard(io.TextIOBase):
    def write(self, text: str) -> int:
        return len(text)


def native(program: Program) -> tuple[str, float]:
    """Run one program with `exec` in this process: no isolation whatsoever. What it prints is
    discarded, as the sandbox discards it. An expected answer is compared the reference's way,
    `eval(expected) == result` (which a policy can game)."""
    source, arguments, imports, expected = program
    started = time.perf_counter()
    namespace: dict = {"__name__": "__azr__"}
    with contextlib.redirect_stdout(_Discard()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        exec(imports + "\n" + source, namespace)
        value = eval(f"f({arguments})", namespace)
        result = repr(value)
        if expected is not None:
            # Judged as the reference does (the verdict is not the point here, its cost is): a
            # text that is not an expression is compared as text.
            try:
                eval(expected, dict(REPR_NAMES)) == value  # noqa: B015
            except Exception:  # noqa: BLE001
                expected.strip() == result  # noqa: B015
    return result, time.perf_counter() - started


def measure_native(programs: list[Program]) -> Measurement:
    started = time.perf_counter()
    latencies = [native(program)[1] for program in programs]
    return Measurement("exec in-process (unsafe, 1 core)", len(programs), time.perf_counter() - started, latencies)


def measure_pool(pool: multiprocessing.pool.Pool, workers: int, programs: list[Program]) -> Measurement:
    started = time.perf_counter()
    latencies = [seconds for _, seconds in pool.imap(native, programs, chunksize=1)]
    return Measurement(
        f"warm process pool, exec per task ({workers} workers)", len(programs), time.perf_counter() - started, latencies
    )


def measure_subprocess(workers: int, programs: list[Program]) -> Measurement:
    def one(program: Program) -> float:
        source, arguments, imports, _ = program
        started = time.perf_counter()
        script = f"{imports}\n{source}\nresult = repr(f({arguments}))"
        subprocess.run([sys.executable, "-W", "ignore", "-c", script], check=True, capture_output=True, timeout=60)
        return time.perf_counter() - started

    started = time.perf_counter()
    with ThreadPoolExecutor(workers) as threads:
        latencies = list(threads.map(one, programs))
    return Measurement(
        f"python -c per program ({workers} parallel)", len(programs), time.perf_counter() - started, latencies
    )


def first_use_compile_seconds() -> float:
    """Compile the guest into an empty cache, as on a machine's first use."""
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "AZR_CACHE_DIR": cache}
        result = subprocess.run(
            [sys.executable, "-m", "azr.executor_cli", "info"], env=env, check=True, capture_output=True, text=True
        )
        return json.loads(result.stdout)["load_seconds"]


def live_instance_memory(instances: int = 32) -> dict:
    result = subprocess.run(
        [sys.executable, "-m", "azr.executor_cli", "memory-probe", str(instances)],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(result.stdout)


def resident_kib(pid: int | str, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def soak(executor: Executor, programs: list[Program], total: int, chunk: int = 5000) -> dict:
    """Run `total` programs (the workload, cycled) through one executor; follow resident memory of
    this process and its workers, and keep every outcome that differs from the program's own
    verdict, grouped by what it was and what it became (with the first program it happened to)."""
    verdicts = [(o.status, o.output) for o in executor.run([Job(p, i, imports=imp) for p, i, imp, _ in programs])]
    samples, done = [], 0
    unexpected: dict[str, dict] = {}
    while done < total:
        indices = [(done + k) % len(programs) for k in range(min(chunk, total - done))]
        outcomes = executor.run([Job(*programs[i][:2], imports=programs[i][2]) for i in indices])
        for position, (outcome, index) in enumerate(zip(outcomes, indices, strict=True)):
            if (outcome.status, outcome.output) == verdicts[index]:
                continue
            became = outcome.output if outcome.status == "ok" else (outcome.error or "").splitlines()[:1]
            key = f"{verdicts[index][0]} -> {outcome.status}: {str(became)[:200]}"
            seen = unexpected.setdefault(key, {"count": 0, "first_at": done + position, "program": index})
            seen["count"] += 1
        done += len(indices)
        pids = ["self", *executor.worker_pids]
        samples.append(
            (done, sum(resident_kib(p, "VmRSS") for p in pids), sum(resident_kib(p, "RssAnon") for p in pids))
        )
        print(
            f"  soak: {done:>7} programs, RSS {samples[-1][1] / 1024:7.1f} MiB "
            f"(private {samples[-1][2] / 1024:7.1f} MiB), {sum(u['count'] for u in unexpected.values())} unexpected",
            file=sys.stderr,
        )
    return {
        "programs": total,
        "unexpected_outcomes": sum(u["count"] for u in unexpected.values()),
        "unexpected": unexpected,
        "rss_mib": [round(s[1] / 1024, 1) for s in samples],
        "private_mib": [round(s[2] / 1024, 1) for s in samples],
    }


def median_measurement(runs: Sequence[Measurement]) -> Measurement:
    middle = sorted(runs, key=lambda m: m.rate)[len(runs) // 2]
    return Measurement(middle.method, middle.programs, middle.seconds, middle.latencies)


class FreshExecutors:
    """A new executor for each measurement, made before its clock starts: its caches (compiled code
    per worker, the memo) then start empty, as they are for programs a run has not seen before."""

    def __init__(self, **settings) -> None:
        self.settings = settings
        self.ready = Executor(**settings)

    def take(self) -> Executor:
        executor, self.ready = self.ready, Executor(**self.settings)
        return executor


def compare(
    workload: str,
    programs: list[Program],
    strict: FreshExecutors,
    batch: FreshExecutors,
    pool,
    workers: int,
    reps: int,
    subprocess_programs: int,
) -> list[Measurement]:
    """Every method on the same programs, interleaved `reps` times; the median run of each."""
    methods: list[tuple[str, Callable[[], Measurement]]] = [
        ("azr strict", lambda: measure_executor("azr strict", strict.take(), programs)),
        ("azr batch", lambda: measure_executor("azr batch", batch.take(), programs)),
        ("native", lambda: measure_native(programs)),
        ("pool", lambda: measure_pool(pool, workers, programs)),
        ("subprocess", lambda: measure_subprocess(workers, programs[:subprocess_programs])),
    ]
    return interleave(workload, methods, reps)


def compare_traffic(
    checks: list[Program], strict: FreshExecutors, batch: FreshExecutors, pool, workers: int, reps: int
):
    """AZR's traffic (`traffic_tasks`) through every method; strict mode with and without the memo,
    each repetition on a new executor."""
    tasks = traffic_tasks(checks)
    memo = FreshExecutors(workers=workers, mode="strict", timeout_s=10.0)
    methods: list[tuple[str, Callable[[], Measurement]]] = [
        ("azr strict", lambda: measure_traffic("azr strict", strict.take(), checks)),
        ("azr strict, memo", lambda: measure_traffic("azr strict, memo", memo.take(), checks)),
        ("azr batch", lambda: measure_traffic("azr batch", batch.take(), checks)),
        ("native", lambda: measure_native(tasks)),
        ("pool", lambda: measure_pool(pool, workers, tasks)),
    ]
    return interleave("traffic", methods, reps)


def interleave(workload: str, methods: list[tuple[str, Callable[[], Measurement]]], reps: int) -> list[Measurement]:
    runs: dict[str, list[Measurement]] = {name: [] for name, _ in methods}
    for rep in range(reps):
        for name, measure in methods:
            runs[name].append(measure())
            print(f"  {workload}, rep {rep + 1}: {name}: {runs[name][-1].rate:,.0f} programs/s", file=sys.stderr)
    return [median_measurement(runs[name]) for name, _ in methods]


def report(results: list[Measurement], workload: str, workers: int, reps: int, unit: str = "programs") -> str:
    by_name = {m.method: m for m in results}
    strict, batch = by_name["azr strict"], by_name["azr batch"]
    lines = [
        f"Workload: {strict.programs} {unit}, {workload}; {workers} workers; median of {reps} interleaved runs.",
        "",
        f"| method | {unit} | {unit}/s | p50 ms | p99 ms | strict ÷ this | batch ÷ this |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for m in results:
        lines.append(
            f"| {m.method} | {m.programs} | {m.rate:,.0f} | {m.percentile(0.5) * 1e3:.2f} "
            f"| {m.percentile(0.99) * 1e3:.2f} | {strict.rate / m.rate:.2f} | {batch.rate / m.rate:.2f} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m azr.bench.executor", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--data", type=Path, default=default_data_dir(), help="offline data folder (default ../shared/data)"
    )
    parser.add_argument("--programs", type=int, default=2000, help="most programs to take from the workload")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--reps", type=int, default=3, help="interleaved repetitions per method")
    parser.add_argument(
        "--subprocess-programs", type=int, default=100, help="programs for the slow subprocess baseline"
    )
    parser.add_argument(
        "--soak", type=int, default=0, metavar="N", help="also run N programs and follow resident memory"
    )
    parser.add_argument(
        "--workload",
        choices=["all", "seeds", "induction", "checks", "traffic"],
        default="all",
        help="seeds: programs run once; induction: programs over all their inputs; checks: programs judged "
        "against an expected answer, as solver checks are; traffic: AZR's own, each program validated with "
        "two runs, then checked against 8 solver answers (4 right, 4 wrong), counted in executions",
    )
    parser.add_argument("--skip-compile", action="store_true", help="do not measure the first-use compile time")
    args = parser.parse_args(argv)

    programs, workload = load_workload(args.data, args.programs)
    # Without the memo, which would answer every repetition after the first from the first; a new
    # executor per repetition, whose workers have compiled none of the programs yet (the ones that
    # pick the runnable programs and their answers are apart).
    strict = FreshExecutors(workers=args.workers, mode="strict", timeout_s=10.0, memo_mb=0)
    batch = FreshExecutors(workers=args.workers, mode="batch", timeout_s=10.0)
    picker = Executor(workers=args.workers, mode="batch", timeout_s=10.0)
    programs = runnable(picker, programs)
    workloads = []
    if args.workload in ("all", "seeds"):
        workloads.append((workload, programs))
    if args.workload in ("all", "induction"):
        induction = runnable(picker, load_induction_workload(args.data, args.programs))
        if induction:
            workloads.append(("AZR induction seeds: each program with all its inputs, in order", induction))
    checks = solver_checks(picker, programs) if args.workload in ("all", "checks", "traffic") else []
    if args.workload in ("all", "checks"):
        workloads.append(("solver checks: each program judged against its own output", checks))
    rates: dict[str, dict[str, float]] = {}
    with multiprocessing.get_context("forkserver").Pool(args.workers) as pool:
        pool.map(native, programs[: args.workers * 4])  # start the pool's workers before timing
        for name, selected in workloads:
            print(f"{len(selected)} runnable programs: {name}", file=sys.stderr)
            results = compare(name, selected, strict, batch, pool, args.workers, args.reps, args.subprocess_programs)
            print(report(results, name, args.workers, args.reps))
            print()
            rates[name] = {m.method: round(m.rate, 1) for m in results}
        if args.workload in ("all", "traffic"):
            name = (
                f"AZR traffic: {len(checks)} programs, each validated with 2 runs, then checked against "
                f"{TRAFFIC_ANSWERS} solver answers"
            )
            print(f"{len(checks)} programs: {name}", file=sys.stderr)
            results = compare_traffic(checks, strict, batch, pool, args.workers, args.reps)
            print(report(results, name, args.workers, args.reps, unit="executions"))
            print()
            rates["traffic"] = {m.method: round(m.rate, 1) for m in results}
    extras: dict = {"live_instance_memory": live_instance_memory()}
    if not args.skip_compile:
        extras["first_use_compile_s"] = round(first_use_compile_seconds(), 2)
    if args.soak:
        extras["soak_batch"] = soak(batch.take(), programs, args.soak)
    extras["rates"] = rates
    print(json.dumps(extras))


if __name__ == "__main__":
    main()
