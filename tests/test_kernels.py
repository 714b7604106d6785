"""The policy-loss implementations against the PyTorch reference, forward and backward, in fp32.

Edge cases: ragged masks, a vocabulary that is not a multiple of any block, temperature ≠ 1, very
large and very negative logits, all-clipped and none-clipped batches, zero advantages, both
aggregations. Log-probs must never be positive."""

from __future__ import annotations

import os
from dataclasses import dataclass

import pytest
import torch
from azr_kernels import fused_policy_loss, token_logprobs, triton_available
from azr_kernels.chunked import CHUNK_ELEMENTS

BACKENDS = ["torch"] + (["triton"] if triton_available(torch.device("cpu")) else [])


@dataclass(frozen=True)
class Case:
    name: str
    tokens: int = 37
    hidden: int = 16
    vocab: int = 1003
    temperature: float = 1.0
    scale: float = 1.0  # scales the logits: 60 gives very large and very negative ones
    ratio_shift: float = 0.0  # pushes old_logprobs so that ratios leave the clip range
    zero_advantages: bool = False
    aggregation: str = "token"
    mask_density: float = 0.7


CASES = [
    Case("plain"),
    Case("odd_vocabulary", vocab=997, tokens=5),
    Case("temperature", temperature=0.6),
    Case("hot_temperature", temperature=1.7),
    Case("extreme_logits", scale=60.0),
    Case("all_clipped", ratio_shift=2.0),
    Case("none_clipped", ratio_shift=0.0),
    Case("zero_advantages", zero_advantages=True),
    Case("sequence_aggregation", aggregation="sequence"),
    Case("ragged_sparse_mask", mask_density=0.15),
    Case("single_token", tokens=1, mask_density=1.0),
    Case("chunk_boundary", tokens=CHUNK_ELEMENTS // 1003 + 3),
]


def make(case: Case, seed: int = 0) -> dict:
    generator = torch.Generator().manual_seed(seed)
    hidden = torch.randn(case.tokens, case.hidden, generator=generator) * case.scale / case.hidden**0.5
    weight = torch.randn(case.vocab, case.hidden, generator=generator)
    targets = torch.randint(0, case.vocab, (case.tokens,), generator=generator)
    mask = (torch.rand(case.tokens, generator=generator) < case.mask_density).float()
    mask[0] = 1.0
    advantages = torch.zeros(case.tokens) if case.zero_advantages else torch.randn(case.tokens, generator=generator)
    with torch.no_grad():
        exact, _ = token_logprobs(hidden, weight, targets, case.temperature, backend="reference")
    jitter = 0.05 * torch.randn(case.tokens, generator=generator)
    sign = torch.where(advantages >= 0, -1.0, 1.0)  # makes the clipped term the larger one
    old = exact + jitter + sign * case.ratio_shift
    seq_ids = torch.div(torch.arange(case.tokens), 6, rounding_mode="floor")
    return dict(
        hidden=hidden,
        weight=weight,
        targets=targets,
        mask=mask,
        advantages=advantages,
        old_logprobs=old,
        seq_ids=seq_ids,
    )


def run(backend: str, case: Case, inputs: dict, allowed: torch.Tensor | None = None):
    hidden = inputs["hidden"].clone().requires_grad_(True)
    weight = inputs["weight"].clone().requires_grad_(True)
    out = fused_policy_loss(
        hidden,
        weight,
        inputs["targets"],
        inputs["mask"],
        inputs["advantages"],
        inputs["old_logprobs"],
        clip_low=0.2,
        clip_high=0.28,
        temperature=case.temperature,
        entropy_coef=0.01,
        aggregation=case.aggregation,
        seq_ids=inputs["seq_ids"],
        backend=backend,
        allowed=allowed,
    )
    out.loss.backward()
    return out, hidden.grad, weight.grad


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_matches_the_reference_forward_and_backward(backend: str, case: Case) -> None:
    inputs = make(case)
    expected, expected_dh, expected_dw = run("reference", case, inputs)
    out, dh, dw = run(backend, case, inputs)
    torch.testing.assert_close(out.loss, expected.loss, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out.logprobs, expected.logprobs, rtol=1e-5, atol=1e-5)
    # Entropy sums |log p|·p over the vocabulary: with logits near ±100 two fp32 orders of summation
    # differ by ~1e-5, so it gets 1e-4.
    torch.testing.assert_close(out.entropy, expected.entropy, rtol=1e-5, atol=1e-4)
    # ratio = exp(Δ log-prob): an fp32 log-prob of magnitude ~100 is good to ~3e-5, and so is the ratio.
    torch.testing.assert_close(out.ratio, expected.ratio, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(out.clip_fraction, expected.clip_fraction)
    torch.testing.assert_close(dh, expected_dh, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(dw, expected_dw, rtol=1e-4, atol=1e-6)
    assert bool((out.logprobs <= 0).all()), "log-probabilities must never be positive"


def test_clipping_cases_do_what_they_say() -> None:
    clipped, _, _ = run("reference", CASES[5], make(CASES[5]))
    unclipped, _, _ = run("reference", CASES[6], make(CASES[6]))
    assert clipped.clip_fraction.item() > 0.9
    assert unclipped.clip_fraction.item() == 0.0


@pytest.mark.parametrize("backend", BACKENDS)
def test_zero_advantages_leave_only_the_entropy_gradient(backend: str) -> None:
    """With every advantage zero the policy term vanishes: the loss is −coef × the masked mean
    entropy, and its gradient is that of the entropy alone, computed here from the full softmax."""
    case = CASES[7]
    inputs = make(case)
    hidden = inputs["hidden"].clone().requires_grad_(True)
    out = fused_policy_loss(
        hidden,
        inputs["weight"],
        inputs["targets"],
        inputs["mask"],
        inputs["advantages"],
        inputs["old_logprobs"],
        entropy_coef=0.01,
        backend=backend,
    )
    out.loss.backward()
    plain = inputs["hidden"].clone().requires_grad_(True)
    log_p = torch.log_softmax(plain @ inputs["weight"].T, dim=-1)
    entropy = -(log_p.exp() * log_p).sum(-1)
    expected = -0.01 * (entropy * inputs["mask"]).sum() / inputs["mask"].sum()
    expected.backward()
    torch.testing.assert_close(out.loss, expected.detach(), rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(hidden.grad, plain.grad, rtol=1e-4, atol=1e-7)
    assert torch.count_nonzero(hidden.grad) > 0


@pytest.mark.parametrize("backend", BACKENDS)
def test_logprob_entry_point(backend: str) -> None:
    inputs = make(Case("logprobs", scale=30.0))
    logprobs, entropy = token_logprobs(inputs["hidden"], inputs["weight"], inputs["targets"], 0.8, backend=backend)
    expected_lp, expected_h = token_logprobs(
        inputs["hidden"], inputs["weight"], inputs["targets"], 0.8, backend="reference"
    )
    torch.testing.assert_close(logprobs, expected_lp, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(entropy, expected_h, rtol=1e-5, atol=1e-5)
    assert bool((logprobs <= 0).all()) and bool((entropy >= -1e-6).all())


def test_bad_inputs_are_refused() -> None:
    inputs = make(Case("bad"))
    arguments = [inputs[k] for k in ("hidden", "weight", "targets", "mask", "advantages", "old_logprobs")]
    with pytest.raises(ValueError, match="seq_ids"):
        fused_policy_loss(*arguments, aggregation="sequence")
    with pytest.raises(ValueError, match="aggregation"):
        fused_policy_loss(*arguments, aggregation="batch")
    with pytest.raises(ValueError, match="targets must have shape"):
        fused_policy_loss(arguments[0], arguments[1], arguments[2][:3], *arguments[3:])
    with pytest.raises(ValueError, match="token ids in"):
        fused_policy_loss(arguments[0], arguments[1], arguments[2] + 5000, *arguments[3:])
    with pytest.raises(ValueError, match="backend"):
        fused_policy_loss(*arguments, backend="cuda")
    if os.environ.get("TRITON_INTERPRET") != "1":
        with pytest.raises(RuntimeError, match="Triton backend needs"):
            fused_policy_loss(*arguments, backend="triton")


def test_benchmark_command_runs_on_the_cpu(tmp_path) -> None:
    import json
    import subprocess
    import sys

    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "azr_kernels.bench",
            "--device",
            "cpu",
            "--dtype",
            "fp32",
            "--hidden",
            "32",
            "--vocab",
            "512",
            "--tokens",
            "64",
            "--backends",
            "torch",
            "reference",
            "--reps",
            "1",
            "--json",
            str(tmp_path / "bench.json"),
            "--profile",
            str(tmp_path / "prof"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "| 64 | azr chunked PyTorch |" in result.stdout and "| 64 | naive PyTorch (full logits) |" in result.stdout
    rows = json.loads((tmp_path / "bench.json").read_text())
    assert {row["backend"] for row in rows} == {"torch", "reference"} and all(row["milliseconds"] > 0 for row in rows)
    assert (tmp_path / "prof" / "policy_loss_64.json").exists()


def pack(allowed: torch.Tensor) -> torch.Tensor:
    """`[T, V]` bool as xgrammar's `[T, ⌈V/32⌉]` int32 bitmask rows."""
    tokens, vocab = allowed.shape
    padded = torch.zeros(tokens, (vocab + 31) // 32 * 32, dtype=torch.int64)
    padded[:, :vocab] = allowed.long()
    words = (padded.reshape(tokens, -1, 32) << torch.arange(32)).sum(-1)
    return torch.where(words >= 2**31, words - 2**32, words).to(torch.int32)


FORCED = slice(0, -1, 2)


def constrained(inputs: dict, density: float, seed: int = 1) -> torch.Tensor:
    """A random allowed set per token that always holds the target: every other row forced (only the
    target allowed), one row unconstrained, the rest of the given density."""
    generator = torch.Generator().manual_seed(seed)
    tokens, vocab = inputs["hidden"].shape[0], inputs["weight"].shape[0]
    allowed = torch.rand(tokens, vocab, generator=generator) < density
    allowed[FORCED] = False
    allowed[-1] = True
    allowed[torch.arange(tokens), inputs["targets"]] = True
    return allowed


@pytest.mark.parametrize("case", [CASES[0], CASES[2], CASES[4], CASES[8], CASES[11]], ids=lambda c: c.name)
def test_allowed_masks_match_the_reference_and_the_definition(case: Case) -> None:
    inputs = make(case)
    allowed = constrained(inputs, density=0.3)
    bitmask = pack(allowed)
    # Old log-probs near the constrained ones, as an engine that sampled under the mask reports.
    exact, _ = token_logprobs(
        inputs["hidden"], inputs["weight"], inputs["targets"], case.temperature, backend="reference", allowed=bitmask
    )
    free, _ = token_logprobs(
        inputs["hidden"], inputs["weight"], inputs["targets"], case.temperature, backend="reference"
    )
    inputs["old_logprobs"] = exact + (inputs["old_logprobs"] - free)
    expected, expected_dh, expected_dw = run("reference", case, inputs, bitmask)
    out, dh, dw = run("torch", case, inputs, bitmask)
    torch.testing.assert_close(out.loss, expected.loss, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out.entropy, expected.entropy, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(dh, expected_dh, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(dw, expected_dw, rtol=1e-4, atol=1e-6)
    assert torch.isfinite(dh).all() and torch.isfinite(dw).all()
    # The definition: the softmax over the allowed tokens, computed on each row's own sub-vocabulary.
    logits = inputs["hidden"] @ inputs["weight"].T / case.temperature
    for row in range(case.tokens):
        ids = allowed[row].nonzero().flatten()
        sub = torch.log_softmax(logits[row, ids], -1)
        target = (ids == inputs["targets"][row]).nonzero().item()
        torch.testing.assert_close(out.logprobs[row], sub[target], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(out.entropy[row], -(sub.exp() * sub).sum(), rtol=1e-5, atol=1e-4)
    # A forced token (the only one allowed) has probability 1 whatever the weights: its log-prob and
    # entropy are 0, and it moves nothing.
    assert torch.equal(out.logprobs[FORCED], torch.zeros_like(out.logprobs[FORCED]))
    assert torch.equal(dh[FORCED], torch.zeros_like(dh[FORCED]))


def test_an_all_allowed_mask_changes_nothing_and_bad_masks_are_refused() -> None:
    inputs = make(CASES[0])
    tokens, vocab = inputs["hidden"].shape[0], inputs["weight"].shape[0]
    everything = pack(torch.ones(tokens, vocab, dtype=torch.bool))
    free, _ = token_logprobs(inputs["hidden"], inputs["weight"], inputs["targets"], backend="torch")
    masked, _ = token_logprobs(
        inputs["hidden"], inputs["weight"], inputs["targets"], backend="torch", allowed=everything
    )
    torch.testing.assert_close(masked, free)
    with pytest.raises(ValueError, match="int32 bitmask"):
        token_logprobs(inputs["hidden"], inputs["weight"], inputs["targets"], allowed=everything[:, :-1])
    with pytest.raises(ValueError, match="no allowed-token masks"):
        token_logprobs(inputs["hidden"], inputs["weight"], inputs["targets"], backend="triton", allowed=everything)
