"""The rollout fleet's scheduler at cluster scale, simulated: real Ray actors and the real dispatcher
(`azr.fleet.RolloutFleet`), with a synthetic engine whose request latencies follow a long-tailed
distribution of completion lengths, and a synthetic update of a given duration.

    python -m azr.bench.cluster                       # 1, 2, 4, 8, 16 replicas
    python -m azr.bench.cluster --replicas 4 --steps 1
    python -m azr.bench.cluster --replicas 4 --straggler 10     # one replica ten times slower

Completion lengths are log-normal (median `--median-tokens`, shape `--sigma`), capped at
`--max-tokens`: AZR's responses grow during training (the paper's runs go from a few hundred tokens
to over a thousand, with a long tail up to the 8,096-token cap), and a step waits for its longest
completions. A replica generates a chunk of `--chunk` requests as a continuous-batching engine
does: the chunk ends when its longest completion ends, at `--token-ms` per token (the last replica
`--straggler` times slower: a busy node, a slower GPU).

A step (the paper's batch of `--batch` per task-role): proposals (3·B), then solutions and the
learnability samples of the valid proposals (3·B + 8·B, a third of proposals valid), then the update.
Schedules, on the same latencies:

- `fleet`: azr's, one call per phase, chunks dispatched by outstanding tokens and streamed back;
- `fleet, one-step-off`: the same, with the update of the last step's samples running during this
  step's generation (`pipeline=one-step-off`);
- `fleet, async (max_staleness=2)`: updates queued in a thread, each publishing its weights to the
  fleet when done (replicas load them before their next chunk), the next step starting at once
  unless 2 updates are unfinished (`pipeline=async`); measured over all the steps, with one update
  in flight at the start as in one-step-off's steady state, and none waited for at the end;
- `round-robin`: one call per phase, each replica handed every R-th request up front;
- `reference (9 barriers)`: the AZR reference's, nine blocking generate calls a step (per task type:
  propose, learnability, solve), each waiting for its slowest completion, dispatched as `fleet` does.

Reported per schedule and replica count: seconds per step, the fraction of replica time idle over
the step (the update included), and the scheduler's own cost per request (a zero-latency engine).
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_for
from dataclasses import dataclass

from azr.cluster import connect, placement, start_actors
from azr.fleet import RolloutFleet
from azr.rollout import Completion, SamplingParams

TASKS = 3
LEARNABILITY = 8
STALENESS = 2
ASYNC = f"fleet, async (max_staleness={STALENESS})"


class SyntheticReplica:
    """A rollout replica that sleeps for its requests' lengths (a Ray actor)."""

    def __init__(self, token_s: float, chunk: int) -> None:
        self.token_s, self.chunk, self.busy = token_s, chunk, 0.0
        self.version = 0

    def generate(
        self, seed: int, prompts: list[str], params: SamplingParams, guides: object
    ) -> tuple[int, list[Completion]]:
        completions = []
        for start in range(0, len(prompts), self.chunk):
            lengths = [int(p.rsplit(" ", 1)[1]) for p in prompts[start : start + self.chunk]]
            seconds = max(lengths) * self.token_s
            time.sleep(seconds)
            self.busy += seconds
            completions += [Completion((1,), (0,) * n, (0.0,) * n, "", "length") for n in lengths]
        return self.version, completions

    def load_weights(self, weights: object, version: int) -> int:
        self.version = version
        return version

    def take_busy(self) -> float:
        busy, self.busy = self.busy, 0.0
        return busy


@dataclass
class Result:
    schedule: str
    replicas: int
    step_s: float
    idle: float


def lengths(rng: random.Random, count: int, median: float, sigma: float, cap: int) -> list[int]:
    return [max(1, min(cap, round(median * math.exp(rng.gauss(0.0, sigma))))) for _ in range(count)]


def step_calls(rng: random.Random, args: argparse.Namespace) -> dict[str, list[list[str]]]:
    """One step's requests as each schedule issues them (prompts carry their completion length)."""
    b = args.batch
    draw = lambda n: lengths(rng, n, args.median_tokens, args.sigma, args.max_tokens)  # noqa: E731
    per_task = [(draw(b), draw(LEARNABILITY * b // TASKS), draw(b)) for _ in range(TASKS)]
    # Every prompt has the same length, so the dispatcher cannot see completion lengths coming.
    prompts = [[[f"request {n:05d}" for n in call] for call in task] for task in per_task]
    proposals = [p for task in prompts for p in task[0]]
    later = [p for task in prompts for p in task[1] + task[2]]
    reference = [call for task in prompts for call in task]
    fleet = [proposals, later]
    return {
        "fleet": fleet,
        "fleet, one-step-off": fleet,
        ASYNC: fleet,
        "round-robin": fleet,
        "reference (9 barriers)": reference,
    }


def run_round_robin(fleet: RolloutFleet, prompts: list[str], params: SamplingParams) -> None:
    ray, replicas = fleet.ray, fleet.replicas
    shares = [prompts[i :: len(replicas)] for i in range(len(replicas))]
    ray.get([r.actor.generate.remote(0, share, params, None) for r, share in zip(replicas, shares, strict=True)])


def measure(fleet: RolloutFleet, schedule: str, calls: list[list[str]], update_s: float) -> tuple[float, float]:
    """Seconds of one step and the replicas' busy seconds in it."""
    params = SamplingParams(max_new_tokens=1)
    started = time.perf_counter()
    overlapped = schedule.endswith("one-step-off")
    update = threading.Thread(target=time.sleep, args=(update_s,)) if overlapped else None
    if update is not None:
        update.start()  # the last step's update, while this step generates
    for prompts in calls:
        if schedule == "round-robin":
            run_round_robin(fleet, prompts, params)
        else:
            fleet.generate(prompts, params)
    if update is not None:
        update.join()
    else:
        time.sleep(update_s)
    seconds = time.perf_counter() - started
    return seconds, take_busy(fleet)


def measure_async(fleet: RolloutFleet, steps: list[list[list[str]]], update_s: float) -> tuple[float, float]:
    """Seconds and the replicas' busy seconds of all `steps`, pipelined as `pipeline=async` does."""
    params = SamplingParams(max_new_tokens=1)
    version = fleet.version or 0

    def update(version: int) -> None:
        time.sleep(update_s)
        fleet.publish({}, version)  # the replicas load it before their next chunk

    with ThreadPoolExecutor(1) as updater:
        started = time.perf_counter()
        in_flight: list[Future] = [updater.submit(update, version + 1)]  # the last step's, as one-step-off has
        for offset, calls in enumerate(steps, 2):
            running = [future for future in in_flight if not future.done()]
            wait_for(running[: max(0, len(running) - STALENESS)])
            for prompts in calls:
                fleet.generate(prompts, params)
            in_flight.append(updater.submit(update, version + offset))
        seconds = time.perf_counter() - started
    return seconds, take_busy(fleet)


def take_busy(fleet: RolloutFleet) -> float:
    return sum(fleet.ray.get([r.actor.take_busy.remote() for r in fleet.replicas]))


def start_fleet(ray, count: int, token_s: float, chunk: int, straggler: float = 1.0) -> RolloutFleet:
    """`count` synthetic replicas, the last `straggler` times slower than the others."""
    group = placement(ray, count, gpus=0)
    arguments = [(token_s * (straggler if i == count - 1 else 1.0), chunk) for i in range(count)]
    actors = start_actors(ray, SyntheticReplica, group, arguments, gpus=0)
    ray.get([actor.take_busy.remote() for actor in actors])
    return RolloutFleet(ray, actors, group, chunk, seed=0)


def overhead_per_request(ray, count: int, requests: int, chunk: int) -> float:
    """Driver seconds per request with an engine that takes no time: dispatch, Ray calls, results."""
    fleet = start_fleet(ray, count, 0.0, chunk)
    try:
        prompts = ["request 00001"] * requests
        params = SamplingParams(max_new_tokens=1)
        fleet.generate(prompts, params)  # warm
        started = time.perf_counter()
        fleet.generate(prompts, params)
        return (time.perf_counter() - started) / requests
    finally:
        fleet.shutdown()


def report(results: Sequence[Result], overheads: dict[int, float], args: argparse.Namespace) -> str:
    counts = sorted({r.replicas for r in results})
    schedules = list(dict.fromkeys(r.schedule for r in results))
    by = {(r.schedule, r.replicas): r for r in results}
    lines = [
        f"Synthetic engine: log-normal completion lengths (median {args.median_tokens:g} tokens, sigma "
        f"{args.sigma:g}, cap {args.max_tokens}), {args.token_ms:g} ms/token, chunks of {args.chunk}; "
        f"batch {args.batch} per task-role; update {args.update_s:g} s; mean of {args.steps} steps"
        + (f"; the last replica {args.straggler:g}x slower." if args.straggler != 1 else "."),
        "",
        "| schedule | " + " | ".join(f"{n} replicas: s/step (idle)" for n in counts) + " |",
        "| --- | " + " | ".join("---:" for _ in counts) + " |",
    ]
    for schedule in schedules:
        cells = [f"{by[(schedule, n)].step_s:.2f} ({by[(schedule, n)].idle:.0%})" for n in counts]
        lines.append(f"| {schedule} | " + " | ".join(cells) + " |")
    cells = [f"{overheads[n] * 1e3:.2f} ms" for n in counts]
    lines.append("| scheduler cost per request (zero-latency engine) | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m azr.bench.cluster", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--replicas", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    parser.add_argument("--batch", type=int, default=32, help="requests per task-role (the paper: 64)")
    parser.add_argument("--median-tokens", type=float, default=600.0)
    parser.add_argument("--sigma", type=float, default=0.9, help="log-normal shape: the tail's weight")
    parser.add_argument("--max-tokens", type=int, default=8096)
    parser.add_argument("--token-ms", type=float, default=0.05, help="decode time per token of one request")
    parser.add_argument("--chunk", type=int, default=8, help="requests per engine batch (generation_batch_size)")
    parser.add_argument("--update-s", type=float, default=0.5, help="the synthetic update's duration")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--straggler", type=float, default=1.0, help="how many times slower the last replica is")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if min(args.replicas) < 1 or args.steps < 1 or args.batch < TASKS or args.straggler < 1:
        parser.error("replicas and steps must be positive, batch at least 3, straggler at least 1")

    ray = connect("", logical_cpus=max(args.replicas) + 2, why="the cluster benchmark")
    results: list[Result] = []
    overheads: dict[int, float] = {}
    for count in args.replicas:
        fleet = start_fleet(ray, count, args.token_ms / 1e3, args.chunk, args.straggler)
        try:
            rng = random.Random(args.seed)
            steps = [step_calls(rng, args) for _ in range(args.steps)]
            for schedule in ("fleet", "fleet, one-step-off", ASYNC, "round-robin", "reference (9 barriers)"):
                if schedule == ASYNC:
                    seconds, busy = measure_async(fleet, [calls[schedule] for calls in steps], args.update_s)
                    measured = [(seconds / len(steps), busy / len(steps))] * len(steps)
                else:
                    measured = [measure(fleet, schedule, calls[schedule], args.update_s) for calls in steps]
                step_s = sum(s for s, _ in measured) / len(measured)
                idle = 1 - sum(b for _, b in measured) / (count * sum(s for s, _ in measured))
                results.append(Result(schedule, count, step_s, idle))
                print(f"  {count} replicas, {schedule}: {step_s:.2f} s/step, idle {idle:.0%}", file=sys.stderr)
        finally:
            fleet.shutdown()
        overheads[count] = overhead_per_request(ray, count, 256, args.chunk)
    print(report(results, overheads, args))
    print(json.dumps({"results": [r.__dict__ for r in results], "overhead_s": overheads}))


if __name__ == "__main__":
    main()
