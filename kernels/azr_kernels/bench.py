"""Benchmark of the fused policy loss: forward + backward time and peak memory, in one run, for our
kernel, the naive PyTorch path (full logits) and Liger's `LigerFusedLinearGRPOLoss`.

    python -m azr_kernels.bench                               # Qwen2.5-7B shapes, 8k/16k/32k tokens, GPU
    python -m azr_kernels.bench --profile prof/               # plus a torch-profiler trace of one size
    python -m azr_kernels.bench --device cpu --hidden 64 --vocab 4096 --tokens 512 --backends torch reference

Peak memory is what the loss adds on top of its inputs (hidden states, LM head, targets, ...).
A backend that runs out of memory is reported as OOM, and the others still run.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from azr_kernels import fused_policy_loss

BACKENDS = ("ours", "torch", "reference", "liger")
LABELS = {
    "ours": "azr fused (Triton)",
    "torch": "azr chunked PyTorch",
    "reference": "naive PyTorch (full logits)",
    "liger": "Liger LigerFusedLinearGRPOLoss",
}


@dataclass
class Result:
    backend: str
    tokens: int
    milliseconds: float | None
    peak_bytes: int | None
    note: str = ""


def make_inputs(tokens: int, hidden: int, vocab: int, dtype: torch.dtype, device: str, seed: int = 0) -> dict:
    generator = torch.Generator(device=device).manual_seed(seed)
    return dict(
        hidden=(torch.randn(tokens, hidden, device=device, generator=generator) / hidden**0.5).to(dtype),
        weight=(torch.randn(vocab, hidden, device=device, generator=generator) * 0.02).to(dtype),
        targets=torch.randint(0, vocab, (tokens,), device=device, generator=generator),
        mask=torch.ones(tokens, device=device),
        advantages=torch.randn(tokens, device=device, generator=generator),
        old_logprobs=-torch.rand(tokens, device=device, generator=generator) * 10 - 1,
    )


def ours_or_reference(backend: str, data: dict) -> Callable[[], torch.Tensor]:
    name = {"ours": "triton", "torch": "torch", "reference": "reference"}[backend]

    def run() -> torch.Tensor:
        hidden = data["hidden"].detach().requires_grad_(True)
        weight = data["weight"].detach().requires_grad_(True)
        out = fused_policy_loss(
            hidden,
            weight,
            data["targets"],
            data["mask"],
            data["advantages"],
            data["old_logprobs"],
            entropy_coef=0.001,
            backend=name,
        )
        out.loss.backward()
        return out.loss

    return run


def liger(data: dict, sequences: int) -> Callable[[], torch.Tensor]:
    from liger_kernel.chunked_loss import LigerFusedLinearGRPOLoss

    loss_fn = LigerFusedLinearGRPOLoss(
        beta=0.0, use_ref_model=False, loss_type="bnpo", epsilon_low=0.2, epsilon_high=0.2, temperature=1.0
    )
    tokens, hidden = data["hidden"].shape
    length = tokens // sequences

    def run() -> torch.Tensor:
        h = data["hidden"].detach().view(sequences, length, hidden).requires_grad_(True)
        weight = data["weight"].detach().requires_grad_(True)
        out = loss_fn(
            h,
            weight,
            data["targets"].view(sequences, length),
            data["mask"].view(sequences, length),
            data["advantages"].view(sequences, length)[:, 0],
            old_per_token_logps=data["old_logprobs"].view(sequences, length),
        )
        loss = out[0] if isinstance(out, tuple) else out
        loss.backward()
        return loss

    return run


def measure(run: Callable[[], torch.Tensor], device: str, reps: int) -> tuple[float, int]:
    """Median milliseconds of forward + backward, and the peak memory it adds."""
    cuda = device.startswith("cuda")
    run()  # warm-up (Triton compiles, allocators settle)
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        baseline = torch.cuda.memory_allocated()
    times = []
    for _ in range(reps):
        started = time.perf_counter()
        run()
        if cuda:
            torch.cuda.synchronize()
        times.append((time.perf_counter() - started) * 1e3)
    peak = torch.cuda.max_memory_allocated() - baseline if cuda else 0
    return sorted(times)[len(times) // 2], peak


def bench(
    backends: list[str],
    tokens_list: list[int],
    hidden: int,
    vocab: int,
    dtype: torch.dtype,
    device: str,
    reps: int,
    sequences: int,
) -> list[Result]:
    results = []
    for tokens in tokens_list:
        data = make_inputs(tokens, hidden, vocab, dtype, device)
        for backend in backends:
            try:
                run = liger(data, sequences) if backend == "liger" else ours_or_reference(backend, data)
                milliseconds, peak = measure(run, device, reps)
                results.append(Result(backend, tokens, milliseconds, peak))
            except torch.OutOfMemoryError:
                results.append(Result(backend, tokens, None, None, "OOM"))
            except ImportError as error:
                results.append(Result(backend, tokens, None, None, f"not installed ({error.name})"))
            if device.startswith("cuda"):
                torch.cuda.empty_cache()
            print(f"  {tokens} tokens, {backend}: {results[-1]}", file=sys.stderr, flush=True)
        del data
    return results


def report(results: list[Result], device_name: str, hidden: int, vocab: int, dtype: torch.dtype) -> str:
    lines = [
        f"Device: {device_name}; H = {hidden}, V = {vocab}, {str(dtype).removeprefix('torch.')}; "
        "forward + backward, median time; peak memory added by the loss.",
        "",
        "| tokens | method | ms | peak GiB | memory ÷ naive | time ÷ Liger |",
        "| ---: | --- | ---: | ---: | ---: | ---: |",
    ]
    for tokens in sorted({r.tokens for r in results}):
        row = {r.backend: r for r in results if r.tokens == tokens}
        naive, lig = row.get("reference"), row.get("liger")
        for r in row.values():
            ms = f"{r.milliseconds:.1f}" if r.milliseconds is not None else r.note
            gib = f"{r.peak_bytes / 2**30:.2f}" if r.peak_bytes is not None else r.note
            memory_ratio = (
                f"{r.peak_bytes / naive.peak_bytes:.3f}"
                if naive and naive.peak_bytes and r.peak_bytes is not None
                else "naive OOM"
                if naive and naive.note == "OOM"
                else ""
            )
            time_ratio = (
                f"{r.milliseconds / lig.milliseconds:.2f}" if lig and lig.milliseconds and r.milliseconds else ""
            )
            lines.append(f"| {tokens} | {LABELS[r.backend]} | {ms} | {gib} | {memory_ratio} | {time_ratio} |")
    return "\n".join(lines)


def profile(directory: Path, tokens: int, hidden: int, vocab: int, dtype: torch.dtype, device: str) -> Path:
    """A torch-profiler trace (Chrome format) and a summary table of one forward + backward."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    directory.mkdir(parents=True, exist_ok=True)
    run = ours_or_reference(
        "ours" if device.startswith("cuda") else "torch", make_inputs(tokens, hidden, vocab, dtype, device)
    )
    run()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.startswith("cuda") else [])
    with torch_profile(activities=activities, record_shapes=True, profile_memory=True) as prof:
        run()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
    trace = directory / f"policy_loss_{tokens}.json"
    prof.export_chrome_trace(str(trace))
    sort = "cuda_time_total" if device.startswith("cuda") else "cpu_time_total"
    (directory / f"policy_loss_{tokens}.txt").write_text(prof.key_averages().table(sort_by=sort, row_limit=25))
    return trace


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m azr_kernels.bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tokens", type=int, nargs="+", default=[8192, 16384, 32768])
    parser.add_argument("--hidden", type=int, default=3584, help="hidden size (Qwen2.5-7B: 3584)")
    parser.add_argument("--vocab", type=int, default=152064, help="vocabulary (Qwen2.5-7B: 152064)")
    parser.add_argument("--dtype", choices=["bf16", "fp32"], default="bf16")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--backends", nargs="+", choices=BACKENDS, default=["ours", "reference", "liger"])
    parser.add_argument("--sequences", type=int, default=8, help="sequences the tokens are split into (Liger)")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--profile", type=Path, help="write a profiler trace of the smallest size here")
    parser.add_argument("--json", type=Path, help="also write the results as JSON")
    args = parser.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print(
            "python -m azr_kernels.bench: no CUDA device here (use --device cpu with small shapes for a dry run)",
            file=sys.stderr,
        )
        sys.exit(2)
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32
    name = torch.cuda.get_device_name() if args.device.startswith("cuda") else "CPU"
    results = bench(args.backends, args.tokens, args.hidden, args.vocab, dtype, args.device, args.reps, args.sequences)
    print(report(results, name, args.hidden, args.vocab, dtype))
    if args.json:
        args.json.write_text(json.dumps([r.__dict__ for r in results], indent=1))
    if args.profile:
        print(f"profile: {profile(args.profile, min(args.tokens), args.hidden, args.vocab, dtype, args.device)}")


if __name__ == "__main__":
    main()
