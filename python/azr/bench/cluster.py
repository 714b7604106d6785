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

A step (the paper's batch of `--batch` per task-role): proposals (3·B, a third of them valid),
then B solutions per task type — a valid proposal's task, else one from the buffer — and 8
learnability samples per valid proposal, then the update. Schedules, on the same latencies:

- `fleet`: azr's, one call a step: each proposal's follow-ups (its task's solver and learnability
  samples, or a buffer task in its place) are dispatched as its verdict comes in, while the other
  proposals still generate; chunks dispatched by outstanding tokens and streamed back;
- `fleet, one-step-off`: the same, with the update of the last step's samples running during this
  step's generation (`pipeline=one-step-off`);
- `fleet, async (max_staleness=2)`: updates queued in a thread, each publishing its weights to the
  fleet when done (replicas load them before their next chunk), the next step starting at once
  unless 2 updates are unfinished (`pipeline=async`); measured over all the steps, with one update
  in flight at the start as in one-step-off's steady state, and none waited for at the end;
- `fleet, async, steps overlapped`: the same, with each step opened during the one before
  (`overlap_steps`): once nothing of a step is left to dispatch and each of its proposals has its
  verdict, the next step's proposals go to the replicas its longest completions leave idle (while
  at most 1 update is unfinished, so no sample is over 2 versions old);
- `fleet, 2 phases`: azr's before the follow-ups were streamed: a propose call, then one call for
  every solver and learnability request, the second waiting for the first's slowest completion;
- `round-robin`: the two phases, each replica handed every R-th request up front;
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
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_for
from dataclasses import dataclass

from azr.cluster import connect, placement, start_actors
from azr.fleet import Checked, FleetCall, RolloutFleet
from azr.rollout import Completion, SamplingParams

TASKS = 3
LEARNABILITY = 8
STALENESS = 2
ASYNC = f"fleet, async (max_staleness={STALENESS})"
OVERLAP = f"fleet, async (max_staleness={STALENESS}), steps overlapped"
SCHEDULES = (
    "fleet",
    "fleet, one-step-off",
    ASYNC,
    OVERLAP,
    "fleet, 2 phases",
    "round-robin",
    "reference (9 barriers)",
)
PARAMS = SamplingParams(max_new_tokens=1)
# One step's generation, as a schedule issues it to the fleet.
Step = Callable[[RolloutFleet], None]


@dataclass
class Request:
    """A synthetic rollout: its prompt ends with its completion length; `follow` holds the prompts
    its verdict calls for."""

    prompt: str
    follow: tuple[str, ...] = ()


def no_check(request: Request) -> None:
    return None


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

    def generate_and_check(
        self, seed: int, requests: list[Request], params: SamplingParams, guides: object, make_check: object
    ) -> tuple[int, list[Checked]]:
        version, completions = self.generate(seed, [r.prompt for r in requests], params, guides)
        return version, [Checked(completion, None, None) for completion in completions]

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


def steps(rng: random.Random, args: argparse.Namespace) -> tuple[dict[str, Step], list[Request]]:
    """One step's generation as each schedule issues it (the async ones: its proposals, with the
    follow-ups each one's verdict calls for); every prompt carries its completion length, and every
    prompt has the same length, so the dispatcher cannot see completion lengths coming."""
    b = args.batch

    def draw(count: int) -> list[str]:
        return [f"request {n:05d}" for n in lengths(rng, count, args.median_tokens, args.sigma, args.max_tokens)]

    proposals, learnability, solutions, streamed = [], [], [], []
    for _ in range(TASKS):
        proposed, solved = draw(b), draw(b)
        valid = range(0, b, TASKS)  # a third of the proposals are valid
        learned = {i: draw(LEARNABILITY) for i in valid}
        proposals.append(proposed)
        learnability.append([p for samples in learned.values() for p in samples])
        solutions.append(solved)
        streamed += [Request(p, (solved[i], *learned.get(i, ()))) for i, p in enumerate(proposed)]
    first = [p for task in proposals for p in task]
    later = [p for task in range(TASKS) for p in learnability[task] + solutions[task]]
    reference = [call for task in range(TASKS) for call in (proposals[task], learnability[task], solutions[task])]

    def one_call(fleet: RolloutFleet) -> None:
        def follow_up(request: Request) -> list[Request]:
            return [Request(p) for p in request.follow]

        fleet.generate_and_check(list(streamed), PARAMS, no_check, follow_up=follow_up)

    def in_calls(calls: list[list[str]]) -> Step:
        def run(fleet: RolloutFleet) -> None:
            for prompts in calls:
                fleet.generate(prompts, PARAMS)

        return run

    def round_robin(fleet: RolloutFleet) -> None:
        for prompts in (first, later):
            replicas = fleet.replicas
            shares = [prompts[i :: len(replicas)] for i in range(len(replicas))]
            fleet.ray.get(
                [r.actor.generate.remote(0, share, PARAMS, None) for r, share in zip(replicas, shares, strict=True)]
            )

    schedules = {
        "fleet": one_call,
        "fleet, one-step-off": one_call,
        "fleet, 2 phases": in_calls([first, later]),
        "round-robin": round_robin,
        "reference (9 barriers)": in_calls(reference),
    }
    return schedules, streamed


def measure(fleet: RolloutFleet, schedule: str, step: Step, update_s: float) -> tuple[float, float]:
    """Seconds of one step and the replicas' busy seconds in it."""
    started = time.perf_counter()
    overlapped = schedule.endswith("one-step-off")
    update = threading.Thread(target=time.sleep, args=(update_s,)) if overlapped else None
    if update is not None:
        update.start()  # the last step's update, while this step generates
    step(fleet)
    if update is not None:
        update.join()
    else:
        time.sleep(update_s)
    seconds = time.perf_counter() - started
    return seconds, take_busy(fleet)


def measure_async(
    fleet: RolloutFleet, steps: list[list[Request]], update_s: float, *, overlap: bool
) -> tuple[float, float]:
    """Seconds and the replicas' busy seconds of all `steps` (each step's proposals), pipelined as
    `pipeline=async` does. With `overlap`, each step opens during the one before (`overlap_steps`):
    once nothing is left to dispatch, every proposal of a step has its verdict and at most
    `STALENESS - 1` updates are unfinished, the next step's proposals go to the fleet."""
    version = fleet.version or 0
    calls: list[FleetCall | None] = [None] * len(steps)
    settled = [0] * len(steps)  # proposals whose verdict came in, per step

    def update(version: int) -> None:
        time.sleep(update_s)
        fleet.publish({}, version)  # the replicas load it before their next chunk

    def submit(index: int) -> FleetCall:
        def follow_up(request: Request) -> list[Request]:
            settled[index] += bool(request.follow)
            return [Request(p) for p in request.follow]

        call = calls[index] = fleet.submit_and_check(list(steps[index]), PARAMS, no_check, follow_up=follow_up)
        return call

    with ThreadPoolExecutor(1) as updater:
        started = time.perf_counter()
        in_flight: list[Future] = [updater.submit(update, version + 1)]  # the last step's, as one-step-off has

        def open_after(index: int) -> bool:
            if index + 1 == len(steps) or calls[index + 1] is not None or settled[index] < len(steps[index]):
                return False
            if sum(not future.done() for future in in_flight) >= STALENESS:
                return False
            submit(index + 1)
            return True

        for index in range(len(steps)):
            call = calls[index]
            if call is None:
                running = [future for future in in_flight if not future.done()]
                wait_for(running[: max(0, len(running) - STALENESS)])
                call = submit(index)
            fleet.finish(call, on_drained=(lambda index=index: open_after(index)) if overlap else None)
            in_flight.append(updater.submit(update, version + index + 2))
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
    parser.add_argument(
        "--schedules",
        nargs="+",
        choices=SCHEDULES,
        default=list(SCHEDULES),
        metavar="SCHEDULE",
        help="which to run, each quoted (default: all): " + "; ".join(f'"{name}"' for name in SCHEDULES),
    )
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
            drawn = [steps(rng, args) for _ in range(args.steps)]
            for schedule in args.schedules:
                if schedule in (ASYNC, OVERLAP):
                    streams = [streamed for _, streamed in drawn]
                    seconds, busy = measure_async(fleet, streams, args.update_s, overlap=schedule == OVERLAP)
                    measured = [(seconds / len(drawn), busy / len(drawn))] * len(drawn)
                else:
                    measured = [measure(fleet, schedule, step[schedule], args.update_s) for step, _ in drawn]
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
