"""The policy update in one process and on Ray trainer workers: the same samples, the same update.

    python -m azr.bench.trainer                          # SmolLM2-135M, 1 and 2 workers on the CPU
    python -m azr.bench.trainer --model tiny-qwen2 --workers 1 2 4

For each trainer (in this process, then groups of the given sizes) it times `--steps` optimizer
steps on one fixed set of random sequences after a warm-up step, and reports seconds per step,
trained tokens per second, the ratio to the in-process trainer, and the peak memory a worker held
(CUDA's allocator peak on GPU, the process's peak RSS on the CPU) next to the memory plan's estimate
of the update's share (`azr.plan`: trainer state, gathered parameters, activations, loss chunk).
"""

from __future__ import annotations

import argparse
import dataclasses
import random
import resource
import sys
import time
from collections.abc import Sequence

import torch

from azr.config import load_config
from azr.models import load_policy
from azr.plan import GIB, architecture, memory_plan
from azr.trainer import Sample, Trainer
from azr.trainer_group import TrainerGroup


def workload(sequences: int, prompt: int, completion: int, vocab: int, seed: int = 0) -> list[Sample]:
    rng = random.Random(seed)
    return [
        Sample(
            tuple(rng.randrange(vocab) for _ in range(prompt)),
            tuple(rng.randrange(vocab) for _ in range(completion)),
            tuple(-rng.uniform(5, 12) for _ in range(completion)),
            rng.uniform(-1.5, 1.5),
        )
        for _ in range(sequences)
    ]


def timed(step, samples: list[Sample], steps: int) -> float:
    step(samples)  # warm-up: allocations, optimizer state, first gathers
    started = time.perf_counter()
    for _ in range(steps):
        step(samples)
    return (time.perf_counter() - started) / steps


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m azr.bench.trainer", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="smollm2-135m-instruct", help="model name or directory")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="trainer group sizes to measure")
    parser.add_argument("--sequences", type=int, default=32)
    parser.add_argument("--prompt-tokens", type=int, default=192)
    parser.add_argument("--completion-tokens", type=int, default=64)
    parser.add_argument("--micro-batch-tokens", type=int, default=2048)
    parser.add_argument("--steps", type=int, default=2, help="timed steps after one warm-up step")
    args = parser.parse_args(argv)

    config = dataclasses.replace(
        load_config("smoke"), model=args.model, micro_batch_tokens=args.micro_batch_tokens, lr=1e-5
    )
    from azr.selfplay import train_config

    train = train_config(config)
    arch = architecture(args.model)
    samples = workload(args.sequences, args.prompt_tokens, args.completion_tokens, arch.vocab)
    tokens = sum(len(s.completion_ids) for s in samples)
    compute_bytes = 2 if torch.cuda.is_available() else 4  # bf16 on GPU, fp32 on the CPU
    print(
        f"Update of {len(samples)} sequences ({args.prompt_tokens} prompt + {args.completion_tokens} completion "
        f"tokens each, micro-batches of {args.micro_batch_tokens} tokens) on {args.model} "
        f"({arch.params / 1e6:.0f} M parameters); mean of {args.steps} steps after a warm-up.\n"
    )
    rows = []
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    policy = load_policy(args.model, seed=config.seed)
    trainer = Trainer(policy.model, train)
    seconds = timed(trainer.step, samples, args.steps)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    plan = memory_plan(config, arch, compute_bytes=compute_bytes)
    rows.append(("in this process", seconds, [peak - rss_before], plan))
    print(f"  in this process: {seconds:.2f} s/step", file=sys.stderr)
    del trainer, policy
    for size in args.workers:
        sized = dataclasses.replace(config, trainer_workers=size)
        group = TrainerGroup.start(sized, train, checkpoint=None, last_checkpoint=lambda: "none")
        try:
            seconds = timed(group.step, samples, args.steps)
            peaks = group.peak_memory()
        finally:
            group.shutdown()
        plan = memory_plan(sized, arch, compute_bytes=compute_bytes)
        rows.append((f"{size} Ray worker(s), FSDP2", seconds, peaks, plan))
        print(f"  {size} workers: {seconds:.2f} s/step", file=sys.stderr)
    device = "GPU" if torch.cuda.is_available() else "CPU"
    base = rows[0][1]
    print("| trainer | s/step | trained tokens/s | ÷ in-process | peak per worker | plan: update share |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for name, seconds, peaks, plan in rows:
        share = sum(size for part, size in plan.parts.items() if "vLLM" not in part and "CUDA" not in part)
        peak = max(peaks) / GIB
        print(
            f"| {name} | {seconds:.2f} | {tokens / seconds:,.0f} | {base / seconds:.2f} | {peak:.2f} GiB | "
            f"{share / GIB:.2f} GiB |"
        )
    print(
        f"\nPeaks on the {device}: "
        + (
            "CUDA allocator peak per worker."
            if device == "GPU"
            else "each worker's peak RSS (the in-process row: the increase over this process's RSS before the model "
            "was loaded), which also holds the Python interpreter, torch and the model's tokenizer (~0.5–1 GiB)."
        )
    )


if __name__ == "__main__":
    main()
