"""What format-guided decoding costs: generation tokens/s of each engine with and without the
grammars, on the smoke preset's proposer prompts, in one run (the ratio is the overhead).

    python -m azr.bench.guided                      # SmolLM2-135M (shipped offline), CPU
    python -m azr.bench.guided --prompts 24 --reps 3
    python -m azr.bench.guided --model tiny-qwen2    # a random two-layer model: the HF engine only, instant

Each row is the median of `--reps` interleaved runs; guided runs use the task-role grammars of
`azr.guided` (grammar compilation is warmed up first: it happens once per grammar and tokenizer).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from collections.abc import Sequence

from azr.bench.rollout import throughput
from azr.config import load_config
from azr.executor import Executor
from azr.models import load_policy
from azr.parsing import parse_induction_proposal, parse_proposal
from azr.phases import proposer_rollouts
from azr.rollout import HFEngine, RolloutEngine, SamplingParams
from azr.rollout_vllm import VLLMEngine, vllm_supports
from azr.selfplay import SelfPlay
from azr.tasks import TaskType


def formatted_share(engine: RolloutEngine, prompts: list[str], tasks: list[TaskType], params, guides, inputs: int):
    """The share of completions the parser accepts as proposals of their task."""
    completions = engine.generate(prompts, params, guides=guides)
    ok = [
        (parse_induction_proposal(c.text, inputs) if task is TaskType.INDUCTION else parse_proposal(c.text)).formatted
        for c, task in zip(completions, tasks, strict=True)
    ]
    return sum(ok) / len(ok)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m azr.bench.guided", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", help="checkpoint directory, Hub id or tiny-qwen2 (default: the smoke preset's)")
    parser.add_argument("--prompts", type=int, default=24, help="prompts per generate call")
    parser.add_argument("--reps", type=int, default=3, help="interleaved runs per row (the median is shown)")
    args = parser.parse_args(argv)
    if args.prompts < 1 or args.reps < 1:
        parser.error("--prompts and --reps must be positive")

    config = load_config("smoke", overrides=[f"model={args.model}"] if args.model else [])
    policy = load_policy(config.model, seed=config.seed)
    hf = HFEngine(policy.model, policy.tokenizer, batch_size=config.generation_batch_size)
    with tempfile.TemporaryDirectory() as out:
        run = SelfPlay(config, out, policy=policy, executor=Executor(mode="batch", workers=1), engine=hf)
        rollouts = proposer_rollouts(run.buffers, run.settings, run.rng, run.fits)
    chosen = [rollouts[i % len(rollouts)] for i in range(args.prompts)]
    prompts = [r.prompt for r in chosen]
    tasks = [r.task for r in chosen]
    guides = [run.guide(r) for r in chosen]
    params = SamplingParams(config.max_response_tokens, temperature=1.0)
    engines: dict[str, RolloutEngine] = {"hf": hf}
    if vllm_supports(policy.model):
        engines["vllm"] = VLLMEngine.from_model(policy.model, policy.tokenizer, seed=0, max_model_len=4096)
    for engine in engines.values():  # first calls: start-up and grammar compilation
        throughput(engine, prompts[:2], params)
        throughput(engine, prompts[:2], params, guides[:2])
    rates: dict[tuple[str, str], list[float]] = {}
    for _ in range(args.reps):
        for name, engine in engines.items():
            for mode, mode_guides in (("free", None), ("guided", guides)):
                rates.setdefault((name, mode), []).append(throughput(engine, prompts, params, mode_guides)[0])
    median = {key: statistics.median(values) for key, values in rates.items()}
    shares = {
        (name, mode): formatted_share(engine, prompts, tasks, params, mode_guides, config.induction_inputs)
        for name, engine in engines.items()
        for mode, mode_guides in (("free", None), ("guided", guides))
    }
    print(
        f"{len(prompts)} proposer prompts (deduction, abduction, induction), up to {config.max_response_tokens} "
        f"new tokens, {config.model}, temperature 1; median of {args.reps} interleaved runs"
    )
    print()
    print("| engine | decoding | tokens/s | guided ÷ free | formatted |")
    print("| --- | --- | ---: | ---: | ---: |")
    for name in engines:
        for mode in ("free", "guided"):
            ratio = median[(name, mode)] / median[(name, "free")]
            print(f"| {name} | {mode} | {median[(name, mode)]:,.1f} | {ratio:.2f} | {shares[(name, mode)]:.0%} |")
    summary = {f"{n}/{m}": round(v, 1) for (n, m), v in median.items()}
    summary.update({f"{n}/guided_over_free": round(median[(n, "guided")] / median[(n, "free")], 3) for n in engines})
    print()
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
