"""The definition of correct: the policy loss in plain PyTorch, materialising the full
`[tokens × vocab]` logits. Every other implementation is tested against this one."""

from __future__ import annotations

import torch

from azr_kernels.types import PolicyLoss, allowed_tokens, entropy_of, masked_log_softmax, token_weights


def reference_logprobs(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    temperature: float = 1.0,
    allowed: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token log-probabilities of `targets` and entropies, in fp32; with `allowed` (bitmask
    rows), of the distribution over the allowed tokens only."""
    logits = hidden.float() @ weight.float().T / temperature
    log_probs = masked_log_softmax(logits, None if allowed is None else allowed_tokens(allowed, weight.shape[0]))
    logprobs = log_probs.gather(-1, targets.long().unsqueeze(-1)).squeeze(-1)
    return logprobs, entropy_of(log_probs)


def reference_policy_loss(
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
    allowed: torch.Tensor | None = None,
) -> PolicyLoss:
    logprobs, entropy = reference_logprobs(hidden, weight, targets, temperature, allowed)
    ratio = torch.exp(logprobs - old_logprobs.float())
    advantages = advantages.float()
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - clip_low, 1.0 + clip_high)
    per_token = torch.maximum(unclipped, clipped) - entropy_coef * entropy
    weights = token_weights(mask, aggregation, seq_ids)
    loss = (per_token * weights).sum()
    active = mask.bool()
    clip_fraction = (clipped > unclipped)[active].float().mean() if active.any() else loss.new_zeros(())
    return PolicyLoss(loss, logprobs.detach(), entropy.detach(), ratio.detach(), clip_fraction.detach())
