"""Rollout-engine benchmark: the HF engine and `VLLMEngine` on the same prompts, in one run, and the
smoke self-play step's phase breakdown with each.

    python -m azr.bench.rollout                         # SmolLM2-135M (shipped offline), CPU
    python -m azr.bench.rollout --prompts 64 --max-new-tokens 128

Prompts are the smoke preset's own proposer prompts (repeated to `--prompts`). Tokens/s counts the
completion tokens each engine generated over the wall time of one `generate` call with all prompts
(the engine's start-up is reported apart). The step breakdown runs one smoke step per engine on fresh
copies of the model; `verify hidden` is the executor time that overlapped generation.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
import time
from collections.abc import Sequence

from azr.config import load_config
from azr.executor import Executor
from azr.models import load_policy
from azr.phases import proposer_rollouts
from azr.rollout import HFEngine, RolloutEngine, SamplingParams
from azr.rollout_vllm import VLLMEngine, vllm_supports
from azr.selfplay import SelfPlay

PHASES = ("generate", "verify", "verify_hidden", "execute", "train", "step")


def throughput(
    engine: RolloutEngine, prompts: list[str], params: SamplingParams, guides: list[str] | None = None
) -> tuple[float, int, float]:
    started = time.perf_counter()
    completions = engine.generate(prompts, params, guides=guides)
    seconds = time.perf_counter() - started
    tokens = sum(len(c.token_ids) for c in completions)
    return tokens / seconds, tokens, seconds


def smoke_step(engine_name: str, executor: Executor) -> dict[str, float]:
    config = dataclasses.replace(load_config("smoke"), rollout_engine=engine_name)
    with tempfile.TemporaryDirectory() as out:
        run = SelfPlay(config, out, executor=executor, progress=False)
        metrics = run.step()
    return {phase: metrics.get(f"seconds/{phase}", 0.0) for phase in PHASES}


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m azr.bench.rollout", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--prompts", type=int, default=32, help="prompts per generate call")
    parser.add_argument("--max-new-tokens", type=int, default=96)
    parser.add_argument("--skip-step", action="store_true", help="only the tokens/s comparison")
    args = parser.parse_args(argv)
    if args.prompts < 1 or args.max_new_tokens < 1:
        parser.error("--prompts and --max-new-tokens must be positive")

    config = load_config("smoke")
    policy = load_policy(config.model, seed=config.seed)
    if not vllm_supports(policy.model):
        parser.error("vLLM is not installed here (or cannot run the model): nothing to compare")
    executor = Executor(mode="batch")
    hf = HFEngine(policy.model, policy.tokenizer, batch_size=config.generation_batch_size)
    with tempfile.TemporaryDirectory() as out:
        proposer = SelfPlay(config, out, policy=policy, executor=executor, engine=hf)
        base = [r.prompt for r in proposer_rollouts(proposer.buffers, proposer.settings, proposer.rng, proposer.fits)]
    prompts = [base[i % len(base)] for i in range(args.prompts)]
    params = SamplingParams(args.max_new_tokens, temperature=1.0)

    started = time.perf_counter()
    vllm = VLLMEngine.from_model(policy.model, policy.tokenizer, seed=0, max_model_len=4096)
    startup = time.perf_counter() - started
    throughput(vllm, prompts[:2], params)  # first-call warm-up, both engines
    throughput(hf, prompts[:2], params)
    rows = {name: throughput(engine, prompts, params) for name, engine in (("hf", hf), ("vllm", vllm))}
    ratio = rows["vllm"][0] / rows["hf"][0]
    print(
        f"{len(prompts)} prompts, up to {args.max_new_tokens} new tokens each, SmolLM2-135M; "
        f"vLLM start-up {startup:.1f} s"
    )
    print()
    print("| engine | completion tokens | seconds | tokens/s | ÷ HF |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name, (rate, tokens, seconds) in rows.items():
        print(f"| {name} | {tokens} | {seconds:.1f} | {rate:,.1f} | {rate / rows['hf'][0]:.2f} |")
    summary: dict = {"tokens_per_s": {k: round(v[0], 1) for k, v in rows.items()}, "vllm_over_hf": round(ratio, 2)}
    del vllm
    if not args.skip_step:
        steps = {name: smoke_step(name, executor) for name in ("hf", "vllm")}
        print()
        print("| smoke step, seconds | " + " | ".join(PHASES) + " |")
        print("| --- |" + " ---: |" * len(PHASES))
        for name, phases in steps.items():
            print(f"| {name} | " + " | ".join(f"{phases[p]:.1f}" for p in PHASES) + " |")
        summary["step_seconds"] = {k: {p: round(v, 2) for p, v in phases.items()} for k, phases in steps.items()}
    print()
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
