"""The `azr` command line.

azr selfplay --preset smoke                      # one CPU step with SmolLM2-135M, offline
azr selfplay --config run.yaml --out runs/x      # a run configured in a file
azr selfplay --out runs/x --resume --steps 20    # continue from the latest checkpoint
azr plot runs/x                                  # PNG curves from runs/x/metrics.jsonl
azr plot --compare runs/x runs/x-control         # two runs (or more) on one figure
azr export runs/x --step 20 --to models/x-20     # a checkpoint as a Hugging Face model directory
azr selfplay --preset paper --set trainer_workers=4 --dry-run   # the memory plan, without starting
azr eval --model runs/x --benchmarks all --out evals/x            # the paper's benchmarks, greedy
azr eval --benchmarks humaneval --predictions answers.jsonl --out evals/y   # score given answers
azr eval --compare evals/base evals/x                             # differences, as a table and a chart
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from azr.eval.runner import EvalSettings
    from azr.rollout import RolloutEngine

DESCRIPTION = "Absolute Zero self-play: a model proposes Python reasoning tasks and learns to solve them."


def _selfplay(args: argparse.Namespace) -> int:
    from azr.config import load_config
    from azr.selfplay import SelfPlay

    overrides = list(args.set)
    if args.model:
        overrides.append(f"model={args.model}")
    if args.steps is not None:
        overrides.append(f"steps={args.steps}")
    config = load_config(args.preset, args.config, overrides)
    if args.dry_run:
        from azr.plan import memory_plan

        plan = memory_plan(config)
        print(plan.render(config))
        return 0 if plan.fits else 2
    out = Path(args.out)
    if args.resume:
        run = SelfPlay.resume(config, out, progress=not args.quiet)
        print(f"azr: resumed {out} at step {run.step_index}", file=sys.stderr)
    else:
        if (out / "checkpoints" / "latest").exists():
            print(
                f"azr: error: {out} already holds a run; pass --resume to continue it or choose another --out",
                file=sys.stderr,
            )
            return 2
        run = SelfPlay(config, out, progress=not args.quiet)

    def report(metrics: dict[str, float]) -> None:
        step = int(metrics["step"])
        parts = [f"step {step}/{config.steps}"]
        for task in ("deduction", "abduction", "induction"):
            if f"valid_proposal/{task}" in metrics:
                parts.append(
                    f"{task[:3]}: valid {metrics[f'valid_proposal/{task}']:.0%} "
                    f"acc {metrics.get(f'accuracy/{task}', 0.0):.0%}"
                )
        if "train/loss" in metrics:  # a frozen policy (lr=0) computes no loss
            parts.append(f"loss {metrics['train/loss']:+.4f}")
        parts.append(
            "s: gen {:.0f} exe {:.1f} train {:.1f}".format(
                metrics["seconds/generate"], metrics["seconds/execute"], metrics["seconds/train"]
            )
        )
        print(" | ".join(parts), file=sys.stderr, flush=True)

    run.run(config.steps, on_step=report)
    print(
        f"azr: metrics in {out / 'metrics.jsonl'}, proposals in {out / 'proposals.jsonl'}, "
        f"TensorBoard in {out / 'tensorboard'}, checkpoints in {out / 'checkpoints'}",
        file=sys.stderr,
    )
    return 0


def _plot(args: argparse.Namespace) -> int:
    from azr.plot import plot_compare, plot_run

    if args.compare:
        runs = [Path(run) for run in args.compare]
        print(plot_compare(runs, Path(args.out) if args.out else runs[0] / "plots" / "compare.png", args.smooth))
        return 0
    if not args.run_dir:
        raise ValueError("azr plot needs a run directory, or --compare RUN_A RUN_B")
    written = plot_run(Path(args.run_dir), Path(args.out) if args.out else None)
    for path in written:
        print(path)
    return 0


def _profile(args: argparse.Namespace) -> int:
    from azr.timeline import busy, chrome_trace, read_step

    run = Path(args.run_dir)
    step, spans = read_step(run / "timeline.jsonl", args.step)
    out = Path(args.out) if args.out else run / "traces" / f"step-{step}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(chrome_trace(spans, step)))
    print(f"step {step}: {len(spans)} spans")
    print(f"{'actor':<14}{'spans':>7}{'busy s':>10}{'idle':>8}")
    for actor, (covered, wall) in busy(spans).items():
        count = sum(1 for span in spans if span.actor == actor)
        print(f"{actor:<14}{count:>7}{covered:>10.2f}{1 - covered / wall if wall else 0.0:>8.0%}")
    print(f"azr: trace in {out} (open it in https://ui.perfetto.dev or chrome://tracing)", file=sys.stderr)
    return 0


def _export(args: argparse.Namespace) -> int:
    from azr.checkpoints import export

    written = export(Path(args.run_dir), args.step, Path(args.to))
    print(f"azr: exported {args.run_dir} (step {args.step or 'latest'}) to {written}", file=sys.stderr)
    return 0


def _eval(args: argparse.Namespace) -> int:
    from azr.eval import report
    from azr.executor.progress import bar_callback

    if args.compare:
        table, chart = report.compare(
            Path(args.compare[0]), Path(args.compare[1]), Path(args.out) if args.out else None
        )
        print(table, end="")
        print(f"azr: chart in {chart}", file=sys.stderr)
        return 0
    if not args.out:
        raise ValueError("--out DIR is required (where results.json, samples.jsonl, results.md and results.png go)")
    if bool(args.model) == bool(args.predictions):
        raise ValueError("give either --model (generate and judge) or --predictions FILE (judge given answers)")
    from azr.eval.benchmarks import load, resolve
    from azr.eval.judging import predictions
    from azr.eval.runner import EvalSettings, eval_executor, evaluate, results, score_predictions

    names = resolve(args.benchmarks)
    data = Path(args.data) if args.data else None
    items = [item for name in names for item in load(name, data, args.limit)]
    settings = EvalSettings(args.samples, args.temperature, args.max_tokens)
    executor = eval_executor(args.workers or None)
    meta: dict[str, object] = {"benchmarks": ",".join(names), "limit": args.limit or "all"}
    if args.predictions:
        meta["model"] = f"predictions {Path(args.predictions).name}"
        records = score_predictions(executor, items, predictions(args.predictions), progress=not args.quiet)
    else:
        records = evaluate(
            _engine(args, settings),
            executor,
            items,
            settings,
            progress=None if args.quiet else bar_callback("generate", total=len(items) * settings.samples, leave=True),
            judging_progress=not args.quiet,
        )
        meta.update(model=args.model, samples=settings.samples, temperature=settings.temperature)
    scores = results(records)
    written = report.write(Path(args.out), scores, records, meta)
    print(report.markdown({**scores, "meta": meta}), end="")
    print(f"azr: wrote {', '.join(str(p) for p in written)}", file=sys.stderr)
    return 0


def _engine(args: argparse.Namespace, settings: EvalSettings) -> RolloutEngine:
    import torch

    from azr.checkpoints import policy_for
    from azr.config import SelfPlayConfig
    from azr.selfplay import make_engine

    policy = policy_for(args.model)
    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    policy.model.to(device)
    config = SelfPlayConfig(
        model=args.model,
        rollout_engine=args.engine,
        max_response_tokens=settings.max_new_tokens,
        generation_batch_size=args.batch_size,
    )
    return make_engine(config, policy)


def parser() -> argparse.ArgumentParser:
    from azr.config import PRESETS

    main = argparse.ArgumentParser(prog="azr", description=DESCRIPTION)
    commands = main.add_subparsers(dest="command", required=True)
    selfplay = commands.add_parser("selfplay", help="run Absolute Zero self-play", description=DESCRIPTION)
    selfplay.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        help="start from a preset (smoke: one CPU step; learn-cpu: ~45 min on two CPU cores, compare with lr=0)",
    )
    selfplay.add_argument("--config", type=Path, help="YAML, TOML or JSON file of settings (see azr/config.py)")
    selfplay.add_argument("--model", help="checkpoint directory or Hub id (default: SmolLM2-135M-Instruct, offline)")
    selfplay.add_argument("--steps", type=int, help="total steps of the run")
    selfplay.add_argument("--out", default="runs/selfplay", help="run directory (default: runs/selfplay)")
    selfplay.add_argument("--resume", action="store_true", help="continue the run in --out from its latest checkpoint")
    selfplay.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="override one setting, e.g. --set lr=2e-6 (repeatable)",
    )
    selfplay.add_argument("--quiet", action="store_true", help="no progress bars")
    selfplay.add_argument(
        "--dry-run",
        action="store_true",
        help="print where each actor goes and each GPU's memory plan (gpu_memory_gb per GPU), then stop; "
        "exit 2 when it does not fit",
    )
    selfplay.set_defaults(handler=_selfplay)
    plot = commands.add_parser("plot", help="write PNG curves of a run's metrics")
    plot.add_argument("run_dir", nargs="?", help="a run directory (holding metrics.jsonl)")
    plot.add_argument(
        "--compare",
        nargs="+",
        metavar="RUN",
        help="draw these runs on one figure (valid proposals, solver accuracy, rewards), e.g. a run and its "
        "lr=0 control; written to --out (default: FIRST_RUN/plots/compare.png)",
    )
    plot.add_argument("--out", help="where to write the PNGs (default: RUN_DIR/plots)")
    plot.add_argument(
        "--smooth", type=int, default=1, metavar="N", help="with --compare: draw trailing means over N steps"
    )
    plot.set_defaults(handler=_plot)
    profile = commands.add_parser(
        "profile",
        help="write one step of a run as a Perfetto/Chrome trace, and print each actor's busy and idle time",
        description="Every self-play step records spans from each actor (driver phases, engine requests, executor "
        "check batches, trainer micro-batches and optimizer step, weight sync) in RUN/timeline.jsonl. This writes "
        "one step as a Trace Event Format file for https://ui.perfetto.dev or chrome://tracing "
        "(docs/profiling.md says how to read it).",
    )
    profile.add_argument("run_dir", help="a run directory (holding timeline.jsonl)")
    profile.add_argument("--step", type=int, help="which step (default: the last one)")
    profile.add_argument("--out", help="the trace file to write (default: RUN_DIR/traces/step-N.json)")
    profile.set_defaults(handler=_profile)
    export = commands.add_parser(
        "export",
        help="write a checkpoint as a Hugging Face model directory (for vLLM and other tools)",
        description="Write the weights of a run's checkpoint, with its config and tokenizer, as a Hugging Face "
        "model directory (safetensors). The checkpoint may have been written by any number of trainer workers.",
    )
    export.add_argument("run_dir", help="a run directory (holding checkpoints/)")
    export.add_argument("--step", type=int, help="which step's checkpoint (default: the latest)")
    export.add_argument("--to", required=True, help="the directory to write")
    export.set_defaults(handler=_export)
    evaluation = commands.add_parser(
        "eval",
        help="score a model (or given answers) on the paper's benchmarks, judged in the sandbox",
        description="Generate answers with the rollout engine (greedy by default) and judge them: programs in the "
        "WebAssembly sandbox under the evaluation policy, CRUXEval answers as data, math answers with math-verify. "
        "Writes results.json, samples.jsonl, results.md and results.png to --out.",
        epilog="benchmarks: cruxeval-o, cruxeval-i, humaneval, humaneval+, mbpp+, livecodebench, aime24, aime25, "
        "amc23, math500, minerva, olympiadbench; groups: crux, code, math, all. Local files: --data DIR with "
        "cruxeval.jsonl, HumanEval.jsonl, HumanEvalPlus.jsonl, mbppplus.jsonl, livecodebench.jsonl, aime24.jsonl, "
        "aime25.jsonl, amc23.jsonl, math500.jsonl, minerva_math.jsonl, olympiadbench.jsonl.",
    )
    evaluation.add_argument("--model", help="a run directory, RUN/STEP, a checkpoint or model directory, or a Hub id")
    evaluation.add_argument("--benchmarks", default="all", help="comma-separated names or groups (default: all)")
    evaluation.add_argument("--out", help="output directory (with --compare: the chart's path)")
    evaluation.add_argument("--limit", type=int, default=0, help="the first N items of each benchmark (default: all)")
    evaluation.add_argument("--samples", type=int, default=1, help="samples per item; pass@k for k = samples")
    evaluation.add_argument("--temperature", type=float, default=0.0, help="0 is greedy (default)")
    evaluation.add_argument("--max-tokens", type=int, default=4096, help="tokens per completion (default: 4096)")
    evaluation.add_argument(
        "--predictions", help='JSON lines {"benchmark", "id", "answer"} to judge instead of a model'
    )
    evaluation.add_argument("--data", help="a directory of local benchmark files (default: their usual sources)")
    evaluation.add_argument("--compare", nargs=2, metavar=("DIR_A", "DIR_B"), help="print and plot B against A")
    evaluation.add_argument("--engine", choices=("auto", "hf", "vllm"), default="auto", help="rollout engine")
    evaluation.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda:0, ...")
    evaluation.add_argument("--batch-size", type=int, default=16, help="prompts per HF generate batch")
    evaluation.add_argument("--workers", type=int, default=0, help="executor workers (default: all cores)")
    evaluation.add_argument("--quiet", action="store_true", help="no progress bars")
    evaluation.set_defaults(handler=_eval)
    return main


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    try:
        code = args.handler(args)
    except (ValueError, FileNotFoundError) as error:
        print(f"azr: error: {error}", file=sys.stderr)
        code = 2
    except KeyboardInterrupt:
        print("azr: interrupted; the latest checkpoint is kept (resume with --resume)", file=sys.stderr)
        code = 130
    sys.exit(code)


if __name__ == "__main__":
    main()
