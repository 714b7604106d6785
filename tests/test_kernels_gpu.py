"""The Triton kernels in bf16 on a GPU, against the fp32 reference on the same (bf16-rounded) inputs.

Stated tolerances: log-probs and entropies within 2e-3 absolute (the logits are exact fp32 products
of bf16 inputs; only the summation order differs); the loss within 1e-3 relative; gradients within
3e-2 relative and 1e-3 absolute of the largest element, because the gradient of the logits is
rounded to bf16 before the two gradient matrix products, as every bf16 trainer does."""

from __future__ import annotations

import pytest
import torch
from azr_kernels import fused_policy_loss, token_logprobs

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def inputs(tokens: int, hidden: int, vocab: int, seed: int = 0) -> dict:
    generator = torch.Generator(device="cuda").manual_seed(seed)
    h = (torch.randn(tokens, hidden, device="cuda", generator=generator) / hidden**0.5).bfloat16()
    w = (torch.randn(vocab, hidden, device="cuda", generator=generator) * 2).bfloat16()
    targets = torch.randint(0, vocab, (tokens,), device="cuda", generator=generator)
    mask = (torch.rand(tokens, device="cuda", generator=generator) < 0.8).float()
    advantages = torch.randn(tokens, device="cuda", generator=generator)
    old, _ = token_logprobs(h, w, targets, backend="reference")
    old = old + 0.1 * torch.randn(tokens, device="cuda", generator=generator)
    return dict(hidden=h, weight=w, targets=targets, mask=mask, advantages=advantages, old_logprobs=old)


@pytest.mark.parametrize(("tokens", "hidden", "vocab"), [(512, 256, 32_003), (2048, 896, 151_936)])
def test_bf16_matches_fp32_reference(tokens: int, hidden: int, vocab: int) -> None:
    data = inputs(tokens, hidden, vocab)
    results = {}
    for backend in ("triton", "reference"):
        h = data["hidden"].clone().requires_grad_(True)
        w = data["weight"].clone().requires_grad_(True)
        out = fused_policy_loss(
            h,
            w,
            data["targets"],
            data["mask"],
            data["advantages"],
            data["old_logprobs"],
            entropy_coef=0.001,
            backend=backend,
        )
        out.loss.backward()
        results[backend] = (out, h.grad.float(), w.grad.float())
    (fast, dh, dw), (exact, dh_ref, dw_ref) = results["triton"], results["reference"]
    torch.testing.assert_close(fast.logprobs, exact.logprobs, rtol=0, atol=2e-3)
    torch.testing.assert_close(fast.entropy, exact.entropy, rtol=0, atol=2e-3)
    torch.testing.assert_close(fast.loss, exact.loss, rtol=1e-3, atol=1e-5)
    assert bool((fast.logprobs <= 0).all())
    for grad, reference in ((dh, dh_ref), (dw, dw_ref)):
        torch.testing.assert_close(grad, reference, rtol=3e-2, atol=1e-3 * reference.abs().max().item())
