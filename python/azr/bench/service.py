"""Service benchmark: the same programs through `azr-executor serve` and through the in-process
executor, in one run, with the ratio; then request latency under open-loop load.

    python -m azr.bench.service                  # both modes, seed programs of ../shared/data
    python -m azr.bench.service --mode batch --clients 8

Throughput: `RemoteExecutor` sends batches of `--batch` jobs with `--clients` requests in flight
to a service on loopback with the same workers and mode as the in-process `Executor`; both run the
same jobs, alternating over `--reps` repetitions (median reported). The service shares this
machine's cores with the client, as it would with a trainer on the same node.

Latency: requests of one batch each are sent on a fixed schedule at 1x and 2x the throughput just
measured (open loop: a late answer does not delay the next request), for `--seconds` each. Latency
counts from the scheduled send to the answer; requests refused with 429 (load shed by the bounded
queue) are counted, not retried.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import sys
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import msgpack

from azr.bench.executor import Measurement, Program, default_data_dir, load_workload, median_measurement, runnable
from azr.executor import MODES, Executor, Job, RemoteExecutor, local_service

TARGET_RATIO = 0.8


def measure(name: str, executor: Executor | RemoteExecutor, jobs: list[Job]) -> Measurement:
    started = time.perf_counter()
    outcomes = executor.run(jobs)
    seconds = time.perf_counter() - started
    failed = [o for o in outcomes if not o.ok]
    if failed:
        raise RuntimeError(f"{name}: {len(failed)} programs failed, e.g. {failed[0]}")
    return Measurement(name, len(jobs), seconds, [o.elapsed_s for o in outcomes])


@dataclass
class Load:
    offered_per_s: float
    sent: int
    refused: int
    latencies: list[float]
    seconds: float

    def percentile(self, q: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def open_loop(address: str, bodies: list[bytes], batches_per_s: float, seconds: float) -> Load:
    """Send `bodies` round-robin on a fixed schedule; each request on its own kept-alive connection."""
    host, port = address.rsplit(":", 1)
    local = threading.local()
    latencies: list[float] = []
    refused = 0
    lock = threading.Lock()
    headers = {"Content-Type": "application/msgpack"}

    def send(body: bytes, scheduled: float) -> None:
        nonlocal refused
        if not hasattr(local, "connection"):
            local.connection = http.client.HTTPConnection(host, int(port), timeout=600)
        local.connection.request("POST", "/v1/run", body=body, headers=headers)
        response = local.connection.getresponse()
        response.read()
        answered = time.perf_counter()
        with lock:
            if response.status == 200:
                latencies.append(answered - scheduled)
            elif response.status == 429:
                refused += 1
            else:
                raise RuntimeError(f"the service answered {response.status}")

    count = max(1, int(batches_per_s * seconds))
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=256) as pool:
        futures = []
        for k in range(count):
            scheduled = started + k / batches_per_s
            delay = scheduled - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            futures.append(pool.submit(send, bodies[k % len(bodies)], scheduled))
        for future in futures:
            future.result()
    return Load(batches_per_s, count, refused, latencies, time.perf_counter() - started)


def bench_mode(mode: str, programs: list[Program], args: argparse.Namespace) -> dict:
    jobs = [Job(p, i, imports=imp, expected=expected) for p, i, imp, expected in programs]
    local = Executor(workers=args.workers, mode=mode, timeout_s=10.0)
    flags = ("--workers", str(args.workers), "--mode", mode, "--timeout", "10")
    with local_service(*flags, log=args.log) as (address, _):
        remote = RemoteExecutor(address, batch_size=args.batch, concurrency=args.clients)
        for executor in (local, remote):  # first use: instances, worker processes, connections
            executor.run(jobs[: args.batch * args.clients])
        runs: dict[str, list[Measurement]] = {"in-process": [], "service": []}
        for rep in range(args.reps):
            for name, executor in (("in-process", local), ("service", remote)):
                runs[name].append(measure(name, executor, jobs))
                print(f"  {mode}, rep {rep + 1}: {name}: {runs[name][-1].rate:,.0f} programs/s", file=sys.stderr)
        in_process, service = (median_measurement(runs[name]) for name in ("in-process", "service"))
        bodies = [
            msgpack.packb({"jobs": [{"program": p, "input": i, "imports": imp} for p, i, imp, _ in chunk]})
            for chunk in (programs[k : k + args.batch] for k in range(0, len(programs), args.batch))
            if len(chunk) == args.batch
        ]
        loads = []
        for factor in (1, 2):
            offered = factor * service.rate / args.batch
            print(f"  {mode}: open-loop load at {factor}x ({offered:.1f} requests/s)", file=sys.stderr)
            loads.append((factor, open_loop(address, bodies, offered, args.seconds)))
    return {"in_process": in_process, "service": service, "loads": loads}


def report(mode: str, result: dict, args: argparse.Namespace) -> str:
    in_process, service = result["in_process"], result["service"]
    ratio = service.rate / in_process.rate
    verdict = "meets" if ratio >= TARGET_RATIO else "misses"
    lines = [
        f"Mode {mode}: {service.programs} programs, {args.workers} workers, batches of {args.batch}, "
        f"{args.clients} concurrent clients; median of {args.reps} interleaved runs.",
        "",
        "| path | programs/s | service ÷ in-process |",
        "| --- | ---: | ---: |",
        f"| in-process `Executor` | {in_process.rate:,.0f} | |",
        f"| `RemoteExecutor` → service | {service.rate:,.0f} | {ratio:.2f} ({verdict} the {TARGET_RATIO} target) |",
        "",
        "| offered load | requests/s | sent | refused (429) | answered programs/s | p50 ms | p99 ms |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for factor, load in result["loads"]:
        answered = len(load.latencies) * args.batch / load.seconds
        lines.append(
            f"| {factor}x capacity | {load.offered_per_s:.1f} | {load.sent} | {load.refused} | {answered:,.0f} "
            f"| {load.percentile(0.5) * 1e3:,.0f} | {load.percentile(0.99) * 1e3:,.0f} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m azr.bench.service", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=default_data_dir(), help="offline data (default ../shared/data)")
    parser.add_argument("--programs", type=int, default=2000, help="most programs to take from the workload")
    parser.add_argument("--mode", choices=[*MODES, "both"], default="both")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="sandbox workers, both paths")
    parser.add_argument("--batch", type=int, default=64, help="jobs per request")
    parser.add_argument("--clients", type=int, default=4, help="requests in flight in the throughput test")
    parser.add_argument("--reps", type=int, default=3, help="interleaved repetitions per path")
    parser.add_argument("--seconds", type=float, default=10.0, help="duration of each open-loop load")
    parser.add_argument("--log", type=Path, default=None, help="write the service's log here")
    args = parser.parse_args(argv)
    for name in ("programs", "workers", "batch", "clients", "reps"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1")

    programs, workload = load_workload(args.data, args.programs)
    programs = runnable(Executor(workers=args.workers, mode="batch", timeout_s=10.0), programs)
    if len(programs) < args.batch:
        parser.error(f"only {len(programs)} runnable programs, fewer than one batch of {args.batch}")
    print(f"Workload: {len(programs)} runnable programs, {workload}.\n")
    summary = {}
    for mode in MODES if args.mode == "both" else (args.mode,):
        result = bench_mode(mode, programs, args)
        print(report(mode, result, args), end="\n\n", flush=True)
        summary[mode] = {
            "in_process_per_s": round(result["in_process"].rate, 1),
            "service_per_s": round(result["service"].rate, 1),
            "ratio": round(result["service"].rate / result["in_process"].rate, 3),
        }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
