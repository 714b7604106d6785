"""Fused REINFORCE++ policy loss: LM head, log-softmax, gather, entropy and the clipped loss in one
pass over the vocabulary, without materialising `[tokens × vocab]` logits.

    from azr_kernels import fused_policy_loss
    out = fused_policy_loss(hidden, lm_head_weight, targets, mask, advantages, old_logprobs)
    out.loss.backward()

Backends: `"triton"` (CUDA, or the Triton interpreter when `TRITON_INTERPRET=1`), `"torch"` (a
chunked PyTorch implementation with a hand-written backward, for machines without Triton) and
`"reference"` (plain PyTorch with full logits: the definition of correct). `"auto"` picks Triton
where it runs and the chunked PyTorch path elsewhere.

`allowed` (optional, `[T, ⌈V/32⌉]` int32 bitmask rows, xgrammar's layout) restricts each token's
distribution to the tokens a constrained (guided) sampler could have drawn: log-probs, entropy
and gradients are then those of the softmax over the allowed tokens. The PyTorch backends take it;
`"auto"` picks the chunked PyTorch path for it.
"""

from __future__ import annotations

import os

import torch

from azr_kernels.chunked import chunked_logprobs, chunked_policy_loss
from azr_kernels.reference import reference_logprobs, reference_policy_loss
from azr_kernels.types import AGGREGATIONS, PolicyLoss, check_allowed, check_inputs

BACKENDS = ("auto", "triton", "torch", "reference")

__all__ = ["AGGREGATIONS", "BACKENDS", "PolicyLoss", "fused_policy_loss", "token_logprobs", "triton_available"]


def triton_available(device: torch.device) -> bool:
    """Whether the Triton kernels can run on `device` (a GPU, or the CPU under TRITON_INTERPRET=1)."""
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return device.type == "cuda" or os.environ.get("TRITON_INTERPRET") == "1"


def _pick(backend: str, device: torch.device, masked: bool = False) -> str:
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "auto":
        return "triton" if triton_available(device) and not masked else "torch"
    if backend == "triton" and masked:
        raise ValueError("the Triton backend takes no allowed-token masks; use backend='torch' or 'auto'")
    if backend == "triton" and not triton_available(device):
        raise RuntimeError("the Triton backend needs a CUDA device, or TRITON_INTERPRET=1 on the CPU")
    return backend


def fused_policy_loss(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    mask: torch.Tensor,
    advantages: torch.Tensor,
    old_logprobs: torch.Tensor,
    *,
    clip_low: float = 0.2,
    clip_high: float = 0.2,
    temperature: float = 1.0,
    entropy_coef: float = 0.0,
    aggregation: str = "token",
    seq_ids: torch.Tensor | None = None,
    backend: str = "auto",
    allowed: torch.Tensor | None = None,
) -> PolicyLoss:
    """The clipped REINFORCE++ policy loss of the final hidden states `[T, H]` under the LM head
    `weight` `[V, H]`.

    `logits = hidden @ weight.T / temperature`; `logprobs = log_softmax(logits)[targets]`;
    `ratio = exp(logprobs − old_logprobs)`; per token
    `max(−A·ratio, −A·clamp(ratio, 1 − clip_low, 1 + clip_high)) − entropy_coef·entropy`, averaged
    over masked tokens (`aggregation="token"`) or over sequences of their token means
    (`"sequence"`, which needs `seq_ids`). Advantages are per token: broadcast a sequence's
    advantage over its tokens. Gradients flow to `hidden` and `weight`.
    """
    check_inputs(hidden, weight, targets, mask, advantages, old_logprobs)
    check_allowed(allowed, hidden.shape[0], weight.shape[0])
    arguments = dict(
        clip_low=clip_low,
        clip_high=clip_high,
        temperature=temperature,
        entropy_coef=entropy_coef,
        aggregation=aggregation,
        seq_ids=seq_ids,
    )
    chosen = _pick(backend, hidden.device, allowed is not None)
    if chosen == "triton":
        from azr_kernels.triton_policy_loss import triton_policy_loss

        return triton_policy_loss(hidden, weight, targets, mask, advantages, old_logprobs, **arguments)
    implementation = chunked_policy_loss if chosen == "torch" else reference_policy_loss
    return implementation(hidden, weight, targets, mask, advantages, old_logprobs, **arguments, allowed=allowed)


def token_logprobs(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    temperature: float = 1.0,
    *,
    backend: str = "auto",
    allowed: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probabilities of `targets` and entropies per token (no gradient), e.g. the old
    log-probs of freshly generated tokens. Same kernels as `fused_policy_loss`."""
    check_allowed(allowed, hidden.shape[0], weight.shape[0])
    chosen = _pick(backend, hidden.device, allowed is not None)
    with torch.no_grad():
        if chosen == "triton":
            from azr_kernels.triton_policy_loss import triton_logprobs

            return triton_logprobs(hidden, weight, targets, temperature)
        if chosen == "torch":
            return chunked_logprobs(hidden, weight, targets, temperature, allowed)
        return reference_logprobs(hidden, weight, targets, temperature, allowed)
